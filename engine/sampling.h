// Turning logits into tokens, shared by every backend (logits come to the host as fp32).
//
// The sampling distribution is built in transformers' order: logits / temperature, then
// top-k, top-p (the smallest set of most likely tokens whose mass reaches p), then min-p
// (drop tokens below min_p × the top probability), renormalised. Temperature 0 is greedy.
// Speculative verification uses the same distribution, so a drafted token is judged
// against exactly what plain sampling would draw from.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "draft/token_distribution.h"
#include "kernels/random.h"
#include "kernels/status.h"

namespace draftwise {

struct SamplingParams {
  double temperature = 1.0;  // ≥ 0; 0 picks the most likely token
  int64_t top_k = 0;         // ≥ 0; 0 keeps every token
  double top_p = 1.0;        // (0, 1]
  double min_p = 0.0;        // [0, 1]
  uint64_t seed = 0;         // the same seed gives the same tokens

  // Temperature 0, or one so small that 1/T overflows: the greedy limit.
  bool greedy() const { return temperature == 0.0 || !std::isfinite(1.0 / temperature); }
};

// Names the first out-of-range parameter.
Status validate_sampling_params(const SamplingParams& params);

// The tokens sampling may draw and their probabilities (summing to 1), most likely first
// where a filter needed the order; the order is a deterministic function of the logits.
//   logits: [vocab], all finite (check_logits_finite)
TokenDistribution sampling_distribution(std::span<const float> logits, const SamplingParams& params);

// An error naming the first NaN or infinite logit: a model that produces one is broken, and
// no distribution can be drawn from it.
Status check_logits_finite(std::span<const float> logits);

// The index of the largest logit; the lowest index among ties.
int32_t argmax(std::span<const float> logits);

// Draws from a distribution with a uniform number u ∈ [0, 1).
int32_t draw(const TokenDistribution& distribution, double u);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

  //   logits: [vocab], all finite
  int32_t sample(std::span<const float> logits);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  Rng rng_;
};

}  // namespace draftwise
