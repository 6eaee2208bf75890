// The CPU reference decoder against transformers (committed tiny checkpoints and their
// logits), and the properties every caller relies on: chunking and batching do not change a
// token's logits by a single bit, GGUF and safetensors twins agree, rollback forgets.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "target/random_weights.h"
#include "tests/support/decoder_runs.h"
#include "tests/support/reference_logits.h"
#include "tests/support/test_paths.h"
#include "tests/support/tiny_model.h"

namespace draftwise {
namespace {

using testing::fixtures_dir;

TEST(CpuDecoder, GreedyStepWithNonFiniteLogitsIsAnErrorAndRollsBack) {
  auto checkpoint = Checkpoint::open((fixtures_dir() / "models/llama_tied").string());
  ASSERT_TRUE(checkpoint.ok());
  auto config = load_model_config(*checkpoint);
  auto weights = ModelWeights::bind(*checkpoint, *config);
  ASSERT_TRUE(config.ok() && weights.ok());
  auto decoder = CpuDecoder::create(*config, testing::broken_final_norm_loader(*weights), {});
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  testing::expect_non_finite_greedy_step_fails_and_rolls_back(**decoder);
}

std::unique_ptr<CpuDecoder> load_decoder(const std::filesystem::path& path, int threads = 2) {
  auto checkpoint = Checkpoint::open(path.string());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{threads, 0});
  EXPECT_TRUE(decoder.ok()) << decoder.error().message;
  return std::move(decoder).value();
}

using testing::logits_in_chunks;

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class TransformersParity : public ::testing::TestWithParam<const char*> {};

TEST_P(TransformersParity, LogitsMatchFullAndChunkedAndChunkedEqualsFullBitForBit) {
  const std::filesystem::path folder = fixtures_dir() / "models" / GetParam();
  const auto reference = nlohmann::json::parse(testing::read_file(folder / "reference.json"));
  const auto tokens = reference["input_ids"].get<std::vector<int32_t>>();
  const auto expected = testing::read_f32_tensor(folder / "reference_logits.safetensors", "logits");
  auto decoder = load_decoder(folder);
  ASSERT_NE(decoder, nullptr);
  ASSERT_EQ(expected.size(), tokens.size() * decoder->config().vocab_size);

  const auto full = logits_in_chunks(*decoder, tokens, {tokens.size()});
  const testing::LogitDifference difference = testing::compare_logits(full, expected);
  EXPECT_LE(difference.max_abs_difference, 1e-4 * difference.max_abs_reference)
      << "relative " << difference.relative();
  std::printf("%s: max |difference| %.3g, max |logit| %.3g\n", GetParam(),
              difference.max_abs_difference, difference.max_abs_reference);

  for (const std::vector<size_t>& chunks :
       {std::vector<size_t>{7, 1, 1, 5}, std::vector<size_t>{1}, std::vector<size_t>{3, 11, 2}}) {
    const auto chunked = logits_in_chunks(*decoder, tokens, chunks);
    EXPECT_LE(testing::compare_logits(chunked, expected).max_abs_difference,
              1e-4 * difference.max_abs_reference);
    EXPECT_TRUE(bit_identical(chunked, full)) << "chunks starting " << chunks[0];
  }
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, TransformersParity,
                         ::testing::Values("llama_tied", "llama3_rope", "qwen2_bias"));

TEST(CpuDecoder, FixtureConfigsCoverTheFeaturesTheyAreFor) {
  EXPECT_TRUE(load_decoder(fixtures_dir() / "models/llama_tied")->config().tie_word_embeddings);
  const auto scaled = load_decoder(fixtures_dir() / "models/llama3_rope");
  EXPECT_EQ(scaled->config().rope_scaling.type, RopeScalingType::llama3);
  EXPECT_FALSE(scaled->config().tie_word_embeddings);
  EXPECT_TRUE(load_decoder(fixtures_dir() / "models/qwen2_bias")->config().attention_qkv_bias);
}

TEST(CpuDecoder, GgufTwinGivesTheSameLogitsAsSafetensors) {
  for (const Architecture architecture : {Architecture::llama, Architecture::qwen2}) {
    const testing::TinyModel model = testing::make_tiny_model(architecture, false, 21);
    testing::ScratchDir scratch;
    testing::write_safetensors_folder(model, scratch.path() / "hf");
    const auto gguf = scratch.write("tiny.gguf", testing::tiny_model_gguf(model, TensorType::f32));
    const std::vector<int32_t> tokens = {3, 17, 42, 8, 63, 0, 5, 5, 29};
    const auto from_safetensors = logits_in_chunks(*load_decoder(scratch.path() / "hf"), tokens, {4});
    const auto from_gguf = logits_in_chunks(*load_decoder(gguf), tokens, {4});
    EXPECT_TRUE(bit_identical(from_safetensors, from_gguf)) << architecture_name(architecture);
  }
}

TEST(CpuDecoder, BatchCompositionAndThreadCountDoNotChangeLogits) {
  const auto folder = fixtures_dir() / "models/qwen2_bias";
  auto decoder = load_decoder(folder, 1);
  const std::vector<int32_t> a = {5, 9, 200, 31, 7, 7};
  const std::vector<int32_t> b = {100, 3};
  const auto alone_a = logits_in_chunks(*decoder, a, {a.size()});
  const auto alone_b = logits_in_chunks(*decoder, b, {b.size()});

  auto threaded = load_decoder(folder, 3);
  const SequenceId sa = threaded->create_sequence();
  const SequenceId sb = threaded->create_sequence();
  const std::vector<int32_t> rows_a = {0, 1, 2, 3, 4, 5};
  const std::vector<int32_t> rows_b = {0, 1};
  // b first, so a's rows sit at a different place in the batch than when alone.
  const ForwardRequest batch[] = {{sb, b, rows_b}, {sa, a, rows_a}};
  std::vector<float> logits;
  ASSERT_TRUE(threaded->forward(batch, logits).ok());
  const size_t vocab = static_cast<size_t>(threaded->config().vocab_size);
  EXPECT_TRUE(bit_identical(std::vector<float>(logits.begin(), logits.begin() + 2 * vocab), alone_b));
  EXPECT_TRUE(bit_identical(std::vector<float>(logits.begin() + 2 * vocab, logits.end()), alone_a));
}

TEST(CpuDecoder, RollbackGivesTheLogitsOfNeverHavingGoneForward) {
  auto decoder = load_decoder(fixtures_dir() / "models/llama3_rope");
  const std::vector<int32_t> prompt = {1, 50, 60, 70, 80};
  const std::vector<int32_t> last_row = {0};
  const std::vector<int32_t> prompt_rows = {4};
  std::vector<float> logits;

  const SequenceId rolled = decoder->create_sequence();
  const ForwardRequest prefill{rolled, prompt, prompt_rows};
  ASSERT_TRUE(decoder->forward(std::span(&prefill, 1), logits).ok());
  const std::vector<int32_t> detour = {11, 12, 13};
  const std::vector<int32_t> detour_rows = {0, 1, 2};
  const ForwardRequest verify{rolled, detour, detour_rows};
  ASSERT_TRUE(decoder->forward(std::span(&verify, 1), logits).ok());
  EXPECT_EQ(decoder->sequence_length(rolled), 8);
  ASSERT_TRUE(decoder->truncate_sequence(rolled, 5).ok());
  EXPECT_EQ(decoder->sequence_length(rolled), 5);
  const std::vector<int32_t> next = {99};
  const ForwardRequest decode{rolled, next, last_row};
  std::vector<float> after_rollback;
  ASSERT_TRUE(decoder->forward(std::span(&decode, 1), after_rollback).ok());

  const SequenceId straight = decoder->create_sequence();
  const ForwardRequest straight_prefill{straight, prompt, prompt_rows};
  ASSERT_TRUE(decoder->forward(std::span(&straight_prefill, 1), logits).ok());
  const ForwardRequest straight_decode{straight, next, last_row};
  std::vector<float> never_went;
  ASSERT_TRUE(decoder->forward(std::span(&straight_decode, 1), never_went).ok());
  EXPECT_TRUE(bit_identical(after_rollback, never_went));
}

TEST(CpuDecoder, BadBatchesAreRefusedWithoutChangingState) {
  auto decoder = load_decoder(fixtures_dir() / "models/llama_tied");
  const SequenceId sequence = decoder->create_sequence();
  std::vector<float> logits;
  const std::vector<int32_t> good = {1, 2};
  const std::vector<int32_t> bad_token = {1, 256};
  const std::vector<int32_t> negative_token = {-1};
  const std::vector<int32_t> empty;
  const std::vector<int32_t> row_two = {2};
  const std::vector<int32_t> too_long(257, 1);

  auto expect_error = [&](const ForwardRequest& request, std::initializer_list<const char*> words) {
    const Status status = decoder->forward(std::span(&request, 1), logits);
    ASSERT_FALSE(status.ok());
    for (const char* word : words) EXPECT_NE(status.error().message.find(word), std::string::npos) << status.error().message;
    EXPECT_EQ(decoder->sequence_length(sequence), 0);
  };
  expect_error({sequence, bad_token, {}}, {"256", "vocabulary"});
  expect_error({sequence, negative_token, {}}, {"-1"});
  expect_error({sequence, empty, {}}, {"at least one token"});
  expect_error({sequence, good, row_two}, {"logit row 2"});
  expect_error({sequence, too_long, {}}, {"context length 256"});
  expect_error({sequence + 100, good, {}}, {"unknown sequence"});
  const ForwardRequest twice[] = {{sequence, good, {}}, {sequence, good, {}}};
  EXPECT_FALSE(decoder->forward(twice, logits).ok());
  EXPECT_EQ(decoder->sequence_length(sequence), 0);
  EXPECT_FALSE(decoder->truncate_sequence(sequence, 1).ok());
  EXPECT_FALSE(decoder->truncate_sequence(sequence + 100, 0).ok());
}

TEST(CpuDecoder, RandomWeightsAreSeededAndShapedByTheConfig) {
  const testing::TinyModel tiny = testing::make_tiny_model(Architecture::llama, true, 1);
  auto first = CpuDecoder::create(tiny.config, random_weight_loader(7), {});
  auto second = CpuDecoder::create(tiny.config, random_weight_loader(7), {});
  auto other = CpuDecoder::create(tiny.config, random_weight_loader(8), {});
  ASSERT_TRUE(first.ok() && second.ok() && other.ok());
  const std::vector<int32_t> tokens = {1, 2, 3};
  const auto a = logits_in_chunks(**first, tokens, {3});
  EXPECT_TRUE(bit_identical(a, logits_in_chunks(**second, tokens, {3})));
  EXPECT_FALSE(bit_identical(a, logits_in_chunks(**other, tokens, {3})));
}

TEST(CpuDecoder, RefusesAModelWhoseWeightsDoNotFitInMemory) {
  testing::TinyModel tiny = testing::make_tiny_model(Architecture::llama, true, 1);
  tiny.config.hidden_size = 1 << 20;
  tiny.config.intermediate_size = 1 << 22;
  tiny.config.num_layers = 1000;
  auto decoder = CpuDecoder::create(tiny.config, random_weight_loader(1), {});
  ASSERT_FALSE(decoder.ok());
  EXPECT_NE(decoder.error().message.find("GiB"), std::string::npos) << decoder.error().message;
}

}  // namespace
}  // namespace draftwise
