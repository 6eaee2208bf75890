#include "draft/draft_probability.h"

#include <algorithm>
#include <cmath>

namespace draftwise {

double softmax_probability(std::span<const float> logits, int32_t token) {
  const float largest = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (const float logit : logits) total += std::exp(static_cast<double>(logit - largest));
  return std::exp(static_cast<double>(logits[static_cast<size_t>(token)] - largest)) / total;
}

}  // namespace draftwise
