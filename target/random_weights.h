// Seeded random weights in the exact shape of a config, for speed measurements at sizes
// whose real weights are not at hand (`--random-weights CONFIG.json`).
#pragma once

#include <cstdint>

#include "target/model_weights.h"

namespace draftwise {

// Norm weights are 1; every other value is uniform with standard deviation 0.02 (the usual
// initializer range). A tensor's values depend only on the seed and the tensor's name.
WeightLoader random_weight_loader(uint64_t seed);

}  // namespace draftwise
