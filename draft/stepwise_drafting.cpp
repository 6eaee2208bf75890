#include "draft/stepwise_drafting.h"

#include <algorithm>
#include <cmath>

namespace draftwise {

namespace {

// softmax(logits)[token] at temperature 1: the draft's own confidence in its token.
double softmax_probability(std::span<const float> logits, int32_t token) {
  const float largest = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (const float logit : logits) total += std::exp(static_cast<double>(logit - largest));
  return std::exp(static_cast<double>(logits[static_cast<size_t>(token)] - largest)) / total;
}

}  // namespace

Status draft_stepwise(std::span<const ProposalRequest> requests, std::vector<StepwiseRequest> active, int64_t vocab,
                      const std::function<bool(SequenceId)>& has_room, const DraftPass& pass,
                      std::vector<std::vector<DraftToken>>& proposals) {
  static const std::vector<int32_t> first_row = {0};
  std::vector<int32_t> inputs(requests.size());
  for (const StepwiseRequest& request : active) inputs[request.index] = request.first_input;
  std::vector<ForwardRequest> batch;
  std::vector<float> logits;
  std::vector<int32_t> argmax;
  std::vector<StepwiseRequest> still_active;
  while (!active.empty()) {
    batch.clear();
    bool greedy = true;
    for (const StepwiseRequest& request : active) {
      const ProposalRequest& proposal = requests[request.index];
      batch.push_back({request.sequence, std::span(&inputs[request.index], 1), first_row});
      greedy = greedy && proposal.picker->greedy() && proposal.min_probability <= 0.0;
    }
    DW_TRY(pass(batch, greedy, argmax, logits));
    still_active.clear();
    for (size_t row = 0; row < active.size(); ++row) {
      const StepwiseRequest& request = active[row];
      const ProposalRequest& proposal = requests[request.index];
      DraftToken drafted;
      bool confident = true;
      if (greedy) {
        drafted = {argmax[row], TokenDistribution::one_hot(argmax[row])};
      } else {
        const std::span<const float> row_logits(logits.data() + row * vocab, static_cast<size_t>(vocab));
        DW_ASSIGN_OR_RETURN(drafted, proposal.picker->pick(row_logits));
        confident = softmax_probability(row_logits, drafted.token) >= proposal.min_probability;
      }
      inputs[request.index] = drafted.token;
      std::vector<DraftToken>& drafts = proposals[request.index];
      drafts.push_back(std::move(drafted));
      if (confident && has_room(request.sequence) && static_cast<int>(drafts.size()) < proposal.max_tokens) {
        still_active.push_back(request);
      }
    }
    active.swap(still_active);
  }
  return {};
}

}  // namespace draftwise
