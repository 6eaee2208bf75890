#include "target/ttt_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rope.h"
#include "kernels/host_memory.h"
#include "target/checkpoint.h"
#include "target/random_weights.h"

namespace draftwise {

namespace {

constexpr double kInnerNormEps = 1e-6;  // the inner LayerNorms and post_norm (TTT.md)

Expected<int64_t> positive_field(const nlohmann::json& config, const char* key, int64_t fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_number_integer() || config[key].get<int64_t>() <= 0) {
    return make_error("config.json: \"{}\" must be a positive integer", key);
  }
  return config[key].get<int64_t>();
}

Expected<double> number_field(const nlohmann::json& config, const char* key, double fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_number()) return make_error("config.json: \"{}\" must be a number", key);
  return config[key].get<double>();
}

Expected<bool> flag_field(const nlohmann::json& config, const char* key, bool fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_boolean()) return make_error("config.json: \"{}\" must be true or false", key);
  return config[key].get<bool>();
}

// y = W x for W [out, in] (the Hugging Face layout), with the CPU reference's dot products.
void matvec(std::span<const float> w, std::span<const float> x, int64_t out, std::span<float> y) {
  const int64_t in = static_cast<int64_t>(x.size());
  cpu::dot_rows(x.data(), w.data(), in, out, in, y.data());
}

void rms_norm(std::span<const float> x, std::span<const float> weight, double eps, std::span<float> y) {
  double sum = 0;
  for (const float v : x) sum += static_cast<double>(v) * v;
  const double scale = 1.0 / std::sqrt(sum / static_cast<double>(x.size()) + eps);
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(x[i] * scale) * weight[i];
}

// LayerNorm over x: y = γ x̂ + β; x̂ and 1/σ returned for the backward pass.
void layer_norm(std::span<const float> x, const float* gain, const float* bias, std::span<float> y,
                std::vector<double>* normalized = nullptr, double* inv_std = nullptr) {
  const size_t n = x.size();
  double mean = 0;
  for (const float v : x) mean += v;
  mean /= static_cast<double>(n);
  double var = 0;
  for (const float v : x) var += (v - mean) * (v - mean);
  var /= static_cast<double>(n);
  const double inv = 1.0 / std::sqrt(var + kInnerNormEps);
  if (normalized != nullptr) normalized->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double hat = (x[i] - mean) * inv;
    if (normalized != nullptr) (*normalized)[i] = hat;
    y[i] = static_cast<float>(hat * gain[i] + bias[i]);
  }
  if (inv_std != nullptr) *inv_std = inv;
}

constexpr double kGeluC = 0.7978845608028654;  // √(2/π)

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(kGeluC * (x + 0.044715 * x * x * x))); }

double gelu_tanh_derivative(double x) {
  const double u = kGeluC * (x + 0.044715 * x * x * x);
  const double t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kGeluC * (1.0 + 3.0 * 0.044715 * x * x);
}

// Causal depthwise convolution of one new input `u` [C] with the window of the last k − 1
// inputs (oldest first; updated): y[c] = Σ_m w[c][m] · u_{t−k+1+m}[c] + bias[c].
void causal_conv_step(std::span<const float> weight, std::span<const float> bias, int64_t kernel,
                      std::vector<float>& window, std::span<const float> u, std::span<float> y) {
  const size_t channels = u.size();
  const size_t past = static_cast<size_t>(kernel - 1);
  for (size_t c = 0; c < channels; ++c) {
    double sum = bias.empty() ? 0.0 : bias[c];
    for (size_t m = 0; m < past; ++m) sum += static_cast<double>(weight[c * (past + 1) + m]) * window[m * channels + c];
    sum += static_cast<double>(weight[c * (past + 1) + past]) * u[c];
    y[c] = static_cast<float>(sum);
  }
  // Shift the window by one input.
  if (past > 0) {
    std::memmove(window.data(), window.data() + channels, (past - 1) * channels * sizeof(float));
    std::memcpy(window.data() + (past - 1) * channels, u.data(), channels * sizeof(float));
  }
}

// ∂ℓ/∂z for ℓ = ½‖LN(z) − target‖² (LayerNorm with `gain`, `bias`): the analytic backward.
void inner_loss_gradient(std::span<const float> z, std::span<const double> target, const float* gain, const float* bias,
                         std::span<double> dz) {
  const size_t f = z.size();
  std::vector<float> y(f);
  std::vector<double> hat;
  double inv_std = 0;
  layer_norm(z, gain, bias, y, &hat, &inv_std);
  std::vector<double> dhat(f);
  double mean_dhat = 0, mean_dhat_hat = 0;
  for (size_t o = 0; o < f; ++o) {
    dhat[o] = (y[o] - target[o]) * gain[o];
    mean_dhat += dhat[o];
    mean_dhat_hat += dhat[o] * hat[o];
  }
  mean_dhat /= static_cast<double>(f);
  mean_dhat_hat /= static_cast<double>(f);
  for (size_t o = 0; o < f; ++o) dz[o] = inv_std * (dhat[o] - mean_dhat - hat[o] * mean_dhat_hat);
}

// RoPE in the interleaved pairing ((2j, 2j+1)) at `position`.
void rope_interleaved(std::span<float> v, int64_t position, double theta) {
  const size_t f = v.size();
  for (size_t j = 0; j < f / 2; ++j) {
    const double angle =
        static_cast<double>(position) * std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(f));
    const double c = std::cos(angle), s = std::sin(angle);
    const double a = v[2 * j], b = v[2 * j + 1];
    v[2 * j] = static_cast<float>(a * c - b * s);
    v[2 * j + 1] = static_cast<float>(a * s + b * c);
  }
}

}  // namespace

