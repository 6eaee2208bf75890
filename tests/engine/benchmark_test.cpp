// The benchmark's core: prompts read from Spec-Bench's format and from JSONL, selected by
// category; a run on the tiny model whose every figure is consistent with its definition
// (τ = 1 + accepted / drafts, `ar`'s speed-up and τ are 1), with a deliberately broken mode
// flagged as not lossless at the position where it differs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>

#include "draft/early_exit_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/benchmark.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

const std::string kDevPrompts = (testing::source_dir() / "data/spec_bench/question_dev.jsonl").string();

TEST(Benchmark, ReadsSpecBenchPrompts) {
  const auto prompts = read_bench_prompts(kDevPrompts);
  ASSERT_TRUE(prompts.ok()) << prompts.error().message;
  ASSERT_EQ(prompts->size(), 240u);
  EXPECT_EQ(prompts->front().id, "82");
  EXPECT_EQ(prompts->front().category, "writing");
  EXPECT_EQ(prompts->front().turns.size(), 2u);
  const std::vector<std::string> qa = {"qa", "math"};
  const auto selected = select_bench_prompts(*prompts, qa, 3);
  ASSERT_TRUE(selected.ok());
  ASSERT_EQ(selected->size(), 6u);
  for (const BenchPrompt& prompt : *selected) EXPECT_TRUE(prompt.category == "qa" || prompt.category == "math");
  const std::vector<std::string> unknown = {"poetry"};
  const auto refused = select_bench_prompts(*prompts, unknown, 0);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("unknown category 'poetry'"), std::string::npos);
  EXPECT_NE(refused.error().message.find("math_reasoning"), std::string::npos);
  EXPECT_EQ(select_bench_prompts(*prompts, {}, 0)->size(), 240u);
}

TEST(Benchmark, ReadsJsonlPromptsAndNamesTheBadLine) {
  testing::ScratchDir dir;
  const auto good = dir.write("good.jsonl",
                              "{\"id\": \"a\", \"prompt\": \"hello\"}\n\n"
                              "{\"category\": \"chat\", \"messages\": [{\"role\": \"system\", \"content\": \"be brief\"},"
                              " {\"role\": \"user\", \"content\": \"hi\"}]}\n");
  const auto prompts = read_bench_prompts(good.string());
  ASSERT_TRUE(prompts.ok()) << prompts.error().message;
  ASSERT_EQ(prompts->size(), 2u);
  EXPECT_EQ((*prompts)[0].id, "a");
  EXPECT_EQ((*prompts)[0].category, "default");
  EXPECT_EQ((*prompts)[0].turns, std::vector<std::string>{"hello"});
  EXPECT_EQ((*prompts)[1].id, "3");  // its line number
  EXPECT_EQ((*prompts)[1].messages.size(), 2u);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"prompt\": \"x\"}\n{not json\n", "line 2 is not valid JSON"},
      {"[1, 2]\n", "line 1: expected a JSON object"},
      {"{\"id\": 1}\n", "exactly one of \"turns\", \"prompt\" and \"messages\""},
      {"{\"prompt\": \"a\", \"turns\": [\"b\"]}\n", "exactly one of"},
      {"{\"turns\": []}\n", "\"turns\" must be a non-empty list"},
      {"{\"turns\": [3]}\n", "every turn must be a string"},
      {"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n", "unknown role 'robot'"},
      {"{\"messages\": [{\"role\": \"user\"}]}\n", "needs a string \"role\" and a \"content\""},
      {"{\"prompt\": \"x\", \"category\": 7}\n", "\"category\" must be a string"},
      {"\n\n", "holds no prompts"}};
  for (const auto& [text, problem] : bad) {
    const auto path = dir.write("bad.jsonl", text);
    const auto refused = read_bench_prompts(path.string());
    ASSERT_FALSE(refused.ok()) << text;
    EXPECT_NE(refused.error().message.find(problem), std::string::npos) << refused.error().message;
    EXPECT_NE(refused.error().message.find("bad.jsonl"), std::string::npos);
  }
  EXPECT_FALSE(read_bench_prompts("/nonexistent/prompts.jsonl").ok());
}

// Text as bytes, which are the tiny model's 256 token ids.
BenchFormat byte_format() {
  BenchFormat format;
  format.render = [](std::span<const ChatMessage> messages) -> Expected<std::vector<int32_t>> {
    std::vector<int32_t> tokens;
    for (const ChatMessage& message : messages) {
      for (const char c : message.role + ": " + message.content + "\n") tokens.push_back(static_cast<uint8_t>(c));
    }
    return tokens;
  };
  format.answer_text = [](std::span<const int32_t> tokens) {
    std::string text;
    for (const int32_t token : tokens) text.push_back(static_cast<char>(token));
    return text;
  };
  return format;
}

