// apply_rope: one thread per (token, head, pair j). The angle is position · inv_freq[j]
// rounded to fp32, as the CPU reference computes it; the rotation runs in fp32.
#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

namespace {

__global__ void rope_kernel(bf16* x, int64_t row_stride, int64_t tokens, int64_t heads,
                            int64_t head_dim, const int32_t* positions, const float* inv_freq,
                            int interleaved) {
  const int64_t half = head_dim / 2;
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= tokens * heads * half) return;
  const int64_t j = index % half;
  const int64_t h = (index / half) % heads;
  const int64_t t = index / (half * heads);
  bf16* head = x + t * row_stride + h * head_dim;
  const int64_t first = interleaved ? 2 * j : j;
  const int64_t second = interleaved ? 2 * j + 1 : j + half;
  const float angle = static_cast<float>(positions[t]) * inv_freq[j];
  float s;
  float c;
  sincosf(angle, &s, &c);
  const float a = __bfloat162float(head[first]);
  const float b = __bfloat162float(head[second]);
  head[first] = __float2bfloat16(a * c - b * s);
  head[second] = __float2bfloat16(b * c + a * s);
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

}  // namespace draftwise::cuda
