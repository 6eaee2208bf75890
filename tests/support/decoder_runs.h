// Running a Decoder the way the model tests need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "target/decoder.h"

namespace draftwise::testing {

// Feeds `tokens` to a fresh sequence in chunks of the given sizes (the last one repeats;
// {tokens.size()} is one call) and returns the logits of every position, [tokens, vocab].
// A failed forward is a test failure.
std::vector<float> logits_in_chunks(Decoder& decoder, const std::vector<int32_t>& tokens,
                                    const std::vector<size_t>& chunks);

}  // namespace draftwise::testing
