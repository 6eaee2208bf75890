// The CUDA ops of the decoder, as host-callable launchers (the op interface of kernels/cpu/
// with device pointers, bf16 activations and a stream). Numerics (DESIGN.md): bf16 weights
// and activations, fp32 accumulation, fp32 for norms, the residual stream and logits.
//
// Launchers enqueue work on `stream` and return the launch's cudaError_t; they never
// synchronise. Every pointer is device memory. This header is plain C++ (no fmt, no
// Status) so that the .cu files that define the launchers can include it.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace draftwise::cuda {

using bf16 = __nv_bfloat16;

// residual += delta (when delta is not null); out = residual / sqrt(mean(residual²) + eps) · weight
//   residual: [rows, dim] fp32, updated in place     delta: [rows, dim] bf16 or nullptr
//   weight:   [dim] fp32                              out:   [rows, dim] bf16
cudaError_t add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream);

// Rotary embedding in place (cpu::apply_rope's pairings: 0 half_split, 1 interleaved).
//   x:         [tokens] rows, row_stride elements apart, each starting with [heads, head_dim]
//   positions: [tokens]       inv_freq: [head_dim / 2]
cudaError_t apply_rope(bf16* x, int64_t row_stride, int64_t tokens, int64_t heads,
                       int64_t head_dim, const int32_t* positions, const float* inv_freq,
                       int interleaved, cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) · gate_up[r, ffn + i]
//   gate_up: [rows, 2·ffn] bf16     out: [rows, ffn] bf16
cudaError_t swiglu(const bf16* gate_up, bf16* out, int64_t rows, int64_t ffn, cudaStream_t stream);

// out[r] = table[ids[r]] as fp32 (the start of the residual stream)
//   table: [vocab, hidden] bf16     ids: [rows]     out: [rows, hidden] fp32
cudaError_t embedding_lookup(const bf16* table, const int32_t* ids, float* out, int64_t rows,
                             int64_t hidden, cudaStream_t stream);

// out[r] = index of the largest logit of row r, the lowest index among ties
//   logits: [rows, vocab] fp32     out: [rows]
cudaError_t argmax_rows(const float* logits, int32_t* out, int64_t rows, int64_t vocab,
                        cudaStream_t stream);

// y[r, o] += bias[o]
//   y: [rows, out] bf16     bias: [out] bf16
cudaError_t add_bias(bf16* y, const bf16* bias, int64_t rows, int64_t out, cudaStream_t stream);

// out[i] = x[rows[i]]
//   x: [*, dim] bf16     rows: [count]     out: [count, dim] bf16
cudaError_t gather_rows(const bf16* x, const int32_t* rows, bf16* out, int64_t count, int64_t dim,
                        cudaStream_t stream);

// GGUF blocks to bf16: `blocks` blocks of quant::BlockFormat `format` (kernels/quant_blocks.h),
// `block_bytes` each, into out[blocks · values per block].
cudaError_t dequantize_blocks_to_bf16(int format, const void* blocks, int64_t block_count,
                                      int64_t block_bytes, bf16* out, cudaStream_t stream);

// Conversions, round to nearest even.
cudaError_t convert_f32_to_bf16(const float* in, bf16* out, int64_t count, cudaStream_t stream);
cudaError_t convert_bf16_to_f32(const bf16* in, float* out, int64_t count, cudaStream_t stream);
//   in: [count] IEEE fp16 bits
cudaError_t convert_f16_to_bf16(const uint16_t* in, bf16* out, int64_t count, cudaStream_t stream);

}  // namespace draftwise::cuda
