// The DVI learner's hand-written backward pass: every loss term's gradient with respect to
// the norm gain, A, B and the lens M equals central finite differences of the loss on small random
// inputs (fp32, h = 5e-3, within 2e-3 + 2% of the difference quotient); the result does not
// depend on the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "draft/dvi_loss.h"
#include "kernels/random.h"

namespace draftwise {
namespace {

constexpr int64_t kHidden = 12;
constexpr int64_t kVocab = 40;
constexpr int64_t kRank = 3;

float normal(Rng& rng) {
  const double u = 1.0 - rng.uniform();
  return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * rng.uniform()));
}

struct Problem {
  std::vector<float> lm_head;  // [vocab, hidden]
  DraftAdapter adapter;
  std::vector<DraftRecord> records;
  std::vector<const DraftRecord*> batch;
};

Problem random_problem(uint64_t seed, bool lens = true) {
  Rng rng(seed);
  Problem problem;
  for (int64_t i = 0; i < kVocab * kHidden; ++i) problem.lm_head.push_back(0.4f * normal(rng));
  std::vector<float> gain;
  for (int64_t i = 0; i < kHidden; ++i) gain.push_back(1.0f + 0.3f * normal(rng));
  problem.adapter = DraftAdapter::initial({kHidden, kVocab, kRank, 6.0f, lens}, gain, seed).value();
  // B and M non-zero, so that every path is exercised.
  for (float& b : problem.adapter.b) b = 0.2f * normal(rng);
  for (float& m : problem.adapter.lens) m = 0.15f * normal(rng);
  for (int i = 0; i < 6; ++i) {
    DraftRecord record;
    for (int64_t k = 0; k < kHidden; ++k) record.hidden.push_back(2.0f * normal(rng));
    record.token = static_cast<int32_t>(rng.below(kVocab));
    record.draft_log_probability = -2.0f - static_cast<float>(rng.uniform());
    std::vector<float> teacher;
    for (int64_t v = 0; v < kVocab; ++v) teacher.push_back(3.0f * normal(rng));
    keep_top_logits(teacher, 7, record);
    record.reward = i % 3 == 2 ? 0.0f : 1.0f;
    record.position = i % 3;
    problem.records.push_back(std::move(record));
  }
  for (const DraftRecord& record : problem.records) problem.batch.push_back(&record);
  return problem;
}

double loss_of(CpuDraftHeadTrainer& trainer, const Problem& problem, const DraftAdapter& adapter,
               const DviLossWeights& weights) {
  DviGradients ignored;
  return trainer.loss_and_gradients(problem.batch, adapter, weights, ignored).value().total;
}

void expect_gradients_match_finite_differences(const DviLossWeights& weights, const char* what,
                                               bool lens = true) {
  SCOPED_TRACE(what);
  Problem problem = random_problem(11, lens);
  cpu::ThreadPool pool(2);
  CpuDraftHeadTrainer trainer(problem.lm_head, kHidden, 1e-5f, pool);
  DviGradients gradients;
  const auto terms = trainer.loss_and_gradients(problem.batch, problem.adapter, weights, gradients);
  ASSERT_TRUE(terms.ok()) << terms.error().message;
  constexpr float kStep = 5e-3f;
  const struct {
    std::vector<float> DraftAdapter::*parameter;
    const std::vector<float>* gradient;
    const char* name;
  } parts[] = {{&DraftAdapter::gain, &gradients.gain, "gain"},
               {&DraftAdapter::a, &gradients.a, "A"},
               {&DraftAdapter::b, &gradients.b, "B"},
               {&DraftAdapter::lens, &gradients.lens, "M"}};
  ASSERT_EQ(gradients.lens.empty(), !lens);
  double largest = 0.0;
  for (const auto& part : parts) {
    ASSERT_EQ(part.gradient->size(), (problem.adapter.*part.parameter).size()) << part.name;
    for (size_t i = 0; i < part.gradient->size(); ++i) {
      DraftAdapter moved = problem.adapter;
      (moved.*part.parameter)[i] += kStep;
      const double above = loss_of(trainer, problem, moved, weights);
      (moved.*part.parameter)[i] -= 2 * kStep;
      const double below = loss_of(trainer, problem, moved, weights);
      const double quotient = (above - below) / (2 * kStep);
      EXPECT_NEAR((*part.gradient)[i], quotient, 2e-3 + 0.02 * std::fabs(quotient))
          << part.name << "[" << i << "]";
      largest = std::max(largest, std::fabs(quotient));
    }
  }
  EXPECT_GT(largest, 1e-2);  // the check is not of a flat function
}

