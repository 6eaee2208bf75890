#include "tests/support/numeric.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace draftwise::testing {

std::vector<float> random_values(size_t count, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

double relative_l2(const std::vector<float>& actual, const std::vector<float>& reference) {
  EXPECT_EQ(actual.size(), reference.size());
  if (actual.size() != reference.size() || reference.empty()) return INFINITY;
  double difference = 0;
  double norm = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double d = static_cast<double>(actual[i]) - reference[i];
    difference += d * d;
    norm += static_cast<double>(reference[i]) * reference[i];
  }
  return std::sqrt(difference) / std::max(std::sqrt(norm), 1e-30);
}

}  // namespace draftwise::testing