Expected<TttConfig> parse_ttt_config(const nlohmann::json& json) {
  if (!json.is_object()) return make_error("config.json: expected a JSON object");
  if (!json.contains("model_type") || json["model_type"] != "ttt") {
    return make_error("config.json: model_type is not \"ttt\"");
  }
  TttConfig config;
  DW_ASSIGN_OR_RETURN(config.vocab_size, positive_field(json, "vocab_size", config.vocab_size));
  DW_ASSIGN_OR_RETURN(config.hidden_size, positive_field(json, "hidden_size", config.hidden_size));
  DW_ASSIGN_OR_RETURN(config.intermediate_size, positive_field(json, "intermediate_size", config.intermediate_size));
  DW_ASSIGN_OR_RETURN(config.num_layers, positive_field(json, "num_hidden_layers", config.num_layers));
  DW_ASSIGN_OR_RETURN(config.num_heads, positive_field(json, "num_attention_heads", config.num_heads));
  DW_ASSIGN_OR_RETURN(config.mini_batch_size, positive_field(json, "mini_batch_size", config.mini_batch_size));
  DW_ASSIGN_OR_RETURN(config.conv_kernel, positive_field(json, "conv_kernel", config.conv_kernel));
  DW_ASSIGN_OR_RETURN(config.max_position_embeddings,
                      positive_field(json, "max_position_embeddings", config.max_position_embeddings));
  DW_ASSIGN_OR_RETURN(config.rms_norm_eps, number_field(json, "rms_norm_eps", config.rms_norm_eps));
  DW_ASSIGN_OR_RETURN(config.rope_theta, number_field(json, "rope_theta", config.rope_theta));
  DW_ASSIGN_OR_RETURN(config.ttt_base_lr, number_field(json, "ttt_base_lr", config.ttt_base_lr));
  DW_ASSIGN_OR_RETURN(config.tie_word_embeddings, flag_field(json, "tie_word_embeddings", config.tie_word_embeddings));
  DW_ASSIGN_OR_RETURN(config.use_gate, flag_field(json, "use_gate", config.use_gate));
  DW_ASSIGN_OR_RETURN(config.share_qk, flag_field(json, "share_qk", config.share_qk));
  DW_ASSIGN_OR_RETURN(config.pre_conv, flag_field(json, "pre_conv", config.pre_conv));
  if (json.contains("ttt_layer_type") && !json["ttt_layer_type"].is_string() && !json["ttt_layer_type"].is_null()) {
    return make_error("config.json: \"ttt_layer_type\" must be a string");
  }
  const std::string type =
      json.contains("ttt_layer_type") && json["ttt_layer_type"].is_string() ? json["ttt_layer_type"].get<std::string>() : "linear";
  if (type != "linear" && type != "mlp") {
    return make_error("config.json: \"ttt_layer_type\" must be \"linear\" or \"mlp\", got \"{}\"", type);
  }
  config.mlp_layers = type == "mlp";
  if (json.contains("bos_token_id") && !json["bos_token_id"].is_null()) {
    if (!json["bos_token_id"].is_number_integer()) return make_error("config.json: \"bos_token_id\" must be an integer");
    config.bos_token_id = json["bos_token_id"].get<int64_t>();
  }
  if (json.contains("eos_token_id") && !json["eos_token_id"].is_null()) {
    const nlohmann::json& eos = json["eos_token_id"];
    for (const nlohmann::json& id : eos.is_array() ? eos : nlohmann::json::array({eos})) {
      if (!id.is_number_integer()) return make_error("config.json: \"eos_token_id\" must be an integer or a list of them");
      config.eos_token_ids.push_back(id.get<int64_t>());
    }
  }
  if (json.contains("layer_types") && !json["layer_types"].is_null()) {
    const nlohmann::json& types = json["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != config.num_layers) {
      return make_error("config.json: \"layer_types\" must be a list of num_hidden_layers ({}) strings", config.num_layers);
    }
    for (const nlohmann::json& kind : types) {
      if (kind != "ttt" && kind != "attention") {
        return make_error("config.json: \"layer_types\" entries must be \"ttt\" or \"attention\", got {}", kind.dump());
      }
      config.attention_layers.push_back(kind == "attention");
    }
  }
  DW_ASSIGN_OR_RETURN(config.num_kv_heads, positive_field(json, "num_key_value_heads", config.num_heads));
  if (config.num_heads % config.num_kv_heads != 0) {
    return make_error("config.json: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                      config.num_heads, config.num_kv_heads);
  }
  if (config.hidden_size % config.num_heads != 0 || config.head_dim() % 2 != 0) {
    return make_error("config.json: hidden_size {} must split into num_attention_heads {} heads of an even width",
                      config.hidden_size, config.num_heads);
  }
  if (config.conv_kernel > 64) return make_error("config.json: \"conv_kernel\" {} is above 64", config.conv_kernel);
  if (config.mini_batch_size > 4096) {
    return make_error("config.json: \"mini_batch_size\" {} is above 4096", config.mini_batch_size);
  }
  if (!(config.rms_norm_eps > 0) || !(config.rope_theta > 0)) {
    return make_error("config.json: rms_norm_eps and rope_theta must be positive");
  }
  return config;
}

bool TttConfig::hybrid() const {
  return std::find(attention_layers.begin(), attention_layers.end(), true) != attention_layers.end();
}

TttState TttState::copy_without_caches() const {
  TttState copy;
  copy.position = position;
  copy.layers.reserve(layers.size());
  for (const Layer& layer : layers) {
    Layer own;
    own.heads = layer.heads;
    own.pre_conv_window = layer.pre_conv_window;
    own.qk_window = layer.qk_window;
    copy.layers.push_back(std::move(own));
  }
  return copy;
}

void TttState::take_caches(TttState& current) {
  for (size_t l = 0; l < layers.size() && l < current.layers.size(); ++l) {
    layers[l].keys = std::move(current.layers[l].keys);
    layers[l].values = std::move(current.layers[l].values);
  }
}

Expected<TttConfig> load_ttt_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error("{}: cannot be read", path);
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return make_error("{}: not valid JSON", path);
  Expected<TttConfig> config = parse_ttt_config(json);
  if (!config.ok()) return make_error("{}: {}", path, config.error().message);
  return config;
}

