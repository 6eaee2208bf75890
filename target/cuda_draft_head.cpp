#include "target/cuda_draft_head.h"

#include "kernels/cuda/cuda_check.h"

namespace draftwise {

namespace {

Status reserve(cuda::DeviceBuffer& buffer, size_t bytes, const char* what) {
  if (buffer.bytes() >= bytes) return {};
  buffer = cuda::DeviceBuffer();
  DW_ASSIGN_OR_RETURN(buffer, cuda::DeviceBuffer::allocate(bytes, what));
  return {};
}

}  // namespace

Status CudaDraftAdapter::apply(const DraftHead& head, const float* h, int64_t rows, int64_t hidden, int64_t vocab,
                               const float* gain, float eps, const cuda::bf16* lm_head, cuda::Gemm& gemm, float* logits,
                               cudaStream_t stream) {
  if (const LowRankAdapter* adapter = head.adapter; adapter != nullptr) {
    if (adapter->version == 0 || adapter->version != version_ || a_.bytes() < adapter->a.size_bytes() ||
        b_.bytes() < adapter->b.size_bytes() || lens_.bytes() < adapter->lens.size_bytes()) {
      DW_TRY(reserve(a_, adapter->a.size_bytes(), "the draft adapter's A"));
      DW_TRY(reserve(b_, adapter->b.size_bytes(), "the draft adapter's B"));
      DW_TRY(reserve(lens_, adapter->lens.size_bytes(), "the draft head's lens"));
      DW_CUDA_TRY(cudaMemcpyAsync(a_.data(), adapter->a.data(), adapter->a.size_bytes(), cudaMemcpyHostToDevice, stream));
      DW_CUDA_TRY(cudaMemcpyAsync(b_.data(), adapter->b.data(), adapter->b.size_bytes(), cudaMemcpyHostToDevice, stream));
      if (!adapter->lens.empty()) {
        DW_CUDA_TRY(cudaMemcpyAsync(lens_.data(), adapter->lens.data(), adapter->lens.size_bytes(),
                                    cudaMemcpyHostToDevice, stream));
      }
      // The host spans must stay readable until the copies end: wait here, once per version.
      DW_CUDA_TRY(cudaStreamSynchronize(stream));
      version_ = adapter->version;
    }
    const float* head_input = h;
    if (!adapter->lens.empty()) {
      // The lens changes the norm's input: the LM-head logits are recomputed from x = h + M h.
      DW_TRY(reserve(mapped_, static_cast<size_t>(rows * hidden) * sizeof(float), "lens rows"));
      DW_TRY(reserve(normed_, static_cast<size_t>(rows * hidden) * sizeof(cuda::bf16), "lens normed rows"));
      auto* x = mapped_.as<float>();
      DW_TRY(cuda_status(cuda::lens_map(h, rows, hidden, lens_.as<float>(), x, stream), "lens_map"));
      DW_TRY(cuda_status(
          cuda::add_rms_norm_to(x, nullptr, nullptr, gain, normed_.as<cuda::bf16>(), rows, hidden, eps, stream),
          "add_rms_norm"));
      DW_TRY(gemm.matmul(normed_.as<cuda::bf16>(), lm_head, logits, true, rows, hidden, vocab, stream));
      head_input = x;
    }
    DW_TRY(cuda_status(cuda::low_rank_logits(head_input, rows, hidden, gain, eps, a_.as<float>(), b_.as<float>(),
                                             adapter->rank, adapter->scale, logits, vocab, stream),
                       "low_rank_logits"));
  }
  if (head.exit_hidden != nullptr) {
    head.exit_hidden->resize(static_cast<size_t>(rows * hidden));
    DW_TRY(cuda::copy_to_host(head.exit_hidden->data(), h, head.exit_hidden->size() * sizeof(float), stream));
  }
  return {};
}

}  // namespace draftwise
