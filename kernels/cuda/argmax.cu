// argmax_rows: one block of 256 threads per row; each thread scans a strided slice keeping
// (value, index) with the lower index winning ties, then a shared-memory tree combines them.
#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;

__device__ bool better(float value, int32_t index, float best, int32_t best_index) {
  return value > best || (value == best && index < best_index);
}

__global__ void argmax_kernel(const float* logits, int32_t* out, int64_t vocab) {
  const float* row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  int32_t best_index = 0x7fffffff;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (better(row[i], static_cast<int32_t>(i), best, best_index)) {
      best = row[i];
      best_index = static_cast<int32_t>(i);
    }
  }
  __shared__ float values[kThreads];
  __shared__ int32_t indices[kThreads];
  values[threadIdx.x] = best;
  indices[threadIdx.x] = best_index;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride &&
        better(values[threadIdx.x + stride], indices[threadIdx.x + stride], values[threadIdx.x],
               indices[threadIdx.x])) {
      values[threadIdx.x] = values[threadIdx.x + stride];
      indices[threadIdx.x] = indices[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = indices[0] == 0x7fffffff ? 0 : indices[0];
}

}  // namespace

cudaError_t argmax_rows(const float* logits, int32_t* out, int64_t rows, int64_t vocab,
                        cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  argmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, out, vocab);
  return cudaGetLastError();
}

}  // namespace draftwise::cuda
