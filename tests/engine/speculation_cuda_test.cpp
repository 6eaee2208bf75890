// Speculative decoding on the GPU, where a verification pass's bf16 logits may differ in the
// last bits from a one-token step's (DESIGN.md, Numerics): greedy output with every drafter
// equals plain greedy output up to the first position where the plain run's top-1/top-2
// margin is below ε = 2% of that row's largest |logit| (a near-tie); the share of prompts
// identical to the end is printed. The tiny fixture, and 20 dev prompts of the default model
// with every drafter kind at k = 3, 6 and auto.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "draft/early_exit_drafter.h"
#include "draft/model_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/chat_template.h"
#include "engine/generation.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "target/cuda_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

bool have_gpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) cudaGetLastError();
  return count > 0;
}

#define DW_REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible: the CUDA speculation tests need a GPU"

std::unique_ptr<CudaDecoder> load_gpu(const std::filesystem::path& path) {
  auto checkpoint = Checkpoint::open(path.string());
  EXPECT_TRUE(checkpoint.ok());
  CudaDecoderOptions options;
  options.kv_cache_memory_share = 0.05;
  auto decoder = CudaDecoder::load(*checkpoint, options);
  EXPECT_TRUE(decoder.ok()) << decoder.error().message;
  return std::move(decoder).value();
}

// Plain greedy decoding, one token a step, with each step's top-1/top-2 margin relative to
// its largest |logit|.
struct Reference {
  std::vector<int32_t> tokens;
  std::vector<double> relative_margins;
};
Reference greedy_reference(Decoder& decoder, const std::vector<int32_t>& prompt, int64_t count) {
  Reference reference;
  const SequenceId sequence = decoder.create_sequence();
  std::vector<float> logits;
  const std::vector<int32_t> last = {static_cast<int32_t>(prompt.size()) - 1};
  EXPECT_TRUE(decoder.forward(std::vector<ForwardRequest>{{sequence, prompt, last}}, logits).ok());
  const std::vector<int32_t> first = {0};
  for (int64_t i = 0; i < count; ++i) {
    const auto best = std::max_element(logits.begin(), logits.end());
    float second = -INFINITY;
    float largest = 0.0f;
    for (auto it = logits.begin(); it != logits.end(); ++it) {
      if (it != best) second = std::max(second, *it);
      largest = std::max(largest, std::fabs(*it));
    }
    reference.tokens.push_back(static_cast<int32_t>(best - logits.begin()));
    reference.relative_margins.push_back((*best - second) / std::max(largest, 1e-6f));
    const std::vector<int32_t> next = {reference.tokens.back()};
    EXPECT_TRUE(decoder.forward(std::vector<ForwardRequest>{{sequence, next, first}}, logits).ok());
  }
  decoder.release_sequence(sequence);
  return reference;
}

constexpr double kNearTie = 0.02;

// Whether `tokens` equal the reference up to its first near-tie; sets `identical` when equal
// to the end.
bool equal_up_to_a_near_tie(const std::vector<int32_t>& tokens, const Reference& reference, bool& identical) {
  size_t first_difference = 0;
  while (first_difference < tokens.size() && first_difference < reference.tokens.size() &&
         tokens[first_difference] == reference.tokens[first_difference]) {
    ++first_difference;
  }
  identical = first_difference == reference.tokens.size() && tokens.size() == reference.tokens.size();
  if (identical) return true;
  for (size_t i = 0; i <= first_difference && i < reference.relative_margins.size(); ++i) {
    if (reference.relative_margins[i] < kNearTie) return true;
  }
  return false;
}

TEST(SpeculationCuda, GreedyDraftingEqualsPlainGreedyUpToANearTie) {
  DW_REQUIRE_GPU();
  const auto fixture = testing::fixtures_dir() / "models/llama_tied";
  auto target = load_gpu(fixture);
  const std::vector<std::vector<int32_t>> prompts = {{1, 40, 41, 42}, {5, 6, 7, 5, 6, 7, 5, 6}, {200}};
  constexpr int64_t kTokens = 40;
  std::vector<std::unique_ptr<Drafter>> drafters;
  drafters.push_back(std::move(NgramDrafter::create(2)).value());
  drafters.push_back(std::move(EarlyExitDrafter::create(*target, 1)).value());
  drafters.push_back(std::make_unique<ModelDrafter>(load_gpu(fixture), "model:itself"));
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
  auto target = load_gpu(testing::fixtures_dir() / "models/llama_tied");
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
  auto target = load_gpu(testing::default_model_path());
  const auto chat = ChatTemplate::recognize(*tok.chat_template(), "", tok.token(*tok.eos_id()));
  ASSERT_TRUE(chat.ok());
  std::ifstream file(testing::source_dir() / "data/spec_bench/question_dev.jsonl");
  std::map<std::string, int> taken;
  std::vector<std::vector<int32_t>> prompts;
  for (std::string line; std::getline(file, line) && prompts.size() < 20;) {
    const nlohmann::json question = nlohmann::json::parse(line);
    const std::string category = question["category"];
    if (category == "summarization" || category == "rag" || taken[category]++ >= 2) continue;
    const std::vector<ChatMessage> messages = {{"user", question["turns"][0].get<std::string>()}};
    prompts.push_back(tok.encode(*chat->render(messages, true), EncodeOptions{.add_special = false}));
  }
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
  drafters.push_back(std::make_unique<ModelDrafter>(load_gpu(testing::default_model_path()), "model:default"));
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
