#include "tests/support/statistics.h"

#include <cmath>
#include <numeric>
#include <vector>

namespace draftwise::testing {

std::vector<double> dense_probabilities(const TokenDistribution& distribution, int64_t vocab) {
  std::vector<double> dense(static_cast<size_t>(vocab), 0.0);
  for (size_t i = 0; i < distribution.tokens.size(); ++i) {
    dense[static_cast<size_t>(distribution.tokens[i])] = distribution.probabilities[i];
  }
  return dense;
}

double upper_regularized_gamma(double a, double x) {
  if (x <= 0.0) return 1.0;
  const double log_prefix = a * std::log(x) - x - std::lgamma(a);
  if (x < a + 1.0) {
    // Series for P(a, x), then Q = 1 − P.
    double term = 1.0 / a;
    double sum = term;
    for (int n = 1; n < 1000; ++n) {
      term *= x / (a + n);
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * 1e-15) break;
    }
    return 1.0 - sum * std::exp(log_prefix);
  }
  // Continued fraction for Q(a, x) (modified Lentz).
  const double tiny = 1e-300;
  double b = x + 1.0 - a;
  double c = 1.0 / tiny;
  double d = 1.0 / b;
  double h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < 1e-15) break;
  }
  return std::exp(log_prefix) * h;
}

double chi_square_p_value(std::span<const int64_t> counts, std::span<const double> probabilities) {
  const double total = static_cast<double>(std::accumulate(counts.begin(), counts.end(), int64_t{0}));
  std::vector<double> observed;
  std::vector<double> expected;
  double pooled_observed = 0.0;
  double pooled_expected = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = probabilities[i] * total;
    if (e < 5.0) {
      pooled_observed += static_cast<double>(counts[i]);
      pooled_expected += e;
      continue;
    }
    observed.push_back(static_cast<double>(counts[i]));
    expected.push_back(e);
  }
  if (pooled_expected > 0.0 || pooled_observed > 0.0) {
    observed.push_back(pooled_observed);
    expected.push_back(pooled_expected);
  }
  double statistic = 0.0;
  for (size_t i = 0; i < observed.size(); ++i) {
    if (expected[i] <= 0.0) {
      if (observed[i] > 0.0) return 0.0;  // drawn where nothing can be
      continue;
    }
    const double difference = observed[i] - expected[i];
    statistic += difference * difference / expected[i];
  }
  const double degrees = static_cast<double>(observed.size()) - 1.0;
  if (degrees <= 0.0) return 1.0;
  return upper_regularized_gamma(degrees / 2.0, statistic / 2.0);
}

}  // namespace draftwise::testing
