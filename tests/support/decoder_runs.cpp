#include "tests/support/decoder_runs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <span>

namespace draftwise::testing {

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

}  // namespace draftwise::testing
