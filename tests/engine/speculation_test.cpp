// Speculative decoding on the CPU reference, where batch invariance makes a verification
// pass's logits equal one-token steps' bit for bit: greedy output with any drafter (n-gram,
// a separate draft model, adversarial drafters) equals plain greedy output token for token;
// sampled tokens have the target's distribution whatever the draft's; target and drafter
// roll back after every possible number of accepted tokens; the statistics follow their
// definitions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>

#include "draft/early_exit_drafter.h"
#include "draft/model_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/draft_spec.h"
#include "engine/generation.h"
#include "engine/speculation.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "target/random_weights.h"
#include "tests/support/statistics.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::unique_ptr<CpuDecoder> fixture_decoder() {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  EXPECT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

// Random weights in the fixture's shape: another model with the same vocabulary.
std::unique_ptr<CpuDecoder> random_decoder(uint64_t seed) {
  const ModelConfig config = fixture_decoder()->config();
  auto decoder = CpuDecoder::create(config, random_weight_loader(seed), CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

GenerationOptions greedy_options(int64_t max_tokens) {
  GenerationOptions options;
  options.max_tokens = max_tokens;
  options.sampling.temperature = 0.0;
  return options;
}

// Proposals made by a function of the sequence so far (prompt and kept tokens), one-hot:
// the adversarial drafters of the tests.
class FunctionDrafter final : public Drafter {
 public:
  using Propose = std::function<std::vector<int32_t>(const std::vector<int32_t>& sequence, int max_tokens)>;
  FunctionDrafter(std::string name, Propose propose) : name_(std::move(name)), propose_(std::move(propose)) {}

  std::string name() const override { return name_; }
  Expected<DraftRequestId> begin(std::span<const int32_t> prompt, SequenceId, std::string_view) override {
    sequence_.assign(prompt.begin(), prompt.end());
    return 1;
  }
  Status advance(DraftRequestId, int accepted, int32_t next) override {
    if (accepted > static_cast<int>(proposal_.size())) return make_error("accepted more than proposed");
    sequence_.insert(sequence_.end(), proposal_.begin(), proposal_.begin() + accepted);
    sequence_.push_back(next);
    proposal_.clear();
    return {};
  }
  Status propose(std::span<const ProposalRequest> requests, std::vector<std::vector<DraftToken>>& proposals) override {
    proposals.assign(requests.size(), {});
    proposal_ = propose_(sequence_, requests.front().max_tokens);
    for (const int32_t token : proposal_) proposals.front().push_back({token, TokenDistribution::one_hot(token)});
    return {};
  }
  void end(DraftRequestId) override {}

 private:
  std::string name_;
  Propose propose_;
  std::vector<int32_t> sequence_;
  std::vector<int32_t> proposal_;
};

// The reference continuation's tokens from generated position `from`, at most `count`.
std::vector<int32_t> reference_slice(const std::vector<int32_t>& reference, size_t from, int count) {
  std::vector<int32_t> slice;
  for (size_t i = from; i < reference.size() && static_cast<int>(slice.size()) < count; ++i) {
    slice.push_back(reference[i]);
  }
  return slice;
}

TEST(Speculation, GreedyWithAnyDrafterEqualsPlainGreedyTokenForToken) {
  auto target = fixture_decoder();
  const int32_t vocab = static_cast<int32_t>(target->config().vocab_size);
  const std::vector<std::vector<int32_t>> prompts = {{1, 40, 41, 42}, {5, 6, 7, 5, 6, 7, 5, 6}, {200}};
  constexpr int64_t kTokens = 40;
  for (const std::vector<int32_t>& prompt : prompts) {
    const auto plain = generate(*target, nullptr, prompt, greedy_options(kTokens));
    ASSERT_TRUE(plain.ok()) << plain.error().message;
    const std::vector<int32_t>& reference = plain->token_ids;
    const size_t prompt_size = prompt.size();
    const auto generated = [&](const std::vector<int32_t>& sequence) { return sequence.size() - prompt_size; };
    Rng rng(99);
    std::vector<std::unique_ptr<Drafter>> drafters;
    for (const int n : {1, 2, 3}) drafters.push_back(std::move(NgramDrafter::create(n)).value());
    drafters.push_back(std::move(EarlyExitDrafter::create(*target, 1)).value());
    drafters.push_back(std::make_unique<ModelDrafter>(random_decoder(7), "model:random"));
    drafters.push_back(std::make_unique<ModelDrafter>(fixture_decoder(), "model:itself"));
    drafters.push_back(std::make_unique<FunctionDrafter>(
        "always wrong", [&](const std::vector<int32_t>& sequence, int max_tokens) {
          std::vector<int32_t> wrong = reference_slice(reference, generated(sequence), max_tokens);
          for (int32_t& token : wrong) token = (token + 1) % vocab;
          return wrong;
        }));
    drafters.push_back(std::make_unique<FunctionDrafter>(
        "always right", [&](const std::vector<int32_t>& sequence, int max_tokens) {
          return reference_slice(reference, generated(sequence), max_tokens);
        }));
    drafters.push_back(std::make_unique<FunctionDrafter>("random", [&](const std::vector<int32_t>&, int max_tokens) {
      std::vector<int32_t> tokens(static_cast<size_t>(rng.below(static_cast<uint64_t>(max_tokens) + 1)));
      for (int32_t& token : tokens) token = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
      return tokens;
    }));
    for (const std::unique_ptr<Drafter>& drafter : drafters) {
      for (const DraftLength length : {DraftLength::fixed(1), DraftLength::fixed(3), DraftLength::fixed(5),
                                       DraftLength::adaptive()}) {
        SCOPED_TRACE(drafter->name() + " k " + (length.is_adaptive() ? "auto" : std::to_string(length.current())));
        GenerationOptions options = greedy_options(kTokens);
        options.drafter = drafter.get();
        options.draft_length = length;
        const auto speculated = generate(*target, nullptr, prompt, options);
        ASSERT_TRUE(speculated.ok()) << speculated.error().message;
        EXPECT_EQ(speculated->token_ids, reference);
        const SpeculationStats& stats = speculated->stats.speculation;
        EXPECT_EQ(stats.generated_tokens, kTokens);
        EXPECT_LE(stats.accepted_tokens, stats.draft_tokens);
        // Every step produced its kept drafts and one token of the target's.
        EXPECT_EQ(stats.target_steps + stats.accepted_tokens, kTokens);
        if (drafter->name() == "always right" || drafter->name() == "model:itself") {
          EXPECT_EQ(stats.accepted_tokens, stats.draft_tokens);
        }
        if (drafter->name() == "always wrong") {
          EXPECT_EQ(stats.accepted_tokens, 0);
        }
      }
    }
  }
}

// Several requests speculate together, each with its own drafter (or none), draft length,
// max_tokens and sampling: every one equals itself generated alone, token for token (batch
// invariance), and each keeps its own number of accepted tokens. A bad request fails alone.
TEST(Speculation, BatchedRequestsEqualEachRequestAlone) {
  auto target = fixture_decoder();
  auto ngram = std::move(NgramDrafter::create(2)).value();
  auto early_exit = std::move(EarlyExitDrafter::create(*target, 1)).value();
  ModelDrafter model(random_decoder(7), "model:random");
  const std::vector<std::vector<int32_t>> prompts = {
      {5, 6, 7, 5, 6, 7, 5, 6}, {1, 40, 41, 42}, {200}, {9, 9, 9, 9}, {3, 1, 4, 1, 5, 9, 2, 6}, {}};
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest request;
    request.prompt = prompts[i];
    request.options = greedy_options(20 + 5 * static_cast<int64_t>(i));
    requests.push_back(request);
  }
  requests[0].options.drafter = ngram.get();
  requests[1].options.drafter = early_exit.get();
  requests[1].options.draft_length = DraftLength::fixed(3);
  requests[2].options.drafter = &model;
  requests[2].options.draft_length = DraftLength::adaptive();
  requests[3].options.drafter = ngram.get();
  requests[3].options.stop_token_ids = {9};
  requests[4].options.drafter = early_exit.get();
  requests[4].options.sampling.temperature = 0.9;
  requests[4].options.sampling.top_k = 20;
  requests[4].options.sampling.seed = 77;
  const auto together = generate_batch(*target, nullptr, requests);
  ASSERT_EQ(together.size(), requests.size());
  for (size_t i = 0; i + 1 < requests.size(); ++i) {
    SCOPED_TRACE(i);
    const auto alone = generate(*target, nullptr, requests[i].prompt, requests[i].options);
    ASSERT_TRUE(alone.ok() && together[i].ok()) << (together[i].ok() ? "" : together[i].error().message);
    EXPECT_EQ(together[i]->token_ids, alone->token_ids);
    EXPECT_EQ(together[i]->finish_reason, alone->finish_reason);
    EXPECT_EQ(together[i]->stats.speculation.accepted_tokens, alone->stats.speculation.accepted_tokens);
  }
  EXPECT_EQ(together[3]->finish_reason, FinishReason::stop);
  ASSERT_FALSE(together.back().ok());
  EXPECT_NE(together.back().error().message.find("the prompt is empty"), std::string::npos);
}

// A drafter whose first `right` tokens of every proposal are the target's and the rest
// wrong: after every step target and drafter keep exactly the accepted prefix.
TEST(Speculation, TargetRollsBackAfterEveryAcceptedCount) {
  auto target = fixture_decoder();
  const int32_t vocab = static_cast<int32_t>(target->config().vocab_size);
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  constexpr int kDraftLength = 4;
  constexpr int64_t kTokens = 36;
  const auto plain = generate(*target, nullptr, prompt, greedy_options(kTokens));
  ASSERT_TRUE(plain.ok());
  const std::vector<int32_t>& reference = plain->token_ids;
  for (int right = 0; right <= kDraftLength; ++right) {
    SCOPED_TRACE(right);
    FunctionDrafter drafter("right " + std::to_string(right), [&](const std::vector<int32_t>& sequence, int max_tokens) {
      std::vector<int32_t> tokens = reference_slice(reference, sequence.size() - prompt.size(), max_tokens);
      for (size_t i = static_cast<size_t>(right); i < tokens.size(); ++i) tokens[i] = (tokens[i] + 7) % vocab;
      return tokens;
    });
    GenerationOptions options = greedy_options(kTokens);
    options.drafter = &drafter;
    options.draft_length = DraftLength::fixed(kDraftLength);
    const auto speculated = generate(*target, nullptr, prompt, options);
    ASSERT_TRUE(speculated.ok()) << speculated.error().message;
    EXPECT_EQ(speculated->token_ids, reference);
    const SpeculationStats& stats = speculated->stats.speculation;
    ASSERT_GT(stats.drafts, 0);
    // Full proposals kept exactly `right` tokens; only the last, shortened by max_tokens, may differ.
    EXPECT_GE(stats.accepted_per_position.empty() ? 0 : stats.accepted_per_position.front(),
              right > 0 ? stats.drafts - 1 : 0);
    if (right < kDraftLength) {
      EXPECT_EQ(stats.accepted_per_position.size() > static_cast<size_t>(right)
                    ? stats.accepted_per_position[static_cast<size_t>(right)]
                    : 0,
                0);
    }
  }
}

// The draft model's cache after advance(accepted) holds exactly the kept sequence: its next
// proposal equals that of a fresh drafter given the same sequence.
TEST(Speculation, ModelDrafterRollsBackAfterEveryAcceptedCount) {
  const std::vector<int32_t> prompt = {9, 8, 7, 6, 5};
  constexpr int kDraftLength = 4;
  SamplingParams greedy;
  greedy.temperature = 0.0;
  SamplingPicker picker(greedy, 1);
  for (int accepted = 0; accepted <= kDraftLength; ++accepted) {
    SCOPED_TRACE(accepted);
    ModelDrafter drafter(random_decoder(11), "model:random");
    const DraftRequestId id = drafter.begin(prompt, 0, "").value();
    ASSERT_TRUE(drafter.advance(id, 0, 42).ok());
    std::vector<std::vector<DraftToken>> proposals;
    const ProposalRequest request{id, kDraftLength, &picker, 0.0};
    ASSERT_TRUE(drafter.propose(std::span(&request, 1), proposals).ok());
    ASSERT_EQ(proposals.front().size(), static_cast<size_t>(kDraftLength));
    std::vector<int32_t> kept = prompt;
    kept.push_back(42);
    for (int i = 0; i < accepted; ++i) kept.push_back(proposals.front()[static_cast<size_t>(i)].token);
    ASSERT_TRUE(drafter.advance(id, accepted, 17).ok());
    // The cache holds the kept sequence (but the new last token, 17, not yet fed); when every
    // draft was kept, the last draft, never fed while drafting, is fed with the next proposal.
    EXPECT_EQ(drafter.cached_tokens(id), static_cast<int64_t>(kept.size()) - (accepted == kDraftLength ? 1 : 0));
    kept.push_back(17);
    ASSERT_TRUE(drafter.propose(std::span(&request, 1), proposals).ok());
    const std::vector<DraftToken> after_rollback = proposals.front();

    ModelDrafter fresh(random_decoder(11), "model:random");
    const DraftRequestId fresh_id = fresh.begin(std::span(kept).first(kept.size() - 1), 0, "").value();
    ASSERT_TRUE(fresh.advance(fresh_id, 0, kept.back()).ok());
    const ProposalRequest fresh_request{fresh_id, kDraftLength, &picker, 0.0};
    ASSERT_TRUE(fresh.propose(std::span(&fresh_request, 1), proposals).ok());
    ASSERT_EQ(after_rollback.size(), proposals.front().size());
    for (size_t i = 0; i < after_rollback.size(); ++i) EXPECT_EQ(after_rollback[i].token, proposals.front()[i].token);
  }
}

TEST(Speculation, NgramDrafterProposesWhatFollowedTheLastOccurrence) {
  const std::vector<int32_t> sequence = {1, 2, 3, 9, 1, 2, 3, 8, 7, 1, 2, 3};
  EXPECT_EQ(ngram_continuation(sequence, 3, 2), (std::vector<int32_t>{8, 7}));  // the most recent one
  EXPECT_EQ(ngram_continuation(sequence, 3, 10), (std::vector<int32_t>{8, 7, 1, 2, 3}));
  EXPECT_EQ(ngram_continuation(sequence, 4, 3), (std::vector<int32_t>{}));  // "7 1 2 3" occurs once
  EXPECT_EQ(ngram_continuation(sequence, 1, 1), (std::vector<int32_t>{8}));
  EXPECT_TRUE(ngram_continuation(std::vector<int32_t>{5, 5}, 2, 4).empty());
  EXPECT_EQ(ngram_continuation(std::vector<int32_t>{5, 5, 5}, 2, 4), (std::vector<int32_t>{5}));
  EXPECT_FALSE(NgramDrafter::create(0).ok());
  EXPECT_FALSE(NgramDrafter::create(NgramDrafter::kMaxN + 1).ok());
  // Its state rolls back with the accepted count: the sequence is what was kept.
  auto drafter = std::move(NgramDrafter::create(2)).value();
  const DraftRequestId id = drafter->begin(std::vector<int32_t>{4, 5, 6, 4}, 0, "").value();
  ASSERT_TRUE(drafter->advance(id, 0, 5).ok());
  std::vector<std::vector<DraftToken>> proposals;
  const ProposalRequest request{id, 3, nullptr, 0.0};
  ASSERT_TRUE(drafter->propose(std::span(&request, 1), proposals).ok());
  ASSERT_EQ(proposals.front().size(), 3u);  // 6 4 5 followed the earlier "4 5"
  EXPECT_EQ(proposals.front()[0].token, 6);
  EXPECT_EQ(proposals.front()[2].token, 5);
  EXPECT_EQ(proposals.front()[0].distribution.probability(6), 1.0);
  ASSERT_TRUE(drafter->advance(id, 1, 9).ok());  // kept 6, then 9: 4 5 6 4 5 6 9
  ASSERT_TRUE(drafter->propose(std::span(&request, 1), proposals).ok());
  EXPECT_TRUE(proposals.front().empty());  // "6 9" never occurred
  EXPECT_FALSE(drafter->advance(id, 1, 3).ok());  // more than proposed
}

// Rejection sampling keeps the target's distribution at a fixed position, whatever the
// draft's: 20,000 verifications with a draft distribution deliberately far from the target's.
TEST(Speculation, SampledTokensHaveTheTargetsDistribution) {
  auto target = fixture_decoder();
  const int64_t vocab = target->config().vocab_size;
  const std::vector<int32_t> prompt = {1, 40, 41, 42, 43};
  SamplingParams params;
  params.temperature = 0.8;
  params.top_k = 12;
  params.seed = 5;
  const SequenceId sequence = target->create_sequence();
  const std::vector<int32_t> head(prompt.begin(), prompt.end() - 1);
  std::vector<float> logits;
  ASSERT_TRUE(target->forward(std::vector<ForwardRequest>{{sequence, head, {}}}, logits).ok());
  const int64_t cached = target->sequence_length(sequence);
  // The target's distribution after the prompt.
  const std::vector<int32_t> last = {prompt.back()};
  const std::vector<int32_t> first_row = {0};
  ASSERT_TRUE(target->forward(std::vector<ForwardRequest>{{sequence, last, first_row}}, logits).ok());
  ASSERT_TRUE(target->truncate_sequence(sequence, cached).ok());
  const TokenDistribution p = sampling_distribution(logits, params);
  // q: the five least likely of p's tokens and five p can never draw, uniformly.
  TokenDistribution q;
  for (size_t i = p.tokens.size() - 5; i < p.tokens.size(); ++i) q.tokens.push_back(p.tokens[i]);
  for (int32_t token = 0; static_cast<int>(q.tokens.size()) < 10; ++token) {
    if (p.probability(token) == 0.0) q.tokens.push_back(token);
  }
  q.probabilities.assign(q.tokens.size(), 1.0 / static_cast<double>(q.tokens.size()));

  Rng rng(2024);
  std::vector<int64_t> emitted(static_cast<size_t>(vocab), 0);
  std::vector<int64_t> drafted(static_cast<size_t>(vocab), 0);
  constexpr int kTrials = 20000;
  const std::vector<int32_t> rows = {0, 1};
  for (int trial = 0; trial < kTrials; ++trial) {
    const int32_t x = draw(q, rng.uniform());
    const std::vector<int32_t> tokens = {prompt.back(), x};
    ASSERT_TRUE(target->forward(std::vector<ForwardRequest>{{sequence, tokens, rows}}, logits).ok());
    ASSERT_TRUE(target->truncate_sequence(sequence, cached).ok());
    const DraftToken draft{x, q};
    const Verdict verdict = verify_sampled(std::span(&draft, 1), logits, vocab, params, rng);
    ++emitted[static_cast<size_t>(verdict.accepted == 1 ? x : verdict.next)];
    ++drafted[static_cast<size_t>(x)];
  }
  const std::vector<double> expected = testing::dense_probabilities(p, vocab);
  const double emitted_p_value = testing::chi_square_p_value(emitted, expected);
  const double drafted_p_value = testing::chi_square_p_value(drafted, expected);
  EXPECT_GT(emitted_p_value, 0.01);
  EXPECT_LT(drafted_p_value, 0.01);
  std::printf("chi-square p-values: emitted %.3f, the draft's own tokens %.3g\n", emitted_p_value, drafted_p_value);
}

TEST(Speculation, ChiSquareTestAcceptsItsOwnDistributionAndRejectsAnother) {
  const std::vector<double> probabilities = {0.5, 0.3, 0.2};
  EXPECT_GT(testing::chi_square_p_value(std::vector<int64_t>{5000, 3000, 2000}, probabilities), 0.99);
  EXPECT_LT(testing::chi_square_p_value(std::vector<int64_t>{4000, 3500, 2500}, probabilities), 1e-6);
  // Q(1, x) = exp(-x); Q(0.5, x) = erfc(sqrt(x)).
  EXPECT_NEAR(testing::upper_regularized_gamma(1.0, 2.5), std::exp(-2.5), 1e-12);
  EXPECT_NEAR(testing::upper_regularized_gamma(0.5, 0.7), std::erfc(std::sqrt(0.7)), 1e-12);
  EXPECT_NEAR(testing::upper_regularized_gamma(0.5, 9.0), std::erfc(3.0), 1e-14);
}

TEST(Speculation, VerificationRules) {
  const auto drafts_of = [](std::vector<int32_t> tokens) {
    std::vector<DraftToken> drafts;
    for (const int32_t token : tokens) drafts.push_back({token, TokenDistribution::one_hot(token)});
    return drafts;
  };
  const auto all = verify_greedy(drafts_of({4, 5, 6}), std::vector<int32_t>{4, 5, 6, 7});
  EXPECT_EQ(all.accepted, 3);
  EXPECT_EQ(all.next, 7);
  const auto some = verify_greedy(drafts_of({4, 9, 6}), std::vector<int32_t>{4, 5, 6, 7});
  EXPECT_EQ(some.accepted, 1);
  EXPECT_EQ(some.next, 5);
  const auto none = verify_greedy({}, std::vector<int32_t>{8});
  EXPECT_EQ(none.accepted, 0);
  EXPECT_EQ(none.next, 8);
  // Sampling: a one-hot draft of a token the target can never draw is always rejected,
  // and the correction is drawn from the target; a draft equal to the target's own
  // distribution is always kept.
  SamplingParams params;
  params.temperature = 1.0;
  params.top_k = 2;
  const std::vector<float> logits = {0.0f, 3.0f, 2.0f, -1.0f, /* next row */ 1.0f, 0.0f, 0.0f, 0.0f};
  Rng rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    const DraftToken impossible{0, TokenDistribution::one_hot(0)};
    const Verdict rejected = verify_sampled(std::span(&impossible, 1), logits, 4, params, rng);
    EXPECT_EQ(rejected.accepted, 0);
    EXPECT_TRUE(rejected.next == 1 || rejected.next == 2);
    const std::span<const float> first_row(logits.data(), 4);
    const DraftToken faithful{2, sampling_distribution(first_row, params)};
    EXPECT_EQ(verify_sampled(std::span(&faithful, 1), logits, 4, params, rng).accepted, 1);
  }
}

