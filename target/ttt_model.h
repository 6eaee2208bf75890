// TTT models on the CPU (../shared/docs/TTT.md; Sun et al. 2024): a Llama-like decoder whose
// sequence-mixing layers are TTT layers, as a Hugging Face folder of the reference
// implementation's layout (config.json with model_type "ttt", safetensors). The hidden state
// of each head is a small model (TTT-Linear: z W1 + b1; TTT-MLP: GELU(z W1 + b1) W2 + b2)
// trained by gradient descent on the tokens as they come, in mini-batches whose gradients are
// all taken at the weights of the mini-batch's start.
//
// This is the reference: the primal (per-token) form, fp32, one sequence. A TttState holds a
// sequence's decode state (per layer and head: the weights at the start of the current
// mini-batch and the learning-rate-weighted gradient sum since), so that feeding tokens one at
// a time gives what one pass over the whole sequence gives. Snapshots of the state are plain
// copies.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/status.h"

namespace draftwise {

struct TttConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 2048;
  int64_t intermediate_size = 5504;
  int64_t num_layers = 24;
  int64_t num_heads = 32;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = true;
  double rope_theta = 10000.0;
  bool mlp_layers = false;  // ttt_layer_type "mlp" (else "linear")
  double ttt_base_lr = 1.0;
  int64_t mini_batch_size = 16;
  bool use_gate = false;
  bool share_qk = false;
  bool pre_conv = false;
  int64_t conv_kernel = 4;
  int64_t max_position_embeddings = 2048;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id: one id or a list
  // A hybrid model: "layer_types" lists "ttt" or "attention" per layer (absent: every layer TTT).
  // An attention layer is a Llama decoder layer's self-attention (model.layers.{i}.self_attn.
  // {q,k,v,o}_proj, grouped-query with num_key_value_heads, Hugging Face RoPE pairing at absolute
  // positions) in place of the TTT layer; the norms and MLP are as in a TTT layer, pre_conv is not.
  std::vector<bool> attention_layers;  // empty, or num_layers flags
  int64_t num_kv_heads = 0;            // num_key_value_heads; default num_heads

  int64_t head_dim() const { return hidden_size / num_heads; }
  bool is_attention(size_t layer) const { return layer < attention_layers.size() && attention_layers[layer]; }
  bool hybrid() const;
  // The inner model's hidden width: f for TTT-Linear's single layer, 4f for TTT-MLP's first.
  int64_t inner_width() const { return mlp_layers ? 4 * head_dim() : head_dim(); }
};

// A config.json with model_type "ttt", with TTT.md's defaults; errors name the field.
Expected<TttConfig> parse_ttt_config(const nlohmann::json& config);
// Weights of a model of this config (an upper bound: every optional tensor counted).
int64_t ttt_parameter_count(const TttConfig& config);
// The config.json file at `path`.
Expected<TttConfig> load_ttt_config(const std::string& path);

// One sequence's decode state.
struct TttState {
  int64_t position = 0;  // tokens seen
  // Per layer, per head: the inner model's weights at the start of the current mini-batch
  // (W1 [f, inner], b1 [inner], and for MLP W2 [inner, f], b2 [f]) and the gradient sum.
  struct Head {
    std::vector<float> w1, b1, w2, b2;
    std::vector<float> g_w1, g_b1, g_w2, g_b2;
  };
  struct Layer {
    std::vector<Head> heads;
    // Causal convolutions' windows: the last conv_kernel − 1 inputs (pre_conv: the normed
    // residual; share_qk: the shared projection), oldest first.
    std::vector<float> pre_conv_window, qk_window;
    // An attention layer's cache (no heads above): the rotated keys and the values,
    // [positions, num_kv_heads · f] each, of the positions the layer has seen; rows past those
    // are stale (left by a rollback) and are written over by the next tokens.
    std::vector<float> keys, values;
  };
  std::vector<Layer> layers;

  // A copy without the attention caches (what rollback saves: a cache's rows before a length
  // do not change after it, so a state restored at that length takes the current caches).
  TttState copy_without_caches() const;
  // Moves the attention caches' contents of `current` into this state.
  void take_caches(TttState& current);
};

// The dual form's core (TTT.md step 7) for one head and one linear map of the inner model over
// n tokens of one mini-batch: from the inputs X_q (queries) and X_k (keys) [n, f_in], the inner
// loss's gradients G = ∂ℓ/∂Z at W0 [n, f_out], the rates η [n, n] (η_ij for j ≤ i; the upper
// triangle is not read), W0 [f_in, f_out] and b0 [f_out] (empty: no bias), `out` [n, f_out]
// gets Z̄_i = X_q,i W0 − Σ_{j≤i} η_ij (X_q,i·X_k,j) G_j + b̄_i, with b̄_i = b0 − Σ_{j≤i} η_ij G_j.
// TTT-Linear is one such map (f_in = f_out = f); TTT-MLP two, the second on GELU outputs.
void ttt_linear_dual(std::span<const double> q, std::span<const double> k, std::span<const double> g,
                     std::span<const double> eta, std::span<const double> w0, std::span<const double> b0, int64_t n,
                     int64_t f_in, int64_t f_out, std::span<double> out);

// The values of one named tensor of `count` elements, row-major in the reference's layout.
using TttTensorSource = std::function<Expected<std::vector<float>>(const std::string& name, int64_t count)>;

