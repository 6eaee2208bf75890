#include "draft/dvi_loss_cuda.h"

#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/half.h"

namespace draftwise {

namespace {

template <typename T>
Status upload(void* device, const std::vector<T>& host, cudaStream_t stream) {
  return cuda_status(
      cudaMemcpyAsync(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream),
      "cudaMemcpyAsync");
}

}  // namespace

Expected<std::unique_ptr<CudaDraftHeadTrainer>> CudaDraftHeadTrainer::create(
    const CudaDecoder& decoder) {
  DW_CUDA_TRY(cudaSetDevice(decoder.device()));
  DW_ASSIGN_OR_RETURN(cuda::Gemm gemm, cuda::Gemm::create());
  return std::unique_ptr<CudaDraftHeadTrainer>(new CudaDraftHeadTrainer(decoder, std::move(gemm)));
}

Expected<void*> CudaDraftHeadTrainer::buffer(size_t index, size_t bytes) {
  if (buffers_.size() <= index) buffers_.resize(index + 1);
  if (buffers_[index].bytes() < bytes) {
    buffers_[index] = cuda::DeviceBuffer();
    DW_ASSIGN_OR_RETURN(buffers_[index],
                        cuda::DeviceBuffer::allocate(bytes, "the draft-head learner"));
  }
  return buffers_[index].data();
}

Expected<DviLossTerms> CudaDraftHeadTrainer::loss_and_gradients(
    std::span<const DraftRecord* const> records, const DraftAdapter& adapter,
    const DviLossWeights& weights, DviGradients& gradients) {
  const ModelConfig& config = decoder_.config();
  const int64_t hidden = config.hidden_size;
  const int64_t vocab = config.vocab_size;
  const int64_t rank = adapter.shape.rank;
  const int64_t count = static_cast<int64_t>(records.size());
  DW_TRY(dvi::check_records(records, adapter, hidden, weights));
  if (adapter.shape.vocab != vocab) {
    return make_error("the adapter is for a vocabulary of {}, the model's has {}",
                      adapter.shape.vocab, vocab);
  }
  const size_t top_k = records.front()->verifier_tokens.size();
  for (const DraftRecord* record : records) {
    if (record->verifier_tokens.size() != top_k) {
      return make_error("the learner's records keep different numbers of verifier logits");
    }
  }
  DW_CUDA_TRY(cudaSetDevice(decoder_.device()));
  const cudaStream_t stream = decoder_.stream();

  // The host side of the forward pass: n, its bf16 copy for the GEMM, u = A n.
  const dvi::NormedRecords normed =
      dvi::normalize(records, adapter, static_cast<float>(config.rms_norm_eps), pool_);
  std::vector<uint16_t> normed_bf16(normed.normed.size());
  for (size_t i = 0; i < normed_bf16.size(); ++i) normed_bf16[i] = f32_to_bf16(normed.normed[i]);
  std::vector<float> down(static_cast<size_t>(count * rank), 0.0f);  // [N, rank]
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t j = 0; j < rank; ++j) {
      double sum = 0.0;
      for (int64_t k = 0; k < hidden; ++k) {
        sum += static_cast<double>(adapter.a[static_cast<size_t>(j * hidden + k)]) *
               normed.normed[static_cast<size_t>(i * hidden + k)];
      }
      down[static_cast<size_t>(i * rank + j)] = static_cast<float>(sum);
    }
  }
  std::vector<int32_t> tokens, top_tokens;
  std::vector<float> rewards, logged, on_policy, top_logits;
  for (const DraftRecord* record : records) {
    tokens.push_back(record->token);
    rewards.push_back(record->reward);
    logged.push_back(record->draft_log_probability);
    on_policy.push_back(record->serial >= weights.policy_gradient_from ? 1.0f : 0.0f);
    top_tokens.insert(top_tokens.end(), record->verifier_tokens.begin(),
                      record->verifier_tokens.end());
    top_logits.insert(top_logits.end(), record->verifier_logits.begin(),
                      record->verifier_logits.end());
  }

  const size_t n = static_cast<size_t>(count);
  const int64_t slices = cuda::dvi_head_product_slices(vocab);
  const int64_t width = hidden + rank;
  DW_ASSIGN_OR_RETURN(void* normed_device, buffer(0, normed_bf16.size() * 2));
  DW_ASSIGN_OR_RETURN(void* hidden_device, buffer(1, normed.hidden.size() * 4));
  DW_ASSIGN_OR_RETURN(void* gain_device, buffer(2, adapter.gain.size() * 4));
  DW_ASSIGN_OR_RETURN(void* a_device, buffer(3, adapter.a.size() * 4));
  DW_ASSIGN_OR_RETURN(void* b_device, buffer(4, adapter.b.size() * 4));
  DW_ASSIGN_OR_RETURN(void* down_device, buffer(5, down.size() * 4));
  DW_ASSIGN_OR_RETURN(void* tokens_device, buffer(6, n * 4));
  DW_ASSIGN_OR_RETURN(void* rewards_device, buffer(7, n * 4));
  DW_ASSIGN_OR_RETURN(void* logged_device, buffer(8, n * 4));
  DW_ASSIGN_OR_RETURN(void* top_tokens_device,
                      buffer(9, std::max<size_t>(top_tokens.size(), 1) * 4));
  DW_ASSIGN_OR_RETURN(void* top_logits_device,
                      buffer(10, std::max<size_t>(top_logits.size(), 1) * 4));
  DW_ASSIGN_OR_RETURN(void* logits_device, buffer(11, n * static_cast<size_t>(vocab) * 4));
  DW_ASSIGN_OR_RETURN(void* terms_device, buffer(12, n * 3 * 4));
  DW_ASSIGN_OR_RETURN(void* b_gradient_device, buffer(13, adapter.b.size() * 4));
  DW_ASSIGN_OR_RETURN(void* partial_device,
                      buffer(14, static_cast<size_t>(slices * count * width) * 4));
  DW_ASSIGN_OR_RETURN(void* products_device, buffer(15, static_cast<size_t>(count * width) * 4));
  DW_ASSIGN_OR_RETURN(void* on_policy_device, buffer(16, n * 4));
  DW_TRY(upload(normed_device, normed_bf16, stream));
  DW_TRY(upload(hidden_device, normed.hidden, stream));
  DW_TRY(upload(gain_device, adapter.gain, stream));
  DW_TRY(upload(a_device, adapter.a, stream));
  DW_TRY(upload(b_device, adapter.b, stream));
  DW_TRY(upload(down_device, down, stream));
  DW_TRY(upload(tokens_device, tokens, stream));
  DW_TRY(upload(rewards_device, rewards, stream));
  DW_TRY(upload(logged_device, logged, stream));
  DW_TRY(upload(on_policy_device, on_policy, stream));
  DW_TRY(upload(top_tokens_device, top_tokens, stream));
  DW_TRY(upload(top_logits_device, top_logits, stream));

  auto* logits = static_cast<float*>(logits_device);
  DW_TRY(gemm_.matmul(static_cast<const cuda::bf16*>(normed_device), decoder_.lm_head_device(),
                      logits, true, count, hidden, vocab, stream));
  DW_TRY(cuda_status(cuda::low_rank_logits(static_cast<const float*>(hidden_device), count, hidden,
                                           static_cast<const float*>(gain_device),
                                           static_cast<float>(config.rms_norm_eps),
                                           static_cast<const float*>(a_device),
                                           static_cast<const float*>(b_device), rank,
                                           adapter.scale(), logits, vocab, stream),
                     "low_rank_logits"));
  const cuda::DviRowWeights row_weights{weights.distillation,    weights.cross_entropy,
                                        weights.policy_gradient, weights.temperature,
                                        weights.baseline,        weights.importance_clip};
  DW_TRY(cuda_status(
      cuda::dvi_logit_gradients(
          logits, count, vocab, static_cast<const int32_t*>(tokens_device),
          static_cast<const float*>(rewards_device), static_cast<const float*>(logged_device),
          static_cast<const float*>(on_policy_device), static_cast<const int32_t*>(top_tokens_device),
          static_cast<const float*>(top_logits_device), static_cast<int64_t>(top_k), row_weights,
          static_cast<float*>(terms_device), stream),
      "dvi_logit_gradients"));
  DW_TRY(cuda_status(
      cuda::dvi_b_gradient(logits, static_cast<const float*>(down_device), count, vocab, rank,
                           adapter.scale(), static_cast<float*>(b_gradient_device), stream),
      "dvi_b_gradient"));
  DW_TRY(cuda_status(cuda::dvi_head_products(logits, count, vocab, decoder_.lm_head_device(),
                                             hidden, static_cast<const float*>(b_device), rank,
                                             static_cast<float*>(partial_device),
                                             static_cast<float*>(products_device), stream),
                     "dvi_head_products"));

  std::vector<float> terms(n * 3);
  std::vector<float> products(static_cast<size_t>(count * width));
  gradients.b.resize(adapter.b.size());
  DW_TRY(cuda::copy_to_host(terms.data(), terms_device, terms.size() * 4, stream));
  DW_TRY(cuda::copy_to_host(products.data(), products_device, products.size() * 4, stream));
  DW_TRY(cuda::copy_to_host(gradients.b.data(), b_gradient_device, gradients.b.size() * 4, stream));
  std::vector<float> head_product(static_cast<size_t>(count * hidden));
  std::vector<float> b_product(static_cast<size_t>(count * rank));
  for (int64_t i = 0; i < count; ++i) {
    std::memcpy(&head_product[static_cast<size_t>(i * hidden)],
                &products[static_cast<size_t>(i * width)], static_cast<size_t>(hidden) * 4);
    std::memcpy(&b_product[static_cast<size_t>(i * rank)],
                &products[static_cast<size_t>(i * width + hidden)], static_cast<size_t>(rank) * 4);
  }
  dvi::finish_gradients(adapter, normed, std::move(head_product), std::move(b_product), gradients,
                        pool_);
  const std::vector<double> terms_wide(terms.begin(), terms.end());
  return dvi::mean_terms(terms_wide, weights);
}

}  // namespace draftwise
