#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace draftwise {

Status validate_sampling_params(const SamplingParams& params) {
  if (!(params.temperature >= 0.0) || !std::isfinite(params.temperature)) {
    return make_error("temperature must be a finite number ≥ 0, got {}", params.temperature);
  }
  if (params.top_k < 0) return make_error("top-k must be ≥ 0 (0 turns it off), got {}", params.top_k);
  if (!(params.top_p > 0.0 && params.top_p <= 1.0)) {
    return make_error("top-p must be in (0, 1], got {}", params.top_p);
  }
  if (!(params.min_p >= 0.0 && params.min_p <= 1.0)) {
    return make_error("min-p must be in [0, 1], got {}", params.min_p);
  }
  return {};
}

Status check_logits_finite(std::span<const float> logits) {
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) {
      return make_error("the model produced a non-finite logit ({}) for token {}", logits[i], i);
    }
  }
  return {};
}

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

TokenDistribution sampling_distribution(std::span<const float> logits, const SamplingParams& params) {
  TokenDistribution distribution;
  if (params.greedy()) {
    distribution.tokens = {argmax(logits)};
    distribution.probabilities = {1.0};
    return distribution;
  }
  const int64_t vocab = static_cast<int64_t>(logits.size());
  // Most likely first; the lower id first among equal logits.
  const auto more_likely = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  std::vector<int32_t>& tokens = distribution.tokens;
  tokens.resize(static_cast<size_t>(vocab));
  std::iota(tokens.begin(), tokens.end(), 0);
  bool sorted = false;
  if (params.top_k > 0 && params.top_k < vocab) {
    std::partial_sort(tokens.begin(), tokens.begin() + params.top_k, tokens.end(), more_likely);
    tokens.resize(static_cast<size_t>(params.top_k));
    sorted = true;
  }
  const double inverse_temperature = 1.0 / params.temperature;
  const float max_logit = logits[*std::min_element(tokens.begin(), tokens.end(), more_likely)];
  std::vector<double> weights(tokens.size());
  double total = 0.0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    weights[i] = std::exp((static_cast<double>(logits[tokens[i]]) - max_logit) * inverse_temperature);
    total += weights[i];
  }
  const auto sort_by_weight = [&](size_t count) {
    // Sorts the first `count` candidates (by logit, which orders the weights alike).
    std::vector<size_t> order(tokens.size());
    std::iota(order.begin(), order.end(), 0);
    const auto by_token = [&](size_t a, size_t b) { return more_likely(tokens[a], tokens[b]); };
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(count), order.end(), by_token);
    std::vector<int32_t> sorted_tokens(tokens.size());
    std::vector<double> sorted_weights(tokens.size());
    for (size_t i = 0; i < order.size(); ++i) {
      sorted_tokens[i] = tokens[order[i]];
      sorted_weights[i] = weights[order[i]];
    }
    tokens.swap(sorted_tokens);
    weights.swap(sorted_weights);
  };
  if (params.top_p < 1.0) {
    // Most of the mass usually sits in a few hundred tokens: sort those first, and the
    // rest only when they do not reach top_p.
    size_t sorted_count = sorted ? tokens.size() : std::min<size_t>(tokens.size(), 256);
    if (!sorted) sort_by_weight(sorted_count);
    const double target = params.top_p * total;
    double mass = 0.0;
    size_t keep = 0;
    for (;;) {
      while (keep < sorted_count && mass < target) mass += weights[keep++];
      if (mass >= target || sorted_count == tokens.size()) break;
      sorted_count = tokens.size();
      sort_by_weight(sorted_count);
      // Sorting kept the first `keep` in place: they were already the most likely.
    }
    tokens.resize(std::max<size_t>(keep, 1));
    weights.resize(tokens.size());
    sorted = true;
    total = std::accumulate(weights.begin(), weights.end(), 0.0);
  }
  if (params.min_p > 0.0) {
    // The top weight is exp(0) = 1: the most likely token survived every filter.
    const double threshold = params.min_p;
    size_t kept = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (weights[i] >= threshold) {
        tokens[kept] = tokens[i];
        weights[kept] = weights[i];
        ++kept;
      }
    }
    tokens.resize(kept);
    weights.resize(kept);
    total = std::accumulate(weights.begin(), weights.end(), 0.0);
  }
  distribution.probabilities.resize(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) distribution.probabilities[i] = weights[i] / total;
  return distribution;
}

int32_t draw(const TokenDistribution& distribution, double u) {
  double cumulative = 0.0;
  for (size_t i = 0; i < distribution.tokens.size(); ++i) {
    cumulative += distribution.probabilities[i];
    if (u < cumulative) return distribution.tokens[i];
  }
  return distribution.tokens.back();
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.greedy()) return argmax(logits);
  return draw(sampling_distribution(logits, params_), rng_.uniform());
}

}  // namespace draftwise