TEST(Benchmark, EveryFigureOfATinyRunFollowsItsDefinition) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  ASSERT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  ASSERT_TRUE(decoder.ok());
  // Short prompts (the tiny model's context holds 256 bytes), two categories, one and two turns.
  const std::vector<std::string> categories = {"writing", "qa"};
  const std::optional<std::vector<BenchPrompt>> prompts = std::vector<BenchPrompt>{
      {"1", "writing", {"abc abc abc", "again"}, {}},
      {"2", "qa", {"why?"}, {}},
      {"3", "writing", {"xyzxyz"}, {}},
      {"4", "qa", {"1 2 3 1 2 3", "and?"}, {}}};
  auto ngram = std::move(NgramDrafter::create(2)).value();
  auto early_exit = std::move(EarlyExitDrafter::create(**decoder, 1)).value();
  std::vector<BenchMode> modes(4);
  modes[0].name = "ar";
  modes[1] = {"ngram:2@3", ngram.get(), DraftLength::fixed(3), {}};
  modes[2] = {"self:1@2", early_exit.get(), DraftLength::fixed(2), {}};
  // Broken: plain decoding with its third token of every turn replaced.
  modes[3].name = "broken";
  modes[3].generate = [](Decoder& target, std::span<const int32_t> prompt, const GenerationOptions& options) {
    Expected<GenerationResult> result = generate(target, nullptr, prompt, options);
    if (result.ok() && result->token_ids.size() > 2) result->token_ids[2] = (result->token_ids[2] + 1) % 256;
    return result;
  };
  BenchConfig config;
  config.max_tokens = 12;
  config.sampling.temperature = 0.0;
  size_t reported = 0;
  const auto outcomes = run_bench(**decoder, *prompts, modes, config, byte_format(),
                                  [&](size_t done, size_t total, const PromptOutcome&) {
                                    reported = done;
                                    EXPECT_EQ(total, prompts->size());
                                  });
  ASSERT_TRUE(outcomes.ok()) << outcomes.error().message;
  ASSERT_EQ(outcomes->size(), 4u);
  EXPECT_EQ(reported, 4u);
  for (const PromptOutcome& outcome : *outcomes) {
    const BenchPrompt& prompt = (*prompts)[outcome.prompt];
    ASSERT_EQ(outcome.modes.size(), modes.size());
    for (size_t m = 0; m < modes.size(); ++m) {
      const ModeOutcome& result = outcome.modes[m];
      EXPECT_EQ(result.turns.size(), prompt.turns.size());
      int64_t tokens = 0;
      for (const auto& turn : result.turns) tokens += static_cast<int64_t>(turn.size());
      EXPECT_EQ(result.tokens, tokens);
      EXPECT_GT(result.seconds, 0.0);
      const SpeculationStats& stats = result.speculation;
      EXPECT_EQ(stats.generated_tokens, tokens);
      if (stats.drafts > 0) {
        EXPECT_DOUBLE_EQ(stats.mean_acceptance_length(),
                         1.0 + static_cast<double>(stats.accepted_tokens) / static_cast<double>(stats.drafts));
      }
      if (m == 0 || m == 3) {
        EXPECT_EQ(stats.drafts, 0);
      }
      if (m < 3) {
        EXPECT_FALSE(result.difference.has_value()) << modes[m].name;
      } else {
        ASSERT_TRUE(result.difference.has_value());
        EXPECT_EQ(result.difference->turn, 0);
        EXPECT_EQ(result.difference->position, 2);
        // ar's smallest margin over positions 0..2, read teacher-forced on its own tokens.
        EXPECT_GT(result.difference->reference_margin, 0.0);
        EXPECT_EQ(result.difference->after_near_tie, result.difference->reference_margin < config.near_tie);
      }
    }
  }
  const auto overall = summarize_bench(*outcomes, *prompts, modes.size());
  EXPECT_DOUBLE_EQ(overall[0].speedup, 1.0);
  EXPECT_DOUBLE_EQ(overall[0].speculation.mean_acceptance_length(), 1.0);
  EXPECT_EQ(overall[0].lossless_prompts, 4);
  EXPECT_EQ(overall[1].lossless_prompts, 4);
  EXPECT_EQ(overall[3].lossless_prompts, 0);
  EXPECT_EQ(overall[1].near_tie_prompts, 0);
  // With every margin counted as a near-tie, every broken prompt differs only after one.
  BenchConfig lenient = config;
  lenient.near_tie = 1e9;
  const auto again = run_bench(**decoder, *prompts, modes, lenient, byte_format());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(summarize_bench(*again, *prompts, modes.size())[3].near_tie_prompts, 4);
  EXPECT_GT(overall[1].speculation.drafts, 0);
  int64_t by_category = 0;
  for (const std::string& category : categories) {
    by_category += summarize_bench(*outcomes, *prompts, modes.size(), category)[1].prompts;
  }
  EXPECT_EQ(by_category, overall[1].prompts);
  std::vector<BenchMode> without_ar(modes.begin() + 1, modes.end());
  EXPECT_FALSE(run_bench(**decoder, *prompts, without_ar, config, byte_format()).ok());
}

