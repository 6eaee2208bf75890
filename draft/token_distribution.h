// A distribution over token ids, stored sparsely: the tokens that can be drawn and their
// probabilities (summing to 1). Sampling builds one from logits (engine/sampling.h); drafters
// report, for every drafted token, the distribution it was drawn from, which speculative
// verification compares with the target's (DESIGN.md, Speculative decoding).
#pragma once

#include <cstdint>
#include <vector>

namespace draftwise {

struct TokenDistribution {
  std::vector<int32_t> tokens;
  std::vector<double> probabilities;

  // The probability of `token`: 0 when it cannot be drawn.
  double probability(int32_t token) const {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == token) return probabilities[i];
    }
    return 0.0;
  }
  // All mass on `token`: what a deterministic choice (an argmax, a lookup) was drawn from.
  static TokenDistribution one_hot(int32_t token) { return {{token}, {1.0}}; }
};

}  // namespace draftwise
