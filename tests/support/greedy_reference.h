// Plain greedy decoding as the reference of the GPU speculation tests, where a verification
// pass's bf16 logits may differ in the last bits from a one-token step's (DESIGN.md,
// Numerics): output equals the reference up to its first near-tie, a position whose top-1 /
// top-2 margin is below ε = 2% of the row's largest |logit|.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "target/decoder.h"

namespace draftwise::testing {

struct GreedyReference {
  std::vector<int32_t> tokens;
  std::vector<double> relative_margins;  // per step: (top-1 − top-2) / max |logit|
};

// Appends the argmax of one row of logits ([vocab]) and its relative margin.
void record_greedy_step(const std::vector<float>& logits, GreedyReference& reference);

// `count` greedy tokens after `prompt`, one a step, on a fresh sequence (released after).
GreedyReference greedy_reference(Decoder& decoder, const std::vector<int32_t>& prompt,
                                 int64_t count);

inline constexpr double kNearTie = 0.02;

// Whether `tokens` equal the reference up to its first near-tie; `identical`: to the end.
bool equal_up_to_a_near_tie(const std::vector<int32_t>& tokens, const GreedyReference& reference,
                            bool& identical);

// The first user turn of `count` Spec-Bench dev prompts of the short categories (not
// summarization or RAG), two per category in file order, rendered with the model's chat
// template.
std::vector<std::vector<int32_t>> short_dev_prompts(const Tokenizer& tokenizer, size_t count);

}  // namespace draftwise::testing
