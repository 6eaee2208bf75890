#include "target/model_config.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "kernels/mapped_file.h"
#include "target/checkpoint.h"
#include "target/gguf_reader.h"
#include "target/json_brief.h"

namespace draftwise {
namespace {

using Json = nlohmann::json;

// An integer that fits int64 (nlohmann would wrap larger unsigned values).
bool is_int64(const Json& value) {
  return value.is_number_integer() &&
         !(value.is_number_unsigned() &&
           value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
}

// Reads keys of a config.json object with type checks and messages naming the key.
class JsonFields {
 public:
  JsonFields(const Json& object, const std::string& name) : object_(object), name_(name) {}

  bool has(const char* key) const {
    const auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }

  Expected<int64_t> integer(const char* key) const {
    const auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) {
      return make_error("{}: missing '{}'", name_, key);
    }
    if (!is_int64(*it)) {
      return make_error("{}: '{}' must be an integer, got {}", name_, key, json_brief(*it));
    }
    return it->get<int64_t>();
  }

  Expected<int64_t> positive_integer(const char* key) const {
    DW_ASSIGN_OR_RETURN(int64_t value, integer(key));
    if (value <= 0) return make_error("{}: '{}' must be positive, got {}", name_, key, value);
    return value;
  }

  Expected<int64_t> positive_integer_or(const char* key, int64_t fallback) const {
    return has(key) ? positive_integer(key) : Expected<int64_t>(fallback);
  }

  Expected<double> number_or(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const Json& value = object_.at(key);
    if (!value.is_number()) {
      return make_error("{}: '{}' must be a number, got {}", name_, key, json_brief(value));
    }
    return value.get<double>();
  }

  Expected<bool> boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const Json& value = object_.at(key);
    if (!value.is_boolean()) {
      return make_error("{}: '{}' must be true or false, got {}", name_, key, json_brief(value));
    }
    return value.get<bool>();
  }

  Expected<std::string> string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const Json& value = object_.at(key);
    if (!value.is_string()) {
      return make_error("{}: '{}' must be a string, got {}", name_, key, json_brief(value));
    }
    return value.get<std::string>();
  }

 private:
  const Json& object_;
  const std::string& name_;
};

Expected<Architecture> hf_architecture(const Json& config, const std::string& name) {
  std::string declared;
  const auto architectures = config.find("architectures");
  if (architectures != config.end() && architectures->is_array() && !architectures->empty() &&
      (*architectures)[0].is_string()) {
    declared = (*architectures)[0].get<std::string>();
    if (declared == "LlamaForCausalLM") return Architecture::llama;
    if (declared == "MistralForCausalLM") return Architecture::mistral;
    if (declared == "Qwen2ForCausalLM") return Architecture::qwen2;
  } else if (config.contains("model_type") && config["model_type"].is_string()) {
    declared = config["model_type"].get<std::string>();
    if (declared == "llama") return Architecture::llama;
    if (declared == "mistral") return Architecture::mistral;
    if (declared == "qwen2") return Architecture::qwen2;
  }
  if (declared.empty()) return make_error("{}: missing 'architectures' and 'model_type'", name);
  return make_error(
      "{}: architecture '{}' is not supported (LlamaForCausalLM, "
      "MistralForCausalLM, Qwen2ForCausalLM)",
      name, declared);
}

