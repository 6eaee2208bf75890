// Seeded random weights in the exact shape of a config, for speed measurements at sizes
// whose real weights are not at hand (`--random-weights CONFIG.json`).
#pragma once

#include <cstdint>
#include <string_view>

#include "target/model_weights.h"

namespace draftwise {

// Norm weights are 1; every other value is uniform with standard deviation 0.02 (the usual
// initializer range). A tensor's values depend only on the seed and the tensor's name.
WeightLoader random_weight_loader(uint64_t seed);

// Half the width of the uniform distribution above: 0.02·√3 (standard deviation 0.02).
inline constexpr double kRandomWeightHalfWidth = 0.034641016151377546;
// The seed of one tensor's values: the weight seed mixed with a hash of the tensor's name.
uint64_t random_weight_stream(uint64_t seed, std::string_view tensor_name);

}  // namespace draftwise
