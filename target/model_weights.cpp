#include "target/model_weights.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "kernels/cpu/dequantize.h"

namespace draftwise {

std::vector<DecoderTensorSpec> decoder_tensor_specs(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_rows = config.num_heads * config.head_dim;
  const int64_t kv_rows = config.num_kv_heads * config.head_dim;
  const int64_t ffn = config.intermediate_size;
  std::vector<DecoderTensorSpec> needed;
  needed.push_back({"model.embed_tokens.weight", {config.vocab_size, hidden}});
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const std::string prefix = fmt::format("model.layers.{}.", layer);
    const auto add = [&](const char* part, std::vector<int64_t> shape, int64_t rope_heads = 0) {
      needed.push_back({prefix + part, std::move(shape), rope_heads, layer, part});
    };
    add("input_layernorm.weight", {hidden});
    add("self_attn.q_proj.weight", {q_rows, hidden}, config.num_heads);
    add("self_attn.k_proj.weight", {kv_rows, hidden}, config.num_kv_heads);
    add("self_attn.v_proj.weight", {kv_rows, hidden});
    add("self_attn.o_proj.weight", {hidden, q_rows});
    if (config.attention_qkv_bias) {
      add("self_attn.q_proj.bias", {q_rows}, config.num_heads);
      add("self_attn.k_proj.bias", {kv_rows}, config.num_kv_heads);
      add("self_attn.v_proj.bias", {kv_rows});
    }
    if (config.attention_out_bias) add("self_attn.o_proj.bias", {hidden});
    add("post_attention_layernorm.weight", {hidden});
    add("mlp.gate_proj.weight", {ffn, hidden});
    add("mlp.up_proj.weight", {ffn, hidden});
    add("mlp.down_proj.weight", {hidden, ffn});
  }
  needed.push_back({"model.norm.weight", {hidden}});
  if (!config.tie_word_embeddings)
    needed.push_back({"lm_head.weight", {config.vocab_size, hidden}});
  return needed;
}

double decoder_parameter_count(const ModelConfig& config) {
  const double hidden = static_cast<double>(config.hidden_size);
  const double q_rows = static_cast<double>(config.num_heads * config.head_dim);
  const double kv_rows = static_cast<double>(config.num_kv_heads * config.head_dim);
  const double ffn = static_cast<double>(config.intermediate_size);
  double per_layer = 2 * hidden + 2 * q_rows * hidden + 2 * kv_rows * hidden + 3 * ffn * hidden;
  if (config.attention_qkv_bias) per_layer += q_rows + 2 * kv_rows;
  if (config.attention_out_bias) per_layer += hidden;
  const double embedding = static_cast<double>(config.vocab_size) * hidden;
  return embedding * (config.tie_word_embeddings ? 1 : 2) + hidden +
         per_layer * static_cast<double>(config.num_layers);
}

std::string gguf_tensor_name(std::string_view hf_name) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kGlobal = {{
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
  }};
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kLayer = {{
      {"input_layernorm.", "attn_norm."},
      {"self_attn.q_proj.", "attn_q."},
      {"self_attn.k_proj.", "attn_k."},
      {"self_attn.v_proj.", "attn_v."},
      {"self_attn.o_proj.", "attn_output."},
      {"post_attention_layernorm.", "ffn_norm."},
      {"mlp.gate_proj.", "ffn_gate."},
      {"mlp.up_proj.", "ffn_up."},
      {"mlp.down_proj.", "ffn_down."},
  }};
  for (const auto& [hf, gguf] : kGlobal) {
    if (hf_name == hf) return std::string(gguf);
  }
  constexpr std::string_view kLayers = "model.layers.";
  if (!hf_name.starts_with(kLayers)) return {};
  const std::string_view rest = hf_name.substr(kLayers.size());
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos) return {};
  const std::string_view layer = rest.substr(0, dot);
  const std::string_view part = rest.substr(dot + 1);
  for (const auto& [hf, gguf] : kLayer) {
    if (part.starts_with(hf)) {
      return fmt::format("blk.{}.{}{}", layer, gguf, part.substr(hf.size()));
    }
  }
  return {};
}