// `key` is "rope_scaling" (transformers 4) or "rope_parameters" (transformers 5, which also
// moves rope_theta there).
Expected<RopeScaling> hf_rope_scaling(const Json& config, const std::string& name,
                                      std::string_view key) {
  RopeScaling scaling;
  const auto it = config.find(std::string(key));
  if (it == config.end() || it->is_null()) return scaling;
  if (!it->is_object()) return make_error("{}: '{}' must be an object or null", name, key);
  const std::string key_name = fmt::format("{} {}", name, key);
  const JsonFields fields(*it, key_name);
  DW_ASSIGN_OR_RETURN(std::string type, fields.string_or("rope_type", ""));
  if (type.empty()) {
    DW_ASSIGN_OR_RETURN(type, fields.string_or("type", "default"));
  }
  if (type == "default") return scaling;
  if (type == "linear") {
    scaling.type = RopeScalingType::linear;
    DW_ASSIGN_OR_RETURN(scaling.factor, fields.number_or("factor", 1.0));
  } else if (type == "llama3") {
    scaling.type = RopeScalingType::llama3;
    DW_ASSIGN_OR_RETURN(scaling.factor, fields.number_or("factor", 8.0));
    DW_ASSIGN_OR_RETURN(scaling.low_freq_factor, fields.number_or("low_freq_factor", 1.0));
    DW_ASSIGN_OR_RETURN(scaling.high_freq_factor, fields.number_or("high_freq_factor", 4.0));
    DW_ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                        fields.positive_integer_or("original_max_position_embeddings", 8192));
    if (!(scaling.high_freq_factor > scaling.low_freq_factor)) {
      return make_error("{}: high_freq_factor must exceed low_freq_factor", key_name);
    }
  } else {
    return make_error("{}: type '{}' is not supported (default, linear, llama3)", key_name, type);
  }
  if (!(scaling.factor > 0) || !std::isfinite(scaling.factor)) {
    return make_error("{}: factor must be positive", key_name);
  }
  return scaling;
}

// Shared checks of a config read from either source.
Status validate(const ModelConfig& config, const std::string& name) {
  // Extents up to 2^31 keep every product of two (a weight's element count) within int64.
  constexpr int64_t kMaxExtent = std::numeric_limits<int32_t>::max();
  for (const auto& [what, value] : {std::pair{"vocabulary size", config.vocab_size},
                                    {"hidden size", config.hidden_size},
                                    {"FFN size", config.intermediate_size},
                                    {"layer count", config.num_layers},
                                    {"head count", config.num_heads},
                                    {"KV head count", config.num_kv_heads},
                                    {"head dimension", config.head_dim},
                                    {"context length", config.max_position_embeddings}}) {
    if (value > kMaxExtent) {
      return make_error("{}: {} {} is larger than {}", name, what, value, kMaxExtent);
    }
  }
  if (config.num_heads % config.num_kv_heads != 0) {
    return make_error("{}: {} attention heads are not a multiple of {} key/value heads", name,
                      config.num_heads, config.num_kv_heads);
  }
  if (config.head_dim % 2 != 0) {
    return make_error("{}: head dimension {} must be even for rotary embeddings", name,
                      config.head_dim);
  }
  if (!(config.rope_theta > 0) || !std::isfinite(config.rope_theta)) {
    return make_error("{}: rope_theta must be positive, got {}", name, config.rope_theta);
  }
  if (!(config.rms_norm_eps > 0) || !std::isfinite(config.rms_norm_eps)) {
    return make_error("{}: rms_norm_eps must be positive, got {}", name, config.rms_norm_eps);
  }
  for (const float factor : config.rope_scaling.freq_factors) {
    if (!(factor > 0) || !std::isfinite(factor)) {
      return make_error("{}: RoPE frequency factors must be positive and finite, got {}", name, factor);
    }
  }
  return {};
}

}  // namespace

std::string_view architecture_name(Architecture architecture) {
  switch (architecture) {
    case Architecture::llama:
      return "llama";
    case Architecture::mistral:
      return "mistral";
    case Architecture::qwen2:
      return "qwen2";
    case Architecture::ttt:
      return "ttt";
  }
  return "unknown";
}

std::string_view rope_scaling_name(RopeScalingType type) {
  switch (type) {
    case RopeScalingType::none:
      return "none";
    case RopeScalingType::linear:
      return "linear";
    case RopeScalingType::llama3:
      return "llama3";
    case RopeScalingType::freq_factors:
      return "freq_factors";
  }
  return "unknown";
}

