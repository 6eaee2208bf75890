// apply_rope: one thread per (token, head, pair j). The angle is position · inv_freq[j]
// rounded to fp32, as the CPU reference computes it; the rotation runs in fp32.
// rope_and_write_kv: one block per token does the same for its q and k heads and copies the
// rotated k and the v into the token's cache slot (decode steps: one launch instead of three).
#include "kernels/cuda/launch.cuh"

namespace draftwise::cuda {

namespace {

__device__ __forceinline__ void rotate_pair(bf16* head, int64_t j, int64_t half, int interleaved, float angle,
                                            bf16* copy_to) {
  const int64_t first = interleaved ? 2 * j : j;
  const int64_t second = interleaved ? 2 * j + 1 : j + half;
  float s;
  float c;
  sincosf(angle, &s, &c);
  const float a = __bfloat162float(head[first]);
  const float b = __bfloat162float(head[second]);
  const bf16 x = __float2bfloat16(a * c - b * s);
  const bf16 y = __float2bfloat16(b * c + a * s);
  head[first] = x;
  head[second] = y;
  if (copy_to != nullptr) {
    copy_to[first] = x;
    copy_to[second] = y;
  }
}

__global__ void rope_kernel(bf16* x, int64_t row_stride, int64_t tokens, int64_t heads,
                            int64_t head_dim, const int32_t* positions, const float* inv_freq,
                            int interleaved) {
  const int64_t half = head_dim / 2;
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= tokens * heads * half) return;
  const int64_t j = index % half;
  const int64_t h = (index / half) % heads;
  const int64_t t = index / (half * heads);
  const float angle = static_cast<float>(positions[t]) * inv_freq[j];
  rotate_pair(x + t * row_stride + h * head_dim, j, half, interleaved, angle, nullptr);
}

__global__ void rope_and_write_kv_kernel(bf16* qkv, int64_t row_stride, int64_t heads, int64_t kv_heads,
                                         int64_t head_dim, const int32_t* positions, const float* inv_freq,
                                         int interleaved, const int32_t* slots, bf16* k_cache, bf16* v_cache) {
  wait_for_prior_grid();
  release_next_grid();
  const int64_t t = blockIdx.x;
  const int64_t half = head_dim / 2;
  const int64_t kv_dim = kv_heads * head_dim;
  bf16* row = qkv + t * row_stride;
  const float position = static_cast<float>(positions[t]);
  const int64_t slot = slots[t];
  for (int64_t index = threadIdx.x; index < (heads + kv_heads) * half; index += blockDim.x) {
    const int64_t h = index / half;
    const int64_t j = index % half;
    const float angle = position * inv_freq[j];
    if (h < heads) {
      rotate_pair(row + h * head_dim, j, half, interleaved, angle, nullptr);
    } else {
      const int64_t kv_head = h - heads;
      rotate_pair(row + heads * head_dim + kv_head * head_dim, j, half, interleaved, angle,
                  k_cache + slot * kv_dim + kv_head * head_dim);
    }
  }
  const bf16* v = row + heads * head_dim + kv_dim;
  for (int64_t c = threadIdx.x; c < kv_dim; c += blockDim.x) v_cache[slot * kv_dim + c] = v[c];
}

}  // namespace

cudaError_t apply_rope(bf16* x, int64_t row_stride, int64_t tokens, int64_t heads,
                       int64_t head_dim, const int32_t* positions, const float* inv_freq,
                       int interleaved, cudaStream_t stream) {
  const int64_t pairs = tokens * heads * (head_dim / 2);
  if (pairs == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  rope_kernel<<<static_cast<unsigned>((pairs + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, row_stride, tokens, heads, head_dim, positions, inv_freq, interleaved);
  return cudaGetLastError();
}

cudaError_t rope_and_write_kv(bf16* qkv, int64_t row_stride, int64_t tokens, int64_t heads,
                              int64_t kv_heads, int64_t head_dim, const int32_t* positions,
                              const float* inv_freq, int interleaved, const int32_t* slots,
                              bf16* k_cache, bf16* v_cache, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  return launch(rope_and_write_kv_kernel, dim3(static_cast<unsigned>(tokens)), dim3(128), 0, stream, qkv,
                row_stride, heads, kv_heads, head_dim, positions, inv_freq, interleaved, slots, k_cache, v_cache);
}

}  // namespace draftwise::cuda
