// Shape and hyper-parameters of a decoder-only transformer, read from a Hugging Face
// config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM) or from GGUF
// metadata (architectures `llama`, `qwen2`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace draftwise {

class Checkpoint;
class GgufFile;

// ttt: a TTT model (target/ttt_model.h), whose sequence mixers are TTT layers.
enum class Architecture { llama, mistral, qwen2, ttt };
std::string_view architecture_name(Architecture architecture);

enum class RopeScalingType {
  none,
  linear,        // positions divided by `factor`
  llama3,        // Llama 3.1 frequency-dependent scaling (low/high frequency factors)
  freq_factors,  // explicit per-frequency divisors (GGUF `rope_freqs.weight`)
};
std::string_view rope_scaling_name(RopeScalingType type);

struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  std::vector<float> freq_factors;  // [head_dim / 2], freq_factors type only
};

struct ModelConfig {
  Architecture architecture = Architecture::llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_qkv_bias = false;  // q/k/v projections have a bias (Qwen2; Llama attention_bias)
  bool attention_out_bias = false;  // o_proj has a bias (Llama attention_bias)
  std::optional<int64_t> sliding_window;  // Mistral; unset = full attention
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
};

// Parses the text of a config.json; `name` labels errors.
Expected<ModelConfig> parse_hf_config(std::string_view json_text, const std::string& name);
Expected<ModelConfig> load_hf_config(const std::string& path);

// Reads the config of a GGUF checkpoint from its metadata; tied embeddings, biases and
// RoPE frequency factors are read off the tensors present.
Expected<ModelConfig> config_from_gguf(const GgufFile& gguf);

// config.json of a safetensors checkpoint's folder, or the GGUF metadata.
Expected<ModelConfig> load_model_config(const Checkpoint& checkpoint);

}  // namespace draftwise