Expected<ModelConfig> parse_hf_config(std::string_view json_text, const std::string& name) {
  Json json;
  try {
    json = Json::parse(json_text);
  } catch (const Json::exception& error) {
    return make_error("{}: not valid JSON: {}", name, error.what());
  }
  if (!json.is_object()) return make_error("{}: not a JSON object", name);
  const JsonFields fields(json, name);
  ModelConfig config;
  DW_ASSIGN_OR_RETURN(config.architecture, hf_architecture(json, name));
  DW_ASSIGN_OR_RETURN(config.vocab_size, fields.positive_integer("vocab_size"));
  DW_ASSIGN_OR_RETURN(config.hidden_size, fields.positive_integer("hidden_size"));
  DW_ASSIGN_OR_RETURN(config.intermediate_size, fields.positive_integer("intermediate_size"));
  DW_ASSIGN_OR_RETURN(config.num_layers, fields.positive_integer("num_hidden_layers"));
  DW_ASSIGN_OR_RETURN(config.num_heads, fields.positive_integer("num_attention_heads"));
  DW_ASSIGN_OR_RETURN(config.num_kv_heads,
                      fields.positive_integer_or("num_key_value_heads", config.num_heads));
  if (!fields.has("head_dim") && config.hidden_size % config.num_heads != 0) {
    return make_error(
        "{}: hidden_size {} is not a multiple of num_attention_heads {} and no "
        "head_dim is given",
        name, config.hidden_size, config.num_heads);
  }
  DW_ASSIGN_OR_RETURN(config.head_dim, fields.positive_integer_or(
                                           "head_dim", config.hidden_size / config.num_heads));
  DW_ASSIGN_OR_RETURN(config.max_position_embeddings,
                      fields.positive_integer_or("max_position_embeddings", 2048));
  DW_ASSIGN_OR_RETURN(config.rope_theta, fields.number_or("rope_theta", 10000.0));
  if (const auto parameters = json.find("rope_parameters");
      parameters != json.end() && !parameters->is_null()) {
    DW_ASSIGN_OR_RETURN(config.rope_scaling, hf_rope_scaling(json, name, "rope_parameters"));
    const std::string rope_name = name + " rope_parameters";
    const JsonFields rope_fields(*parameters, rope_name);
    DW_ASSIGN_OR_RETURN(config.rope_theta, rope_fields.number_or("rope_theta", config.rope_theta));
  } else {
    DW_ASSIGN_OR_RETURN(config.rope_scaling, hf_rope_scaling(json, name, "rope_scaling"));
  }
  DW_ASSIGN_OR_RETURN(config.rms_norm_eps, fields.number_or("rms_norm_eps", 1e-6));
  DW_ASSIGN_OR_RETURN(config.tie_word_embeddings, fields.boolean_or("tie_word_embeddings", false));

  DW_ASSIGN_OR_RETURN(std::string activation, fields.string_or("hidden_act", "silu"));
  if (activation != "silu") {
    return make_error("{}: hidden_act '{}' is not supported (silu)", name, activation);
  }
  DW_ASSIGN_OR_RETURN(bool mlp_bias, fields.boolean_or("mlp_bias", false));
  if (mlp_bias) return make_error("{}: mlp_bias is not supported", name);

  switch (config.architecture) {
    case Architecture::llama: {
      DW_ASSIGN_OR_RETURN(bool bias, fields.boolean_or("attention_bias", false));
      config.attention_qkv_bias = bias;
      config.attention_out_bias = bias;
      break;
    }
    case Architecture::qwen2: {
      config.attention_qkv_bias = true;
      DW_ASSIGN_OR_RETURN(bool sliding, fields.boolean_or("use_sliding_window", false));
      if (sliding) return make_error("{}: use_sliding_window is not supported for Qwen2", name);
      break;
    }
    case Architecture::mistral:
      if (fields.has("sliding_window")) {
        DW_ASSIGN_OR_RETURN(config.sliding_window, fields.positive_integer("sliding_window"));
      }
      break;
    case Architecture::ttt:  // not read from config.json here (parse_ttt_config)
      break;
  }

  if (fields.has("bos_token_id")) {
    DW_ASSIGN_OR_RETURN(config.bos_token_id, fields.integer("bos_token_id"));
  }
  if (const auto eos = json.find("eos_token_id"); eos != json.end() && !eos->is_null()) {
    const Json& ids = *eos;
    for (const Json& id : ids.is_array() ? ids : Json::array({ids})) {
      if (!is_int64(id)) {
        return make_error("{}: 'eos_token_id' must be an integer or a list of integers", name);
      }
      config.eos_token_ids.push_back(id.get<int64_t>());
    }
  }
  DW_TRY(validate(config, name));
  return config;
}