class TttModel {
 public:
  // A Hugging Face folder: config.json and model.safetensors (F32 tensors).
  static Expected<std::unique_ptr<TttModel>> load(const std::string& folder);
  // The model of `config` with every tensor from `source`.
  static Expected<std::unique_ptr<TttModel>> build(const TttConfig& config, const TttTensorSource& source);
  // Seeded random weights in the shape of `config` (speed measurements): the norm gains
  // (RMSNorm, the inner LayerNorms) 1, every other value as random_weight_loader draws it.
  static Expected<std::unique_ptr<TttModel>> create_random(const TttConfig& config, uint64_t seed);

  const TttConfig& config() const { return config_; }

  // The state before any token: every head's inner model at its learned initial weights.
  TttState initial_state() const;
  // Feeds `tokens` after what `state` has seen; `logits` gets [tokens, vocab]. A whole
  // mini-batch goes through each layer in the dual form (matrix products over the mini-batch;
  // for TTT-MLP layer by layer of the inner model); the rest token by token in the primal form.
  Status forward(TttState& state, std::span<const int32_t> tokens, std::vector<float>& logits) const;
  // The primal form for everything (tests compare the two).
  void set_dual_form(bool enabled) { dual_form_ = enabled; }

  // The pieces of forward(), for a decoder that runs layers of a sequence separately (early
  // exit): the embedding rows of `tokens` into x [tokens, C]; layers [first, end) on `rows`
  // rows of x (updated) that follow `position` tokens already seen by those layers (each
  // layer's state in `state` advances); the final norm and LM head of x's rows into logits
  // [rows, vocab].
  void embed(std::span<const int32_t> tokens, std::vector<float>& x) const;
  void run_layers(TttState& state, size_t first, size_t end, int64_t position, int64_t rows, std::span<float> x) const;
  void output_logits(std::span<const float> x, int64_t rows, std::span<float> logits) const;
  // One layer's weights as the checkpoint holds them (row-major, [out, in] for projections),
  // for backends that copy them elsewhere (the GPU).
  struct Layer {
    std::vector<float> seq_norm, ffn_norm;                 // [C]
    std::vector<float> gate_proj, up_proj, down_proj;      // [ffn, C], [ffn, C], [C, ffn]
    std::vector<float> conv_norm, conv_weight, conv_bias;  // pre_conv: [C], [C, k], [C]
    std::vector<float> q_proj, k_proj, v_proj, o_proj, g_proj;  // [C, C]
    std::vector<float> conv_q_weight, conv_q_bias, conv_k_weight, conv_k_bias;  // share_qk
    std::vector<float> token_idx;                          // [b]
    std::vector<float> lr_weight, lr_bias;                 // [nh, C], [nh]
    std::vector<float> ttt_norm_weight, ttt_norm_bias;     // [nh, f]
    std::vector<float> post_norm_weight, post_norm_bias;   // [C]
    std::vector<float> w1, b1, w2, b2;                     // [nh, f, inner], [nh, inner], [nh, inner, f], [nh, f]
    // An attention layer (hybrid models) has seq_norm, ffn_norm, the MLP, and q_proj [C, C],
    // k_proj and v_proj [kv_heads · f, C], o_proj [C, C] from self_attn; nothing else.
    bool attention = false;
  };
  const std::vector<Layer>& layers() const { return layers_; }
  std::span<const float> embedding() const { return embedding_; }
  // W_lm [vocab, C] (the embedding when tied) and the final norm's gain [C].
  std::span<const float> lm_head() const { return lm_head_.empty() ? embedding_ : lm_head_; }
  std::span<const float> final_norm() const { return final_norm_; }
  // The attention layers' RoPE inverse frequencies [f / 2] (hybrid models).
  std::span<const float> attention_inv_freq() const { return inv_freq_; }

 private:
  // One token's q and k (after RoPE at `index` inside its mini-batch), v, and learning rate per head.
  struct Projected {
    std::vector<float> q, k, v;
    std::vector<double> lr;
  };
  TttModel() = default;
  Projected project(const Layer& layer, TttState::Layer& state, int64_t index, std::span<const float> normed) const;
  double token_factor(const Layer& layer, int64_t index) const;
  // post_norm, the gate, o_proj: the concatenated heads [C] → the layer's output [C].
  void finish_mixer(const Layer& layer, std::span<const float> normed, std::span<const float> heads_out,
                    std::span<float> out) const;
  void layer_chunk(size_t l, TttState::Layer& state, int64_t position, int64_t n, std::span<float> x) const;
  void mixer_dual(const Layer& layer, TttState::Layer& state, std::span<const float> normed, std::span<float> out) const;
  void ttt_mixer(const Layer& layer, TttState::Layer& state, int64_t position, std::span<const float> normed,
                 std::span<float> out) const;
  // An attention layer on n normed rows from `position`: appends to the cache, `out` [n, C].
  void attention_mixer(const Layer& layer, TttState::Layer& state, int64_t position, int64_t n,
                       std::span<const float> normed, std::span<float> out) const;

  TttConfig config_;
  bool dual_form_ = true;
  std::vector<float> embedding_;  // [vocab, C]
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;  // [C]
  std::vector<float> lm_head_;     // [vocab, C]; empty when tied
  std::vector<float> inv_freq_;    // the attention layers' RoPE frequencies [f / 2]
};

}  // namespace draftwise
