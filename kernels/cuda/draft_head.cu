// The DVI draft head on the GPU (draft/dvi_loss.h gives the math).
//
// low_rank_logits: logits += γ · B (A n), n = rms_norm(h, gain). Grid (rows, vocab chunks of
//   kVocabPerBlock), 256 threads; each block recomputes n and u = A n for its row in shared
//   memory (hidden ≤ 8192, rank ≤ 256: a few thousand multiply-adds), then adds B u to its
//   slice of the row, one vocabulary entry per thread at a time.
// lens_map: x = h + M h, a warp per output value (grid (rows, hidden / 8), 256 threads),
//   reading row o of M coalesced.
// dvi_logit_gradients: one block of 1024 per record; three passes over its logits (largest
//   value, the two normalisers at temperatures 1 and T, then ∂L/∂z in place), the top-K
//   distillation target read from the record. Per-record loss terms go to `terms`.
// dvi_b_gradient: ∂B[v, j] = γ Σ_i ∂z[i, v] u[i, j], a thread per (v, j).
// dvi_head_products: for every record i, Σ_v ∂z[i, v] W[v, :] and Σ_v ∂z[i, v] B[v, :], the
//   vocabulary split into kSlices slices (grid (slices, record tiles of 8)), partial sums per
//   slice; dvi_sum_slices adds them in slice order, so that results do not depend on timing.
#include <algorithm>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kHeadThreads = 256;
constexpr int64_t kVocabPerBlock = 2048;
constexpr int kRowThreads = 1024;
constexpr int kRecordTile = 8;

__global__ void low_rank_logits_kernel(const float* hidden_rows, int64_t hidden, const float* gain, float eps,
                                       const float* a, const float* b, int64_t rank, float scale, float* logits,
                                       int64_t vocab) {
  wait_for_prior_grid();
  extern __shared__ float shared[];  // [hidden] n, then [rank] u
  float* normed = shared;
  float* down = shared + hidden;
  const float* h = hidden_rows + blockIdx.x * hidden;
  float squares = 0.0f;
  for (int64_t k = threadIdx.x; k < hidden; k += blockDim.x) squares += h[k] * h[k];
  const float inverse_rms = rsqrtf(block_sum<kHeadThreads>(squares) / static_cast<float>(hidden) + eps);
  for (int64_t k = threadIdx.x; k < hidden; k += blockDim.x) normed[k] = h[k] * inverse_rms * gain[k];
  __syncthreads();
  // u = A n: a warp per rank row.
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  for (int64_t j = warp; j < rank; j += kHeadThreads / 32) {
    float sum = 0.0f;
    for (int64_t k = lane; k < hidden; k += 32) sum += a[j * hidden + k] * normed[k];
    sum = warp_sum(sum);
    if (lane == 0) down[j] = sum;
  }
  __syncthreads();
  float* row = logits + blockIdx.x * vocab;
  const int64_t first = blockIdx.y * kVocabPerBlock;
  const int64_t last = min(vocab, first + kVocabPerBlock);
  for (int64_t v = first + threadIdx.x; v < last; v += blockDim.x) {
    float sum = 0.0f;
    for (int64_t j = 0; j < rank; ++j) sum += b[v * rank + j] * down[j];
    row[v] += scale * sum;
  }
}

__global__ void lens_map_kernel(const float* hidden_rows, int64_t hidden, const float* lens, float* out) {
  wait_for_prior_grid();
  const int64_t o = blockIdx.y * (kHeadThreads / 32) + threadIdx.x / 32;
  if (o >= hidden) return;
  const int lane = threadIdx.x % 32;
  const float* h = hidden_rows + blockIdx.x * hidden;
  const float* m = lens + o * hidden;
  float sum = 0.0f;
  for (int64_t k = lane; k < hidden; k += 32) sum += m[k] * h[k];
  sum = warp_sum(sum);
  if (lane == 0) out[blockIdx.x * hidden + o] = h[o] + sum;
}

