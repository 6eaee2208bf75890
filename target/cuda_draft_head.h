// The trainable part of the early-exit draft head (target/decoder.h's DraftHead: the low-rank
// adapter and the lens) on the GPU, shared by the CUDA decoders. The caller has the exit
// hidden rows h and the LM-head logits of rms_norm(h, gain); this adds γ B A · rms_norm(·) (after
// recomputing those logits from h + M h when the head has a lens), and copies h out when the
// head asks for it. The adapter's weights are uploaded once per version.
#pragma once

#include <cstdint>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "target/decoder.h"

namespace draftwise {

class CudaDraftAdapter {
 public:
  // h: [rows, hidden] fp32; gain: [hidden] fp32; lm_head: [vocab, hidden] bf16;
  // logits: [rows, vocab] fp32, the LM head's logits of rms_norm(h, gain) on entry.
  Status apply(const DraftHead& head, const float* h, int64_t rows, int64_t hidden, int64_t vocab, const float* gain,
               float eps, const cuda::bf16* lm_head, cuda::Gemm& gemm, float* logits, cudaStream_t stream);

 private:
  cuda::DeviceBuffer a_, b_, lens_, mapped_, normed_;
  uint64_t version_ = 0;
};

}  // namespace draftwise
