#include "draft/early_exit_drafter.h"

#include <fmt/format.h>

#include "draft/stepwise_drafting.h"

namespace draftwise {

Expected<std::unique_ptr<EarlyExitDrafter>> EarlyExitDrafter::create(Decoder& target, int exit_layer) {
  const int layers = static_cast<int>(target.config().num_layers);
  if (exit_layer < 1 || exit_layer > layers - 1) {
    return make_error("self:{}: the exit layer must be in [1, {}] for this {}-layer model", exit_layer, layers - 1,
                      layers);
  }
  return std::unique_ptr<EarlyExitDrafter>(new EarlyExitDrafter(target, exit_layer));
}

std::string EarlyExitDrafter::name() const { return fmt::format("self:{}", exit_layer_); }

Expected<DraftRequestId> EarlyExitDrafter::begin(std::span<const int32_t> prompt, SequenceId target_sequence) {
  if (target_.sequence_length(target_sequence) < 0) {
    return make_error("{}: unknown target sequence {}", name(), target_sequence);
  }
  const DraftRequestId id = next_id_++;
  Request& state = requests_[id];
  state.sequence = target_sequence;
  state.tokens.assign(prompt.begin(), prompt.end());
  return id;
}

Status EarlyExitDrafter::advance(DraftRequestId request, int accepted, int32_t next) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), request);
  Request& state = it->second;
  if (accepted < 0 || accepted > static_cast<int>(state.proposal.size())) {
    return make_error("{}: {} tokens accepted of a proposal of {}", name(), accepted, state.proposal.size());
  }
  // The drafted tokens' pending state was consumed by the verification pass, and the
  // target's cache was cut to what it kept: there is nothing of the drafter's to roll back.
  state.tokens.insert(state.tokens.end(), state.proposal.begin(), state.proposal.begin() + accepted);
  state.tokens.push_back(next);
  state.proposal.clear();
  return {};
}

Status EarlyExitDrafter::propose(std::span<const ProposalRequest> requests,
                                 std::vector<std::vector<DraftToken>>& proposals) {
  proposals.assign(requests.size(), {});
  std::vector<Request*> states;
  for (const ProposalRequest& request : requests) {
    const auto it = requests_.find(request.request);
    if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), request.request);
    if (request.picker == nullptr) return make_error("{}: a proposal needs a token picker", name());
    it->second.proposal.clear();
    states.push_back(&it->second);
  }
  const DraftHead head{exit_layer_, norm_gain_};
  const int64_t context = target_.context_length();
  const auto has_room = [this, context](SequenceId sequence) {
    return target_.sequence_length(sequence) + target_.pending_tokens(sequence) + 1 <= context;
  };
  std::vector<StepwiseRequest> active;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty() || !has_room(states[i]->sequence)) continue;
    active.push_back({i, states[i]->sequence, states[i]->tokens.back()});
  }
  // Drafting passes run layers [0, E) and the draft head; their tokens stay pending.
  const DraftPass pass = [this, &head](std::span<const ForwardRequest> batch, bool greedy,
                                       std::vector<int32_t>& argmax, std::vector<float>& logits) {
    return greedy ? target_.forward_draft_greedy(batch, head, argmax) : target_.forward_draft(batch, head, logits);
  };
  DW_TRY(draft_stepwise(requests, std::move(active), target_.config().vocab_size, has_room, pass, proposals));
  for (size_t i = 0; i < requests.size(); ++i) {
    for (const DraftToken& draft : proposals[i]) states[i]->proposal.push_back(draft.token);
  }
  return {};
}

void EarlyExitDrafter::end(DraftRequestId request) { requests_.erase(request); }

}  // namespace draftwise
