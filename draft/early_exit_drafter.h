// Early-exit (self-speculative) drafting, `self:E` (LayerSkip, arXiv 2404.16710; Kangaroo,
// arXiv 2404.18911; DVI.md): the target's own layers [0, E) and a draft head on h_E — an
// RMSNorm with its own gain, initially the final norm's, and the target's frozen LM head (the
// low-rank adapter that DVI trains comes with the learner). Drafting runs in the target's own
// sequence: the drafted tokens' keys, values and hidden states of layers [0, E) stay pending
// there (Decoder::forward_draft), and verification runs only layers [E, L) for them.
#pragma once

#include <memory>
#include <unordered_map>

#include "draft/drafter.h"

namespace draftwise {

class EarlyExitDrafter final : public Drafter {
 public:
  // exit_layer in [1, num_layers − 1] of `target`, which must outlive the drafter.
  static Expected<std::unique_ptr<EarlyExitDrafter>> create(Decoder& target, int exit_layer);

  std::string name() const override;
  Expected<DraftRequestId> begin(std::span<const int32_t> prompt, SequenceId target_sequence) override;
  Status advance(DraftRequestId request, int accepted, int32_t next) override;
  Status propose(std::span<const ProposalRequest> requests, std::vector<std::vector<DraftToken>>& proposals) override;
  void end(DraftRequestId request) override;

  // The draft head's norm gain ([hidden]); empty: the target's final norm gain.
  const std::vector<float>& norm_gain() const { return norm_gain_; }

 private:
  struct Request {
    SequenceId sequence = 0;
    std::vector<int32_t> tokens;    // the sequence: prompt and every appended token
    std::vector<int32_t> proposal;  // the last one, until advance()
  };
  EarlyExitDrafter(Decoder& target, int exit_layer) : target_(target), exit_layer_(exit_layer) {}

  Decoder& target_;
  int exit_layer_;
  std::vector<float> norm_gain_;
  std::unordered_map<DraftRequestId, Request> requests_;
  DraftRequestId next_id_ = 1;
};

}  // namespace draftwise