// Block-wide max over kRowThreads threads.
__device__ float block_max(float value) {
  __shared__ float partial[kRowThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = value;
  __syncthreads();
  float best = -INFINITY;
  for (int w = 0; w < kRowThreads / 32; ++w) best = fmaxf(best, partial[w]);
  __syncthreads();
  return best;
}

__global__ void dvi_logit_gradients_kernel(float* logits, int64_t vocab, const int32_t* tokens, const float* rewards,
                                           const float* logged_log_probabilities, const float* on_policy,
                                           const int32_t* top_tokens,
                                           const float* top_logits, int64_t top_k, DviRowWeights weights,
                                           float inverse_count, float* terms) {
  wait_for_prior_grid();
  float* z = logits + blockIdx.x * vocab;
  const int32_t token = tokens[blockIdx.x];
  const float reward = rewards[blockIdx.x];
  const int32_t* top = top_tokens + blockIdx.x * top_k;
  const float* teacher_logits = top_logits + blockIdx.x * top_k;
  const float inverse_t = 1.0f / weights.temperature;
  float largest = -INFINITY;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) largest = fmaxf(largest, z[v]);
  largest = block_max(largest);
  float total = 0.0f, total_t = 0.0f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    total += __expf(z[v] - largest);
    total_t += __expf((z[v] - largest) * inverse_t);
  }
  const float log_normalizer = largest + __logf(block_sum<kRowThreads>(total));
  const float log_normalizer_t = largest * inverse_t + __logf(block_sum<kRowThreads>(total_t));
  // The teacher: softmax(t / T) over the top-K (few: every thread computes its normaliser).
  float teacher_largest = -INFINITY;
  for (int64_t k = 0; k < top_k; ++k) teacher_largest = fmaxf(teacher_largest, teacher_logits[k] * inverse_t);
  float teacher_total = 0.0f;
  for (int64_t k = 0; k < top_k; ++k) teacher_total += __expf(teacher_logits[k] * inverse_t - teacher_largest);
  const float teacher_log_normalizer = teacher_largest + __logf(teacher_total);
  const float log_p_token = z[token] - log_normalizer;
  float importance = 1.0f;
  if (weights.importance_clip > 0.0f) {
    importance = fminf(weights.importance_clip, __expf(log_p_token - logged_log_probabilities[blockIdx.x]));
  }
  const float advantage = (reward - weights.baseline) * importance * on_policy[blockIdx.x];
  const float token_coefficient = weights.cross_entropy * reward + weights.policy_gradient * advantage;
  const bool distil = weights.distillation != 0.0f && top_k > 0;
  float kl = 0.0f;
  if (distil) {
    for (int64_t k = threadIdx.x; k < top_k; k += blockDim.x) {
      const float log_q = teacher_logits[k] * inverse_t - teacher_log_normalizer;
      kl += __expf(log_q) * (log_q - (z[top[k]] * inverse_t - log_normalizer_t));
    }
    kl = block_sum<kRowThreads>(kl);
  }
  __syncthreads();  // every thread has read z[token] and z[top[k]] before they change
  const float distil_scale = distil ? weights.distillation * weights.temperature : 0.0f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float value = z[v];
    z[v] = (token_coefficient * __expf(value - log_normalizer) +
            distil_scale * __expf(value * inverse_t - log_normalizer_t)) * inverse_count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    z[token] -= token_coefficient * inverse_count;
    terms[blockIdx.x * 3 + 0] = weights.temperature * weights.temperature * kl;
    terms[blockIdx.x * 3 + 1] = reward * -log_p_token;
    terms[blockIdx.x * 3 + 2] = advantage * -log_p_token;
  }
  __syncthreads();
  // Top-K tokens are distinct: each thread owns its own entries.
  if (distil) {
    for (int64_t k = threadIdx.x; k < top_k; k += blockDim.x) {
      const float log_q = teacher_logits[k] * inverse_t - teacher_log_normalizer;
      z[top[k]] -= distil_scale * __expf(log_q) * inverse_count;
    }
  }
}

__global__ void dvi_b_gradient_kernel(const float* gradients, const float* down, int64_t count, int64_t vocab,
                                      int64_t rank, float scale, float* b_gradient) {
  wait_for_prior_grid();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= vocab * rank) return;
  const int64_t v = index / rank;
  const int64_t j = index % rank;
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) sum += gradients[i * vocab + v] * down[i * rank + j];
  b_gradient[index] = scale * sum;
}