Expected<std::unique_ptr<TttModel>> TttModel::load(const std::string& folder) {
  DW_ASSIGN_OR_RETURN(const TttConfig config, load_ttt_config(folder + "/config.json"));
  DW_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::open(folder));
  // A tensor of exactly `count` elements (any shape that holds them, as the reference stores
  // some per-head vectors with unit axes), F32.
  return build(config, [&](const std::string& name, int64_t count) -> Expected<std::vector<float>> {
    const CheckpointTensor* tensor = checkpoint.find(name);
    if (tensor == nullptr) return make_error("{}: missing tensor {}", folder, name);
    int64_t elements = 1;
    for (const int64_t d : tensor->shape) elements *= d;
    if (elements != count) {
      return make_error("{}: tensor {} has shape {}, expected {} elements", folder, name,
                        shape_to_string(tensor->shape), count);
    }
    if (tensor->type != TensorType::f32) return make_error("{}: tensor {} is not F32", folder, name);
    std::vector<float> values(static_cast<size_t>(count));
    std::memcpy(values.data(), tensor->data.data(), values.size() * sizeof(float));
    return values;
  });
}

Expected<std::unique_ptr<TttModel>> TttModel::create_random(const TttConfig& config, uint64_t seed) {
  const WeightLoader random = random_weight_loader(seed);
  return build(config, [&](const std::string& name, int64_t count) -> Expected<std::vector<float>> {
    if (name.ends_with("ttt_norm_weight")) return std::vector<float>(static_cast<size_t>(count), 1.0f);
    return random(DecoderTensorSpec{name, {count}});
  });
}

int64_t ttt_parameter_count(const TttConfig& c) {
  const double C = static_cast<double>(c.hidden_size), f = static_cast<double>(c.head_dim());
  const double inner = static_cast<double>(c.inner_width()), heads = static_cast<double>(c.num_heads);
  const double per_layer = 5 * C * C + 3 * C * static_cast<double>(c.intermediate_size) + heads * C +
                           2 * heads * f * inner + 2 * C * static_cast<double>(c.conv_kernel) + 8 * C +
                           static_cast<double>(c.mini_batch_size);
  const double total = static_cast<double>(c.vocab_size) * C * (c.tie_word_embeddings ? 1 : 2) +
                       static_cast<double>(c.num_layers) * per_layer;
  return total > 9e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(total);
}

Expected<std::unique_ptr<TttModel>> TttModel::build(const TttConfig& config, const TttTensorSource& read) {
  // fp32 weights, before any is read.
  const int64_t parameters = ttt_parameter_count(config);
  if (const std::optional<int64_t> available = available_host_memory_bytes();
      available && parameters > *available / static_cast<int64_t>(sizeof(float))) {
    return make_error("the TTT model's {} parameters need {:.1f} GiB as fp32, more than the {:.1f} GiB of memory available",
                      parameters, static_cast<double>(parameters) * 4 / (1 << 30),
                      static_cast<double>(*available) / (1 << 30));
  }
  std::unique_ptr<TttModel> model(new TttModel());
  model->config_ = config;
  const TttConfig& c = model->config_;
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim(), inner = c.inner_width();
  DW_ASSIGN_OR_RETURN(model->embedding_, read("model.embed_tokens.weight", c.vocab_size * C));
  DW_ASSIGN_OR_RETURN(model->final_norm_, read("model.norm.weight", C));
  if (!c.tie_word_embeddings) {
    DW_ASSIGN_OR_RETURN(model->lm_head_, read("lm_head.weight", c.vocab_size * C));
  }
  for (int64_t j = 0; j < f / 2; ++j) {
    model->inv_freq_.push_back(static_cast<float>(1.0 / std::pow(c.rope_theta, 2.0 * static_cast<double>(j) / static_cast<double>(f))));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    const std::string s = p + "seq_modeling_block.";
    Layer layer;
    DW_ASSIGN_OR_RETURN(layer.seq_norm, read(p + "seq_norm.weight", C));
    DW_ASSIGN_OR_RETURN(layer.ffn_norm, read(p + "ffn_norm.weight", C));
    DW_ASSIGN_OR_RETURN(layer.gate_proj, read(p + "mlp.gate_proj.weight", c.intermediate_size * C));
    DW_ASSIGN_OR_RETURN(layer.up_proj, read(p + "mlp.up_proj.weight", c.intermediate_size * C));
    DW_ASSIGN_OR_RETURN(layer.down_proj, read(p + "mlp.down_proj.weight", C * c.intermediate_size));
    if (c.is_attention(static_cast<size_t>(i))) {
      const int64_t kv = c.num_kv_heads * f;
      layer.attention = true;
      DW_ASSIGN_OR_RETURN(layer.q_proj, read(p + "self_attn.q_proj.weight", C * C));
      DW_ASSIGN_OR_RETURN(layer.k_proj, read(p + "self_attn.k_proj.weight", kv * C));
      DW_ASSIGN_OR_RETURN(layer.v_proj, read(p + "self_attn.v_proj.weight", kv * C));
      DW_ASSIGN_OR_RETURN(layer.o_proj, read(p + "self_attn.o_proj.weight", C * C));
      model->layers_.push_back(std::move(layer));
      continue;
    }
    if (c.pre_conv) {
      DW_ASSIGN_OR_RETURN(layer.conv_norm, read(p + "conv.norm.weight", C));
      DW_ASSIGN_OR_RETURN(layer.conv_weight, read(p + "conv.conv.weight", C * c.conv_kernel));
      DW_ASSIGN_OR_RETURN(layer.conv_bias, read(p + "conv.conv.bias", C));
    }
    DW_ASSIGN_OR_RETURN(layer.q_proj, read(s + "q_proj.weight", C * C));
    if (c.share_qk) {
      DW_ASSIGN_OR_RETURN(layer.conv_q_weight, read(s + "conv_q.weight", C * c.conv_kernel));
      DW_ASSIGN_OR_RETURN(layer.conv_q_bias, read(s + "conv_q.bias", C));
      DW_ASSIGN_OR_RETURN(layer.conv_k_weight, read(s + "conv_k.weight", C * c.conv_kernel));
      DW_ASSIGN_OR_RETURN(layer.conv_k_bias, read(s + "conv_k.bias", C));
    } else {
      DW_ASSIGN_OR_RETURN(layer.k_proj, read(s + "k_proj.weight", C * C));
    }
    DW_ASSIGN_OR_RETURN(layer.v_proj, read(s + "v_proj.weight", C * C));
    DW_ASSIGN_OR_RETURN(layer.o_proj, read(s + "o_proj.weight", C * C));
    if (c.use_gate) {
      DW_ASSIGN_OR_RETURN(layer.g_proj, read(s + "g_proj.weight", C * C));
    }
    DW_ASSIGN_OR_RETURN(layer.token_idx, read(s + "learnable_token_idx", c.mini_batch_size));
    DW_ASSIGN_OR_RETURN(layer.lr_weight, read(s + "learnable_ttt_lr_weight", nh * C));
    DW_ASSIGN_OR_RETURN(layer.lr_bias, read(s + "learnable_ttt_lr_bias", nh));
    DW_ASSIGN_OR_RETURN(layer.ttt_norm_weight, read(s + "ttt_norm_weight", nh * f));
    DW_ASSIGN_OR_RETURN(layer.ttt_norm_bias, read(s + "ttt_norm_bias", nh * f));
    DW_ASSIGN_OR_RETURN(layer.post_norm_weight, read(s + "post_norm.weight", C));
    DW_ASSIGN_OR_RETURN(layer.post_norm_bias, read(s + "post_norm.bias", C));
    DW_ASSIGN_OR_RETURN(layer.w1, read(s + "W1", nh * f * inner));
    DW_ASSIGN_OR_RETURN(layer.b1, read(s + "b1", nh * inner));
    if (c.mlp_layers) {
      DW_ASSIGN_OR_RETURN(layer.w2, read(s + "W2", nh * inner * f));
      DW_ASSIGN_OR_RETURN(layer.b2, read(s + "b2", nh * f));
    }
    model->layers_.push_back(std::move(layer));
  }
  return model;
}

