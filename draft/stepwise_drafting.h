// The drafting loop that the drafters with logits share (a draft model, early exit): every
// request feeds one token a step — its sequence's last token, then each new draft — all of
// them in one batched pass a step; each picks its token by its own rule and stops at its
// limit, after a token below its confidence cut-off, or when its sequence has no room left.
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "draft/drafter.h"

namespace draftwise {

struct StepwiseRequest {
  size_t index = 0;  // into the proposal requests and the proposals
  SequenceId sequence = 0;
  int32_t first_input = 0;
};

// One batched pass of single tokens, every row's next-token logits asked for: each row's
// argmax when `greedy`, else the logits ([rows, vocab]).
using DraftPass = std::function<Status(std::span<const ForwardRequest> batch, bool greedy,
                                       std::vector<int32_t>& argmax, std::vector<float>& logits)>;

// Appends each active request's drafts to proposals[index]. `has_room`: whether a sequence's
// cache takes one more token.
Status draft_stepwise(std::span<const ProposalRequest> requests, std::vector<StepwiseRequest> active, int64_t vocab,
                      const std::function<bool(SequenceId)>& has_room, const DraftPass& pass,
                      std::vector<std::vector<DraftToken>>& proposals);

}  // namespace draftwise