void unpermute_rope_rows(float* data, int64_t num_heads, int64_t head_dim, int64_t cols) {
  // GGUF row (h, 2j + i) holds HF row (h, i * head_dim/2 + j), i in {0, 1}.
  const int64_t half = head_dim / 2;
  const size_t row_bytes = static_cast<size_t>(cols) * sizeof(float);
  std::vector<float> head(static_cast<size_t>(head_dim * cols));
  for (int64_t h = 0; h < num_heads; ++h) {
    float* rows = data + h * head_dim * cols;
    std::memcpy(head.data(), rows, head.size() * sizeof(float));
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t i = 0; i < 2; ++i) {
        std::memcpy(rows + (i * half + j) * cols, head.data() + (2 * j + i) * cols, row_bytes);
      }
    }
  }
}

Expected<ModelWeights> ModelWeights::bind(const Checkpoint& checkpoint, const ModelConfig& config) {
  const bool gguf = checkpoint.format() == CheckpointFormat::gguf;
  // llama.cpp permutes Q/K rows for the llama architecture only.
  const bool rope_permuted = gguf && config.architecture == Architecture::llama;
  // Each layer has at least nine tensors; a config claiming more layers than the file
  // could hold is refused before the list of needed tensors is built.
  if (config.num_layers > static_cast<int64_t>(checkpoint.tensors().size()) / 9) {
    return make_error("{}: the config has {} layers but the file holds only {} tensors",
                      checkpoint.path(), config.num_layers, checkpoint.tensors().size());
  }
  ModelWeights weights;
  for (DecoderTensorSpec& needed : decoder_tensor_specs(config)) {
    const std::string stored_name = gguf ? gguf_tensor_name(needed.name) : needed.name;
    const CheckpointTensor* source = checkpoint.find(stored_name);
    if (source == nullptr) {
      return make_error("{}: missing tensor '{}'{}", checkpoint.path(), stored_name,
                        gguf ? fmt::format(" ({})", needed.name) : std::string());
    }
    if (source->shape != needed.shape) {
      return make_error("{}: tensor '{}' has shape {} but the config implies {}", checkpoint.path(),
                        stored_name, shape_to_string(source->shape), shape_to_string(needed.shape));
    }
    if (!tensor_type_traits(source->type).converts_to_f32) {
      return make_error("{}: tensor '{}' has type {}, which cannot be loaded as weights",
                        checkpoint.path(), stored_name, tensor_type_name(source->type));
    }
    WeightTensor tensor;
    tensor.name = std::move(needed.name);
    tensor.source = source;
    tensor.shape = std::move(needed.shape);
    tensor.rope_interleaved_heads = rope_permuted ? needed.rope_heads : 0;
    weights.index_.emplace(tensor.name, weights.tensors_.size());
    weights.tensors_.push_back(std::move(tensor));
  }
  return weights;
}

const WeightTensor* ModelWeights::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Expected<std::vector<float>> ModelWeights::load_f32(const WeightTensor& tensor) const {
  const CheckpointTensor& source = *tensor.source;
  const std::optional<int64_t> count =
      checked_element_count(tensor.shape.data(), tensor.shape.size());
  std::vector<float> values(static_cast<size_t>(*count));
  DW_TRY(dequantize_to_f32(source.type, source.data.data(), *count, values.data()));
  if (tensor.rope_interleaved_heads > 0) {
    const int64_t rows = tensor.shape[0];
    const int64_t cols = tensor.shape.size() == 2 ? tensor.shape[1] : 1;
    unpermute_rope_rows(values.data(), tensor.rope_interleaved_heads,
                        rows / tensor.rope_interleaved_heads, cols);
  }
  return values;
}

WeightLoader checkpoint_weight_loader(const ModelWeights& weights) {
  return [&weights](const DecoderTensorSpec& spec) -> Expected<std::vector<float>> {
    const WeightTensor* tensor = weights.find(spec.name);
    if (tensor == nullptr) return make_error("tensor '{}' is not bound", spec.name);
    return weights.load_f32(*tensor);
  };
}

}  // namespace draftwise