TttState TttModel::initial_state() const {
  const TttConfig& c = config_;
  const size_t f = static_cast<size_t>(c.head_dim()), inner = static_cast<size_t>(c.inner_width());
  const size_t window = static_cast<size_t>((c.conv_kernel - 1) * c.hidden_size);
  TttState state;
  for (const Layer& layer : layers_) {
    TttState::Layer own;
    if (layer.attention) {
      state.layers.push_back(std::move(own));
      continue;
    }
    for (size_t h = 0; h < static_cast<size_t>(c.num_heads); ++h) {
      TttState::Head head;
      head.w1.assign(layer.w1.begin() + static_cast<std::ptrdiff_t>(h * f * inner),
                     layer.w1.begin() + static_cast<std::ptrdiff_t>((h + 1) * f * inner));
      head.b1.assign(layer.b1.begin() + static_cast<std::ptrdiff_t>(h * inner),
                     layer.b1.begin() + static_cast<std::ptrdiff_t>((h + 1) * inner));
      head.g_w1.assign(head.w1.size(), 0.0f);
      head.g_b1.assign(head.b1.size(), 0.0f);
      if (c.mlp_layers) {
        head.w2.assign(layer.w2.begin() + static_cast<std::ptrdiff_t>(h * inner * f),
                       layer.w2.begin() + static_cast<std::ptrdiff_t>((h + 1) * inner * f));
        head.b2.assign(layer.b2.begin() + static_cast<std::ptrdiff_t>(h * f),
                       layer.b2.begin() + static_cast<std::ptrdiff_t>((h + 1) * f));
        head.g_w2.assign(head.w2.size(), 0.0f);
        head.g_b2.assign(head.b2.size(), 0.0f);
      }
      own.heads.push_back(std::move(head));
    }
    if (c.pre_conv) own.pre_conv_window.assign(window, 0.0f);
    if (c.share_qk) own.qk_window.assign(window, 0.0f);
    state.layers.push_back(std::move(own));
  }
  return state;
}

// The TTT layer on one token (TTT.md steps 1–9, primal form): `normed` [C] → `out` [C].
TttModel::Projected TttModel::project(const Layer& layer, TttState::Layer& state, int64_t index,
                                      std::span<const float> normed) const {
  const TttConfig& c = config_;
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim();
  Projected p;
  p.q.resize(static_cast<size_t>(C));
  p.k.resize(static_cast<size_t>(C));
  p.v.resize(static_cast<size_t>(C));
  matvec(layer.q_proj, normed, C, p.q);
  if (c.share_qk) {
    const std::vector<float> shared = p.q;
    std::vector<float> window = state.qk_window;
    causal_conv_step(layer.conv_q_weight, layer.conv_q_bias, c.conv_kernel, window, shared, p.q);
    causal_conv_step(layer.conv_k_weight, layer.conv_k_bias, c.conv_kernel, state.qk_window, shared, p.k);
  } else {
    matvec(layer.k_proj, normed, C, p.k);
  }
  matvec(layer.v_proj, normed, C, p.v);
  for (int64_t h = 0; h < nh; ++h) {
    rope_interleaved(std::span(p.q.data() + h * f, static_cast<size_t>(f)), index, c.rope_theta);
    rope_interleaved(std::span(p.k.data() + h * f, static_cast<size_t>(f)), index, c.rope_theta);
    double gate = layer.lr_bias[static_cast<size_t>(h)];
    for (int64_t i = 0; i < C; ++i) {
      gate += static_cast<double>(layer.lr_weight[static_cast<size_t>(h * C + i)]) * normed[static_cast<size_t>(i)];
    }
    p.lr.push_back(c.ttt_base_lr / (1.0 + std::exp(-gate)) / static_cast<double>(f));
  }
  return p;
}

