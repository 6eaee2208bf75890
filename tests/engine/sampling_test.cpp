// Sampling draws from exactly the distribution it claims (chi-square over many draws),
// filters as transformers does, and a seed reproduces its tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <vector>

#include "engine/sampling.h"

namespace draftwise {
namespace {

// The renormalised distribution written out the slow, obvious way: sort everything, apply
// temperature, top-k, top-p, min-p in turn.
std::map<int32_t, double> expected_distribution(const std::vector<float>& logits, const SamplingParams& p) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (p.top_k > 0 && p.top_k < static_cast<int64_t>(order.size())) order.resize(static_cast<size_t>(p.top_k));
  std::vector<double> probs;
  for (const int32_t id : order) probs.push_back(std::exp(logits[id] / p.temperature));
  double total = std::accumulate(probs.begin(), probs.end(), 0.0);
  for (double& prob : probs) prob /= total;
  size_t keep = 0;
  for (double mass = 0; keep < probs.size() && mass < p.top_p; ++keep) mass += probs[keep];
  order.resize(keep);
  probs.resize(keep);
  const double top = probs[0];
  std::map<int32_t, double> result;
  for (size_t i = 0; i < order.size(); ++i) {
    if (probs[i] >= p.min_p * top) result[order[i]] = probs[i];
  }
  total = 0;
  for (const auto& [id, prob] : result) total += prob;
  for (auto& [id, prob] : result) prob /= total;
  return result;
}

// Critical values of chi-square at p = 1e-4 for 1..9 degrees of freedom.
constexpr double kChiSquareCritical[] = {0, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88, 31.83, 33.72};

TEST(Sampling, EmpiricalDistributionMatchesTheRenormalisedOne) {
  const std::vector<float> logits = {1.0f, 2.5f, 0.3f, 2.0f, -1.0f, 1.7f, 0.0f, 3.0f, 1.2f, -0.5f};
  struct Case { double temperature; int64_t top_k; double top_p; double min_p; };
  for (const Case c : {Case{1.0, 0, 1.0, 0.0}, Case{0.7, 4, 1.0, 0.0}, Case{1.3, 0, 0.8, 0.0},
                       Case{1.0, 0, 1.0, 0.2}, Case{0.9, 6, 0.9, 0.1}}) {
    SamplingParams params{c.temperature, c.top_k, c.top_p, c.min_p, 42};
    const auto expected = expected_distribution(logits, params);
    const TokenDistribution distribution = sampling_distribution(logits, params);
    ASSERT_EQ(distribution.tokens.size(), expected.size());
    for (size_t i = 0; i < distribution.tokens.size(); ++i) {
      EXPECT_NEAR(distribution.probabilities[i], expected.at(distribution.tokens[i]), 1e-12);
    }
    Sampler sampler(params);
    const int draws = 200000;
    std::map<int32_t, int> counts;
    for (int i = 0; i < draws; ++i) counts[sampler.sample(logits)]++;
    double chi_square = 0;
    for (const auto& [id, count] : counts) {
      ASSERT_TRUE(expected.contains(id)) << "token " << id << " is outside the filtered set";
    }
    for (const auto& [id, prob] : expected) {
      const double expected_count = prob * draws;
      const double difference = counts[id] - expected_count;
      chi_square += difference * difference / expected_count;
    }
    const size_t degrees = expected.size() - 1;
    ASSERT_LT(degrees, std::size(kChiSquareCritical));
    EXPECT_LT(chi_square, kChiSquareCritical[degrees])
        << "T " << c.temperature << " top-k " << c.top_k << " top-p " << c.top_p << " min-p " << c.min_p;
  }
}

TEST(Sampling, FiltersKeepTheDocumentedSets) {
  // Probabilities at T = 1: 0.5, 0.25, 0.125, 0.125 (logits are log2 steps).
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  auto kept = [&](SamplingParams params) { return sampling_distribution(logits, params).tokens; };
  EXPECT_EQ(kept({1.0, 2, 1.0, 0.0, 0}), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kept({1.0, 0, 0.5, 0.0, 0}), (std::vector<int32_t>{0}));       // 0.5 reaches 0.5
  EXPECT_EQ(kept({1.0, 0, 0.6, 0.0, 0}), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(kept({1.0, 0, 0.8, 0.0, 0}), (std::vector<int32_t>{0, 1, 2}));  // tie: lower id first
  EXPECT_EQ(kept({1.0, 0, 1.0, 0.3, 0}), (std::vector<int32_t>{0, 1}));     // 0.25 ≥ 0.3·0.5
  EXPECT_EQ(kept({0.0, 0, 1.0, 0.0, 0}), (std::vector<int32_t>{0}));        // greedy
  EXPECT_EQ(kept({1e-320, 0, 1.0, 0.0, 0}), (std::vector<int32_t>{0}));     // 1/T overflows
}

TEST(Sampling, TopPOverALargeVocabularySortsPastTheFirstCandidates) {
  // A flat distribution over 5000 tokens needs far more than the first sorted batch.
  std::vector<float> logits(5000, 0.0f);
  logits[17] = 1.0f;
  const TokenDistribution distribution = sampling_distribution(logits, {1.0, 0, 0.9, 0.0, 0});
  EXPECT_EQ(distribution.tokens.front(), 17);
  double mass = std::accumulate(distribution.probabilities.begin(), distribution.probabilities.end(), 0.0);
  EXPECT_NEAR(mass, 1.0, 1e-9);
  // Σ of the kept unnormalised mass first reaches 0.9 of the total at this count.
  const double total = std::exp(1.0) + 4999;
  const size_t expected = 1 + static_cast<size_t>(std::ceil((0.9 * total - std::exp(1.0)) - 1e-9));
  EXPECT_EQ(distribution.tokens.size(), expected);
  // Equal logits: the lower id first.
  EXPECT_TRUE(std::is_sorted(distribution.tokens.begin() + 1, distribution.tokens.end()));
}

TEST(Sampling, SameSeedSameTokensOtherSeedOtherTokens) {
  std::vector<float> logits(300);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(std::sin(i * 0.37) * 3);
  auto draw_many = [&](uint64_t seed) {
    Sampler sampler({0.8, 50, 0.95, 0.0, seed});
    std::vector<int32_t> tokens;
    for (int i = 0; i < 64; ++i) tokens.push_back(sampler.sample(logits));
    return tokens;
  };
  EXPECT_EQ(draw_many(7), draw_many(7));
  EXPECT_NE(draw_many(7), draw_many(8));
}

TEST(Sampling, GreedyPicksTheLowestIdAmongTies) {
  EXPECT_EQ(argmax(std::vector<float>{1, 3, 3, 2}), 1);
  Sampler sampler({0.0, 0, 1.0, 0.0, 0});
  EXPECT_EQ(sampler.sample(std::vector<float>{0, 5, 1, 5}), 1);
}

TEST(Sampling, OutOfRangeParametersAreNamed) {
  auto message = [](SamplingParams p) {
    const Status status = validate_sampling_params(p);
    return status.ok() ? std::string() : status.error().message;
  };
  EXPECT_NE(message({-0.1, 0, 1.0, 0.0, 0}).find("temperature"), std::string::npos);
  EXPECT_NE(message({NAN, 0, 1.0, 0.0, 0}).find("temperature"), std::string::npos);
  EXPECT_NE(message({1.0, -1, 1.0, 0.0, 0}).find("top-k"), std::string::npos);
  EXPECT_NE(message({1.0, 0, 0.0, 0.0, 0}).find("top-p"), std::string::npos);
  EXPECT_NE(message({1.0, 0, 1.5, 0.0, 0}).find("top-p"), std::string::npos);
  EXPECT_NE(message({1.0, 0, 1.0, -0.5, 0}).find("min-p"), std::string::npos);
  EXPECT_EQ(message({1.0, 0, 1.0, 0.0, 0}), "");
}

}  // namespace
}  // namespace draftwise
