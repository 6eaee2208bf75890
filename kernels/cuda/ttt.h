// The CUDA ops of TTT layers (../shared/docs/TTT.md; target/ttt_model.h is the CPU reference):
// fp32 throughout (the projections that feed them are bf16 GEMMs with fp32 outputs). Plain
// C++ launchers as in ops.h: they enqueue on `stream`, never synchronise, and take every size
// as an argument, so a pass can be captured in a CUDA graph.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace draftwise::cuda {

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) · weight, fp32 rows of `dim`.
cudaError_t ttt_rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
                         cudaStream_t stream);

// Causal depthwise convolutions of `rows` new inputs after the `kernel` − 1 kept in `window`
// ([kernel − 1, channels], oldest first; shifted by the new inputs): for each output o with
// weights w_o [channels, kernel] and bias b_o, y[r, c] = Σ_m w_o[c, m] · u_{r−kernel+1+m}[c] + b_o[c].
// Up to two outputs of the same inputs (share_qk's conv_q and conv_k); `accumulate` adds the
// first output into out0 instead of storing it (pre_conv's residual add).
//   in: rows of `channels`, in_stride apart     out0/out1: [rows, channels] (out1 may be null)
struct CausalConv {
  const float* weight0 = nullptr;
  const float* bias0 = nullptr;
  float* out0 = nullptr;
  const float* weight1 = nullptr;
  const float* bias1 = nullptr;
  float* out1 = nullptr;
  bool accumulate = false;
};
cudaError_t ttt_causal_conv(const float* in, int64_t in_stride, const CausalConv& conv, float* window, int64_t rows,
                            int64_t channels, int64_t kernel, cudaStream_t stream);

// From the projected rows (q, k, v, learning-rate logits): Q and K with RoPE in the
// interleaved pairing at their index inside the mini-batch ((first_index + r) % mini_batch),
// V as it is, and each head's rate base_lr · sigmoid(logit + bias[h]) / head_dim.
//   q, k: rows qk_stride apart, [heads · head_dim] each
//   v, lr_logit: rows v_stride apart, [heads · head_dim] and [heads]
//   Q, K, V: [rows, heads · head_dim]                         lr: [rows, heads]
struct TttProjected {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* lr_logit = nullptr;
  int64_t qk_stride = 0;
  int64_t v_stride = 0;
};
cudaError_t ttt_prepare(const TttProjected& in, const float* lr_bias, float* Q, float* K, float* V, float* lr,
                        int64_t rows, int64_t heads, int64_t head_dim, int64_t first_index, int64_t mini_batch,
                        float rope_theta, float base_lr, cudaStream_t stream);

// TTT-Linear on `rows` consecutive tokens, heads in parallel (one block each), mini-batches in
// sequence: each stretch of tokens inside one mini-batch is one step of the dual form (the
// inner gradients at the mini-batch's start weights, then every token's output by products of
// the stretch's rows, in shared memory); one row is the decode step. The state per head is
// the weights at the mini-batch's start (W [f, f], b [f]) and the rate-weighted gradient sum
// of the mini-batch's earlier tokens (GW, Gb); a mini-batch's end commits W −= tok_(b−1) GW,
// b −= tok_(b−1) Gb and clears the sums. out = Q + LN_h(Z̄), the inner LayerNorm with gain and
// bias per head.
//   Q, K, V: [rows, heads, f]     lr: [rows, heads]     token_idx: [mini_batch]
//   norm_weight, norm_bias: [heads, f]     W, GW: [heads, f, f]     b, Gb: [heads, f]
//   out: [rows, heads, f]
struct TttLinearState {
  float* W = nullptr;
  float* b = nullptr;
  float* GW = nullptr;
  float* Gb = nullptr;
};
// Whether ttt_linear_steps handles head width f and mini-batch size (its shared memory).
bool ttt_linear_supported(int64_t head_dim, int64_t mini_batch);
cudaError_t ttt_linear_steps(const float* Q, const float* K, const float* V, const float* lr, const float* token_idx,
                             const float* norm_weight, const float* norm_bias, const TttLinearState& state, float* out,
                             int64_t rows, int64_t heads, int64_t head_dim, int64_t first_index, int64_t mini_batch,
                             cudaStream_t stream);

// TTT-MLP on `rows` consecutive tokens, as ttt_linear_steps: the inner model
// GELU(z W1 + b1) W2 + b2 (hidden width A = 4f), its dual form map by map over each stretch of
// a mini-batch (Z̄1 from Q against K with G1 = (G2 W2ᵀ) ⊙ GELU′(Z1), X̄2 = GELU(Z̄1), Z̄2 from
// X̄2 against X2 = GELU(Z1) with G2), the weights and sums in global memory (read through the
// cache), the stretch's rows in shared memory.
//   W1, GW1: [heads, f, A]   b1, Gb1: [heads, A]   W2, GW2: [heads, A, f]   b2, Gb2: [heads, f]
struct TttMlpState {
  float* W1 = nullptr;
  float* b1 = nullptr;
  float* W2 = nullptr;
  float* b2 = nullptr;
  float* GW1 = nullptr;
  float* Gb1 = nullptr;
  float* GW2 = nullptr;
  float* Gb2 = nullptr;
};
bool ttt_mlp_supported(int64_t head_dim, int64_t mini_batch);
cudaError_t ttt_mlp_steps(const float* Q, const float* K, const float* V, const float* lr, const float* token_idx,
                          const float* norm_weight, const float* norm_bias, const TttMlpState& state, float* out,
                          int64_t rows, int64_t heads, int64_t head_dim, int64_t first_index, int64_t mini_batch,
                          cudaStream_t stream);

// post_norm (LayerNorm over the whole row, weight and bias) of the heads' outputs, times
// GELU-tanh of the gate when there is one, as bf16 for o_proj.
//   x: [rows, dim]     gate: rows gate_stride apart, or null     out: [rows, dim] bf16
cudaError_t ttt_post_norm_gate(const float* x, const float* weight, const float* bias, const float* gate,
                               int64_t gate_stride, __nv_bfloat16* out, int64_t rows, int64_t dim, float eps,
                               cudaStream_t stream);

}  // namespace draftwise::cuda