double TttModel::token_factor(const Layer& layer, int64_t index) const {
  return std::max(0.0, 1.0 / static_cast<double>(index + 1) + layer.token_idx[static_cast<size_t>(index)]);
}

void TttModel::finish_mixer(const Layer& layer, std::span<const float> normed, std::span<const float> heads_out,
                            std::span<float> out) const {
  const TttConfig& c = config_;
  const int64_t C = c.hidden_size;
  std::vector<float> normed_out(static_cast<size_t>(C));
  layer_norm(heads_out, layer.post_norm_weight.data(), layer.post_norm_bias.data(), normed_out);
  if (c.use_gate) {
    std::vector<float> gate(static_cast<size_t>(C));
    matvec(layer.g_proj, normed, C, gate);
    for (int64_t i = 0; i < C; ++i) {
      normed_out[static_cast<size_t>(i)] =
          static_cast<float>(normed_out[static_cast<size_t>(i)] * gelu_tanh(gate[static_cast<size_t>(i)]));
    }
  }
  matvec(layer.o_proj, normed_out, C, out);
}

void TttModel::ttt_mixer(const Layer& layer, TttState::Layer& state, int64_t position, std::span<const float> normed,
                         std::span<float> out) const {
  const TttConfig& c = config_;
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim(), inner = c.inner_width();
  const int64_t b = c.mini_batch_size;
  const int64_t index = position % b;  // inside the mini-batch
  Projected p = project(layer, state, index, normed);
  const double factor = token_factor(layer, index);
  std::vector<float> heads_out(static_cast<size_t>(C));
  std::vector<double> z1(static_cast<size_t>(inner)), a1(static_cast<size_t>(inner)), dz1(static_cast<size_t>(inner));
  std::vector<float> z(static_cast<size_t>(f)), y(static_cast<size_t>(f));
  for (int64_t h = 0; h < nh; ++h) {
    TttState::Head& head = state.heads[static_cast<size_t>(h)];
    const std::span<const float> qh(p.q.data() + h * f, static_cast<size_t>(f));
    const std::span<const float> kh(p.k.data() + h * f, static_cast<size_t>(f));
    const std::span<const float> vh(p.v.data() + h * f, static_cast<size_t>(f));
    const double lr = p.lr[static_cast<size_t>(h)];
    const float* gain = layer.ttt_norm_weight.data() + h * f;
    const float* bias = layer.ttt_norm_bias.data() + h * f;
    // g(z; W) for the inner model at weights (w1, b1, w2, b2): into z [f], keeping the
    // MLP's first-layer pre-activations and activations.
    const auto inner_model = [&](std::span<const float> input, const std::vector<float>& w1, const std::vector<float>& b1,
                                 const std::vector<float>& w2, const std::vector<float>& b2) {
      for (int64_t o = 0; o < inner; ++o) {
        double sum = b1[static_cast<size_t>(o)];
        for (int64_t i = 0; i < f; ++i) sum += static_cast<double>(input[static_cast<size_t>(i)]) * w1[static_cast<size_t>(i * inner + o)];
        z1[static_cast<size_t>(o)] = sum;
        a1[static_cast<size_t>(o)] = c.mlp_layers ? gelu_tanh(sum) : sum;
      }
      if (!c.mlp_layers) {
        for (int64_t o = 0; o < f; ++o) z[static_cast<size_t>(o)] = static_cast<float>(z1[static_cast<size_t>(o)]);
        return;
      }
      for (int64_t o = 0; o < f; ++o) {
        double sum = b2[static_cast<size_t>(o)];
        for (int64_t a = 0; a < inner; ++a) sum += a1[static_cast<size_t>(a)] * w2[static_cast<size_t>(a * f + o)];
        z[static_cast<size_t>(o)] = static_cast<float>(sum);
      }
    };
    // ∇ℓ at the mini-batch's start weights, added to the sum with this token's rate.
    inner_model(kh, head.w1, head.b1, head.w2, head.b2);
    std::vector<double> target(static_cast<size_t>(f)), dz(static_cast<size_t>(f));
    for (int64_t o = 0; o < f; ++o) {
      target[static_cast<size_t>(o)] = static_cast<double>(vh[static_cast<size_t>(o)]) - kh[static_cast<size_t>(o)];
    }
    inner_loss_gradient(z, target, gain, bias, dz);
    if (c.mlp_layers) {
      for (int64_t a = 0; a < inner; ++a) {
        double da = 0;
        for (int64_t o = 0; o < f; ++o) {
          head.g_w2[static_cast<size_t>(a * f + o)] += static_cast<float>(lr * a1[static_cast<size_t>(a)] * dz[static_cast<size_t>(o)]);
          da += static_cast<double>(head.w2[static_cast<size_t>(a * f + o)]) * dz[static_cast<size_t>(o)];
        }
        dz1[static_cast<size_t>(a)] = da * gelu_tanh_derivative(z1[static_cast<size_t>(a)]);
      }
      for (int64_t o = 0; o < f; ++o) head.g_b2[static_cast<size_t>(o)] += static_cast<float>(lr * dz[static_cast<size_t>(o)]);
    } else {
      for (int64_t o = 0; o < f; ++o) dz1[static_cast<size_t>(o)] = dz[static_cast<size_t>(o)];
    }
    for (int64_t i = 0; i < f; ++i) {
      for (int64_t o = 0; o < inner; ++o) {
        head.g_w1[static_cast<size_t>(i * inner + o)] += static_cast<float>(lr * kh[static_cast<size_t>(i)] * dz1[static_cast<size_t>(o)]);
      }
    }
    for (int64_t o = 0; o < inner; ++o) head.g_b1[static_cast<size_t>(o)] += static_cast<float>(lr * dz1[static_cast<size_t>(o)]);
    // This token's weights, W_state − tok_i · Grad, and its output Q + LN(g(Q; W_i)).
    const auto stepped = [&](const std::vector<float>& w, const std::vector<float>& g) {
      std::vector<float> out_w(w.size());
      for (size_t i = 0; i < w.size(); ++i) out_w[i] = static_cast<float>(w[i] - factor * g[i]);
      return out_w;
    };
    const std::vector<float> w1 = stepped(head.w1, head.g_w1), b1 = stepped(head.b1, head.g_b1);
    const std::vector<float> w2 = c.mlp_layers ? stepped(head.w2, head.g_w2) : std::vector<float>();
    const std::vector<float> b2 = c.mlp_layers ? stepped(head.b2, head.g_b2) : std::vector<float>();
    inner_model(qh, w1, b1, w2, b2);
    layer_norm(z, gain, bias, y);
    for (int64_t o = 0; o < f; ++o) heads_out[static_cast<size_t>(h * f + o)] = qh[static_cast<size_t>(o)] + y[static_cast<size_t>(o)];
    // The end of a mini-batch commits its weights.
    if (index == b - 1) {
      head.w1 = w1;
      head.b1 = b1;
      std::fill(head.g_w1.begin(), head.g_w1.end(), 0.0f);
      std::fill(head.g_b1.begin(), head.g_b1.end(), 0.0f);
      if (c.mlp_layers) {
        head.w2 = w2;
        head.b2 = b2;
        std::fill(head.g_w2.begin(), head.g_w2.end(), 0.0f);
        std::fill(head.g_b2.begin(), head.g_b2.end(), 0.0f);
      }
    }
  }
  finish_mixer(layer, normed, heads_out, out);
}

