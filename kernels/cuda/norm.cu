// add_rms_norm: one block of 256 threads per row. Each thread adds the delta into the fp32
// residual for its strided elements and accumulates their squares; a warp-shuffle then
// shared-memory reduction gives the row's sum; a second pass writes the bf16 output.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void add_rms_norm_kernel(const float* residual, const bf16* delta, float* residual_out,
                                    const float* weight, bf16* out, int64_t dim, float eps) {
  wait_for_prior_grid();
  release_next_grid();
  const float* row = residual + blockIdx.x * dim;
  const bf16* delta_row = delta != nullptr ? delta + blockIdx.x * dim : nullptr;
  float* row_out = residual_out != nullptr ? residual_out + blockIdx.x * dim : nullptr;
  float square_sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float value = row[i];
    if (delta_row != nullptr) value += __bfloat162float(delta_row[i]);
    square_sum += value * value;
  }
  square_sum = block_sum<kThreads>(square_sum);
  const float inverse_rms = rsqrtf(square_sum / static_cast<float>(dim) + eps);
  bf16* out_row = out + blockIdx.x * dim;
  // Each thread reads back only the elements it read above, so residual_out may be residual.
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float value = row[i];
    if (delta_row != nullptr) value += __bfloat162float(delta_row[i]);
    if (row_out != nullptr) row_out[i] = value;
    out_row[i] = __float2bfloat16(weight[i] * (value * inverse_rms));
  }
}

}  // namespace

cudaError_t add_rms_norm_to(const float* residual, const bf16* delta, float* residual_out,
                            const float* weight, bf16* out, int64_t rows, int64_t dim, float eps,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch(add_rms_norm_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, residual,
                delta, residual_out, weight, out, dim, eps);
}

cudaError_t add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  return add_rms_norm_to(residual, delta, delta != nullptr ? residual : nullptr, weight, out, rows, dim, eps,
                         stream);
}

}  // namespace draftwise::cuda
