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

// Whether kernels are launched with programmatic dependent launch (kernels/cuda/launch.cuh);
// on by default. Process-wide; for comparing the two in one run.
bool programmatic_launch_enabled();
void set_programmatic_launch(bool enabled);

// residual += delta (when delta is not null); out = residual / sqrt(mean(residual²) + eps) · weight
//   residual: [rows, dim] fp32, updated in place     delta: [rows, dim] bf16 or nullptr
//   weight:   [dim] fp32                              out:   [rows, dim] bf16
cudaError_t add_rms_norm(float* residual, const bf16* delta, const float* weight, bf16* out,
                         int64_t rows, int64_t dim, float eps, cudaStream_t stream);
// The same with the sum written elsewhere: residual_out = residual + delta (residual_out may
// be residual itself, or nullptr to keep the sum to this call).
cudaError_t add_rms_norm_to(const float* residual, const bf16* delta, float* residual_out,
                            const float* weight, bf16* out, int64_t rows, int64_t dim, float eps,
                            cudaStream_t stream);

// The input of a small-batch linear layer (gemv): bf16 rows as they are, or RMS-normed rows
// of the fp32 residual stream, computed inside the layer's kernel.
struct LinearSource {
  const bf16* x = nullptr;            // [rows, in] bf16; when null, the normed residual:
  const float* residual = nullptr;    // [*, in] fp32
  const bf16* delta = nullptr;        // [*, in] bf16 added to the residual first, or nullptr
  float* residual_out = nullptr;      // residual + delta is stored here (never the residual itself), or nullptr
  const float* norm_weight = nullptr; // [in] fp32
  const int32_t* row_index = nullptr; // [rows] residual rows to take, or nullptr for 0..rows-1
  float eps = 0.0f;
};
enum class GemvEpilogue {
  kStore,        // y[r, o] = x[r] · w[o] (+ bias[o])
  kSwiglu,       // w holds gate rows then up rows (2·ffn); y[r, i] = silu(x·gate_i) · (x·up_i)
  kRopeWriteKv,  // y is a qkv row: kStore, then rope_and_write_kv's rotation and cache writes
  kArgmax,       // y is uint64 [rows], zero before the call: atomicMax of each row's argmax key
                 // (argmax_key_index); the products themselves are not stored (greedy LM head)
};
// What kRopeWriteKv needs (rope_and_write_kv's arguments; half-split pairing).
struct RopeCacheWrite {
  const int32_t* positions = nullptr;  // [rows]
  const float* inv_freq = nullptr;     // [head_dim / 2]
  const int32_t* slots = nullptr;      // [rows]
  bf16* k_cache = nullptr;
  bf16* v_cache = nullptr;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};
// Whether gemv takes `rows` rows of `in` features (up to 4 rows, in a multiple of 8, the rows
// fitting in shared memory); otherwise use the GEMM path. (At 8 rows its CUDA-core
// arithmetic, not memory, is the bound and cuBLASLt's tensor cores win: docs/kernel-notes.md.)
bool gemv_supported(int64_t rows, int64_t in);
// y = x · wᵀ for a few rows, streaming w once with 16-byte loads (decode steps).
//   w: [out, in] bf16     bias: [out] bf16 or nullptr (kStore only)
//   y: [rows, out] (kStore, kRopeWriteKv) or [rows, out / 2] (kSwiglu), fp32 when y_fp32
//      (kStore only) else bf16; [rows] uint64 argmax keys (kArgmax)
//   rope: kRopeWriteKv's arguments, out = (heads + 2·kv_heads) · head_dim; else nullptr
cudaError_t gemv(const LinearSource& source, int64_t rows, const bf16* w, const bf16* bias,
                 int64_t in, int64_t out, GemvEpilogue epilogue, void* y, bool y_fp32,
                 cudaStream_t stream, const RopeCacheWrite* rope = nullptr);

// Rotary embedding in place (cpu::apply_rope's pairings: 0 half_split, 1 interleaved).
//   x:         [tokens] rows, row_stride elements apart, each starting with [heads, head_dim]
//   positions: [tokens]       inv_freq: [head_dim / 2]
cudaError_t apply_rope(bf16* x, int64_t row_stride, int64_t tokens, int64_t heads,
                       int64_t head_dim, const int32_t* positions, const float* inv_freq,
                       int interleaved, cudaStream_t stream);

// apply_rope to the q and k heads of each qkv row, and the rotated k and the v of each row
// written to its cache slot, in one kernel.
//   qkv:    [tokens, row_stride] bf16: q [heads, head_dim], k and v [kv_heads, head_dim] each
//   slots:  [tokens] flat cache slot (block · block_size + offset)
//   k_cache, v_cache: [slots, kv_heads · head_dim] bf16
cudaError_t rope_and_write_kv(bf16* qkv, int64_t row_stride, int64_t tokens, int64_t heads,
                              int64_t kv_heads, int64_t head_dim, const int32_t* positions,
                              const float* inv_freq, int interleaved, const int32_t* slots,
                              bf16* k_cache, bf16* v_cache, cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) · gate_up[r, ffn + i]
//   gate_up: [rows, 2·ffn] bf16     out: [rows, ffn] bf16
cudaError_t swiglu(const bf16* gate_up, bf16* out, int64_t rows, int64_t ffn, cudaStream_t stream);

// out[r] = table[ids[r]] as fp32 (the start of the residual stream). A tensor-parallel rank
// holds the vocabulary rows [first, first + count) only: other ids give zero rows.
//   table: [count, hidden] bf16     ids: [rows]     out: [rows, hidden] fp32
cudaError_t embedding_lookup(const bf16* table, const int32_t* ids, float* out, int64_t rows,
                             int64_t hidden, cudaStream_t stream, int64_t first = 0,
                             int64_t count = INT64_MAX);