// With qTTT every turn of every mode adapts its request on its prompt, as generate() does with
// GenerationOptions::qttt; speculation stays lossless, and a difference's margins are read from
// the adapted model.
TEST(Benchmark, WithQtttEveryTurnAdaptsAndMarginsUseTheAdaptation) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  ASSERT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  ASSERT_TRUE(decoder.ok());
  const std::vector<BenchPrompt> prompts = {{"1", "writing", {"abc abc abc abc", "again"}, {}},
                                            {"2", "qa", {"why is it so? why is it so?"}, {}}};
  auto ngram = std::move(NgramDrafter::create(2)).value();
  auto early_exit = std::move(EarlyExitDrafter::create(**decoder, 1)).value();
  std::vector<BenchMode> modes(4);
  modes[0].name = "ar";
  modes[1] = {"ngram:2@3", ngram.get(), DraftLength::fixed(3), {}};
  modes[2] = {"self:1@2", early_exit.get(), DraftLength::fixed(2), {}};
  modes[3].name = "broken";
  modes[3].generate = [](Decoder& target, std::span<const int32_t> prompt, const GenerationOptions& options) {
    Expected<GenerationResult> result = generate(target, nullptr, prompt, options);
    if (result.ok() && result->token_ids.size() > 2) result->token_ids[2] = (result->token_ids[2] + 1) % 256;
    return result;
  };
  BenchConfig config;
  config.max_tokens = 10;
  config.sampling.temperature = 0.0;
  QttOptions qttt;
  qttt.steps = 3;
  qttt.span = 16;
  qttt.learning_rate = 0.05f;
  config.qttt = qttt;
  const auto outcomes = run_bench(**decoder, prompts, modes, config, byte_format());
  ASSERT_TRUE(outcomes.ok()) << outcomes.error().message;
  BenchConfig plain = config;
  plain.qttt.reset();
  const auto unadapted = run_bench(**decoder, prompts, std::span(modes).first(1), plain, byte_format());
  ASSERT_TRUE(unadapted.ok());
  bool adaptation_changed_an_answer = false;
  for (const PromptOutcome& outcome : *outcomes) {
    for (size_t m = 0; m < modes.size(); ++m) {
      const ModeOutcome& result = outcome.modes[m];
      EXPECT_EQ(result.adaptations, static_cast<int64_t>(result.turns.size())) << modes[m].name;
      EXPECT_GT(result.adaptation_seconds, 0.0);
      EXPECT_LT(result.adaptation_seconds, result.seconds);
      EXPECT_EQ(result.difference.has_value(), m == 3) << modes[m].name;
    }
    // ar's first turn is generate()'s with the same adaptation.
    const ModeOutcome& ar = outcome.modes[0];
    GenerationOptions options;
    options.max_tokens = config.max_tokens;
    options.sampling = config.sampling;
    options.qttt = qttt;
    const auto generated = generate(**decoder, nullptr, ar.prompts[0], options);
    ASSERT_TRUE(generated.ok());
    EXPECT_EQ(generated->token_ids, ar.turns[0]);
    adaptation_changed_an_answer |= ar.turns[0] != (*unadapted)[outcome.prompt].modes[0].turns[0];
    // The broken mode's margins: ar's own tokens, teacher-forced after the same adaptation.
    const std::vector<int32_t>& prompt = ar.prompts[0];
    const SequenceId sequence = (*decoder)->create_sequence();
    std::vector<float> logits;
    const ForwardRequest prefill{sequence, std::span(prompt).first(prompt.size() - 1), {}};
    ASSERT_TRUE((*decoder)->forward(std::span(&prefill, 1), logits).ok());
    ASSERT_TRUE((*decoder)->adapt_queries(sequence, prompt, qttt).ok());
    const std::vector<int32_t> forced = {prompt.back(), ar.turns[0][0], ar.turns[0][1]};
    const std::vector<int32_t> rows = {0, 1, 2};
    ASSERT_TRUE((*decoder)->forward(std::vector<ForwardRequest>{{sequence, forced, rows}}, logits).ok());
    (*decoder)->release_sequence(sequence);
    const size_t vocab = static_cast<size_t>((*decoder)->config().vocab_size);
    double smallest = INFINITY;
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<float> row(logits.begin() + static_cast<std::ptrdiff_t>(r * vocab),
                             logits.begin() + static_cast<std::ptrdiff_t>((r + 1) * vocab));
      const float largest = std::fabs(
          *std::max_element(row.begin(), row.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); }));
      std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
      smallest = std::min(smallest, static_cast<double>(row[0] - row[1]) / std::max(largest, 1e-6f));
    }
    ASSERT_TRUE(outcome.modes[3].difference.has_value());
    EXPECT_DOUBLE_EQ(outcome.modes[3].difference->reference_margin, smallest);
  }
  EXPECT_TRUE(adaptation_changed_an_answer) << "the adaptation should matter at this learning rate";
}

}  // namespace
}  // namespace draftwise
