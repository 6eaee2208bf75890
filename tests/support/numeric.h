// Random inputs and error measures shared by the op and model tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace draftwise::testing {

// `count` values drawn from N(0, scale²) with a seeded std::mt19937_64.
std::vector<float> random_values(size_t count, uint64_t seed, float scale = 1.0f);

// ‖actual − reference‖₂ / ‖reference‖₂; a test failure and +inf when the sizes differ.
double relative_l2(const std::vector<float>& actual, const std::vector<float>& reference);

}  // namespace draftwise::testing
