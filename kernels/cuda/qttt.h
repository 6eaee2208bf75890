// qTTT's kernels on the GPU (QTTT.md; the CPU reference is target/cpu_decoder_qttt.cpp and
// kernels/cpu/backward.h): the query delta of adapted sequences in every forward pass, and
// the span forward/backward pieces that cuBLASLt's products do not cover. Plain C++ header
// (no fmt, no Status), as kernels/cuda/ops.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

// One row of a forward pass: the adaptation of its sequence, or none. `parameters` is the
// sequence's ΔW_Q, layer after layer (target/qttt.h's layout: full rank [q_dim, hidden] per
// layer; rank r: A [r, hidden] then B [q_dim, r]).
// What these kernels take: add_query_delta's hidden size and attention_query_backward's head
// dimension at most.
inline constexpr int64_t kMaxQttHidden = 16384;
inline constexpr int64_t kMaxQttHeadDim = 256;

struct QueryDeltaRow {
  const float* parameters = nullptr;  // null: the row's sequence is not adapted
  int32_t rank = 0;                   // 0: full rank
  int32_t unused = 0;
};

// For every row with an adaptation: n = rms_norm(residual row) · norm_weight (the layer's
// input norm, fp32), d = ΔW_Q(layer) n, and q += rope(d) at the row's position (half-split
// pairing; RoPE is linear, so adding the rotated delta to the rotated q is rotating the sum).
// One block per (row, head); hidden ≤ kMaxQttHidden, rank ≤ 256. A verification or a
// re-prefill of many rows reads ΔW_Q once per row (a gemv per row): correct at any size, fast
// for decode steps only.
//   residual: [rows, hidden] fp32 (the stream as the layer's q projection read it)
//   deltas, positions: [rows]      q: [rows] rows of q_stride bf16, q [heads, head_dim] first
cudaError_t add_query_delta(const float* residual, const float* norm_weight, float eps, const QueryDeltaRow* deltas,
                            const int32_t* positions, const float* inv_freq, int64_t rows, int64_t layer,
                            int64_t hidden, int64_t heads, int64_t head_dim, bf16* q, int64_t q_stride,
                            cudaStream_t stream);

// y[r, c] += x[r, c] (fp32 into bf16, rounded once)
//   y: [rows] rows of y_stride bf16     x: [rows, cols] fp32
cudaError_t add_f32_to_bf16(bf16* y, int64_t y_stride, const float* x, int64_t rows, int64_t cols,
                            cudaStream_t stream);

// RoPE's rotation (sign 1) or its inverse (sign −1, the transpose: a gradient's way back) of
// fp32 rows in place, half-split pairing, row r at position first_position + r.
//   x: [rows, heads · head_dim]
cudaError_t rotate_rows_f32(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t first_position,
                            const float* inv_freq, float sign, cudaStream_t stream);

// Mean next-token loss pieces: row_losses[r] = logsumexp(logits[r]) − logits[r, targets[r]];
// when gradients is not null, gradients[r] = scale · (softmax(logits[r]) − onehot(targets[r])).
//   logits: [rows, vocab] fp32   targets: [rows]   row_losses: [rows]   gradients: [rows, vocab] bf16
cudaError_t next_token_loss(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float scale,
                            float* row_losses, bf16* gradients, cudaStream_t stream);

// RMSNorm's backward (kernels/cpu/backward.h): dx (+)= r · (weight ⊙ dy) − x · r³/dim · Σ weight dy x.
//   x, dy, dx: [rows, dim] fp32   weight: [dim]
cudaError_t rms_norm_backward(const float* x, const float* weight, const float* dy, float* dx, int64_t rows,
                              int64_t dim, float eps, bool accumulate, cudaStream_t stream);

// SwiGLU's backward: d_gate = d_out · up · silu'(gate), d_up = d_out · silu(gate).
//   gate_up: [rows, 2·ffn] bf16   d_out: [rows, ffn] fp32   d_gate_up: [rows, 2·ffn] bf16
cudaError_t swiglu_backward(const bf16* gate_up, const float* d_out, bf16* d_gate_up, int64_t rows, int64_t ffn,
                            cudaStream_t stream);

// Attention's gradient with respect to the queries only, keys and values fixed (one
// sequence's paged cache): for query row r at position p = first_position + r and head h,
// dq = scale · Σ_j P_j (do·v_j − do·o) k_j over the attended keys, the scores computed again
// (two passes: the softmax's maximum and sum, then the sum). One block of four warps per
// (row, head); head_dim at most 256 (kMaxQttHeadDim).
//   q, out: [rows, heads · head_dim] bf16 (q after RoPE)   d_out, d_q: [rows, heads · head_dim] fp32
//   block_table: [max_blocks_per_sequence] of the sequence
cudaError_t attention_query_backward(const bf16* q, const bf16* out, const float* d_out, const bf16* k_cache,
                                     const bf16* v_cache, const int32_t* block_table, int64_t rows,
                                     int64_t first_position, const AttentionGeometry& geometry, float* d_q,
                                     cudaStream_t stream);

// One optimizer step (target/qttt.h, qtt_optimizer_step): SGD when `adam` is null; else Adam
// with its constants and the bias corrections 1 − β1^t and 1 − β2^t.
//   parameters, gradient, first_moment, second_moment: [count] fp32
struct AdamStep {
  float beta1, beta2, epsilon, correction1, correction2;
};
cudaError_t qtt_optimizer_step(float* parameters, const float* gradient, float* first_moment, float* second_moment,
                               int64_t count, float learning_rate, const AdamStep* adam, cudaStream_t stream);

}  // namespace draftwise::cuda