// Greedy picks travel as 64-bit argmax keys: the logit's bits mapped to an unsigned integer of
// the same order in the high half, 0xFFFFFFFF − index in the low half. The largest key is the
// largest logit with the lowest index among ties, so partial picks combine by a maximum in any
// order (atomicMax). A row with a non-finite logit (NaN or ±inf) ends with
// kNonFiniteArgmaxKey, which no finite logit reaches: a broken model, not a token.
inline constexpr uint64_t kNonFiniteArgmaxKey = ~uint64_t{0};
inline int32_t argmax_key_index(uint64_t key) {
  return key == 0 ? 0 : static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFu));
}

// keys[r] = the argmax key of row r (argmax_key_index gives the index of its largest logit, the
// lowest among ties)
//   logits: [rows, vocab] fp32     keys: [rows]
cudaError_t argmax_rows(const float* logits, uint64_t* keys, int64_t rows, int64_t vocab,
                        cudaStream_t stream);

// Early exit moves rows of the residual stream (residual + the pending delta, exactly as the
// next layer's norm would sum them) between the passes of a step.
struct ResidualRowSource {
  const float* pointer = nullptr;  // [dim] fp32: a kept row (a drafted token's h_exit); or, when null,
  int32_t row = 0;                 // this row of residual + delta
};
// out[i] = sources[i]'s row
//   residual: [*, dim] fp32     delta: [*, dim] bf16 or nullptr     out: [count, dim] fp32
cudaError_t assemble_residual_rows(const float* residual, const bf16* delta, const ResidualRowSource* sources,
                                   float* out, int64_t count, int64_t dim, cudaStream_t stream);
// targets[i][0, dim) = residual[i] + delta[i]
cudaError_t store_residual_rows(const float* residual, const bf16* delta, float* const* targets, int64_t count,
                                int64_t dim, cudaStream_t stream);

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

// out[i] = uniform in [-half_width, half_width), from a counter-based generator (splitmix64 of
// seed + i): the same values for the same seed on any GPU and launch shape.
cudaError_t fill_uniform_bf16(bf16* out, int64_t count, uint64_t seed, float half_width, cudaStream_t stream);

// Conversions, round to nearest even.
cudaError_t convert_f32_to_bf16(const float* in, bf16* out, int64_t count, cudaStream_t stream);
cudaError_t convert_bf16_to_f32(const bf16* in, float* out, int64_t count, cudaStream_t stream);
//   in: [count] IEEE fp16 bits
cudaError_t convert_f16_to_bf16(const uint16_t* in, bf16* out, int64_t count, cudaStream_t stream);

// The DVI draft head (kernels/cuda/draft_head.cu; draft/dvi_loss.h has the math).
// logits[r] += scale · B (A n_r), n_r = rms_norm(hidden_rows[r], gain); hidden ≤ 8192, rank ≤ 256.
//   hidden_rows: [rows, hidden] fp32   gain: [hidden]   a: [rank, hidden]   b: [vocab, rank]
//   logits: [rows, vocab] fp32
cudaError_t low_rank_logits(const float* hidden_rows, int64_t rows, int64_t hidden, const float* gain, float eps,
                            const float* a, const float* b, int64_t rank, float scale, float* logits, int64_t vocab,
                            cudaStream_t stream);

// The draft head's lens: out[r] = hidden_rows[r] + M hidden_rows[r].
//   hidden_rows, out: [rows, hidden] fp32 (distinct)   lens: [hidden, hidden] (row o: output o)
cudaError_t lens_map(const float* hidden_rows, int64_t rows, int64_t hidden, const float* lens, float* out,
                     cudaStream_t stream);

struct DviRowWeights {
  float distillation;
  float cross_entropy;
  float policy_gradient;
  float temperature;
  float baseline;
  float importance_clip;  // > 0: weight the policy gradient by min(clip, p / p_logged)
};
// The learner's ∂L/∂z for `count` records, in place of their draft logits, and each
// record's (distillation, cross-entropy, policy-gradient) terms.
//   logits: [count, vocab] fp32   tokens, rewards, logged_log_probabilities, on_policy: [count]
//   (on_policy: 1 for a record with a policy-gradient term, 0 without)
//   top_tokens, top_logits: [count, top_k] (distinct tokens per row)   terms: [count, 3]
cudaError_t dvi_logit_gradients(float* logits, int64_t count, int64_t vocab, const int32_t* tokens,
                                const float* rewards, const float* logged_log_probabilities,
                                const float* on_policy, const int32_t* top_tokens,
                                const float* top_logits, int64_t top_k, const DviRowWeights& weights,
                                float* terms, cudaStream_t stream);
// b_gradient[v, j] = scale · Σ_i gradients[i, v] · down[i, j]
//   gradients: [count, vocab]   down: [count, rank]   b_gradient: [vocab, rank]
cudaError_t dvi_b_gradient(const float* gradients, const float* down, int64_t count, int64_t vocab, int64_t rank,
                           float scale, float* b_gradient, cudaStream_t stream);
// out[i] = [Σ_v gradients[i, v] · head[v, :] | Σ_v gradients[i, v] · b[v, :]], summed over
// fixed vocabulary slices in order.
//   gradients: [count, vocab]   head: [vocab, hidden] bf16   b: [vocab, rank]
//   partial: [dvi_head_product_slices(vocab), count, hidden + rank]   out: [count, hidden + rank]
int64_t dvi_head_product_slices(int64_t vocab);
cudaError_t dvi_head_products(const float* gradients, int64_t count, int64_t vocab, const bf16* head, int64_t hidden,
                              const float* b, int64_t rank, float* partial, float* out, cudaStream_t stream);

}  // namespace draftwise::cuda