TEST(DviLoss, DistillationGradientMatchesFiniteDifferences) {
  DviLossWeights weights;
  weights.temperature = 1.7f;
  expect_gradients_match_finite_differences(weights, "distillation at T = 1.7");
}

TEST(DviLoss, CrossEntropyGradientMatchesFiniteDifferences) {
  DviLossWeights weights;
  weights.distillation = 0.0f;
  weights.cross_entropy = 1.0f;
  expect_gradients_match_finite_differences(weights, "reward-masked cross-entropy");
}

TEST(DviLoss, PolicyGradientMatchesFiniteDifferences) {
  DviLossWeights weights;
  weights.distillation = 0.0f;
  weights.policy_gradient = 1.0f;
  weights.baseline = 0.4f;
  expect_gradients_match_finite_differences(weights, "policy gradient with a baseline");
}

TEST(DviLoss, CombinedLossGradientMatchesFiniteDifferences) {
  DviLossWeights weights;
  weights.distillation = 0.6f;
  weights.cross_entropy = 0.5f;
  weights.policy_gradient = 0.8f;
  weights.baseline = 0.7f;
  weights.temperature = 1.3f;
  expect_gradients_match_finite_differences(weights, "the combined loss");
  expect_gradients_match_finite_differences(weights, "the combined loss, without a lens", false);
}

// The importance ratio is a constant of the gradient: with it, the policy-gradient term is
// each record's unweighted one times min(clip, p_S(a) / p_logged(a)).
TEST(DviLoss, ImportanceWeightsScaleThePolicyGradientTerm) {
  Problem problem = random_problem(12);
  problem.records.resize(1);
  problem.batch.resize(1);
  cpu::ThreadPool pool(1);
  CpuDraftHeadTrainer trainer(problem.lm_head, kHidden, 1e-5f, pool);
  DviLossWeights weights;
  weights.distillation = 0.0f;
  weights.policy_gradient = 1.0f;
  DviGradients plain, weighted;
  const DviLossTerms unweighted =
      trainer.loss_and_gradients(problem.batch, problem.adapter, weights, plain).value();
  // −log p_S(a) = the cross-entropy term of an accepted record.
  ASSERT_EQ(problem.records[0].reward, 1.0f);
  const double log_p = -unweighted.cross_entropy;
  problem.records[0].draft_log_probability =
      static_cast<float>(log_p + std::log(4.0));  // ratio 1/4
  weights.importance_clip = 2.0f;
  const DviLossTerms quarter =
      trainer.loss_and_gradients(problem.batch, problem.adapter, weights, weighted).value();
  EXPECT_NEAR(quarter.policy_gradient, 0.25 * unweighted.policy_gradient, 1e-5);
  EXPECT_NEAR(weighted.b[0], 0.25f * plain.b[0], 1e-6);
  problem.records[0].draft_log_probability =
      static_cast<float>(log_p - std::log(10.0));  // ratio 10, clipped
  const DviLossTerms clipped =
      trainer.loss_and_gradients(problem.batch, problem.adapter, weights, weighted).value();
  EXPECT_NEAR(clipped.policy_gradient, 2.0 * unweighted.policy_gradient, 1e-5);
}

