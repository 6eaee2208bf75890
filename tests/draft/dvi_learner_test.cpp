// The DVI learner on the tiny fixture model: learning never changes greedy output (token for
// token on the CPU) and sampled output keeps the target's distribution with a trained
// adapter; the safety rails skip non-finite updates and revert destructive ones; adapters
// save and load byte for byte and draft identically; scopes keep their adapters apart.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "draft/dvi_learning.h"
#include "draft/early_exit_drafter.h"
#include "draft/model_drafter.h"
#include "engine/generation.h"
#include "engine/speculation.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/statistics.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

// The fixture's shape.
constexpr int64_t kHidden = 64;
constexpr int64_t kVocab = 256;

std::unique_ptr<CpuDecoder> fixture_decoder(const char* name = "llama_tied") {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models" / name).string());
  EXPECT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

// Small batches and frequent updates, so that a few short generations learn.
LearnerOptions quick_options() {
  LearnerOptions options;
  options.rank = 4;
  options.batch_size = 8;
  options.update_interval = 2;
  options.buffer_size = 256;
  options.top_k = 16;
  options.warmup_updates = 4;
  options.ramp_updates = 8;
  options.time_share = 1.0f;
  options.learning_rate = 1e-2f;
  return options;
}

std::unique_ptr<EarlyExitDrafter> learning_drafter(
    CpuDecoder& target, LearnScope scope, const LearnerOptions& options,
    std::optional<DraftAdapter> adapter = std::nullopt) {
  auto drafter = std::move(EarlyExitDrafter::create(target, 1)).value();
  auto learning = make_draft_learning(target, scope, options, std::move(adapter));
  EXPECT_TRUE(learning.ok()) << learning.error().message;
  drafter->set_learning(std::move(learning).value());
  return drafter;
}

const std::vector<std::vector<int32_t>> kPrompts = {
    {1, 40, 41, 42}, {5, 6, 7, 5, 6, 7, 5, 6}, {200}, {9, 8, 7, 6}, {3, 3, 3}, {12, 30, 12, 31}};

std::vector<int32_t> greedy(CpuDecoder& target, const std::vector<int32_t>& prompt,
                            Drafter* drafter, std::string key = "") {
  GenerationOptions options;
  options.max_tokens = 40;
  options.sampling.temperature = 0.0;
  options.drafter = drafter;
  options.draft_length = DraftLength::fixed(4);
  options.learning_key = std::move(key);
  auto result = generate(target, nullptr, prompt, options);
  EXPECT_TRUE(result.ok()) << result.error().message;
  return result.ok() ? result->token_ids : std::vector<int32_t>{};
}

TEST(DviLearning, GreedyOutputWithLearningEqualsPlainGreedyTokenForToken) {
  auto target = fixture_decoder();
  auto drafter = learning_drafter(*target, LearnScope::global, quick_options());
  for (int round = 0; round < 3; ++round) {
    for (const std::vector<int32_t>& prompt : kPrompts) {
      EXPECT_EQ(greedy(*target, prompt, drafter.get()), greedy(*target, prompt, nullptr));
    }
  }
  const LearnerStats stats = drafter->learning()->stats();
  EXPECT_GT(stats.updates, 10);
  EXPECT_GT(stats.records, 100);
  EXPECT_GT(stats.seconds, 0.0);
  // It learned something: the adapter moved away from where it started.
  const DraftAdapter initial =
      DraftAdapter::initial({kHidden, kVocab, 4, 32.0f, quick_options().lens}, target->final_norm_gain(),
                            quick_options().seed)
          .value();
  EXPECT_FALSE(*drafter->learning()->global_learner()->adapter() == initial);
}

// A draft model through a full-depth head (DraftHead::exit_layer = its layer count): the
// untrained head is the model's own pass, token for token, and its cache grows as forward()'s.
TEST(DviLearning, FullDepthHeadIsTheModelsOwnPass) {
  auto model = fixture_decoder("qwen2_bias");
  const int layers = static_cast<int>(model->config().num_layers);
  const std::vector<int32_t> tokens = {1, 40, 41, 42, 43};
  const std::vector<int32_t> rows = {2, 4};
  std::vector<float> plain, headed, hidden;
  const SequenceId a = model->create_sequence();
  const SequenceId b = model->create_sequence();
  ASSERT_TRUE(model->forward(std::vector<ForwardRequest>{{a, tokens, rows}}, plain).ok());
  const std::vector<float> gain(model->final_norm_gain().begin(), model->final_norm_gain().end());
  const DraftHead head{layers, gain, nullptr, &hidden};
  ASSERT_TRUE(model->forward_draft(std::vector<ForwardRequest>{{b, tokens, rows}}, head, headed).ok());
  EXPECT_EQ(headed, plain);
  EXPECT_EQ(hidden.size(), rows.size() * static_cast<size_t>(model->config().hidden_size));
  EXPECT_EQ(model->sequence_length(b), static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(model->pending_tokens(b), 0);
  // The next pass sees the cache a plain pass would have left.
  const std::vector<int32_t> next = {44};
  const std::vector<int32_t> first = {0};
  std::vector<float> after_plain, after_head;
  ASSERT_TRUE(model->forward(std::vector<ForwardRequest>{{a, next, first}}, after_plain).ok());
  ASSERT_TRUE(model->forward(std::vector<ForwardRequest>{{b, next, first}}, after_head).ok());
  EXPECT_EQ(after_head, after_plain);
  // A head beyond the last layer is refused.
  const DraftHead too_deep{layers + 1, gain};
  EXPECT_FALSE(model->forward_draft(std::vector<ForwardRequest>{{b, next, first}}, too_deep, headed).ok());
}

std::unique_ptr<ModelDrafter> learning_model_drafter(LearnScope scope, const LearnerOptions& options) {
  auto drafter = std::make_unique<ModelDrafter>(fixture_decoder("qwen2_bias"), "model:qwen2_bias");
  auto learning = make_draft_learning(drafter->head_decoder(), scope, options, std::nullopt);
  EXPECT_TRUE(learning.ok()) << learning.error().message;
  drafter->set_learning(std::move(learning).value());
  return drafter;
}

// A separate draft model learns from the target's verifications: the target's greedy output
// stays token for token; with the head untrained (learning off), it drafts what the plain
// draft model drafts.
TEST(DviLearning, DraftModelLearningKeepsGreedyOutputAndLearns) {
  auto target = fixture_decoder();
  auto learning = learning_model_drafter(LearnScope::global, quick_options());
  for (int round = 0; round < 3; ++round) {
    for (const std::vector<int32_t>& prompt : kPrompts) {
      EXPECT_EQ(greedy(*target, prompt, learning.get()), greedy(*target, prompt, nullptr));
    }
  }
  const LearnerStats stats = learning->learning()->stats();
  EXPECT_GT(stats.updates, 10);
  EXPECT_GT(stats.records, 100);
  const auto& head = learning->head_decoder();
  const auto* cpu = dynamic_cast<const CpuDecoder*>(&head);
  ASSERT_NE(cpu, nullptr);
  const DraftAdapter initial =
      DraftAdapter::initial({kHidden, kVocab, 4, 32.0f, quick_options().lens}, cpu->final_norm_gain(),
                            quick_options().seed)
          .value();
  EXPECT_FALSE(*learning->learning()->global_learner()->adapter() == initial);

  auto frozen = learning_model_drafter(LearnScope::off, quick_options());
  ModelDrafter plain(fixture_decoder("qwen2_bias"), "model:qwen2_bias");
  for (const std::vector<int32_t>& prompt : kPrompts) {
    GenerationOptions options;
    options.max_tokens = 30;
    options.sampling.temperature = 0.0;
    options.draft_length = DraftLength::fixed(4);
    options.drafter = frozen.get();
    const auto a = generate(*target, nullptr, prompt, options);
    options.drafter = &plain;
    const auto b = generate(*target, nullptr, prompt, options);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->token_ids, b->token_ids);
    EXPECT_EQ(a->stats.speculation.accepted_per_position, b->stats.speculation.accepted_per_position);
  }
}

// Rejection sampling with an early-exit draft through a trained adapter, held fixed: at a
// fixed position the emitted tokens follow the target's distribution (chi-square, p > 0.01).
TEST(DviLearning, SampledTokensKeepTheTargetsDistributionWithATrainedAdapter) {
  auto target = fixture_decoder();
  auto trainer = learning_drafter(*target, LearnScope::global, quick_options());
  for (const std::vector<int32_t>& prompt : kPrompts) greedy(*target, prompt, trainer.get());
  ASSERT_GT(trainer->learning()->stats().updates, 0);
  auto drafter = learning_drafter(*target, LearnScope::off, quick_options(),
                                  *trainer->learning()->global_learner()->adapter());

  const int64_t vocab = target->config().vocab_size;
  const std::vector<int32_t> prompt = {1, 40, 41, 42, 43};
  SamplingParams params;
  params.temperature = 1.0;
  params.seed = 9;
  const SequenceId sequence = target->create_sequence();
  const std::vector<int32_t> head(prompt.begin(), prompt.end() - 1);
  std::vector<float> logits;
  ASSERT_TRUE(target->forward(std::vector<ForwardRequest>{{sequence, head, {}}}, logits).ok());
  const int64_t cached = target->sequence_length(sequence);
  const std::vector<int32_t> last = {prompt.back()};
  const std::vector<int32_t> first_row = {0};
  ASSERT_TRUE(
      target->forward(std::vector<ForwardRequest>{{sequence, last, first_row}}, logits).ok());
  ASSERT_TRUE(target->truncate_sequence(sequence, cached).ok());
  const TokenDistribution p = sampling_distribution(logits, params);

  SamplingPicker picker(params, 77);
  Rng rng(2025);
  std::vector<int64_t> emitted(static_cast<size_t>(vocab), 0);
  constexpr int kTrials = 20000;
  const std::vector<int32_t> rows = {0, 1};
  std::vector<std::vector<DraftToken>> proposals;
  for (int trial = 0; trial < kTrials; ++trial) {
    const DraftRequestId id = drafter->begin(head, sequence, "").value();
    ASSERT_TRUE(drafter->advance(id, 0, prompt.back()).ok());
    const ProposalRequest request{id, 1, &picker, 0.0};
    ASSERT_TRUE(drafter->propose(std::span(&request, 1), proposals).ok());
    ASSERT_EQ(proposals[0].size(), 1u);
    const DraftToken draft = proposals[0][0];
    const std::vector<int32_t> tokens = {prompt.back(), draft.token};
    ASSERT_TRUE(
        target->forward(std::vector<ForwardRequest>{{sequence, tokens, rows}}, logits).ok());
    ASSERT_TRUE(target->truncate_sequence(sequence, cached).ok());
    drafter->end(id);
    const Verdict verdict = verify_sampled(std::span(&draft, 1), logits, vocab, params, rng);
    ++emitted[static_cast<size_t>(verdict.accepted == 1 ? draft.token : verdict.next)];
  }
  const std::vector<double> expected = testing::dense_probabilities(p, vocab);
  const double p_value = testing::chi_square_p_value(emitted, expected);
  EXPECT_GT(p_value, 0.01);
  std::printf("chi-square p-value with a trained adapter: %.3f\n", p_value);
}

// An untrained rank-4 adapter for the fixture.
DraftAdapter small_adapter(const CpuDecoder& target) {
  return DraftAdapter::initial({kHidden, kVocab, 4, 8.0f}, target.final_norm_gain(), 1).value();
}

DraftRecord record_of(int64_t hidden, float value, int32_t token, float reward) {
  DraftRecord record;
  record.hidden.assign(static_cast<size_t>(hidden), value);
  record.hidden[0] = -value;
  record.token = token;
  record.draft_log_probability = -1.0f;
  record.verifier_tokens = {token, token + 1};
  record.verifier_logits = {2.0f, 1.0f};
  record.reward = reward;
  return record;
}

// The draft pass and the trainer compute one head: the trainer's cross-entropy of a drafted
// token equals −log softmax of the draft pass's logits there, with a lens and without.
TEST(DviAdapter, DraftPassAndTrainerComputeTheSameHead) {
  auto target = fixture_decoder();
  CpuDraftHeadTrainer trainer(target->lm_head(), kHidden, static_cast<float>(target->config().rms_norm_eps),
                              target->thread_pool());
  for (const bool lens : {true, false}) {
    SCOPED_TRACE(lens);
    DraftAdapter adapter =
        DraftAdapter::initial({kHidden, kVocab, 4, 8.0f, lens}, target->final_norm_gain(), 3).value();
    Rng rng(4);
    for (float& b : adapter.b) b = 0.3f * static_cast<float>(rng.uniform() - 0.5);
    for (float& m : adapter.lens) m = 0.1f * static_cast<float>(rng.uniform() - 0.5);
    const LowRankAdapter low_rank = adapter.low_rank();
    std::vector<float> exit_hidden, logits;
    const DraftHead head{1, adapter.gain, &low_rank, &exit_hidden};
    const SequenceId sequence = target->create_sequence();
    const std::vector<int32_t> tokens = {1, 40, 41, 42};
    const std::vector<int32_t> rows = {3};
    ASSERT_TRUE(target->forward_draft(std::vector<ForwardRequest>{{sequence, tokens, rows}}, head, logits).ok());
    target->release_sequence(sequence);
    const int32_t token = 17;
    DraftRecord record;
    record.hidden = exit_hidden;
    record.token = token;
    record.reward = 1.0f;
    const DraftRecord* batch[] = {&record};
    DviLossWeights weights;
    weights.distillation = 0.0f;
    weights.cross_entropy = 1.0f;
    DviGradients ignored;
    const auto terms = trainer.loss_and_gradients(batch, adapter, weights, ignored);
    ASSERT_TRUE(terms.ok()) << terms.error().message;
    double largest = -INFINITY, total = 0.0;
    for (const float z : logits) largest = std::max<double>(largest, z);
    for (const float z : logits) total += std::exp(z - largest);
    const double cross_entropy = -(logits[token] - largest - std::log(total));
    EXPECT_NEAR(terms->cross_entropy, cross_entropy, 1e-4 * std::fabs(cross_entropy) + 1e-5);
  }
}

// The KL → RL schedule: distillation alone through the warm-up, then a linear hand-over to
// the policy gradient, which covers the newest `policy_gradient_recent` records only.
TEST(DviLearner, ScheduleHandsOverFromDistillationToThePolicyGradient) {
  auto target = fixture_decoder();
  CpuDraftHeadTrainer trainer(target->lm_head(), kHidden, 1e-5f, target->thread_pool());
  LearnerOptions options = quick_options();  // warm-up 4, ramp 8
  options.policy_gradient_weight = 0.8f;
  options.distillation_floor = 0.2f;
  options.policy_gradient_recent = 3;
  OnlineLearner learner(trainer, small_adapter(*target), options);
  for (int i = 0; i < 10; ++i) learner.add_record(record_of(kHidden, 0.5f, 3, 1.0f));
  const DviLossWeights warm = learner.weights_at(3);
  EXPECT_EQ(warm.distillation, 1.0f);
  EXPECT_EQ(warm.policy_gradient, 0.0f);
  const DviLossWeights half = learner.weights_at(8);
  EXPECT_NEAR(half.policy_gradient, 0.4f, 1e-6f);
  EXPECT_NEAR(half.distillation, 0.6f, 1e-6f);
  EXPECT_EQ(half.policy_gradient_from, 7);  // records 7, 8, 9 of 0..9
  const DviLossWeights after = learner.weights_at(40);
  EXPECT_NEAR(after.policy_gradient, 0.8f, 1e-6f);
  EXPECT_NEAR(after.distillation, 0.2f, 1e-6f);
  EXPECT_EQ(after.cross_entropy, options.cross_entropy_weight);
  options.policy_gradient_recent = 0;  // every record kept
  OnlineLearner every(trainer, small_adapter(*target), options);
  every.add_record(record_of(kHidden, 0.5f, 3, 1.0f));
  EXPECT_EQ(every.weights_at(40).policy_gradient_from, 0);
  options.policy_gradient = false;  // KL only
  OnlineLearner kl_only(trainer, small_adapter(*target), options);
  EXPECT_EQ(kl_only.weights_at(40).policy_gradient, 0.0f);
  EXPECT_EQ(kl_only.weights_at(40).distillation, 1.0f);
}

TEST(DviLearner, NonFiniteGradientIsSkippedAndCounted) {
  auto target = fixture_decoder();
  CpuDraftHeadTrainer trainer(target->lm_head(), kHidden, 1e-5f, target->thread_pool());
  LearnerOptions options = quick_options();
  options.batch_size = 2;
  const DraftAdapter initial = small_adapter(*target);
  OnlineLearner learner(trainer, initial, options);
  learner.add_record(record_of(kHidden, 0.5f, 3, 1.0f));
  learner.add_record(record_of(kHidden, INFINITY, 4, 0.0f));
  ASSERT_TRUE(learner.update().ok());
  EXPECT_EQ(learner.stats().skipped, 1);
  EXPECT_EQ(learner.stats().updates, 0);
  EXPECT_TRUE(*learner.adapter() == initial);
}

// An update that wrecks acceptance (a huge learning rate) is reverted to the last good
// adapter after two low windows.
TEST(DviLearner, DestructiveUpdateIsDetectedAndReverted) {
  auto target = fixture_decoder();
  CpuDraftHeadTrainer trainer(target->lm_head(), kHidden, 1e-5f, target->thread_pool());
  LearnerOptions options = quick_options();
  options.batch_size = 2;
  options.learning_rate = 1e3f;
  options.revert_window = 16;
  const DraftAdapter initial = small_adapter(*target);
  OnlineLearner learner(trainer, initial, options);
  learner.observe_verification(16, 12);  // the level: 0.75
  const DraftAdapter good = *learner.adapter();
  learner.add_record(record_of(kHidden, 0.5f, 3, 1.0f));
  learner.add_record(record_of(kHidden, 0.7f, 5, 0.0f));
  ASSERT_TRUE(learner.update().ok());
  ASSERT_EQ(learner.stats().updates, 1);
  EXPECT_FALSE(*learner.adapter() == good);
  learner.observe_verification(16, 1);
  EXPECT_EQ(learner.stats().reverted, 0);  // one low window is not enough
  learner.observe_verification(16, 0);
  EXPECT_EQ(learner.stats().reverted, 1);
  EXPECT_TRUE(*learner.adapter() == good);
  // A window within the margin keeps the adapter.
  learner.observe_verification(16, 11);
  EXPECT_EQ(learner.stats().reverted, 1);
}

// Updates stay within their share of the serving time, which counts only while learning.
TEST(DviLearner, UpdatesWaitForTheirShareOfServingTime) {
  auto target = fixture_decoder();
  CpuDraftHeadTrainer trainer(target->lm_head(), kHidden, 1e-5f, target->thread_pool());
  LearnerOptions options = quick_options();
  options.batch_size = 2;
  options.update_interval = 1;
  options.time_share = 0.15f;
  OnlineLearner learner(trainer, small_adapter(*target), options);
  learner.add_record(record_of(kHidden, 0.5f, 3, 1.0f));
  learner.add_record(record_of(kHidden, 0.7f, 5, 0.0f));
  learner.observe_verification(2, 1);
  EXPECT_TRUE(*learner.maybe_update());  // the first: nothing to estimate its length from
  learner.observe_verification(2, 1);
  EXPECT_FALSE(*learner.maybe_update());  // the serving time so far is the update itself
  learner.set_enabled(false);
  learner.add_serving_time(100.0);  // not learning: does not count
  learner.set_enabled(true);
  EXPECT_FALSE(*learner.maybe_update());
  learner.add_serving_time(100.0);
  EXPECT_TRUE(*learner.maybe_update());
  EXPECT_EQ(learner.stats().updates, 2);
}

TEST(DviLearner, LearningCanBeSwitchedOff) {
  auto target = fixture_decoder();
  auto drafter = learning_drafter(*target, LearnScope::global, quick_options());
  greedy(*target, kPrompts[1], drafter.get());
  drafter->learning()->set_enabled(false);
  const LearnerStats before = drafter->learning()->stats();
  const DraftAdapter adapter = *drafter->learning()->global_learner()->adapter();
  for (const std::vector<int32_t>& prompt : kPrompts) greedy(*target, prompt, drafter.get());
  EXPECT_EQ(drafter->learning()->stats().records, before.records);
  EXPECT_EQ(drafter->learning()->stats().updates, before.updates);
  EXPECT_TRUE(*drafter->learning()->global_learner()->adapter() == adapter);
}

// Learning switched on between a proposal and its verification: that block teaches nothing,
// and the request goes on.
TEST(DviLearning, SwitchingLearningOnMidStepSkipsThatBlock) {
  auto target = fixture_decoder();
  auto drafter = learning_drafter(*target, LearnScope::global, quick_options());
  drafter->learning()->set_enabled(false);
  const std::vector<int32_t> prompt = {5, 6, 7, 5};
  const SequenceId sequence = target->create_sequence();
  std::vector<float> logits;
  ASSERT_TRUE(target->forward(std::vector<ForwardRequest>{{sequence, prompt, {}}}, logits).ok());
  const DraftRequestId id = drafter->begin(prompt, sequence, "").value();
  ASSERT_TRUE(drafter->advance(id, 0, 6).ok());
  SamplingParams greedy_params;
  greedy_params.temperature = 0.0;
  SamplingPicker picker(greedy_params, 1);
  const ProposalRequest request{id, 3, &picker, 0.0};
  std::vector<std::vector<DraftToken>> proposals;
  ASSERT_TRUE(drafter->propose(std::span(&request, 1), proposals).ok());
  ASSERT_FALSE(proposals[0].empty());
  drafter->learning()->set_enabled(true);
  const std::vector<float> target_logits((proposals[0].size() + 1) * kVocab, 0.0f);
  EXPECT_TRUE(drafter->observe_verification(id, 0, target_logits).ok());
  EXPECT_TRUE(drafter->advance(id, 0, 7).ok());
  EXPECT_EQ(drafter->learning()->stats().records, 0);
  drafter->end(id);
  target->release_sequence(sequence);
}

TEST(DviAdapter, SaveThenLoadGivesIdenticalBytesAndDrafts) {
  auto target = fixture_decoder();
  auto trainer = learning_drafter(*target, LearnScope::global, quick_options());
  for (const std::vector<int32_t>& prompt : kPrompts) greedy(*target, prompt, trainer.get());
  const DraftAdapter trained = *trainer->learning()->global_learner()->adapter();
  ASSERT_TRUE(std::any_of(trained.lens.begin(), trained.lens.end(), [](float m) { return m != 0.0f; }));
  const auto folder = std::filesystem::temp_directory_path() / "draftwise_dvi_adapter_test";
  std::filesystem::create_directories(folder);
  const auto path = folder / "adapter.safetensors";
  ASSERT_TRUE(save_draft_adapter(trained, path).ok());
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
  const auto loaded = load_draft_adapter(path, kHidden, kVocab);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_TRUE(*loaded == trained);
  const auto second = folder / "again.safetensors";
  ASSERT_TRUE(save_draft_adapter(*loaded, second).ok());
  std::ifstream first_file(path, std::ios::binary), second_file(second, std::ios::binary);
  const std::string first_bytes{std::istreambuf_iterator<char>(first_file), {}};
  const std::string second_bytes{std::istreambuf_iterator<char>(second_file), {}};
  EXPECT_EQ(first_bytes, second_bytes);

  // Identical drafts: frozen drafters with the trained and the loaded adapter.
  auto with_trained = learning_drafter(*target, LearnScope::off, quick_options(), trained);
  auto with_loaded = learning_drafter(*target, LearnScope::off, quick_options(), *loaded);
  for (const std::vector<int32_t>& prompt : kPrompts) {
    GenerationOptions options;
    options.max_tokens = 30;
    options.sampling.temperature = 0.0;
    options.drafter = with_trained.get();
    const auto a = generate(*target, nullptr, prompt, options);
    options.drafter = with_loaded.get();
    const auto b = generate(*target, nullptr, prompt, options);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->token_ids, b->token_ids);
    EXPECT_EQ(a->stats.speculation.accepted_per_position,
              b->stats.speculation.accepted_per_position);
  }
  std::filesystem::remove_all(folder);
}