void ttt_linear_dual(std::span<const double> q, std::span<const double> k, std::span<const double> g,
                     std::span<const double> eta, std::span<const double> w0, std::span<const double> b0, int64_t n,
                     int64_t f_in, int64_t f_out, std::span<double> out) {
  const size_t I = static_cast<size_t>(f_in), O = static_cast<size_t>(f_out);
  for (int64_t i = 0; i < n; ++i) {
    double* row = out.data() + static_cast<size_t>(i) * O;
    // X_q,i W0 + b0
    for (size_t o = 0; o < O; ++o) row[o] = b0.empty() ? 0.0 : b0[o];
    for (size_t m = 0; m < I; ++m) {
      const double qm = q[static_cast<size_t>(i) * I + m];
      for (size_t o = 0; o < O; ++o) row[o] += qm * w0[m * O + o];
    }
    // − Σ_{j≤i} η_ij (X_q,i·X_k,j [+ 1 for the bias]) G_j
    for (int64_t j = 0; j <= i; ++j) {
      double a = 0;
      for (size_t m = 0; m < I; ++m) a += q[static_cast<size_t>(i) * I + m] * k[static_cast<size_t>(j) * I + m];
      const double weight = eta[static_cast<size_t>(i * n + j)] * (a + (b0.empty() ? 0.0 : 1.0));
      for (size_t o = 0; o < O; ++o) row[o] -= weight * g[static_cast<size_t>(j) * O + o];
    }
  }
}

// W0 −= Σ_j η_(n−1),j X_jᵀ G_j and b0 −= Σ_j η_(n−1),j G_j: the weights after a whole mini-batch.
void dual_commit(std::span<const double> x, std::span<const double> g, std::span<const double> eta, size_t n, size_t f_in,
                 size_t f_out, std::vector<double>& w0, std::vector<double>& b0) {
  for (size_t j = 0; j < n; ++j) {
    const double weight = eta[(n - 1) * n + j];
    for (size_t m = 0; m < f_in; ++m) {
      for (size_t o = 0; o < f_out; ++o) w0[m * f_out + o] -= weight * x[j * f_in + m] * g[j * f_out + o];
    }
    for (size_t o = 0; o < f_out; ++o) b0[o] -= weight * g[j * f_out + o];
  }
}