// Records that arrived before `policy_gradient_from` keep their distillation and
// cross-entropy terms and lose their policy-gradient term: the batch's loss and gradient are
// the record-weighted mix of the old half without it and the new half with it.
TEST(DviLoss, OldRecordsHaveNoPolicyGradientTerm) {
  Problem problem = random_problem(14);
  for (size_t i = 0; i < problem.records.size(); ++i) problem.records[i].serial = static_cast<int64_t>(10 + i);
  cpu::ThreadPool pool(1);
  CpuDraftHeadTrainer trainer(problem.lm_head, kHidden, 1e-5f, pool);
  DviLossWeights weights;
  weights.distillation = 0.7f;
  weights.cross_entropy = 0.5f;
  weights.policy_gradient = 1.0f;
  weights.baseline = 0.4f;
  weights.importance_clip = 2.0f;
  weights.policy_gradient_from = 13;  // records 3, 4, 5
  const std::vector<const DraftRecord*> old_half(problem.batch.begin(), problem.batch.begin() + 3);
  const std::vector<const DraftRecord*> new_half(problem.batch.begin() + 3, problem.batch.end());
  DviGradients mixed, old_gradients, new_gradients;
  const DviLossTerms all = trainer.loss_and_gradients(problem.batch, problem.adapter, weights, mixed).value();
  DviLossWeights without = weights;
  without.policy_gradient = 0.0f;
  const DviLossTerms old_terms =
      trainer.loss_and_gradients(old_half, problem.adapter, without, old_gradients).value();
  const DviLossTerms new_terms =
      trainer.loss_and_gradients(new_half, problem.adapter, weights, new_gradients).value();
  EXPECT_NEAR(all.total, 0.5 * (old_terms.total + new_terms.total), 1e-5);
  EXPECT_NEAR(all.policy_gradient, 0.5 * new_terms.policy_gradient, 1e-6);
  EXPECT_NE(new_terms.policy_gradient, 0.0);
  for (size_t i = 0; i < mixed.b.size(); ++i) {
    ASSERT_NEAR(mixed.b[i], 0.5f * (old_gradients.b[i] + new_gradients.b[i]), 1e-5f) << i;
  }
  for (size_t i = 0; i < mixed.lens.size(); ++i) {
    ASSERT_NEAR(mixed.lens[i], 0.5f * (old_gradients.lens[i] + new_gradients.lens[i]), 1e-5f) << i;
  }
  // With every record new enough, the term is back.
  weights.policy_gradient_from = 0;
  DviGradients ignored;
  EXPECT_GT(std::fabs(trainer.loss_and_gradients(problem.batch, problem.adapter, weights, ignored).value().total -
                      all.total),
            1e-4);
}

TEST(DviLoss, ResultsDoNotDependOnTheThreadCount) {
  const Problem problem = random_problem(13);
  DviLossWeights weights;
  weights.cross_entropy = 0.5f;
  weights.policy_gradient = 0.5f;
  DviGradients one, three;
  cpu::ThreadPool single(1), several(3);
  CpuDraftHeadTrainer a(problem.lm_head, kHidden, 1e-5f, single),
      b(problem.lm_head, kHidden, 1e-5f, several);
  const double loss_one =
      a.loss_and_gradients(problem.batch, problem.adapter, weights, one).value().total;
  const double loss_three =
      b.loss_and_gradients(problem.batch, problem.adapter, weights, three).value().total;
  EXPECT_EQ(loss_one, loss_three);
  EXPECT_EQ(0, std::memcmp(one.b.data(), three.b.data(), one.b.size() * sizeof(float)));
  EXPECT_EQ(one.a, three.a);
  EXPECT_EQ(one.gain, three.gain);
  ASSERT_FALSE(one.lens.empty());
  EXPECT_EQ(one.lens, three.lens);
}

TEST(DviRecords, TopLogitsAreTheLargestInOrderLowestIdFirstAmongTies) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 0.5f, 7.0f, 2.0f};
  DraftRecord record;
  keep_top_logits(logits, 4, record);
  EXPECT_EQ(record.verifier_tokens, (std::vector<int32_t>{6, 1, 3, 4}));
  EXPECT_EQ(record.verifier_logits, (std::vector<float>{7.0f, 3.0f, 3.0f, 2.0f}));
  keep_top_logits(logits, 20, record);  // more than there are: all, sorted
  EXPECT_EQ(record.verifier_tokens, (std::vector<int32_t>{6, 1, 3, 4, 7, 0, 5, 2}));
}

TEST(DviLoss, RecordsThatDoNotFitAreRefused) {
  Problem problem = random_problem(14);
  cpu::ThreadPool pool(1);
  CpuDraftHeadTrainer trainer(problem.lm_head, kHidden, 1e-5f, pool);
  DviGradients gradients;
  EXPECT_FALSE(trainer.loss_and_gradients({}, problem.adapter, {}, gradients).ok());
  problem.records[0].token = static_cast<int32_t>(kVocab);
  EXPECT_FALSE(trainer.loss_and_gradients(problem.batch, problem.adapter, {}, gradients).ok());
  problem.records[0].token = 0;
  problem.records[0].hidden.pop_back();
  EXPECT_FALSE(trainer.loss_and_gradients(problem.batch, problem.adapter, {}, gradients).ok());
  problem.records[0].hidden.push_back(0.0f);
  problem.adapter.lens.pop_back();  // a lens of the wrong size
  EXPECT_FALSE(trainer.loss_and_gradients(problem.batch, problem.adapter, {}, gradients).ok());
}

}  // namespace
}  // namespace draftwise
