// Speculative decoding on the GPU, where a verification pass's bf16 logits may differ in the
// last bits from a one-token step's (DESIGN.md, Numerics): greedy output with every drafter
// equals plain greedy output up to the first near-tie (tests/support/greedy_reference.h); the share of prompts
// identical to the end is printed. The tiny fixture, and 20 dev prompts of the default model
// with every drafter kind at k = 3, 6 and auto.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "draft/early_exit_drafter.h"
#include "draft/model_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/generation.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "target/cuda_decoder.h"
#include "tests/support/cuda_test.h"
#include "tests/support/greedy_reference.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {


using testing::equal_up_to_a_near_tie;
using testing::greedy_reference;
using Reference = testing::GreedyReference;

TEST(SpeculationCuda, GreedyDraftingEqualsPlainGreedyUpToANearTie) {
  DW_REQUIRE_GPU();
  const auto fixture = testing::fixtures_dir() / "models/llama_tied";
  auto target = testing::load_on_gpu(fixture);
  const std::vector<std::vector<int32_t>> prompts = {{1, 40, 41, 42}, {5, 6, 7, 5, 6, 7, 5, 6}, {200}};
  constexpr int64_t kTokens = 40;
  std::vector<std::unique_ptr<Drafter>> drafters;
  drafters.push_back(std::move(NgramDrafter::create(2)).value());
  drafters.push_back(std::move(EarlyExitDrafter::create(*target, 1)).value());
  drafters.push_back(std::make_unique<ModelDrafter>(testing::load_on_gpu(fixture), "model:itself"));
  int identical_runs = 0;
  int runs = 0;
  for (const std::vector<int32_t>& prompt : prompts) {
    const Reference reference = greedy_reference(*target, prompt, kTokens);
    for (const std::unique_ptr<Drafter>& drafter : drafters) {
      for (const DraftLength length : {DraftLength::fixed(3), DraftLength::fixed(6), DraftLength::adaptive()}) {
        SCOPED_TRACE(drafter->name());
        GenerationOptions options;
        options.max_tokens = kTokens;
        options.sampling.temperature = 0.0;
        options.drafter = drafter.get();
        options.draft_length = length;
        const auto speculated = generate(*target, nullptr, prompt, options);
        ASSERT_TRUE(speculated.ok()) << speculated.error().message;
        bool identical = false;
        EXPECT_TRUE(equal_up_to_a_near_tie(speculated->token_ids, reference, identical));
        identical_runs += identical;
        ++runs;
      }
    }
  }
  std::printf("tiny fixture on the GPU: %d of %d speculative runs identical to plain greedy to the end\n",
              identical_runs, runs);
}

// Requests with different drafters speculating in one batch on the GPU: each equals its own
// plain greedy run up to a near-tie (the batch changes the kernels' row counts).
TEST(SpeculationCuda, BatchedRequestsEqualPlainGreedyUpToANearTie) {
  DW_REQUIRE_GPU();
  auto target = testing::load_on_gpu(testing::fixtures_dir() / "models/llama_tied");
  auto ngram = std::move(NgramDrafter::create(2)).value();
  auto early_exit = std::move(EarlyExitDrafter::create(*target, 1)).value();
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7, 5, 6, 7, 5, 6}, {1, 40, 41, 42}, {200}, {9, 8, 7}};
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest request;
    request.prompt = prompts[i];
    request.options.max_tokens = 24 + 4 * static_cast<int64_t>(i);
    request.options.sampling.temperature = 0.0;
    request.options.drafter = i % 3 == 0 ? static_cast<Drafter*>(ngram.get())
                              : i % 3 == 1 ? static_cast<Drafter*>(early_exit.get())
                                           : nullptr;
    requests.push_back(request);
  }
  const auto together = generate_batch(*target, nullptr, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(together[i].ok()) << together[i].error().message;
    const Reference reference = greedy_reference(*target, prompts[i], requests[i].options.max_tokens);
    bool identical = false;
    EXPECT_TRUE(equal_up_to_a_near_tie(together[i]->token_ids, reference, identical)) << "request " << i;
  }
}

TEST(SpeculationCuda, DefaultModelDevPromptsEqualPlainGreedyUpToANearTie) {
  DW_REQUIRE_GPU();
  DW_REQUIRE_DEFAULT_MODEL();
  auto checkpoint = Checkpoint::open(testing::default_model_path().string());
  auto tokenizer = load_tokenizer(*checkpoint);
  ASSERT_TRUE(tokenizer.ok() && tokenizer->has_value());
  const Tokenizer& tok = **tokenizer;
  auto target = testing::load_on_gpu(testing::default_model_path());
  const std::vector<std::vector<int32_t>> prompts = testing::short_dev_prompts(tok, 20);
  ASSERT_EQ(prompts.size(), 20u);
  constexpr int64_t kTokens = 64;
  std::vector<Reference> references;
  for (const std::vector<int32_t>& prompt : prompts) references.push_back(greedy_reference(*target, prompt, kTokens));
  // Every drafter kind: n-gram, early exit at a shallow and a deep layer, and a separate draft
  // model (the default model is the only checkpoint with its vocabulary, so it drafts for
  // itself through its own decoder and KV cache).
  std::vector<std::unique_ptr<Drafter>> drafters;
  drafters.push_back(std::move(NgramDrafter::create(3)).value());
  drafters.push_back(std::move(EarlyExitDrafter::create(*target, 8)).value());
  drafters.push_back(std::move(EarlyExitDrafter::create(*target, 20)).value());
  drafters.push_back(std::make_unique<ModelDrafter>(testing::load_on_gpu(testing::default_model_path()), "model:default"));
  for (const std::unique_ptr<Drafter>& drafter : drafters) {
    for (const DraftLength length : {DraftLength::fixed(3), DraftLength::fixed(6), DraftLength::adaptive()}) {
      const std::string label = drafter->name() + "@" + (length.is_adaptive() ? "auto" : std::to_string(length.current()));
      int identical_prompts = 0;
      SpeculationStats pooled;
      for (size_t p = 0; p < prompts.size(); ++p) {
        GenerationOptions options;
        options.max_tokens = kTokens;
        options.sampling.temperature = 0.0;
        options.drafter = drafter.get();
        options.draft_length = length;
        const auto speculated = generate(*target, nullptr, prompts[p], options);
        ASSERT_TRUE(speculated.ok()) << speculated.error().message;
        bool identical = false;
        EXPECT_TRUE(equal_up_to_a_near_tie(speculated->token_ids, references[p], identical))
            << label << ", prompt " << p;
        identical_prompts += identical;
        pooled.add(speculated->stats.speculation);
      }
      std::printf("default model on the GPU, %s: %d of %zu prompts identical to plain greedy to the end; tau %.2f\n",
                  label.c_str(), identical_prompts, prompts.size(), pooled.mean_acceptance_length());
    }
  }
}

}  // namespace
}  // namespace draftwise
