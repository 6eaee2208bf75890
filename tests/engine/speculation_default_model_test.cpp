// Greedy speculative decoding on the default model (CPU reference) equals plain greedy
// decoding token for token: 20 Spec-Bench dev prompts of the short categories, chat
// template applied, 64 new tokens each, with n-gram drafting at a fixed and an adaptive
// draft length, and on some of them early-exit drafting at layer 20 and the model drafting
// for itself (tests/engine/speculation_cuda_test.cpp runs those on all 20, on the GPU).
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "draft/early_exit_drafter.h"
#include "draft/model_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/chat_template.h"
#include "engine/generation.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

constexpr int64_t kNewTokens = 64;

// The first turn of the first two prompts of each short category, rendered as a chat.
std::vector<std::vector<int32_t>> dev_prompts(const Tokenizer& tokenizer) {
  std::ifstream file(testing::source_dir() / "data/spec_bench/question_dev.jsonl");
  EXPECT_TRUE(file.good());
  const auto chat = ChatTemplate::recognize(*tokenizer.chat_template(), "", tokenizer.token(*tokenizer.eos_id()));
  EXPECT_TRUE(chat.ok());
  std::map<std::string, int> taken;
  std::vector<std::vector<int32_t>> prompts;
  for (std::string line; std::getline(file, line) && prompts.size() < 20;) {
    const nlohmann::json question = nlohmann::json::parse(line);
    const std::string category = question["category"];
    if (category == "summarization" || category == "rag" || taken[category] >= 2) continue;
    ++taken[category];
    const std::vector<ChatMessage> messages = {{"user", question["turns"][0].get<std::string>()}};
    const auto text = chat->render(messages, /*add_generation_prompt=*/true);
    EXPECT_TRUE(text.ok());
    prompts.push_back(tokenizer.encode(*text, EncodeOptions{.add_special = false, .parse_special = true}));
  }
  return prompts;
}

// The default model, a second copy of it to draft for itself, and the 20 prompts.
class DevPrompts : public ::testing::Test {
 protected:
  void SetUp() override {
    DW_REQUIRE_DEFAULT_MODEL();
    auto checkpoint = Checkpoint::open(testing::default_model_path().string());
    ASSERT_TRUE(checkpoint.ok());
    auto target = CpuDecoder::load(*checkpoint, {});
    auto copy = CpuDecoder::load(*checkpoint, {});
    auto tokenizer = load_tokenizer(*checkpoint);
    ASSERT_TRUE(target.ok() && copy.ok() && tokenizer.ok() && tokenizer->has_value());
    target_ = std::move(*target);
    itself_ = std::make_unique<ModelDrafter>(std::move(*copy), "model:default");
    prompts_ = dev_prompts(**tokenizer);
    ASSERT_EQ(prompts_.size(), 20u);
    plain_.max_tokens = kNewTokens;
    plain_.sampling.temperature = 0.0;
  }

  std::unique_ptr<CpuDecoder> target_;
  std::unique_ptr<ModelDrafter> itself_;
  std::vector<std::vector<int32_t>> prompts_;
  GenerationOptions plain_;
};

#ifndef DRAFTWISE_SLOW_TESTS
TEST_F(DevPrompts, GreedyDraftingEqualsPlainGreedy) {
  auto& target = target_;
  const auto& prompts = prompts_;
  const GenerationOptions& plain = plain_;
  ModelDrafter& itself = *itself_;
  auto ngram = std::move(NgramDrafter::create(3)).value();
  auto early_exit = std::move(EarlyExitDrafter::create(*target, 20)).value();
  SpeculationStats pooled;
  for (size_t p = 0; p < prompts.size(); ++p) {
    SCOPED_TRACE("prompt " + std::to_string(p));
    const auto reference = generate(*target, nullptr, prompts[p], plain);
    ASSERT_TRUE(reference.ok()) << reference.error().message;
    // The slower drafters on the CPU (every draft step runs most of the model) on some prompts.
    std::vector<std::pair<Drafter*, DraftLength>> modes = {{ngram.get(), DraftLength::fixed(4)},
                                                           {ngram.get(), DraftLength::adaptive()}};
    if (p % 4 == 0) modes.push_back({early_exit.get(), DraftLength::fixed(4)});
    if (p % 5 == 0) modes.push_back({&itself, DraftLength::fixed(4)});
    for (const auto& [drafter, length] : modes) {
      GenerationOptions options = plain;
      options.drafter = drafter;
      options.draft_length = length;
      const auto speculated = generate(*target, nullptr, prompts[p], options);
      ASSERT_TRUE(speculated.ok()) << speculated.error().message;
      EXPECT_EQ(speculated->token_ids, reference->token_ids) << drafter->name();
      if (drafter == ngram.get() && !length.is_adaptive()) pooled.add(speculated->stats.speculation);
    }
  }
  std::printf("ngram:3@4 over %zu prompts: tau %.2f, acceptance %.2f, %.2f tokens per target step\n", prompts.size(),
              pooled.mean_acceptance_length(), pooled.acceptance_rate(), pooled.tokens_per_target_step());
}
#else
// Every drafter at several draft lengths on all 20 prompts (labelled slow: about thirteen minutes
// on two cores; scripts/test.sh --slow runs it).
TEST_F(DevPrompts, EveryDrafterAtSeveralLengthsEqualsPlainGreedy) {
  auto& target = target_;
  const auto& prompts = prompts_;
  const GenerationOptions& plain = plain_;
  ModelDrafter& itself = *itself_;
  auto ngram = std::move(NgramDrafter::create(3)).value();
  auto early_exit = std::move(EarlyExitDrafter::create(*target, 8)).value();
  for (size_t p = 0; p < prompts.size(); ++p) {
    SCOPED_TRACE("prompt " + std::to_string(p));
    const auto reference = generate(*target, nullptr, prompts[p], plain);
    ASSERT_TRUE(reference.ok()) << reference.error().message;
    for (Drafter* drafter : {static_cast<Drafter*>(ngram.get()), static_cast<Drafter*>(early_exit.get()),
                             static_cast<Drafter*>(&itself)}) {
      for (const DraftLength length : {DraftLength::fixed(2), DraftLength::fixed(6), DraftLength::adaptive()}) {
        GenerationOptions options = plain;
        options.drafter = drafter;
        options.draft_length = length;
        const auto speculated = generate(*target, nullptr, prompts[p], options);
        ASSERT_TRUE(speculated.ok()) << speculated.error().message;
        EXPECT_EQ(speculated->token_ids, reference->token_ids)
            << drafter->name() << " k " << (length.is_adaptive() ? "auto" : std::to_string(length.current()));
      }
    }
  }
}
#endif

}  // namespace
}  // namespace draftwise
