// The real default model (SmolLM2-135M-Instruct Q4_1) on the CPU reference, against the
// logits and greedy continuations transformers computed on the GGUF's dequantized weights
// (tests/fixtures/models/default_model.json, made by tools/make_model_fixtures.py).
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/reference_logits.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::fixtures_dir;

nlohmann::json default_model_fixture() {
  return nlohmann::json::parse(testing::read_file(fixtures_dir() / "models/default_model.json"));
}

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Greedy decoding straight on the decoder: prefill, then one token per step.
std::vector<int32_t> greedy(Decoder& decoder, const std::vector<int32_t>& prompt, int count) {
  const SequenceId sequence = decoder.create_sequence();
  std::vector<int32_t> generated;
  std::vector<float> logits;
  const std::vector<int32_t> last = {static_cast<int32_t>(prompt.size()) - 1};
  ForwardRequest request{sequence, prompt, last};
  for (int step = 0; step < count; ++step) {
    EXPECT_TRUE(decoder.forward(std::span(&request, 1), logits).ok());
    generated.push_back(argmax(logits));
    static const std::vector<int32_t> first_row = {0};
    request = ForwardRequest{sequence, std::span(&generated.back(), 1), first_row};
  }
  decoder.release_sequence(sequence);
  return generated;
}

std::unique_ptr<CpuDecoder> load_default(int threads) {
  auto checkpoint = Checkpoint::open(testing::default_model_path().string());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{threads, 0});
  EXPECT_TRUE(decoder.ok()) << decoder.error().message;
  return std::move(decoder).value();
}

TEST(DefaultModelDecoder, NextTokenLogitsMatchTransformers) {
  DW_REQUIRE_DEFAULT_MODEL();
  const auto fixture = default_model_fixture();
  const auto prompt = fixture["prompts"][0]["input_ids"].get<std::vector<int32_t>>();
  const auto expected = testing::read_f32_tensor(fixtures_dir() / "models/default_model_logits.safetensors", "logits");
  auto decoder = load_default(0);
  const SequenceId sequence = decoder->create_sequence();
  const std::vector<int32_t> last = {static_cast<int32_t>(prompt.size()) - 1};
  const ForwardRequest request{sequence, prompt, last};
  std::vector<float> logits;
  ASSERT_TRUE(decoder->forward(std::span(&request, 1), logits).ok());
  const testing::LogitDifference difference = testing::compare_logits(logits, expected);
  std::printf("default model: max |difference| %.3g, max |logit| %.3g\n",
              difference.max_abs_difference, difference.max_abs_reference);
  EXPECT_LE(difference.max_abs_difference, 1e-3 * difference.max_abs_reference);
  EXPECT_EQ(argmax(logits), argmax(expected));
}

TEST(DefaultModelDecoder, GreedyContinuationsAreIdenticalAcrossRunsAndFollowTransformers) {
  DW_REQUIRE_DEFAULT_MODEL();
  const auto fixture = default_model_fixture();
  auto two_threads = load_default(2);
  auto one_thread = load_default(1);
  for (const auto& entry : fixture["prompts"]) {
    const auto prompt = entry["input_ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> first = greedy(*two_threads, prompt, 48);
    EXPECT_EQ(first, greedy(*two_threads, prompt, 48)) << entry["prompt"];
    EXPECT_EQ(first, greedy(*one_thread, prompt, 48)) << entry["prompt"];
    // transformers stopped at EOS or 48 tokens; up to its first near-tie (top-1/top-2
    // margin below 0.01, where fp32 rounding may pick either) the tokens must agree.
    const auto reference = entry["greedy_tokens"].get<std::vector<int32_t>>();
    const auto margins = entry["greedy_top2_margins"].get<std::vector<double>>();
    for (size_t i = 0; i < reference.size() && margins[i] >= 0.01; ++i) {
      ASSERT_EQ(first[i], reference[i]) << entry["prompt"] << " position " << i;
    }
  }
}

}  // namespace
}  // namespace draftwise
