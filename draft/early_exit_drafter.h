// Early-exit (self-speculative) drafting, `self:E` (LayerSkip, arXiv 2404.16710; Kangaroo,
// arXiv 2404.18911; DVI.md): the target's own layers [0, E) and a draft head on h_E — an
// RMSNorm with its own gain, initially the final norm's, and the target's frozen LM head, plus
// the low-rank adapter of DVI when learning (draft/dvi_learning.h) is attached: then every
// drafted token's h_E and draft log-probability are kept, and each verification up to its
// first rejection becomes records for the learner. Drafting runs in the target's own
// sequence: the drafted tokens' keys, values and hidden states of layers [0, E) stay pending
// there (Decoder::forward_draft), and verification runs only layers [E, L) for them.
#pragma once

#include <memory>
#include <unordered_map>

#include "draft/learning_drafter.h"

namespace draftwise {

class EarlyExitDrafter final : public LearningDrafter {
 public:
  // exit_layer in [1, num_layers − 1] of `target`, which must outlive the drafter.
  static Expected<std::unique_ptr<EarlyExitDrafter>> create(Decoder& target, int exit_layer);

  std::string name() const override;
  Expected<DraftRequestId> begin(std::span<const int32_t> prompt, SequenceId target_sequence,
                                 std::string_view learning_key) override;
  Status advance(DraftRequestId request, int accepted, int32_t next) override;
  Status propose(std::span<const ProposalRequest> requests,
                 std::vector<std::vector<DraftToken>>& proposals) override;
  void end(DraftRequestId request) override;

  Status observe_verification(DraftRequestId request, int accepted,
                              std::span<const float> target_logits) override;
  Decoder& head_decoder() override { return target_; }
  bool lens_by_default() const override { return true; }

 private:
  struct Request {
    SequenceId sequence = 0;
    std::vector<int32_t> tokens;    // the sequence: prompt and every appended token
    std::vector<int32_t> proposal;  // the last one, until advance()
    Logged logged;                  // while learning: each drafted token's h_E and log p_S
  };
  // Drafts for the requests `members` (indices into requests) with one adapter (or none:
  // the target's final norm and LM head alone).
  Status propose_group(std::span<const ProposalRequest> requests, std::span<const size_t> members,
                       std::span<Request* const> states, const DraftAdapter* adapter,
                       std::vector<std::vector<DraftToken>>& proposals);
  EarlyExitDrafter(Decoder& target, int exit_layer) : target_(target), exit_layer_(exit_layer) {}

  Decoder& target_;
  int exit_layer_;
  std::unordered_map<DraftRequestId, Request> requests_;
  DraftRequestId next_id_ = 1;
};

}  // namespace draftwise
