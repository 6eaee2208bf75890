// argmax_rows: one block of 1024 threads per row; each thread scans a strided slice keeping
// (value, index) with the lower index winning ties, then warp shuffles and one last warp combine them.
#include "kernels/cuda/launch.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 1024;

__device__ bool better(float value, int32_t index, float best, int32_t best_index) {
  return value > best || (value == best && index < best_index);
}

__device__ void keep_better(float value, int32_t index, float& best, int32_t& best_index) {
  if (better(value, index, best, best_index)) {
    best = value;
    best_index = index;
  }
}

// The best (value, index) of the warp, in every lane.
__device__ void warp_best(float& best, int32_t& best_index) {
  for (int offset = 16; offset > 0; offset /= 2) {
    keep_better(__shfl_xor_sync(0xffffffffu, best, offset), __shfl_xor_sync(0xffffffffu, best_index, offset), best,
                best_index);
  }
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
    for (int k = 0; k < 4; ++k) keep_better(values4[k], static_cast<int32_t>(i + k), best, best_index);
  }
  for (int64_t i = vector_end + threadIdx.x; i < vocab; i += blockDim.x) {
    keep_better(row[i], static_cast<int32_t>(i), best, best_index);
  }
  // Warp shuffles, then one warp over the warps' winners.
  warp_best(best, best_index);
  __shared__ float values[kThreads / 32];
  __shared__ int32_t indices[kThreads / 32];
  if (threadIdx.x % 32 == 0) {
    values[threadIdx.x / 32] = best;
    indices[threadIdx.x / 32] = best_index;
  }
  __syncthreads();
  if (threadIdx.x >= 32) return;
  best = values[threadIdx.x];
  best_index = indices[threadIdx.x];
  warp_best(best, best_index);
  if (threadIdx.x == 0) out[blockIdx.x] = best_index == 0x7fffffff ? 0 : best_index;
}

}  // namespace

cudaError_t argmax_rows(const float* logits, int32_t* out, int64_t rows, int64_t vocab,
                        cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch(argmax_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits, out, vocab);
}

}  // namespace draftwise::cuda