TEST(DviAdapter, FilesThatDoNotFitAreRefusedWithTheReason) {
  auto target = fixture_decoder();
  const DraftAdapter adapter = small_adapter(*target);
  const auto folder = std::filesystem::temp_directory_path() / "draftwise_dvi_adapter_bad";
  std::filesystem::create_directories(folder);
  const auto path = folder / "adapter.safetensors";
  ASSERT_TRUE(save_draft_adapter(adapter, path).ok());
  const auto wrong_vocab = load_draft_adapter(path, kHidden, kVocab + 1);
  ASSERT_FALSE(wrong_vocab.ok());
  EXPECT_NE(wrong_vocab.error().message.find("draft_head.lora_B"), std::string::npos)
      << wrong_vocab.error().message;
  const auto missing = load_draft_adapter(folder / "absent.safetensors", kHidden, kVocab);
  EXPECT_FALSE(missing.ok());
  std::filesystem::resize_file(path, 100);
  const auto truncated = load_draft_adapter(path, kHidden, kVocab);
  EXPECT_FALSE(truncated.ok());
  std::filesystem::remove_all(folder);
}

TEST(DviLearning, RequestScopeLeavesTheGlobalAdapterUntouched) {
  auto target = fixture_decoder();
  auto drafter = learning_drafter(*target, LearnScope::request, quick_options());
  const DraftAdapter global = *drafter->learning()->global_learner()->adapter();
  for (const std::vector<int32_t>& prompt : kPrompts) greedy(*target, prompt, drafter.get());
  EXPECT_GT(drafter->learning()->stats().updates, 0);
  EXPECT_TRUE(*drafter->learning()->global_learner()->adapter() == global);
  EXPECT_EQ(drafter->learning()->global_learner()->stats().updates, 0);
}