// One whole mini-batch (rows 0..b−1, the state at the mini-batch's start), every head in the
// dual form: the inner gradients at the start weights for all rows, then every row's output by
// matrix products over the mini-batch, and the weights carried to the next mini-batch. TTT-MLP
// does this map by map: Z̄1 from the queries, X̄2 = GELU(Z̄1), then Z̄2 from X̄2 against the keys'
// activations X2.
void TttModel::mixer_dual(const Layer& layer, TttState::Layer& state, std::span<const float> normed,
                          std::span<float> out) const {
  const TttConfig& c = config_;
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim(), n = c.mini_batch_size;
  const size_t F = static_cast<size_t>(f), N = static_cast<size_t>(n), A = static_cast<size_t>(c.inner_width());
  std::vector<Projected> rows;
  for (int64_t r = 0; r < n; ++r) rows.push_back(project(layer, state, r, normed.subspan(static_cast<size_t>(r * C), static_cast<size_t>(C))));
  std::vector<float> heads_out(static_cast<size_t>(n * C));
  std::vector<double> q(N * F), k(N * F), eta(N * N, 0.0);
  std::vector<double> z1(N * A), x2(N * A), g1(N * A), z2(N * F), g2(N * F);
  std::vector<double> z1bar(N * A), x2bar(N * A), zbar(N * F);
  std::vector<double> w1(F * A), b1(A), w2(c.mlp_layers ? A * F : 0), b2(c.mlp_layers ? F : 0);
  std::vector<float> zf(F), y(F);
  std::vector<double> target(F);
  for (int64_t h = 0; h < nh; ++h) {
    TttState::Head& head = state.heads[static_cast<size_t>(h)];
    const float* gain = layer.ttt_norm_weight.data() + h * f;
    const float* bias = layer.ttt_norm_bias.data() + h * f;
    std::copy(head.w1.begin(), head.w1.end(), w1.begin());
    std::copy(head.b1.begin(), head.b1.end(), b1.begin());
    std::copy(head.w2.begin(), head.w2.end(), w2.begin());
    std::copy(head.b2.begin(), head.b2.end(), b2.begin());
    for (size_t r = 0; r < N; ++r) {
      for (size_t m = 0; m < F; ++m) {
        q[r * F + m] = rows[r].q[static_cast<size_t>(h) * F + m];
        k[r * F + m] = rows[r].k[static_cast<size_t>(h) * F + m];
      }
      // The inner model at the start weights on K_r, and ∂ℓ_r/∂Z back through it.
      for (size_t a = 0; a < A; ++a) {
        double sum = b1[a];
        for (size_t m = 0; m < F; ++m) sum += k[r * F + m] * w1[m * A + a];
        z1[r * A + a] = sum;
        x2[r * A + a] = c.mlp_layers ? gelu_tanh(sum) : sum;
      }
      for (size_t o = 0; o < F; ++o) {
        double sum = c.mlp_layers ? b2[o] : z1[r * A + o];
        if (c.mlp_layers) {
          for (size_t a = 0; a < A; ++a) sum += x2[r * A + a] * w2[a * F + o];
        }
        z2[r * F + o] = sum;
        zf[o] = static_cast<float>(sum);
        target[o] = static_cast<double>(rows[r].v[static_cast<size_t>(h) * F + o]) - k[r * F + o];
      }
      inner_loss_gradient(zf, target, gain, bias, std::span(g2).subspan(r * F, F));
      for (size_t a = 0; a < A; ++a) {
        if (!c.mlp_layers) {
          g1[r * A + a] = g2[r * F + a];
          continue;
        }
        double da = 0;
        for (size_t o = 0; o < F; ++o) da += w2[a * F + o] * g2[r * F + o];
        g1[r * A + a] = da * gelu_tanh_derivative(z1[r * A + a]);
      }
      const double factor = token_factor(layer, static_cast<int64_t>(r));
      for (size_t j = 0; j <= r; ++j) eta[r * N + j] = factor * rows[j].lr[static_cast<size_t>(h)];
    }
    if (c.mlp_layers) {
      ttt_linear_dual(q, k, g1, eta, w1, b1, n, f, static_cast<int64_t>(A), z1bar);
      for (size_t i = 0; i < N * A; ++i) x2bar[i] = gelu_tanh(z1bar[i]);
      ttt_linear_dual(x2bar, x2, g2, eta, w2, b2, n, static_cast<int64_t>(A), f, zbar);
    } else {
      ttt_linear_dual(q, k, g1, eta, w1, b1, n, f, f, zbar);
    }
    for (size_t r = 0; r < N; ++r) {
      for (size_t o = 0; o < F; ++o) zf[o] = static_cast<float>(zbar[r * F + o]);
      layer_norm(zf, gain, bias, y);
      for (size_t o = 0; o < F; ++o) {
        heads_out[r * static_cast<size_t>(C) + static_cast<size_t>(h) * F + o] = static_cast<float>(q[r * F + o] + y[o]);
      }
    }
    dual_commit(k, g1, eta, N, F, A, w1, b1);
    if (c.mlp_layers) dual_commit(x2, g2, eta, N, A, F, w2, b2);
    std::transform(w1.begin(), w1.end(), head.w1.begin(), [](double v) { return static_cast<float>(v); });
    std::transform(b1.begin(), b1.end(), head.b1.begin(), [](double v) { return static_cast<float>(v); });
    std::transform(w2.begin(), w2.end(), head.w2.begin(), [](double v) { return static_cast<float>(v); });
    std::transform(b2.begin(), b2.end(), head.b2.begin(), [](double v) { return static_cast<float>(v); });
  }
  for (int64_t r = 0; r < n; ++r) {
    finish_mixer(layer, normed.subspan(static_cast<size_t>(r * C), static_cast<size_t>(C)),
                 std::span<const float>(heads_out).subspan(static_cast<size_t>(r * C), static_cast<size_t>(C)),
                 out.subspan(static_cast<size_t>(r * C), static_cast<size_t>(C)));
  }
}

void TttModel::attention_mixer(const Layer& layer, TttState::Layer& state, int64_t position, int64_t n,
                               std::span<const float> normed, std::span<float> out) const {
  const TttConfig& c = config_;
  const int64_t C = c.hidden_size, f = c.head_dim(), kv = c.num_kv_heads * f;
  const size_t rows = static_cast<size_t>(n);
  std::vector<float> q(rows * static_cast<size_t>(C)), heads(rows * static_cast<size_t>(C));
  // Rows [position, position + n) of the cache; what lies past them is stale.
  const size_t end = static_cast<size_t>((position + n) * kv);
  if (state.keys.size() < end) {
    state.keys.resize(std::max(end, 2 * state.keys.size()));
    state.values.resize(state.keys.size());
  }
  float* keys = state.keys.data() + position * kv;
  float* values = state.values.data() + position * kv;
  for (size_t r = 0; r < rows; ++r) {
    const std::span<const float> nr = normed.subspan(r * static_cast<size_t>(C), static_cast<size_t>(C));
    matvec(layer.q_proj, nr, C, std::span(q).subspan(r * static_cast<size_t>(C), static_cast<size_t>(C)));
    matvec(layer.k_proj, nr, kv, std::span(keys + r * static_cast<size_t>(kv), static_cast<size_t>(kv)));
    matvec(layer.v_proj, nr, kv, std::span(values + r * static_cast<size_t>(kv), static_cast<size_t>(kv)));
  }
  std::vector<int64_t> positions(rows);
  for (size_t r = 0; r < rows; ++r) positions[r] = position + static_cast<int64_t>(r);
  const int64_t half = f / 2;
  std::vector<float> cos(rows * static_cast<size_t>(half)), sin(cos.size());
  cpu::rope_tables(positions.data(), n, inv_freq_.data(), half, cos.data(), sin.data());
  cpu::apply_rope(q.data(), C, n, c.num_heads, f, cos.data(), sin.data(), cpu::RopePairing::half_split);
  cpu::apply_rope(keys, kv, n, c.num_kv_heads, f, cos.data(), sin.data(), cpu::RopePairing::half_split);
  cpu::AttentionShape shape;
  shape.num_heads = c.num_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = f;
  shape.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(f)));
  cpu::ThreadPool caller_only(1);
  cpu::attention(q.data(), state.keys.data(), state.values.data(), heads.data(), n, position, shape, caller_only);
  for (size_t r = 0; r < rows; ++r) {
    matvec(layer.o_proj, std::span<const float>(heads).subspan(r * static_cast<size_t>(C), static_cast<size_t>(C)), C,
           out.subspan(r * static_cast<size_t>(C), static_cast<size_t>(C)));
  }
}

