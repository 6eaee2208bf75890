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

// Early exit: draft passes through layers [0, e) equal one draft pass over the whole
// sequence, and a verification pass that resumes the drafted tokens at layer e (reusing their
// keys, values and hidden states) equals a full pass, bit for bit.
TEST(CpuDecoder, EarlyExitPassesReuseDraftingAndEqualFullPasses) {
  // The llama3_rope fixture's shape with four layers, random weights.
  auto checkpoint = Checkpoint::open((fixtures_dir() / "models/llama3_rope").string());
  ASSERT_TRUE(checkpoint.ok());
  auto config = load_model_config(*checkpoint);
  ASSERT_TRUE(config.ok());
  config->num_layers = 4;
  auto decoder = CpuDecoder::create(*config, random_weight_loader(3), CpuDecoderOptions{2, 0});
  ASSERT_TRUE(decoder.ok());
  CpuDecoder& model = **decoder;
  const std::vector<int32_t> prompt = {1, 17, 33, 9, 120, 7};
  const std::vector<int32_t> drafted = {45, 46, 47};  // the last prompt token's followers
  const std::vector<int32_t> none;
  const std::vector<int32_t> first = {0};
  for (const int exit_layer : {1, 2, 3}) {
    const DraftHead head{exit_layer, {}};
    // A: prefill all but the last prompt token, then draft three steps, then verify.
    const SequenceId a = model.create_sequence();
    const std::vector<int32_t> head_tokens(prompt.begin(), prompt.end() - 1);
    std::vector<float> ignored;
    ASSERT_TRUE(model.forward(std::vector<ForwardRequest>{{a, head_tokens, none}}, ignored).ok());
    std::vector<int32_t> inputs = {prompt.back(), drafted[0], drafted[1]};
    std::vector<std::vector<float>> draft_logits;
    for (const int32_t token : inputs) {
      const std::vector<int32_t> one = {token};
      std::vector<float> logits;
      ASSERT_TRUE(model.forward_draft(std::vector<ForwardRequest>{{a, one, first}}, head, logits).ok());
      draft_logits.push_back(logits);
    }
    EXPECT_EQ(model.pending_tokens(a), 3);
    EXPECT_EQ(model.sequence_length(a), static_cast<int64_t>(head_tokens.size()));
    // A verification that does not begin with the pending tokens is refused.
    const std::vector<int32_t> other = {prompt.back(), drafted[0], 99, drafted[2]};
    std::vector<float> refused;
    EXPECT_FALSE(model.forward(std::vector<ForwardRequest>{{a, other, none}}, refused).ok());
    const std::vector<int32_t> verify = {prompt.back(), drafted[0], drafted[1], drafted[2]};
    const std::vector<int32_t> all_rows = {0, 1, 2, 3};
    std::vector<float> reused;
    ASSERT_TRUE(model.forward(std::vector<ForwardRequest>{{a, verify, all_rows}}, reused).ok());
    EXPECT_EQ(model.pending_tokens(a), 0);
    EXPECT_EQ(model.sequence_length(a), static_cast<int64_t>(prompt.size() + drafted.size()));

    // B: the same tokens through every layer.
    const SequenceId b = model.create_sequence();
    ASSERT_TRUE(model.forward(std::vector<ForwardRequest>{{b, head_tokens, none}}, ignored).ok());
    std::vector<float> full;
    ASSERT_TRUE(model.forward(std::vector<ForwardRequest>{{b, verify, all_rows}}, full).ok());
    EXPECT_TRUE(bit_identical(reused, full)) << "exit layer " << exit_layer;

    // C: one draft pass over the whole sequence gives the draft steps' logits.
    const SequenceId c = model.create_sequence();
    std::vector<int32_t> sequence = prompt;
    sequence.insert(sequence.end(), drafted.begin(), drafted.begin() + 2);
    const int32_t last = static_cast<int32_t>(sequence.size()) - 1;
    const std::vector<int32_t> draft_rows = {last - 2, last - 1, last};
    std::vector<float> whole;
    ASSERT_TRUE(model.forward_draft(std::vector<ForwardRequest>{{c, sequence, draft_rows}}, head, whole).ok());
    const size_t vocab = static_cast<size_t>(model.config().vocab_size);
    for (size_t step = 0; step < 3; ++step) {
      const std::vector<float> row(whole.begin() + step * vocab, whole.begin() + (step + 1) * vocab);
      EXPECT_TRUE(bit_identical(draft_logits[step], row)) << "draft step " << step;
    }
    // Truncation drops pending tokens.
    const std::vector<int32_t> one = {5};
    ASSERT_TRUE(model.forward_draft(std::vector<ForwardRequest>{{b, one, first}}, head, ignored).ok());
    EXPECT_EQ(model.pending_tokens(b), 1);
    ASSERT_TRUE(model.truncate_sequence(b, model.sequence_length(b)).ok());
    EXPECT_EQ(model.pending_tokens(b), 0);
    // Bad heads are refused.
    EXPECT_FALSE(model.forward_draft(std::vector<ForwardRequest>{{b, one, first}}, DraftHead{0, {}}, ignored).ok());
    const std::vector<float> short_gain(3, 1.0f);
    EXPECT_FALSE(
        model.forward_draft(std::vector<ForwardRequest>{{b, one, first}}, DraftHead{1, short_gain}, ignored).ok());
    for (const SequenceId id : {a, b, c}) model.release_sequence(id);
  }
}

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

}  // namespace
}  // namespace draftwise