TEST(DviLearning, KeyScopesNeverMix) {
  auto target = fixture_decoder();
  auto drafter = learning_drafter(*target, LearnScope::key, quick_options());
  for (const std::vector<int32_t>& prompt : kPrompts)
    greedy(*target, prompt, drafter.get(), "alice");
  const OnlineLearner* alice = drafter->learning()->key_learner("alice");
  ASSERT_NE(alice, nullptr);
  EXPECT_GT(alice->stats().updates, 0);
  EXPECT_EQ(drafter->learning()->key_learner("bob"), nullptr);
  const DraftAdapter alice_adapter = *alice->adapter();
  const LearnerStats alice_stats = alice->stats();
  for (const std::vector<int32_t>& prompt : kPrompts)
    greedy(*target, std::vector<int32_t>(prompt.rbegin(), prompt.rend()), drafter.get(), "bob");
  const OnlineLearner* bob = drafter->learning()->key_learner("bob");
  ASSERT_NE(bob, nullptr);
  EXPECT_GT(bob->stats().updates, 0);
  EXPECT_TRUE(*alice->adapter() == alice_adapter);
  EXPECT_EQ(alice->stats().records, alice_stats.records);
  EXPECT_FALSE(*bob->adapter() == alice_adapter);
}

TEST(DviLearning, BadOptionsAndBackendsAreRefused) {
  auto target = fixture_decoder();
  LearnerOptions options = quick_options();
  options.rank = 0;
  EXPECT_FALSE(make_draft_learning(*target, LearnScope::global, options, std::nullopt).ok());
  options = quick_options();
  options.buffer_size = 4;  // below the batch size
  EXPECT_FALSE(make_draft_learning(*target, LearnScope::global, options, std::nullopt).ok());
  EXPECT_FALSE(parse_learn_scope("everyone").ok());
  EXPECT_EQ(*parse_learn_scope("key"), LearnScope::key);
}

}  // namespace
}  // namespace draftwise
