// add_rms_norm: one block of 256 threads per row. Each thread adds the delta into the fp32
// residual for its strided elements and accumulates their squares; a warp-shuffle then
// shared-memory reduction gives the row's sum; a second pass writes the bf16 output.
#include "kernels/cuda/ops.h"
#include "kernels/cuda/reduce.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void add_rms_norm_kernel(float* residual, const bf16* delta, const float* weight,
                                    bf16* out, int64_t dim, float eps) {
  float* row = residual + blockIdx.x * dim;
  const bf16* delta_row = delta != nullptr ? delta + blockIdx.x * dim : nullptr;
  float square_sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float value = row[i];
    if (delta_row != nullptr) {
      value += __bfloat162float(delta_row[i]);
      row[i] = value;
    }
    square_sum += value * value;
  }
  square_sum = block_sum<kThreads>(square_sum);
  const float inverse_rms = rsqrtf(square_sum / static_cast<float>(dim) + eps);
  bf16* out_row = out + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out_row[i] = __float2bfloat16(weight[i] * (row[i] * inverse_rms));
  }
}

}  // namespace

cudaError_t add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  add_rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(residual, delta, weight,
                                                                          out, dim, eps);
  return cudaGetLastError();
}

}  // namespace draftwise::cuda
