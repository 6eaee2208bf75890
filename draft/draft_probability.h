// The draft's own probability of a drafted token, for the confidence cut-off of drafters
// with logits.
#pragma once

#include <cstdint>
#include <span>

namespace draftwise {

// softmax(logits)[token] at temperature 1.
//   logits: [vocab], finite
double softmax_probability(std::span<const float> logits, int32_t token);

}  // namespace draftwise
