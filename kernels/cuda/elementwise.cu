// Elementwise and gather kernels: SwiGLU, embedding lookup, row gather, bias add, fp32/bf16
// conversion. One thread per output element, grid-stride loops, 256 threads per block.
#include "kernels/cuda/ops.h"

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

__global__ void embedding_kernel(const bf16* table, const int32_t* ids, float* out, int64_t rows,
                                 int64_t hidden) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * hidden;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(table[static_cast<int64_t>(ids[i / hidden]) * hidden + i % hidden]);
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
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count * dim;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = x[static_cast<int64_t>(rows[i / dim]) * dim + i % dim];
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
                             int64_t hidden, cudaStream_t stream) {
  if (rows * hidden == 0) return cudaSuccess;
  embedding_kernel<<<blocks_for(rows * hidden), kThreads, 0, stream>>>(table, ids, out, rows, hidden);
  return cudaGetLastError();
}

cudaError_t add_bias(bf16* y, const bf16* bias, int64_t rows, int64_t out, cudaStream_t stream) {
  if (rows * out == 0) return cudaSuccess;
  add_bias_kernel<<<blocks_for(rows * out), kThreads, 0, stream>>>(y, bias, rows, out);
  return cudaGetLastError();
}

cudaError_t gather_rows(const bf16* x, const int32_t* rows, bf16* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  if (count * dim == 0) return cudaSuccess;
  gather_rows_kernel<<<blocks_for(count * dim), kThreads, 0, stream>>>(x, rows, out, count, dim);
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
