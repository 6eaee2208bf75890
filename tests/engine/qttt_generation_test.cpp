// qTTT in the engine (QTTT.md) on the CPU reference: greedy speculative decoding of an adapted
// request equals plain greedy decoding of the same adapted request; an adapted request beside
// an unadapted one leaves the other as it is alone; a preempted adapted request resumes where
// it was without training again; on the default model and a real text, the context's loss
// falls as the queries adapt.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "draft/early_exit_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/generation.h"
#include "engine/request_run.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::unique_ptr<CpuDecoder> tiny_decoder() {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  EXPECT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

// Prompts with repeats in them, so that n-gram drafting finds proposals.
std::vector<std::vector<int32_t>> repetitive_prompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < 3; ++p) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40 + 9 * p; ++i) prompt.push_back(static_cast<int32_t>((i % (7 + p)) * 11 + 3 * p + 1));
    prompts.push_back(prompt);
  }
  return prompts;
}

GenerationOptions adapted_greedy(int64_t rank) {
  GenerationOptions options;
  options.max_tokens = 32;
  options.sampling.temperature = 0.0;
  QttOptions qttt;
  qttt.steps = 4;
  qttt.span = 16;
  qttt.rank = rank;
  qttt.learning_rate = 3e-2f;
  qttt.seed = 5;
  options.qttt = qttt;
  return options;
}

TEST(QttGeneration, GreedySpeculationOnAnAdaptedRequestEqualsPlainGreedyOnIt) {
  auto target = tiny_decoder();
  std::vector<std::unique_ptr<Drafter>> drafters;
  drafters.push_back(std::move(NgramDrafter::create(1)).value());
  drafters.push_back(std::move(NgramDrafter::create(2)).value());
  drafters.push_back(std::move(EarlyExitDrafter::create(*target, 1)).value());
  int differing_from_unadapted = 0;
  std::map<std::string, int64_t> drafted;
  for (const int64_t rank : {0, 2}) {
    for (const std::vector<int32_t>& prompt : repetitive_prompts()) {
      const GenerationOptions options = adapted_greedy(rank);
      const auto plain = generate(*target, nullptr, prompt, options);
      ASSERT_TRUE(plain.ok()) << plain.error().message;
      ASSERT_TRUE(plain->stats.qttt.has_value());
      EXPECT_EQ(plain->stats.qttt->losses.size(), 4u);
      GenerationOptions unadapted = options;
      unadapted.qttt.reset();
      const auto without = generate(*target, nullptr, prompt, unadapted);
      ASSERT_TRUE(without.ok());
      if (without->token_ids != plain->token_ids) ++differing_from_unadapted;
      for (const std::unique_ptr<Drafter>& drafter : drafters) {
        for (const int k : {3, 5}) {
          SCOPED_TRACE(drafter->name() + " k " + std::to_string(k) + " rank " + std::to_string(rank));
          GenerationOptions speculative = options;
          speculative.drafter = drafter.get();
          speculative.draft_length = DraftLength::fixed(k);
          const auto speculated = generate(*target, nullptr, prompt, speculative);
          ASSERT_TRUE(speculated.ok()) << speculated.error().message;
          EXPECT_EQ(speculated->token_ids, plain->token_ids);
          drafted[drafter->name()] += speculated->stats.speculation.draft_tokens;
          ASSERT_TRUE(speculated->stats.qttt.has_value());
          EXPECT_EQ(speculated->stats.qttt->losses, plain->stats.qttt->losses);
        }
      }
    }
  }
  // The adaptation is not idle: it changes what the model says.
  EXPECT_GT(differing_from_unadapted, 0);
  for (const std::unique_ptr<Drafter>& drafter : drafters) EXPECT_GT(drafted[drafter->name()], 0) << drafter->name();
}

TEST(QttGeneration, AnUnadaptedRequestBesideAnAdaptedOneGetsWhatItGetsAlone) {
  auto target = tiny_decoder();
  const std::vector<std::vector<int32_t>> prompts = repetitive_prompts();
  GenerationOptions plain = adapted_greedy(0);
  plain.qttt.reset();
  const auto alone = generate(*target, nullptr, prompts[1], plain);
  const auto adapted_alone = generate(*target, nullptr, prompts[0], adapted_greedy(0));
  ASSERT_TRUE(alone.ok() && adapted_alone.ok());
  const std::vector<GenerationRequest> requests = {{prompts[0], adapted_greedy(0), {}}, {prompts[1], plain, {}}};
  auto together = generate_batch(*target, nullptr, requests);
  ASSERT_TRUE(together[0].ok() && together[1].ok());
  EXPECT_EQ(together[1]->token_ids, alone->token_ids);
  EXPECT_FALSE(together[1]->stats.qttt.has_value());
  EXPECT_EQ(together[0]->token_ids, adapted_alone->token_ids);
}

