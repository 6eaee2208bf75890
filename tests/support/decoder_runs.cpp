#include "tests/support/decoder_runs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>

#include "kernels/random.h"
#include "target/qttt.h"

namespace draftwise::testing {

std::vector<int32_t> random_token_ids(int64_t count, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t& token : tokens) token = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return tokens;
}

SequenceId prefilled_sequence(Decoder& decoder, std::span<const int32_t> tokens, int64_t length) {
  const SequenceId sequence = decoder.create_sequence();
  std::vector<float> logits;
  const ForwardRequest request{sequence, tokens.first(static_cast<size_t>(length)), {}};
  const Status status = decoder.forward(std::span(&request, 1), logits);
  EXPECT_TRUE(status.ok()) << status.error().message;
  return sequence;
}

std::vector<float> random_qtt_parameters(const ModelConfig& config, int64_t rank, double a_scale, double scale,
                                         uint64_t seed) {
  Rng rng(seed);
  std::vector<float> parameters(static_cast<size_t>(qtt_parameter_count(config, rank)));
  const int64_t layer_size = qtt_layer_parameters(config, rank);
  const int64_t a_size = rank * config.hidden_size;
  for (size_t i = 0; i < parameters.size(); ++i) {
    const bool in_a = rank > 0 && static_cast<int64_t>(i) % layer_size < a_size;
    parameters[i] = static_cast<float>((2 * rng.uniform() - 1) * (in_a ? a_scale : scale));
  }
  return parameters;
}

std::vector<float> logits_in_chunks(Decoder& decoder, const std::vector<int32_t>& tokens,
                                    const std::vector<size_t>& chunks) {
  const SequenceId sequence = decoder.create_sequence();
  std::vector<float> all;
  size_t done = 0;
  for (size_t chunk_index = 0; done < tokens.size(); ++chunk_index) {
    const size_t size = std::min(chunks[std::min(chunk_index, chunks.size() - 1)], tokens.size() - done);
    std::vector<int32_t> rows(size);
    std::iota(rows.begin(), rows.end(), 0);
    std::vector<float> logits;
    const ForwardRequest request{sequence, std::span(tokens).subspan(done, size), rows};
    const Status status = decoder.forward(std::span(&request, 1), logits);
    EXPECT_TRUE(status.ok()) << status.error().message;
    all.insert(all.end(), logits.begin(), logits.end());
    done += size;
  }
  decoder.release_sequence(sequence);
  return all;
}

WeightLoader broken_final_norm_loader(const ModelWeights& weights) {
  const WeightLoader real = checkpoint_weight_loader(weights);
  return [real](const DecoderTensorSpec& spec) -> Expected<std::vector<float>> {
    auto values = real(spec);
    if (values.ok() && spec.name == "model.norm.weight") values->assign(values->size(), INFINITY);
    return values;
  };
}

void expect_non_finite_greedy_step_fails_and_rolls_back(Decoder& decoder) {
  const SequenceId sequence = decoder.create_sequence();
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> none;
  std::vector<int32_t> tokens;
  ASSERT_TRUE(decoder.forward_greedy(std::vector<ForwardRequest>{{sequence, prompt, none}}, tokens).ok());
  EXPECT_TRUE(tokens.empty());
  const std::vector<int32_t> next = {4};
  const std::vector<int32_t> first = {0};
  const Status step = decoder.forward_greedy(std::vector<ForwardRequest>{{sequence, next, first}}, tokens);
  ASSERT_FALSE(step.ok());
  EXPECT_NE(step.error().message.find("non-finite logit"), std::string::npos) << step.error().message;
  EXPECT_EQ(decoder.sequence_length(sequence), 3);
  decoder.release_sequence(sequence);
}

}  // namespace draftwise::testing
