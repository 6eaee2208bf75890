// Goodness-of-fit for the sampling tests.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "draft/token_distribution.h"

namespace draftwise::testing {

// Pearson's chi-square test of counts against probabilities: the p-value of observing a
// statistic at least this large if the counts were drawn from the probabilities. Bins
// expected to hold fewer than 5 draws are pooled into one, as the test's approximation asks.
//   counts: [bins]     probabilities: [bins], summing to 1
double chi_square_p_value(std::span<const int64_t> counts, std::span<const double> probabilities);

// A sparse distribution as one probability per token id: the chi-square test's bins.
std::vector<double> dense_probabilities(const TokenDistribution& distribution, int64_t vocab);

// The upper regularized incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a).
double upper_regularized_gamma(double a, double x);

}  // namespace draftwise::testing