__global__ void dvi_head_products_kernel(const float* gradients, int64_t count, int64_t vocab, const bf16* head,
                                         int64_t hidden, const float* b, int64_t rank, int64_t slice_length,
                                         float* partial) {
  wait_for_prior_grid();
  const int64_t first_v = blockIdx.x * slice_length;
  const int64_t last_v = min(vocab, first_v + slice_length);
  const int64_t first_i = blockIdx.y * kRecordTile;
  const int64_t width = hidden + rank;
  for (int64_t k = threadIdx.x; k < width; k += blockDim.x) {
    float sums[kRecordTile] = {};
    for (int64_t v = first_v; v < last_v; ++v) {
      const float m = k < hidden ? __bfloat162float(head[v * hidden + k]) : b[v * rank + (k - hidden)];
#pragma unroll
      for (int t = 0; t < kRecordTile; ++t) {
        if (first_i + t < count) sums[t] += gradients[(first_i + t) * vocab + v] * m;
      }
    }
    for (int t = 0; t < kRecordTile; ++t) {
      if (first_i + t < count) partial[(blockIdx.x * count + first_i + t) * width + k] = sums[t];
    }
  }
}

__global__ void dvi_sum_slices_kernel(const float* partial, int64_t slices, int64_t values, float* out) {
  wait_for_prior_grid();
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= values) return;
  float sum = 0.0f;
  for (int64_t s = 0; s < slices; ++s) sum += partial[s * values + index];
  out[index] = sum;
}

}  // namespace

cudaError_t low_rank_logits(const float* hidden_rows, int64_t rows, int64_t hidden, const float* gain, float eps,
                            const float* a, const float* b, int64_t rank, float scale, float* logits, int64_t vocab,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (hidden > 8192 || rank > 256) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((vocab + kVocabPerBlock - 1) / kVocabPerBlock));
  const size_t shared = static_cast<size_t>(hidden + rank) * sizeof(float);
  return launch(low_rank_logits_kernel, grid, dim3(kHeadThreads), shared, stream, hidden_rows, hidden, gain, eps, a, b,
                rank, scale, logits, vocab);
}

cudaError_t lens_map(const float* hidden_rows, int64_t rows, int64_t hidden, const float* lens, float* out,
                     cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  constexpr int64_t kWarps = kHeadThreads / 32;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((hidden + kWarps - 1) / kWarps));
  return launch(lens_map_kernel, grid, dim3(kHeadThreads), 0, stream, hidden_rows, hidden, lens, out);
}

cudaError_t dvi_logit_gradients(float* logits, int64_t count, int64_t vocab, const int32_t* tokens,
                                const float* rewards, const float* logged_log_probabilities,
                                const float* on_policy, const int32_t* top_tokens,
                                const float* top_logits, int64_t top_k, const DviRowWeights& weights,
                                float* terms, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return launch(dvi_logit_gradients_kernel, dim3(static_cast<unsigned>(count)), dim3(kRowThreads), 0, stream, logits,
                vocab, tokens, rewards, logged_log_probabilities, on_policy, top_tokens, top_logits, top_k, weights,
                1.0f / static_cast<float>(count), terms);
}

cudaError_t dvi_b_gradient(const float* gradients, const float* down, int64_t count, int64_t vocab, int64_t rank,
                           float scale, float* b_gradient, cudaStream_t stream) {
  const int64_t values = vocab * rank;
  return launch(dvi_b_gradient_kernel, dim3(static_cast<unsigned>((values + 255) / 256)), dim3(256), 0, stream,
                gradients, down, count, vocab, rank, scale, b_gradient);
}

int64_t dvi_head_product_slices(int64_t vocab) { return std::min<int64_t>(64, std::max<int64_t>(1, vocab / 256)); }

cudaError_t dvi_head_products(const float* gradients, int64_t count, int64_t vocab, const bf16* head, int64_t hidden,
                              const float* b, int64_t rank, float* partial, float* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int64_t slices = dvi_head_product_slices(vocab);
  const int64_t slice_length = (vocab + slices - 1) / slices;
  const dim3 grid(static_cast<unsigned>(slices), static_cast<unsigned>((count + kRecordTile - 1) / kRecordTile));
  const cudaError_t ran = launch(dvi_head_products_kernel, grid, dim3(256), 0, stream, gradients, count, vocab, head,
                                 hidden, b, rank, slice_length, partial);
  if (ran != cudaSuccess) return ran;
  const int64_t values = count * (hidden + rank);
  return launch(dvi_sum_slices_kernel, dim3(static_cast<unsigned>((values + 255) / 256)), dim3(256), 0, stream,
                static_cast<const float*>(partial), slices, values, out);
}

}  // namespace draftwise::cuda
