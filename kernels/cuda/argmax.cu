// argmax_rows: one block of 1024 threads per row; each thread scans a strided slice keeping
// (value, index) with the lower index winning ties, then a shared-memory tree combines them.
#include "kernels/cuda/launch.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 1024;

__device__ bool better(float value, int32_t index, float best, int32_t best_index) {
  return value > best || (value == best && index < best_index);
}

__global__ void argmax_kernel(const float* logits, int32_t* out, int64_t vocab) {
  wait_for_prior_grid();
  release_next_grid();
  const float* row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  int32_t best_index = 0x7fffffff;
  // 16-byte loads where the rows allow them (a decode step's LM head has 10⁵ logits).
  const int64_t vector_end = (vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0) ? vocab : 0;
  for (int64_t i = 4 * static_cast<int64_t>(threadIdx.x); i < vector_end; i += 4 * static_cast<int64_t>(blockDim.x)) {
    const float4 v = *reinterpret_cast<const float4*>(row + i);
    const float values4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (better(values4[k], static_cast<int32_t>(i + k), best, best_index)) {
        best = values4[k];
        best_index = static_cast<int32_t>(i + k);
      }
    }
  }
  for (int64_t i = vector_end + threadIdx.x; i < vocab; i += blockDim.x) {
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
  return launch(argmax_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits, out, vocab);
}

}  // namespace draftwise::cuda