TEST(Speculation, StatisticsFollowTheirDefinitions) {
  SpeculationStats stats;
  stats.add_step(0, 0);  // the prefill's token
  stats.add_step(4, 2);
  stats.add_step(4, 4);
  stats.add_step(0, 0);  // nothing proposed
  stats.add_step(2, 0);
  stats.generated_tokens = 1 + 3 + 5 + 1 + 1;
  EXPECT_EQ(stats.drafts, 3);
  EXPECT_EQ(stats.draft_tokens, 10);
  EXPECT_EQ(stats.accepted_tokens, 6);
  EXPECT_DOUBLE_EQ(stats.acceptance_rate(), 0.6);
  EXPECT_DOUBLE_EQ(stats.mean_acceptance_length(), 1.0 + 6.0 / 3.0);
  EXPECT_DOUBLE_EQ(stats.tokens_per_target_step(), 11.0 / 5.0);
  EXPECT_EQ(stats.drafted_per_position, (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(stats.accepted_per_position, (std::vector<int64_t>{2, 2, 1, 1}));
  EXPECT_EQ(stats.acceptance_per_position(), (std::vector<double>{2.0 / 3, 2.0 / 3, 0.5, 0.5}));
  SpeculationStats pooled;
  pooled.add(stats);
  pooled.add(stats);
  EXPECT_EQ(pooled.drafts, 6);
  EXPECT_DOUBLE_EQ(pooled.mean_acceptance_length(), stats.mean_acceptance_length());
  EXPECT_EQ(pooled.accepted_per_position, (std::vector<int64_t>{4, 4, 2, 2}));
  const SpeculationStats plain;
  EXPECT_DOUBLE_EQ(plain.mean_acceptance_length(), 1.0);
}

TEST(Speculation, AdaptiveDraftLengthGrowsWhenAllAreKeptAndShrinksWhenFewAre) {
  DraftLength length = DraftLength::adaptive();
  EXPECT_EQ(length.current(), DraftLength::kInitial);
  length.update(4, 4);
  EXPECT_EQ(length.current(), 5);
  length.update(5, 2);  // fewer than half
  EXPECT_EQ(length.current(), 4);
  length.update(4, 2);  // half: unchanged
  EXPECT_EQ(length.current(), 4);
  for (int i = 0; i < 40; ++i) length.update(length.current(), 0);
  EXPECT_EQ(length.current(), 1);
  for (int i = 0; i < 40; ++i) length.update(length.current(), length.current());
  EXPECT_EQ(length.current(), DraftLength::kMaxDraftLength);
  DraftLength fixed = DraftLength::fixed(3);
  fixed.update(3, 0);
  EXPECT_EQ(fixed.current(), 3);
  EXPECT_EQ(fixed.min_probability(), 0.0);
}

TEST(DraftSpec, ParsesEveryKindAndRefusesTheRest) {
  auto ngram = parse_draft_spec("ngram:3@4", true);
  ASSERT_TRUE(ngram.ok());
  EXPECT_EQ(ngram->kind, DraftSpec::Kind::ngram);
  EXPECT_EQ(ngram->n, 3);
  EXPECT_EQ(ngram->name, "ngram:3");
  ASSERT_TRUE(ngram->draft_length.has_value());
  EXPECT_EQ(ngram->draft_length->current(), 4);
  auto self = parse_draft_spec("self:8@auto", true);
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(self->exit_layer, 8);
  EXPECT_TRUE(self->draft_length->is_adaptive());
  auto model = parse_draft_spec("model:/m/a@b.gguf", false);
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(model->path, "/m/a@b.gguf");
  EXPECT_FALSE(model->draft_length.has_value());
  EXPECT_FALSE(parse_draft_spec("ngram:3@0", true).ok());
  EXPECT_FALSE(parse_draft_spec("ngram:3@17", true).ok());
  EXPECT_FALSE(parse_draft_spec("medusa:2", false).ok());
  EXPECT_FALSE(parse_draft_spec("self:", false).ok());
  EXPECT_FALSE(parse_draft_spec("", false).ok());
  EXPECT_FALSE(parse_draft_length("auto ").ok());
  EXPECT_TRUE(parse_draft_length("16").ok());
}

TokenizerDefinition small_vocabulary() {
  TokenizerDefinition definition;
  definition.tokens = {"<s>", "</s>", "a", "b", "ab"};
  definition.kinds = {TokenKind::control, TokenKind::control, TokenKind::normal, TokenKind::normal, TokenKind::normal};
  definition.merges = {{"a", "b"}};
  definition.bos_id = 0;
  definition.eos_id = 1;
  return definition;
}

TEST(DraftSpec, DraftVocabularyMustBeTheTargets) {
  const Tokenizer target = Tokenizer::build(small_vocabulary(), "target").value();
  EXPECT_TRUE(check_same_vocabulary(target, target).ok());
  TokenizerDefinition renamed = small_vocabulary();
  renamed.tokens[3] = "c";
  renamed.merges.clear();
  const Status other_token = check_same_vocabulary(target, Tokenizer::build(renamed, "draft").value());
  ASSERT_FALSE(other_token.ok());
  EXPECT_NE(other_token.error().message.find("token 3 is 'c'"), std::string::npos) << other_token.error().message;
  TokenizerDefinition longer = small_vocabulary();
  longer.tokens.push_back("ba");
  longer.kinds.push_back(TokenKind::normal);
  const Status size = check_same_vocabulary(target, Tokenizer::build(longer, "draft").value());
  ASSERT_FALSE(size.ok());
  EXPECT_NE(size.error().message.find("6 tokens, the target's 5"), std::string::npos) << size.error().message;
  TokenizerDefinition eos = small_vocabulary();
  eos.eos_id = 0;
  const Status special = check_same_vocabulary(target, Tokenizer::build(eos, "draft").value());
  ASSERT_FALSE(special.ok());
  EXPECT_NE(special.error().message.find("EOS token is 0, the target's 1"), std::string::npos);
  TokenizerDefinition kinds = small_vocabulary();
  kinds.kinds[1] = TokenKind::normal;
  const Status kind = check_same_vocabulary(target, Tokenizer::build(kinds, "draft").value());
  ASSERT_FALSE(kind.ok());
  EXPECT_NE(kind.error().message.find("token 1 ('</s>') is a normal token"), std::string::npos)
      << kind.error().message;
}

}  // namespace
}  // namespace draftwise
