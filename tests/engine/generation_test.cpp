// The generation loop on the CPU reference: greedy equals a hand-written argmax loop, each
// way of finishing is reported, bad requests are refused with a message.
#include <gtest/gtest.h>

#include "engine/generation.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::unique_ptr<CpuDecoder> tiny_decoder() {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  EXPECT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, {});
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

GenerationOptions greedy_options(int64_t max_tokens) {
  GenerationOptions options;
  options.max_tokens = max_tokens;
  options.sampling.temperature = 0.0;
  return options;
}

TEST(Generation, GreedyEqualsAnArgmaxLoopOverTheDecoder) {
  auto decoder = tiny_decoder();
  const std::vector<int32_t> prompt = {1, 40, 41, 42};
  const auto result = generate(*decoder, nullptr, prompt, greedy_options(12));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->finish_reason, FinishReason::length);
  EXPECT_EQ(result->stats.prompt_tokens, 4);
  EXPECT_EQ(result->stats.completion_tokens, 12);
  EXPECT_TRUE(result->text.empty());

  std::vector<int32_t> sequence = prompt;
  std::vector<int32_t> expected;
  std::vector<float> logits;
  for (int step = 0; step < 12; ++step) {
    const SequenceId id = decoder->create_sequence();
    const std::vector<int32_t> last = {static_cast<int32_t>(sequence.size()) - 1};
    const ForwardRequest request{id, sequence, last};
    ASSERT_TRUE(decoder->forward(std::span(&request, 1), logits).ok());
    decoder->release_sequence(id);
    expected.push_back(argmax(logits));
    sequence.push_back(expected.back());
  }
  EXPECT_EQ(result->token_ids, expected);
}

TEST(Generation, StopTokenEndsWithStopAndIsReported) {
  auto decoder = tiny_decoder();
  const std::vector<int32_t> prompt = {1, 40, 41, 42};
  const auto free_run = generate(*decoder, nullptr, prompt, greedy_options(8));
  ASSERT_TRUE(free_run.ok());
  GenerationOptions options = greedy_options(8);
  options.stop_token_ids = {free_run->token_ids[2]};
  const auto stopped = generate(*decoder, nullptr, prompt, options);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finish_reason, FinishReason::stop);
  const size_t first = std::find(free_run->token_ids.begin(), free_run->token_ids.end(),
                                 free_run->token_ids[2]) - free_run->token_ids.begin();
  EXPECT_EQ(stopped->token_ids, std::vector<int32_t>(free_run->token_ids.begin(),
                                                     free_run->token_ids.begin() + first + 1));
}

TEST(Generation, ASeedReproducesSampledTokensAndTheStreamSeesEveryToken) {
  auto decoder = tiny_decoder();
  const std::vector<int32_t> prompt = {5, 6, 7};
  GenerationOptions options;
  options.max_tokens = 20;
  options.sampling = {0.9, 40, 0.95, 0.02, 99};
  std::vector<int32_t> streamed;
  const auto first = generate(*decoder, nullptr, prompt, options,
                              [&](const OutputEvent& event) { streamed.push_back(event.token); });
  const auto second = generate(*decoder, nullptr, prompt, options);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->token_ids, second->token_ids);
  EXPECT_EQ(streamed, first->token_ids);
  options.sampling.seed = 100;
  EXPECT_NE(generate(*decoder, nullptr, prompt, options)->token_ids, first->token_ids);
}

TEST(Generation, StopsAtTheEndOfTheContext) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{0, 10});
  ASSERT_TRUE(decoder.ok());
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7};
  const auto result = generate(**decoder, nullptr, prompt, greedy_options(100));
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result->finish_reason, FinishReason::length);
  EXPECT_EQ(result->token_ids.size(), 3u);  // positions 7, 8, 9 fill the context of 10
}

