#include "target/qttt.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "kernels/random.h"

namespace draftwise {

namespace {

Expected<int64_t> parse_integer(std::string_view key, std::string_view text, int64_t least) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < least) {
    return make_error("qttt: '{}' must be an integer ≥ {}, got '{}'", key, least, text);
  }
  return value;
}

// Keys a query attends to at `position`: its prefix, or the sliding window.
double attended_keys(const ModelConfig& config, int64_t position) {
  const int64_t keys = position + 1;
  const int64_t window = config.sliding_window.value_or(0);
  return static_cast<double>(window > 0 ? std::min(keys, window) : keys);
}

double query_dim(const ModelConfig& config) { return static_cast<double>(config.num_heads * config.head_dim); }

// One row's forward matrix work in every layer besides attention, and the LM head.
double row_linear_flops(const ModelConfig& config, bool with_kv) {
  const double hidden = static_cast<double>(config.hidden_size);
  const double ffn = static_cast<double>(config.intermediate_size);
  const double kv = static_cast<double>(config.num_kv_heads * config.head_dim);
  const double per_layer = 2 * hidden * query_dim(config) + (with_kv ? 4 * hidden * kv : 0) +
                           2 * query_dim(config) * hidden + 6 * hidden * ffn;
  return static_cast<double>(config.num_layers) * per_layer;
}

double head_flops(const ModelConfig& config) {
  return 2.0 * static_cast<double>(config.hidden_size) * static_cast<double>(config.vocab_size);
}

}  // namespace

std::string_view qtt_optimizer_name(QttOptimizer optimizer) {
  return optimizer == QttOptimizer::adam ? "adam" : "sgd";
}

Expected<QttOptions> parse_qtt_spec(std::string_view spec) {
  QttOptions options;
  if (spec == "on") return options;
  if (spec.empty()) return make_error("qttt: the spec is empty (give \"on\" or key=value pairs)");
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string_view item = spec.substr(start, comma - start);
    const size_t equals = item.find('=');
    if (equals == std::string_view::npos) {
      return make_error("qttt: '{}' is not key=value (keys: steps, span, lr, rank, optimizer, seed)", item);
    }
    const std::string_view key = item.substr(0, equals);
    const std::string_view value = item.substr(equals + 1);
    if (key == "steps") {
      DW_ASSIGN_OR_RETURN(const int64_t steps, parse_integer(key, value, 1));
      if (steps > 100000) return make_error("qttt: 'steps' must be at most 100000, got {}", steps);
      options.steps = static_cast<int>(steps);
    } else if (key == "span") {
      DW_ASSIGN_OR_RETURN(options.span, parse_integer(key, value, 1));
    } else if (key == "lr") {
      const std::string text(value);
      char* end = nullptr;
      const double rate = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(rate) || rate <= 0 || rate > 1e3) {
        return make_error("qttt: 'lr' must be a positive number (at most 1000), got '{}'", value);
      }
      options.learning_rate = static_cast<float>(rate);
    } else if (key == "rank") {
      if (value == "full") {
        options.rank = 0;
      } else {
        DW_ASSIGN_OR_RETURN(options.rank, parse_integer(key, value, 0));
      }
    } else if (key == "optimizer") {
      if (value == "adam") {
        options.optimizer = QttOptimizer::adam;
      } else if (value == "sgd") {
        options.optimizer = QttOptimizer::sgd;
      } else {
        return make_error("qttt: 'optimizer' must be adam or sgd, got '{}'", value);
      }
    } else if (key == "seed") {
      DW_ASSIGN_OR_RETURN(const int64_t seed, parse_integer(key, value, 0));
      options.seed = static_cast<uint64_t>(seed);
    } else {
      return make_error("qttt: unknown key '{}' (keys: steps, span, lr, rank, optimizer, seed)", key);
    }
    start = comma + 1;
  }
  return options;
}

std::string qtt_spec(const QttOptions& options) {
  return fmt::format("steps={},span={},lr={},rank={},optimizer={},seed={}", options.steps, options.span,
                     options.learning_rate, options.rank == 0 ? std::string("full") : std::to_string(options.rank),
                     qtt_optimizer_name(options.optimizer), options.seed);
}

int64_t qtt_layer_parameters(const ModelConfig& config, int64_t rank) {
  const int64_t q_dim = config.num_heads * config.head_dim;
  return rank == 0 ? q_dim * config.hidden_size : rank * (config.hidden_size + q_dim);
}

int64_t qtt_parameter_count(const ModelConfig& config, int64_t rank) {
  return config.num_layers * qtt_layer_parameters(config, rank);
}

Status check_qtt_options(const QttOptions& options, const ModelConfig& config) {
  if (options.steps < 1) return make_error("qttt: 'steps' must be at least 1, got {}", options.steps);
  if (options.span < 1) return make_error("qttt: 'span' must be at least 1, got {}", options.span);
  if (!std::isfinite(options.learning_rate) || options.learning_rate <= 0) {
    return make_error("qttt: 'lr' must be a positive number, got {}", options.learning_rate);
  }
  if (options.rank < 0 || options.rank > config.hidden_size) {
    return make_error("qttt: 'rank' must be 'full' or in [1, {}] (the hidden size), got {}", config.hidden_size,
                      options.rank);
  }
  return {};
}