// Layer l on `n` consecutive tokens from `position` (inside one mini-batch): x [n, C] updated.
void TttModel::layer_chunk(size_t l, TttState::Layer& state, int64_t position, int64_t n, std::span<float> x) const {
  const TttConfig& c = config_;
  const Layer& layer = layers_[l];
  const size_t C = static_cast<size_t>(c.hidden_size), rows = static_cast<size_t>(n);
  std::vector<float> normed(rows * C), delta(rows * C), conv(C);
  for (size_t r = 0; r < rows; ++r) {
    const std::span<float> xr(x.data() + r * C, C);
    const std::span<float> nr(normed.data() + r * C, C);
    if (c.pre_conv && !layer.attention) {
      rms_norm(xr, layer.conv_norm, c.rms_norm_eps, nr);
      causal_conv_step(layer.conv_weight, layer.conv_bias, c.conv_kernel, state.pre_conv_window, nr, conv);
      for (size_t i = 0; i < C; ++i) xr[i] += conv[i];
    }
    rms_norm(xr, layer.seq_norm, c.rms_norm_eps, nr);
  }
  const bool whole_mini_batch = position % c.mini_batch_size == 0 && n == c.mini_batch_size;
  if (layer.attention) {
    attention_mixer(layer, state, position, n, normed, delta);
  } else if (whole_mini_batch && dual_form_) {
    mixer_dual(layer, state, normed, delta);
  } else {
    for (size_t r = 0; r < rows; ++r) {
      ttt_mixer(layer, state, position + static_cast<int64_t>(r), std::span<const float>(normed).subspan(r * C, C),
                std::span(delta).subspan(r * C, C));
    }
  }
  const size_t ffn = static_cast<size_t>(c.intermediate_size);
  std::vector<float> gate(ffn), up(ffn), ffn_out(C);
  for (size_t r = 0; r < rows; ++r) {
    const std::span<float> xr(x.data() + r * C, C);
    for (size_t i = 0; i < C; ++i) xr[i] += delta[r * C + i];
    const std::span<float> nr(normed.data() + r * C, C);
    rms_norm(xr, layer.ffn_norm, c.rms_norm_eps, nr);
    matvec(layer.gate_proj, nr, static_cast<int64_t>(ffn), gate);
    matvec(layer.up_proj, nr, static_cast<int64_t>(ffn), up);
    for (size_t i = 0; i < ffn; ++i) {
      gate[i] = static_cast<float>(gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i])))) * up[i];
    }
    matvec(layer.down_proj, gate, static_cast<int64_t>(C), ffn_out);
    for (size_t i = 0; i < C; ++i) xr[i] += ffn_out[i];
  }
}

void TttModel::embed(std::span<const int32_t> tokens, std::vector<float>& x) const {
  const size_t C = static_cast<size_t>(config_.hidden_size);
  x.resize(tokens.size() * C);
  for (size_t r = 0; r < tokens.size(); ++r) {
    std::copy_n(embedding_.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(tokens[r]) * C), C,
                x.begin() + static_cast<std::ptrdiff_t>(r * C));
  }
}

void TttModel::run_layers(TttState& state, size_t first, size_t end, int64_t position, int64_t rows,
                          std::span<float> x) const {
  const size_t C = static_cast<size_t>(config_.hidden_size);
  // Chunks that end at mini-batch ends: a whole mini-batch goes through each layer at once.
  for (int64_t done = 0; done < rows;) {
    const int64_t at = position + done;
    const int64_t n = std::min(rows - done, config_.mini_batch_size - at % config_.mini_batch_size);
    const std::span<float> chunk = x.subspan(static_cast<size_t>(done) * C, static_cast<size_t>(n) * C);
    for (size_t l = first; l < end; ++l) layer_chunk(l, state.layers[l], at, n, chunk);
    done += n;
  }
}

void TttModel::output_logits(std::span<const float> x, int64_t rows, std::span<float> logits) const {
  const size_t C = static_cast<size_t>(config_.hidden_size), vocab = static_cast<size_t>(config_.vocab_size);
  std::vector<float> normed(C);
  for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
    rms_norm(x.subspan(r * C, C), final_norm_, config_.rms_norm_eps, normed);
    matvec(lm_head(), normed, static_cast<int64_t>(vocab), logits.subspan(r * vocab, vocab));
  }
}

Status TttModel::forward(TttState& state, std::span<const int32_t> tokens, std::vector<float>& logits) const {
  const TttConfig& c = config_;
  if (state.layers.size() != layers_.size()) return make_error("the TTT state is not this model's");
  for (const int32_t token : tokens) {
    if (token < 0 || token >= c.vocab_size) {
      return make_error("token id {} is outside the vocabulary [0, {})", token, c.vocab_size);
    }
  }
  std::vector<float> x;
  embed(tokens, x);
  const int64_t rows = static_cast<int64_t>(tokens.size());
  run_layers(state, 0, layers_.size(), state.position, rows, x);
  logits.assign(tokens.size() * static_cast<size_t>(c.vocab_size), 0.0f);
  output_logits(x, rows, logits);
  state.position += rows;
  return {};
}

}  // namespace draftwise
