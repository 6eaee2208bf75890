#include "tests/support/tiny_model.h"

#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "kernels/half.h"
#include "target/model_weights.h"
#include "tests/support/gguf_builder.h"
#include "tests/support/safetensors_builder.h"

namespace draftwise::testing {

TinyModel make_tiny_model(Architecture architecture, bool tied, uint64_t seed) {
  TinyModel model;
  ModelConfig& config = model.config;
  config.architecture = architecture;
  config.vocab_size = 64;
  config.hidden_size = 32;
  config.intermediate_size = 48;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 8;
  config.max_position_embeddings = 256;
  config.rope_theta = 10000.0;
  config.rms_norm_eps = 1e-5;
  config.tie_word_embeddings = tied;
  config.attention_qkv_bias = architecture == Architecture::qwen2;
  const int64_t hidden = 32, q_rows = 32, kv_rows = 16, ffn = 48;
  auto& shapes = model.shapes;
  shapes["model.embed_tokens.weight"] = {64, hidden};
  for (int layer = 0; layer < 2; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    shapes[prefix + "input_layernorm.weight"] = {hidden};
    shapes[prefix + "self_attn.q_proj.weight"] = {q_rows, hidden};
    shapes[prefix + "self_attn.k_proj.weight"] = {kv_rows, hidden};
    shapes[prefix + "self_attn.v_proj.weight"] = {kv_rows, hidden};
    shapes[prefix + "self_attn.o_proj.weight"] = {hidden, q_rows};
    if (config.attention_qkv_bias) {
      shapes[prefix + "self_attn.q_proj.bias"] = {q_rows};
      shapes[prefix + "self_attn.k_proj.bias"] = {kv_rows};
      shapes[prefix + "self_attn.v_proj.bias"] = {kv_rows};
    }
    shapes[prefix + "post_attention_layernorm.weight"] = {hidden};
    shapes[prefix + "mlp.gate_proj.weight"] = {ffn, hidden};
    shapes[prefix + "mlp.up_proj.weight"] = {ffn, hidden};
    shapes[prefix + "mlp.down_proj.weight"] = {hidden, ffn};
  }
  shapes["model.norm.weight"] = {hidden};
  if (!tied) shapes["lm_head.weight"] = {64, hidden};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (const auto& [name, shape] : shapes) {
    int64_t count = 1;
    for (const int64_t extent : shape) count *= extent;
    std::vector<float>& values = model.weights[name];
    for (int64_t i = 0; i < count; ++i) values.push_back(normal(rng));
  }
  return model;
}

std::string hf_config_json(const ModelConfig& config) {
  const char* architecture = config.architecture == Architecture::qwen2     ? "Qwen2ForCausalLM"
                             : config.architecture == Architecture::mistral ? "MistralForCausalLM"
                                                                            : "LlamaForCausalLM";
  nlohmann::json json{{"architectures", {architecture}},
                      {"vocab_size", config.vocab_size},
                      {"hidden_size", config.hidden_size},
                      {"intermediate_size", config.intermediate_size},
                      {"num_hidden_layers", config.num_layers},
                      {"num_attention_heads", config.num_heads},
                      {"num_key_value_heads", config.num_kv_heads},
                      {"max_position_embeddings", config.max_position_embeddings},
                      {"rope_theta", config.rope_theta},
                      {"rms_norm_eps", config.rms_norm_eps},
                      {"tie_word_embeddings", config.tie_word_embeddings},
                      {"hidden_act", "silu"}};
  return json.dump(2);
}

void write_safetensors_folder(const TinyModel& model, const std::filesystem::path& folder) {
  std::filesystem::create_directories(folder);
  SafetensorsBuilder builder;
  for (const auto& [name, values] : model.weights) {
    builder.add_tensor(name, "F32", model.shapes.at(name), f32_bytes(values));
  }
  std::ofstream(folder / "model.safetensors", std::ios::binary) << builder.build();
  std::ofstream(folder / "config.json") << hf_config_json(model.config);
}

std::vector<float> permute_like_llama_cpp(const std::vector<float>& rows, int64_t heads,
                                          int64_t cols) {
  const int64_t head_dim = static_cast<int64_t>(rows.size()) / cols / heads;
  const int64_t half = head_dim / 2;
  std::vector<float> out(rows.size());
  // out[h][j][i][:] = in[h][i][j][:]  (in viewed as [heads, 2, half, cols])
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < half; ++j) {
        for (int64_t c = 0; c < cols; ++c) {
          out[((h * half + j) * 2 + i) * cols + c] = rows[((h * 2 + i) * half + j) * cols + c];
        }
      }
    }
  }
  return out;
}

std::string tiny_model_gguf(const TinyModel& model, TensorType weight_type) {
  const ModelConfig& config = model.config;
  const std::string arch = config.architecture == Architecture::qwen2 ? "qwen2" : "llama";
  GgufBuilder builder;
  builder.add_string("general.architecture", arch);
  builder.add_u32(arch + ".block_count", static_cast<uint32_t>(config.num_layers));
  builder.add_u32(arch + ".embedding_length", static_cast<uint32_t>(config.hidden_size));
  builder.add_u32(arch + ".feed_forward_length", static_cast<uint32_t>(config.intermediate_size));
  builder.add_u32(arch + ".attention.head_count", static_cast<uint32_t>(config.num_heads));
  builder.add_u32(arch + ".attention.head_count_kv", static_cast<uint32_t>(config.num_kv_heads));
  builder.add_u32(arch + ".context_length", static_cast<uint32_t>(config.max_position_embeddings));
  builder.add_f32(arch + ".rope.freq_base", static_cast<float>(config.rope_theta));
  builder.add_f32(arch + ".attention.layer_norm_rms_epsilon",
                  static_cast<float>(config.rms_norm_eps));
  const bool permute = config.architecture == Architecture::llama;
  for (const auto& [name, values] : model.weights) {
    const std::vector<int64_t>& shape = model.shapes.at(name);
    std::vector<float> stored = values;
    const bool is_q = name.find("q_proj") != std::string::npos;
    const bool is_k = name.find("k_proj") != std::string::npos;
    if (permute && (is_q || is_k)) {
      const int64_t cols = shape.size() == 2 ? shape[1] : 1;
      stored = permute_like_llama_cpp(values, is_q ? config.num_heads : config.num_kv_heads, cols);
    }
    std::string bytes;
    if (shape.size() == 2 && weight_type == TensorType::f16) {
      for (const float value : stored) append_scalar<uint16_t>(bytes, f32_to_fp16(value));
    } else {
      bytes = f32_bytes(stored);
    }
    const TensorType type = shape.size() == 2 ? weight_type : TensorType::f32;
    builder.add_tensor(gguf_tensor_name(name), type, shape, bytes);
  }
  return builder.build();
}

}  // namespace draftwise::testing
