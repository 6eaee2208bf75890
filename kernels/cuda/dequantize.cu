// GGUF dequantization on the GPU at load: one thread per block (32 or 256 values), using
// the same block functions as the CPU (kernels/quant_blocks.h), rounding each value to bf16.
#include "kernels/cuda/ops.h"
#include "kernels/quant_blocks.h"

namespace draftwise::cuda {

namespace {

__global__ void dequantize_blocks_kernel(quant::BlockFormat format, const quant::Byte* blocks,
                                         int64_t block_count, int64_t block_bytes, bf16* out) {
  const int values = quant::block_values(format);
  float block[256];
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < block_count;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    quant::dequantize_block(format, blocks + b * block_bytes, block);
    for (int i = 0; i < values; ++i) out[b * values + i] = __float2bfloat16(block[i]);
  }
}

__global__ void f16_to_bf16_kernel(const uint16_t* in, bf16* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16(__half2float(__ushort_as_half(in[i])));
  }
}

unsigned blocks_for(int64_t count) {
  const int64_t blocks = (count + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

}  // namespace

cudaError_t dequantize_blocks_to_bf16(int format, const void* blocks, int64_t block_count,
                                      int64_t block_bytes, bf16* out, cudaStream_t stream) {
  if (block_count == 0) return cudaSuccess;
  dequantize_blocks_kernel<<<blocks_for(block_count), 256, 0, stream>>>(
      static_cast<quant::BlockFormat>(format), static_cast<const quant::Byte*>(blocks), block_count,
      block_bytes, out);
  return cudaGetLastError();
}

cudaError_t convert_f16_to_bf16(const uint16_t* in, bf16* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  f16_to_bf16_kernel<<<blocks_for(count), 256, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

}  // namespace draftwise::cuda