Expected<ModelConfig> load_hf_config(const std::string& path) {
  DW_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  return parse_hf_config(text, path);
}

namespace {

// GGUF metadata reads with defaults and range checks; messages name the file and key.
class GgufFields {
 public:
  explicit GgufFields(const GgufFile& gguf) : gguf_(gguf) {}

  Expected<int64_t> positive_integer(const std::string& key) const {
    DW_ASSIGN_OR_RETURN(std::optional<int64_t> value, gguf_.read_int(key));
    if (!value) return make_error("{}: missing metadata '{}'", gguf_.name(), key);
    if (*value <= 0) {
      return make_error("{}: metadata '{}' must be positive, got {}", gguf_.name(), key, *value);
    }
    return *value;
  }

  Expected<int64_t> positive_integer_or(const std::string& key, int64_t fallback) const {
    return gguf_.find(key) != nullptr ? positive_integer(key) : Expected<int64_t>(fallback);
  }

  Expected<double> number_or(const std::string& key, double fallback) const {
    DW_ASSIGN_OR_RETURN(std::optional<double> value, gguf_.read_float(key));
    return value.value_or(fallback);
  }

  Expected<std::string> string_or(const std::string& key, const std::string& fallback) const {
    DW_ASSIGN_OR_RETURN(std::optional<std::string> value, gguf_.read_string(key));
    return value.value_or(fallback);
  }

 private:
  const GgufFile& gguf_;
};

}  // namespace