Expected<int64_t> qtt_trainable_positions(int64_t length, std::span<const int32_t> context, int64_t vocab) {
  const int64_t size = static_cast<int64_t>(context.size());
  if (size != length && size != length + 1) {
    return make_error("qttt: the context has {} tokens; the sequence holds {} (give those, and optionally the next)",
                      size, length);
  }
  for (const int32_t token : context) {
    if (token < 0 || token >= vocab) {
      return make_error("qttt: token id {} is outside the vocabulary [0, {})", token, vocab);
    }
  }
  return std::min(length, size - 1);
}

Status check_qtt_positions(int64_t first, int64_t count, int64_t trainable) {
  if (first < 0 || count < 1 || first + count > trainable) {
    return make_error("qttt: positions [{}, {}) are outside the {} positions with a next token", first, first + count,
                      trainable);
  }
  return {};
}

Status check_qtt_start(int64_t sequence, int64_t length, size_t context_size, int64_t trainable,
                       const QueryAdaptation* held, int64_t rank) {
  if (trainable < 1) {
    return make_error("qttt: sequence {} has no position with a next token to train on (it holds {} of {} tokens)",
                      sequence, length, context_size);
  }
  if (held != nullptr && held->rank() != rank) {
    return make_error("qttt: sequence {} holds an adaptation of rank {}; it cannot go on at rank {}", sequence,
                      held->rank(), rank);
  }
  return {};
}

Status check_qtt_parameters(const ModelConfig& config, int64_t rank, int64_t max_rank, size_t count) {
  if (rank < 0 || rank > max_rank) return make_error("qttt: rank {} is outside [0, {}]", rank, max_rank);
  const int64_t expected = qtt_parameter_count(config, rank);
  if (static_cast<int64_t>(count) != expected) {
    return make_error("qttt: rank {} takes {} parameters, got {}", rank, expected, count);
  }
  return {};
}

std::vector<float> qtt_initial_parameters(const ModelConfig& config, int64_t rank, uint64_t seed) {
  std::vector<float> parameters(static_cast<size_t>(qtt_parameter_count(config, rank)), 0.0f);
  if (rank == 0) return parameters;
  Rng rng(seed ^ 0x51A77A1A11ull);
  const float bound = 1.0f / std::sqrt(static_cast<float>(config.hidden_size));
  const int64_t a_size = rank * config.hidden_size;
  const int64_t layer_size = qtt_layer_parameters(config, rank);
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    float* a = parameters.data() + layer * layer_size;
    for (int64_t i = 0; i < a_size; ++i) a[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
  }
  return parameters;
}

std::vector<int64_t> qtt_span_starts(const QttOptions& options, int64_t trainable, int64_t span) {
  Rng rng(options.seed ^ 0x5BA45ull);
  std::vector<int64_t> starts(static_cast<size_t>(options.steps));
  for (int64_t& start : starts) start = static_cast<int64_t>(rng.below(static_cast<uint64_t>(trainable - span + 1)));
  return starts;
}

void qtt_optimizer_step(const QttOptions& options, int64_t step, float* parameters, const float* gradient,
                        float* first_moment, float* second_moment, int64_t count) {
  const float rate = options.learning_rate;
  if (options.optimizer == QttOptimizer::sgd) {
    for (int64_t i = 0; i < count; ++i) parameters[i] -= rate * gradient[i];
    return;
  }
  const float correction1 = 1.0f - std::pow(kQttAdamBeta1, static_cast<float>(step));
  const float correction2 = 1.0f - std::pow(kQttAdamBeta2, static_cast<float>(step));
  for (int64_t i = 0; i < count; ++i) {
    first_moment[i] = kQttAdamBeta1 * first_moment[i] + (1.0f - kQttAdamBeta1) * gradient[i];
    second_moment[i] = kQttAdamBeta2 * second_moment[i] + (1.0f - kQttAdamBeta2) * gradient[i] * gradient[i];
    const float corrected = first_moment[i] / correction1;
    parameters[i] -= rate * corrected / (std::sqrt(second_moment[i] / correction2) + kQttAdamEpsilon);
  }
}

double qtt_step_flops(const ModelConfig& config, int64_t span, int64_t first, int64_t rank) {
  const double hidden = static_cast<double>(config.hidden_size);
  const double layers = static_cast<double>(config.num_layers);
  // ΔW_Q's own product, forward and backward (input and parameter gradients).
  const double delta = rank == 0 ? 2 * hidden * query_dim(config)
                                 : 2 * static_cast<double>(rank) * (hidden + query_dim(config));
  // Forward: the span's queries only (no keys or values). Backward: every product's input
  // gradient (the same work again), ΔW_Q's gradient.
  const double linear = row_linear_flops(config, false);
  const double per_row = linear + head_flops(config) + layers * delta +           // forward
                         linear + head_flops(config) + layers * 2 * delta;        // backward
  double attention = 0;
  for (int64_t i = 0; i < span; ++i) attention += attended_keys(config, first + i);
  // Forward: scores and values (4 qd n); backward: scores again, dP, dQ (6 qd n).
  return static_cast<double>(span) * per_row + layers * 10 * query_dim(config) * attention;
}

double prefill_flops(const ModelConfig& config, int64_t tokens) {
  double attention = 0;
  for (int64_t i = 0; i < tokens; ++i) attention += attended_keys(config, i);
  // Every row's layers; the LM head only for the last row.
  return static_cast<double>(tokens) * row_linear_flops(config, true) + head_flops(config) +
         static_cast<double>(config.num_layers) * 4 * query_dim(config) * attention;
}

double decode_token_flops(const ModelConfig& config, int64_t context) {
  return row_linear_flops(config, true) + head_flops(config) +
         static_cast<double>(config.num_layers) * 4 * query_dim(config) * attended_keys(config, context);
}

}  // namespace draftwise
