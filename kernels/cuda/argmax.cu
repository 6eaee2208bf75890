// argmax_rows: one block of 1024 threads per row; each thread scans a strided slice keeping the
// largest argmax key (argmax.cuh), then warp shuffles and one last warp combine them.
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/launch.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 1024;

__global__ void argmax_kernel(const float* logits, uint64_t* keys, int64_t vocab) {
  wait_for_prior_grid();
  release_next_grid();
  const float* row = logits + blockIdx.x * vocab;
  uint64_t best = 0;
  // 16-byte loads where the rows allow them (a decode step's LM head has 10⁵ logits).
  const int64_t vector_end = (vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0) ? vocab : 0;
  for (int64_t i = 4 * static_cast<int64_t>(threadIdx.x); i < vector_end; i += 4 * static_cast<int64_t>(blockDim.x)) {
    const float4 v = *reinterpret_cast<const float4*>(row + i);
    const float values4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) best = key_max(best, argmax_key(values4[k], static_cast<int32_t>(i + k)));
  }
  for (int64_t i = vector_end + threadIdx.x; i < vocab; i += blockDim.x) {
    best = key_max(best, argmax_key(row[i], static_cast<int32_t>(i)));
  }
  // Warp shuffles, then one warp over the warps' winners.
  best = warp_max(best);
  __shared__ uint64_t winners[kThreads / 32];
  if (threadIdx.x % 32 == 0) winners[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x >= 32) return;
  best = warp_max(winners[threadIdx.x]);
  if (threadIdx.x == 0) keys[blockIdx.x] = best;
}

}  // namespace

cudaError_t argmax_rows(const float* logits, uint64_t* keys, int64_t rows, int64_t vocab, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch(argmax_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits, keys, vocab);
}

}  // namespace draftwise::cuda
