// n-gram drafting (prompt lookup; vLLM's "ngram" proposer, llama.cpp's lookup decoding): the
// last n tokens of the sequence are looked up in the sequence before them, and the tokens
// that followed their most recent earlier occurrence are proposed, one-hot. No weights; the
// only state is each request's sequence.
#pragma once

#include <memory>
#include <unordered_map>

#include "draft/drafter.h"

namespace draftwise {

class NgramDrafter final : public Drafter {
 public:
  static constexpr int kMaxN = 16;
  // n in [1, kMaxN].
  static Expected<std::unique_ptr<NgramDrafter>> create(int n);

  std::string name() const override;
  Expected<DraftRequestId> begin(std::span<const int32_t> prompt, SequenceId target_sequence,
                                 std::string_view learning_key) override;
  Status advance(DraftRequestId request, int accepted, int32_t next) override;
  Status propose(std::span<const ProposalRequest> requests, std::vector<std::vector<DraftToken>>& proposals) override;
  void end(DraftRequestId request) override;

 private:
  struct Request {
    std::vector<int32_t> sequence;
    std::vector<int32_t> proposal;  // the last one, until advance()
  };
  explicit NgramDrafter(int n) : n_(n) {}

  int n_;
  std::unordered_map<DraftRequestId, Request> requests_;
  DraftRequestId next_id_ = 1;
};

// The tokens that followed the most recent earlier occurrence of `sequence`'s last n tokens,
// at most max_tokens of them; empty when the sequence is shorter than n + 1 or has none.
std::vector<int32_t> ngram_continuation(std::span<const int32_t> sequence, int n, int max_tokens);

}  // namespace draftwise