TEST(Generation, BadRequestsAreRefusedWithAMessage) {
  auto decoder = tiny_decoder();
  auto error_of = [&](std::vector<int32_t> prompt, GenerationOptions options) {
    const auto result = generate(*decoder, nullptr, prompt, options);
    return result.ok() ? std::string() : result.error().message;
  };
  const GenerationOptions ok = greedy_options(4);
  EXPECT_NE(error_of({}, ok).find("empty"), std::string::npos);
  EXPECT_NE(error_of({1, 256}, ok).find("256"), std::string::npos);
  EXPECT_NE(error_of(std::vector<int32_t>(256, 1), ok).find("context"), std::string::npos);
  EXPECT_NE(error_of({1}, greedy_options(0)).find("max_tokens"), std::string::npos);
  GenerationOptions cold = ok;
  cold.sampling.temperature = -1;
  EXPECT_NE(error_of({1}, cold).find("temperature"), std::string::npos);
  GenerationOptions with_stop = ok;
  with_stop.stop = {"x"};
  EXPECT_NE(error_of({1}, with_stop).find("tokenizer"), std::string::npos);
}

TEST(Generation, LongPromptsArePrefilledInChunksWithTheSameLogits) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{0, 2048});
  ASSERT_TRUE(decoder.ok());
  std::vector<int32_t> prompt(1100);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37) % 256);
  const auto result = generate(**decoder, nullptr, prompt, greedy_options(1));
  ASSERT_TRUE(result.ok()) << result.error().message;
  const SequenceId sequence = (*decoder)->create_sequence();
  const std::vector<int32_t> last = {static_cast<int32_t>(prompt.size()) - 1};
  const ForwardRequest whole{sequence, prompt, last};
  std::vector<float> logits;
  ASSERT_TRUE((*decoder)->forward(std::span(&whole, 1), logits).ok());
  EXPECT_EQ(result->token_ids, std::vector<int32_t>{argmax(logits)});
}

TEST(Generation, NonFiniteLogitsAreAnErrorNotAToken) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  auto config = load_model_config(*checkpoint);
  auto weights = ModelWeights::bind(*checkpoint, *config);
  ASSERT_TRUE(config.ok() && weights.ok());
  const WeightLoader real = checkpoint_weight_loader(*weights);
  const WeightLoader broken = [&](const DecoderTensorSpec& spec) -> Expected<std::vector<float>> {
    auto values = real(spec);
    if (values.ok() && spec.name == "model.norm.weight") values->assign(values->size(), NAN);
    return values;
  };
  auto decoder = CpuDecoder::create(*config, broken, {});
  ASSERT_TRUE(decoder.ok());
  // Sampling checks the logits it draws from; greedy decoding, which asks the decoder for the
  // argmax alone, gets the decoder's error.
  for (const double temperature : {1.0, 0.0}) {
    GenerationOptions options;
    options.sampling.temperature = temperature;
    options.sampling.min_p = 0.1;
    const std::vector<int32_t> prompt = {1, 2, 3};
    const auto result = generate(**decoder, nullptr, prompt, options);
    ASSERT_FALSE(result.ok()) << "temperature " << temperature;
    EXPECT_NE(result.error().message.find("non-finite logit"), std::string::npos) << result.error().message;
  }
}

TEST(Generation, DefaultModelTextStopsBeforeTheStopString) {
  DW_REQUIRE_DEFAULT_MODEL();
  auto checkpoint = Checkpoint::open(testing::default_model_path().string());
  ASSERT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, {});
  auto tokenizer = load_tokenizer(*checkpoint);
  ASSERT_TRUE(decoder.ok() && tokenizer.ok() && tokenizer->has_value());
  const Tokenizer& tok = **tokenizer;
  const std::vector<int32_t> prompt = tok.encode("The three primary colors are red,");
  const auto full = generate(**decoder, &tok, prompt, greedy_options(24));
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->text, tok.decode(full->token_ids, true));
  ASSERT_GT(full->text.size(), 6u);
  // Stop at a piece of text from the middle of the completion.
  const std::string stop = full->text.substr(full->text.size() / 2, 3);
  GenerationOptions options = greedy_options(24);
  options.stop = {stop};
  std::string streamed;
  const auto cut = generate(**decoder, &tok, prompt, options,
                            [&](const OutputEvent& event) { streamed += event.text; });
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->finish_reason, FinishReason::stop);
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
  EXPECT_EQ(streamed, cut->text);
}

}  // namespace
}  // namespace draftwise
