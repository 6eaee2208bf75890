// Backward passes of the CPU reference's ops, for the few gradients the engine trains itself
// (qTTT's ΔW_Q: QTTT.md). Each takes the forward op's inputs (or what it saved) and the
// gradient of its output, and returns the gradient of the input asked for. fp32 throughout.
// Unlike the forward kernels these are not batch-invariant: training needs no bit-exactness.
#pragma once

#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/thread_pool.h"

namespace draftwise::cpu {

// y = x · w (w not transposed: the product that takes an output gradient back through a
// linear layer, dx = dy · W with W stored [out, in]); with `accumulate`, y += x · w.
//   x: [rows, inner]   w: [inner, cols]   y: [rows, cols], must not alias x or w
void matmul_nn(const float* x, const float* w, float* y, int64_t rows, int64_t inner, int64_t cols,
               bool accumulate, ThreadPool& pool);

// g += dyᵀ · x: a linear layer's weight gradient (g[o, i] = Σ_r dy[r, o] · x[r, i]).
//   dy: [rows, out]   x: [rows, in]   g: [out, in]
void weight_gradient(const float* dy, const float* x, float* g, int64_t rows, int64_t out, int64_t in,
                     ThreadPool& pool);

// RMSNorm, y = x · r · weight with r = 1 / sqrt(mean(x²) + eps):
// dx = r · (weight ⊙ dy) − x · r³ / dim · Σ_j weight_j dy_j x_j. With `accumulate`, dx += that.
//   x, dy, dx: [rows, dim]   weight: [dim]
void rms_norm_backward(const float* x, const float* weight, const float* dy, float* dx, int64_t rows,
                       int64_t dim, float eps, bool accumulate, ThreadPool& pool);

// SwiGLU, out = silu(gate) · up: d_gate = d_out · up · silu'(gate) with
// silu'(z) = σ(z) (1 + z (1 − σ(z))), d_up = d_out · silu(gate).
//   gate_up: [rows, 2·ffn] (gate then up, as the forward took them)   d_out: [rows, ffn]
//   d_gate_up: [rows, 2·ffn]
void swiglu_backward(const float* gate_up, const float* d_out, float* d_gate_up, int64_t rows, int64_t ffn);

// The gradient of attention's output with respect to its queries only (keys and values held
// fixed, as qTTT's cached ones are). For token t at position p = first_position + t, head h:
// s_j = scale · q·k_j, P = softmax(s) over the attended keys, o = Σ_j P_j v_j, and
// dq = scale · Σ_j P_j (do·v_j − do·o) k_j. The scores are computed again (nothing kept).
//   q, out, d_out, d_q: [new_tokens, num_heads, head_dim]
//   k, v: the cache, [first_position + new_tokens (or more), num_kv_heads, head_dim]
void attention_query_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* d_out, float* d_q, int64_t new_tokens, int64_t first_position,
                              const AttentionShape& shape, ThreadPool& pool);

}  // namespace draftwise::cpu