TEST(QttGeneration, APreemptedAdaptedRunResumesWhereItWasWithoutTrainingAgain) {
  auto target = tiny_decoder();
  const std::vector<int32_t> prompt = repetitive_prompts()[2];
  const GenerationOptions options = adapted_greedy(3);
  const auto alone = generate(*target, nullptr, prompt, options);
  ASSERT_TRUE(alone.ok());
  RequestRun run(*target, nullptr, prompt, options, {});
  ASSERT_TRUE(run.check().ok());
  ASSERT_TRUE(run.start(/*prefill_now=*/false).ok());
  RequestRun* const runs[] = {&run};
  int steps = 0;
  while (!run.finished()) {
    ASSERT_TRUE(step_runs(*target, runs, StepLimits{20, 16}).ok());
    // Before the adaptation (in the prompt), and twice after it.
    if (++steps == 1 || steps == 5 || steps == 9) {
      EXPECT_EQ(run.query_adaptation() != nullptr, steps > 1);
      run.preempt();
      ASSERT_TRUE(run.start(/*prefill_now=*/false).ok());
    }
  }
  const GenerationResult result = run.take_result();
  EXPECT_EQ(result.token_ids, alone->token_ids);
  ASSERT_TRUE(result.stats.qttt.has_value());
  EXPECT_EQ(result.stats.qttt->losses, alone->stats.qttt->losses);
}

TEST(QttGeneration, RequestsTheModelOrPromptCannotServeAreRefused) {
  auto target = tiny_decoder();
  GenerationOptions options = adapted_greedy(0);
  const std::vector<int32_t> one = {5};
  auto refused = generate(*target, nullptr, one, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("at least 2 tokens"), std::string::npos) << refused.error().message;
  options.qttt->rank = 100000;
  refused = generate(*target, nullptr, repetitive_prompts()[0], options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("'rank'"), std::string::npos) << refused.error().message;
}

// The default model on the start of a real news article (Spec-Bench's summarization set):
// the mean next-token loss over the whole context falls after a few steps.
TEST(QttGeneration, TheContextLossFallsOnARealTextWithTheDefaultModel) {
  DW_REQUIRE_DEFAULT_MODEL();
  auto checkpoint = Checkpoint::open(testing::default_model_path().string());
  ASSERT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, {});
  auto tokenizer = load_tokenizer(*checkpoint);
  ASSERT_TRUE(decoder.ok() && tokenizer.ok() && tokenizer->has_value());
  std::ifstream file(testing::source_dir() / "data/spec_bench/question_dev.jsonl");
  std::string text;
  for (std::string line; text.empty() && std::getline(file, line);) {
    const nlohmann::json question = nlohmann::json::parse(line);
    if (question["category"] == "summarization") text = question["turns"][0].get<std::string>();
  }
  ASSERT_FALSE(text.empty());
  std::vector<int32_t> tokens = (*tokenizer)->encode(text, EncodeOptions{.add_special = false});
  tokens.resize(std::min<size_t>(tokens.size(), 257));
  ASSERT_EQ(tokens.size(), 257u);
  CpuDecoder& model = **decoder;
  const SequenceId sequence = model.create_sequence();
  std::vector<float> logits;
  const ForwardRequest prefill{sequence, std::span(tokens).first(256), {}};
  ASSERT_TRUE(model.forward(std::span(&prefill, 1), logits).ok());
  auto before = model.query_loss(sequence, tokens, 0, 256, nullptr);
  ASSERT_TRUE(before.ok()) << before.error().message;
  QttOptions options;
  options.steps = 6;
  options.span = 64;
  auto report = model.adapt_queries(sequence, tokens, options);
  ASSERT_TRUE(report.ok()) << report.error().message;
  auto after = model.query_loss(sequence, tokens, 0, 256, nullptr);
  ASSERT_TRUE(after.ok());
  std::printf("context loss %.4f -> %.4f nats/token; step losses", *before, *after);
  for (const double loss : report->losses) std::printf(" %.3f", loss);
  std::printf("; %.1f s\n", report->seconds);
  EXPECT_LT(*after, *before - 0.01);
}

}  // namespace
}  // namespace draftwise
