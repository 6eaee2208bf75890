// Running a Decoder the way the model tests need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "target/decoder.h"
#include "target/model_weights.h"

namespace draftwise::testing {

// Feeds `tokens` to a fresh sequence in chunks of the given sizes (the last one repeats;
// {tokens.size()} is one call) and returns the logits of every position, [tokens, vocab].
// A failed forward is a test failure.
std::vector<float> logits_in_chunks(Decoder& decoder, const std::vector<int32_t>& tokens,
                                    const std::vector<size_t>& chunks);

// `count` token ids uniform in [0, vocab), from a seeded xoshiro256**.
std::vector<int32_t> random_token_ids(int64_t count, int64_t vocab, uint64_t seed);

// A fresh sequence holding tokens[0, length), prefilled in one pass.
SequenceId prefilled_sequence(Decoder& decoder, std::span<const int32_t> tokens, int64_t length);

// qTTT parameters of `rank` for `config` (target/qttt.h's layout) with every entry nonzero:
// A's entries uniform in ±a_scale, every other (ΔW_Q at full rank, B) in ±scale.
std::vector<float> random_qtt_parameters(const ModelConfig& config, int64_t rank, double a_scale, double scale,
                                         uint64_t seed);

// The tiny llama_tied fixture's weights with the final norm's weights all infinite, so that
// every logit is non-finite: a broken model.
WeightLoader broken_final_norm_loader(const ModelWeights& weights);

// A greedy step whose logits are non-finite fails with a message naming them and leaves the
// sequence as it was; a step that asks for no logits still runs.
void expect_non_finite_greedy_step_fails_and_rolls_back(Decoder& decoder);

}  // namespace draftwise::testing
