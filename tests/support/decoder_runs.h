// Running a Decoder the way the model tests need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "target/decoder.h"
#include "target/model_weights.h"

namespace draftwise::testing {

// Feeds `tokens` to a fresh sequence in chunks of the given sizes (the last one repeats;
// {tokens.size()} is one call) and returns the logits of every position, [tokens, vocab].
// A failed forward is a test failure.
std::vector<float> logits_in_chunks(Decoder& decoder, const std::vector<int32_t>& tokens,
                                    const std::vector<size_t>& chunks);

// The tiny llama_tied fixture's weights with the final norm's weights all infinite, so that
// every logit is non-finite: a broken model.
WeightLoader broken_final_norm_loader(const ModelWeights& weights);

// A greedy step whose logits are non-finite fails with a message naming them and leaves the
// sequence as it was; a step that asks for no logits still runs.
void expect_non_finite_greedy_step_fails_and_rolls_back(Decoder& decoder);

}  // namespace draftwise::testing