Expected<ModelConfig> config_from_gguf(const GgufFile& gguf) {
  const std::string& name = gguf.name();
  const GgufFields fields(gguf);
  DW_ASSIGN_OR_RETURN(std::string arch, fields.string_or("general.architecture", ""));
  ModelConfig config;
  if (arch == "llama") {
    config.architecture = Architecture::llama;
  } else if (arch == "qwen2") {
    config.architecture = Architecture::qwen2;
  } else if (arch.empty()) {
    return make_error("{}: missing metadata 'general.architecture'", name);
  } else {
    return make_error("{}: GGUF architecture '{}' is not supported (llama, qwen2)", name, arch);
  }
  const std::string prefix = arch + ".";
  DW_ASSIGN_OR_RETURN(config.num_layers, fields.positive_integer(prefix + "block_count"));
  DW_ASSIGN_OR_RETURN(config.hidden_size, fields.positive_integer(prefix + "embedding_length"));
  DW_ASSIGN_OR_RETURN(config.intermediate_size,
                      fields.positive_integer(prefix + "feed_forward_length"));
  DW_ASSIGN_OR_RETURN(config.num_heads, fields.positive_integer(prefix + "attention.head_count"));
  DW_ASSIGN_OR_RETURN(
      config.num_kv_heads,
      fields.positive_integer_or(prefix + "attention.head_count_kv", config.num_heads));
  if (gguf.find(prefix + "attention.key_length") == nullptr &&
      config.hidden_size % config.num_heads != 0) {
    return make_error("{}: embedding length {} is not a multiple of {} heads", name,
                      config.hidden_size, config.num_heads);
  }
  DW_ASSIGN_OR_RETURN(config.head_dim,
                      fields.positive_integer_or(prefix + "attention.key_length",
                                                 config.hidden_size / config.num_heads));
  DW_ASSIGN_OR_RETURN(int64_t rope_dims,
                      fields.positive_integer_or(prefix + "rope.dimension_count", config.head_dim));
  if (rope_dims != config.head_dim) {
    return make_error("{}: partial rotary embeddings ({} of {} dimensions) are not supported", name,
                      rope_dims, config.head_dim);
  }
  DW_ASSIGN_OR_RETURN(config.max_position_embeddings,
                      fields.positive_integer_or(prefix + "context_length", 2048));
  DW_ASSIGN_OR_RETURN(config.rope_theta, fields.number_or(prefix + "rope.freq_base", 10000.0));
  DW_ASSIGN_OR_RETURN(config.rms_norm_eps,
                      fields.number_or(prefix + "attention.layer_norm_rms_epsilon", 1e-6));

  DW_ASSIGN_OR_RETURN(std::string scaling, fields.string_or(prefix + "rope.scaling.type", "none"));
  if (scaling == "linear") {
    config.rope_scaling.type = RopeScalingType::linear;
    DW_ASSIGN_OR_RETURN(config.rope_scaling.factor,
                        fields.number_or(prefix + "rope.scaling.factor", 1.0));
    if (!(config.rope_scaling.factor > 0)) {
      return make_error("{}: rope.scaling.factor must be positive", name);
    }
  } else if (scaling != "none") {
    return make_error("{}: RoPE scaling '{}' is not supported (none, linear)", name, scaling);
  }
  if (const GgufTensorInfo* freqs = gguf.find_tensor("rope_freqs.weight")) {
    if (freqs->type != TensorType::f32 ||
        freqs->shape != std::vector<int64_t>{config.head_dim / 2}) {
      return make_error("{}: rope_freqs.weight must be F32 [{}], got {} {}", name,
                        config.head_dim / 2, tensor_type_name(freqs->type),
                        shape_to_string(freqs->shape));
    }
    config.rope_scaling.type = RopeScalingType::freq_factors;
    config.rope_scaling.freq_factors.resize(static_cast<size_t>(config.head_dim / 2));
    std::memcpy(config.rope_scaling.freq_factors.data(), gguf.tensor_data(*freqs).data(),
                freqs->nbytes);
  }

  const GgufTensorInfo* embedding = gguf.find_tensor("token_embd.weight");
  if (embedding == nullptr) return make_error("{}: missing tensor 'token_embd.weight'", name);
  if (embedding->shape.size() != 2) {
    return make_error("{}: token_embd.weight must be 2-dimensional, got {}", name,
                      shape_to_string(embedding->shape));
  }
  config.vocab_size = embedding->shape[0];
  DW_ASSIGN_OR_RETURN(int64_t declared_vocab,
                      fields.positive_integer_or(prefix + "vocab_size", config.vocab_size));
  if (declared_vocab != config.vocab_size) {
    return make_error("{}: {}vocab_size is {} but token_embd.weight has {} rows", name, prefix,
                      declared_vocab, config.vocab_size);
  }
  config.tie_word_embeddings = gguf.find_tensor("output.weight") == nullptr;
  config.attention_qkv_bias = gguf.find_tensor("blk.0.attn_q.bias") != nullptr;
  config.attention_out_bias = gguf.find_tensor("blk.0.attn_output.bias") != nullptr;

  if (const GgufValue* bos = gguf.find("tokenizer.ggml.bos_token_id")) {
    config.bos_token_id = bos->as_int();
  }
  if (const GgufValue* eos = gguf.find("tokenizer.ggml.eos_token_id")) {
    if (const std::optional<int64_t> id = eos->as_int()) config.eos_token_ids.push_back(*id);
  }
  DW_TRY(validate(config, name));
  return config;
}

Expected<ModelConfig> load_model_config(const Checkpoint& checkpoint) {
  if (const GgufFile* gguf = checkpoint.gguf()) return config_from_gguf(*gguf);
  const std::string path = (std::filesystem::path(checkpoint.folder()) / "config.json").string();
  return load_hf_config(path);
}

}  // namespace draftwise
