// Elementwise and gather kernels: SwiGLU, embedding lookup, row gather, residual rows moved
// for early exit, bias add, fp32/bf16 conversion. One thread per output element, grid-stride
// loops, 256 threads per block.
#include "kernels/cuda/launch.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

__global__ void swiglu_kernel(const bf16* gate_up, bf16* out, int64_t rows, int64_t ffn) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * ffn;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / ffn;
    const int64_t c = i % ffn;
    const float g = __bfloat162float(gate_up[r * 2 * ffn + c]);
    const float u = __bfloat162float(gate_up[r * 2 * ffn + ffn + c]);
    out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  }
}

// Ids outside the table's rows [first, first + count) give zero rows (a tensor-parallel
// rank's share of the embedding; the ranks' rows are then summed).
__global__ void embedding_kernel(const bf16* table, const int32_t* ids, float* out, int64_t rows,
                                 int64_t hidden, int64_t first, int64_t count) {
  wait_for_prior_grid();
  release_next_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * hidden;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = static_cast<int64_t>(ids[i / hidden]) - first;
    out[i] = row >= 0 && row < count ? __bfloat162float(table[row * hidden + i % hidden]) : 0.0f;
  }
}

__global__ void add_bias_kernel(bf16* y, const bf16* bias, int64_t rows, int64_t out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * out;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = __float2bfloat16(__bfloat162float(y[i]) + __bfloat162float(bias[i % out]));
  }
}

__global__ void gather_rows_kernel(const bf16* x, const int32_t* rows, bf16* out, int64_t count,
                                   int64_t dim) {
  wait_for_prior_grid();
  release_next_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * dim;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = x[static_cast<int64_t>(rows[i / dim]) * dim + i % dim];
  }
}

__global__ void assemble_residual_rows_kernel(const float* residual, const bf16* delta, const ResidualRowSource* sources,
                                             float* out, int64_t count, int64_t dim) {
  wait_for_prior_grid();
  release_next_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * dim;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const ResidualRowSource source = sources[i / dim];
    const int64_t c = i % dim;
    if (source.pointer != nullptr) {
      out[i] = source.pointer[c];
      continue;
    }
    const int64_t at = static_cast<int64_t>(source.row) * dim + c;
    out[i] = delta != nullptr ? residual[at] + __bfloat162float(delta[at]) : residual[at];
  }
}

__global__ void store_residual_rows_kernel(const float* residual, const bf16* delta, float* const* targets,
                                           int64_t count, int64_t dim) {
  wait_for_prior_grid();
  release_next_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * dim;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    targets[i / dim][i % dim] = delta != nullptr ? residual[i] + __bfloat162float(delta[i]) : residual[i];
  }
}

__global__ void fill_uniform_kernel(bf16* out, int64_t count, uint64_t seed, float half_width) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t z = seed + static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;  // splitmix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float unit = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[i] = __float2bfloat16((2.0f * unit - 1.0f) * half_width);
  }
}

__global__ void f32_to_bf16_kernel(const float* in, bf16* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16(in[i]);
  }
}

__global__ void bf16_to_f32_kernel(const bf16* in, float* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

}  // namespace

cudaError_t swiglu(const bf16* gate_up, bf16* out, int64_t rows, int64_t ffn, cudaStream_t stream) {
  if (rows * ffn == 0) return cudaSuccess;
  swiglu_kernel<<<blocks_for(rows * ffn), kThreads, 0, stream>>>(gate_up, out, rows, ffn);
  return cudaGetLastError();
}

cudaError_t embedding_lookup(const bf16* table, const int32_t* ids, float* out, int64_t rows,
                             int64_t hidden, cudaStream_t stream, int64_t first, int64_t count) {
  if (rows * hidden == 0) return cudaSuccess;
  return launch(embedding_kernel, dim3(blocks_for(rows * hidden)), dim3(kThreads), 0, stream, table, ids, out, rows,
                hidden, first, count);
}

cudaError_t add_bias(bf16* y, const bf16* bias, int64_t rows, int64_t out, cudaStream_t stream) {
  if (rows * out == 0) return cudaSuccess;
  add_bias_kernel<<<blocks_for(rows * out), kThreads, 0, stream>>>(y, bias, rows, out);
  return cudaGetLastError();
}

cudaError_t gather_rows(const bf16* x, const int32_t* rows, bf16* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  if (count * dim == 0) return cudaSuccess;
  return launch(gather_rows_kernel, dim3(blocks_for(count * dim)), dim3(kThreads), 0, stream, x, rows, out, count,
                dim);
}

cudaError_t assemble_residual_rows(const float* residual, const bf16* delta, const ResidualRowSource* sources,
                                   float* out, int64_t count, int64_t dim, cudaStream_t stream) {
  if (count * dim == 0) return cudaSuccess;
  return launch(assemble_residual_rows_kernel, dim3(blocks_for(count * dim)), dim3(kThreads), 0, stream, residual,
                delta, sources, out, count, dim);
}

cudaError_t store_residual_rows(const float* residual, const bf16* delta, float* const* targets, int64_t count,
                                int64_t dim, cudaStream_t stream) {
  if (count * dim == 0) return cudaSuccess;
  return launch(store_residual_rows_kernel, dim3(blocks_for(count * dim)), dim3(kThreads), 0, stream, residual, delta,
                targets, count, dim);
}

cudaError_t fill_uniform_bf16(bf16* out, int64_t count, uint64_t seed, float half_width, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_uniform_kernel<<<blocks_for(count), kThreads, 0, stream>>>(out, count, seed, half_width);
  return cudaGetLastError();
}

cudaError_t convert_f32_to_bf16(const float* in, bf16* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  f32_to_bf16_kernel<<<blocks_for(count), kThreads, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

cudaError_t convert_bf16_to_f32(const bf16* in, float* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  bf16_to_f32_kernel<<<blocks_for(count), kThreads, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

}  // namespace draftwise::cuda
