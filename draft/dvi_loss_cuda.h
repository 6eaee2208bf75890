// The DVI learner's loss and gradient on the GPU, next to the target's bf16 LM head: the
// draft logits through cuBLASLt (n in bf16, fp32 accumulation) plus the adapter term, ∂L/∂z
// in place, ∂B, and the two products Σ_v ∂z W_lm and Σ_v ∂z B in fixed vocabulary slices
// (kernels/cuda/draft_head.cu); the last steps, small, on the host as on the CPU.
#pragma once

#include <algorithm>
#include <memory>
#include <thread>

#include "draft/dvi_loss.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "target/cuda_decoder.h"

namespace draftwise {

class CudaDraftHeadTrainer final : public DraftHeadTrainer {
 public:
  // Trains heads on `decoder`'s LM head, on its device and stream; `decoder` must outlive it.
  static Expected<std::unique_ptr<CudaDraftHeadTrainer>> create(const CudaDecoder& decoder);

  Expected<DviLossTerms> loss_and_gradients(std::span<const DraftRecord* const> records,
                                            const DraftAdapter& adapter,
                                            const DviLossWeights& weights,
                                            DviGradients& gradients) override;

 private:
  CudaDraftHeadTrainer(const CudaDecoder& decoder, cuda::Gemm gemm)
      : decoder_(decoder), gemm_(std::move(gemm)) {}
  // A device buffer of at least `bytes` (grown, never shrunk).
  Expected<void*> buffer(size_t index, size_t bytes);

  const CudaDecoder& decoder_;
  cuda::Gemm gemm_;
  std::vector<cuda::DeviceBuffer> buffers_;
  // The host steps (the lens's products, ∂A, ∂gain) run between engine steps, never during
  // one: a few threads of their own.
  cpu::ThreadPool pool_{static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())))};
};

}  // namespace draftwise
