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
#include <memory>
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

  int64_t head_dim() const { return hidden_size / num_heads; }
  // The inner model's hidden width: f for TTT-Linear's single layer, 4f for TTT-MLP's first.
  int64_t inner_width() const { return mlp_layers ? 4 * head_dim() : head_dim(); }
};

// A config.json with model_type "ttt", with TTT.md's defaults; errors name the field.
Expected<TttConfig> parse_ttt_config(const nlohmann::json& config);

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
  };
  std::vector<Layer> layers;
};

class TttModel {
 public:
  // A Hugging Face folder: config.json and model.safetensors (F32 tensors).
  static Expected<std::unique_ptr<TttModel>> load(const std::string& folder);

  const TttConfig& config() const { return config_; }

  // The state before any token: every head's inner model at its learned initial weights.
  TttState initial_state() const;
  // Feeds `tokens` after what `state` has seen, one at a time; `logits` gets [tokens, vocab].
  Status forward(TttState& state, std::span<const int32_t> tokens, std::vector<float>& logits) const;

 private:
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
  };
  TttModel() = default;
  // One token through layer `l`: x [C] updated in place.
  void layer_step(size_t l, TttState::Layer& state, int64_t position, std::vector<float>& x) const;
  void ttt_mixer(const Layer& layer, TttState::Layer& state, int64_t position, std::span<const float> normed,
                 std::span<float> out) const;

  TttConfig config_;
  std::vector<float> embedding_;  // [vocab, C]
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;  // [C]
  std::vector<float> lm_head_;     // [vocab, C]; empty when tied
};

}  // namespace draftwise
