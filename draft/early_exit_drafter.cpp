#include "draft/early_exit_drafter.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "draft/stepwise_drafting.h"

namespace draftwise {

Expected<std::unique_ptr<EarlyExitDrafter>> EarlyExitDrafter::create(Decoder& target,
                                                                     int exit_layer) {
  const int layers = static_cast<int>(target.config().num_layers);
  if (exit_layer < 1 || exit_layer > layers - 1) {
    return make_error("self:{}: the exit layer must be in [1, {}] for this {}-layer model",
                      exit_layer, layers - 1, layers);
  }
  return std::unique_ptr<EarlyExitDrafter>(new EarlyExitDrafter(target, exit_layer));
}

std::string EarlyExitDrafter::name() const {
  return fmt::format("self:{}", exit_layer_);
}

Expected<DraftRequestId> EarlyExitDrafter::begin(std::span<const int32_t> prompt,
                                                 SequenceId target_sequence,
                                                 std::string_view learning_key) {
  if (target_.sequence_length(target_sequence) < 0) {
    return make_error("{}: unknown target sequence {}", name(), target_sequence);
  }
  const DraftRequestId id = next_id_++;
  Request& state = requests_[id];
  state.sequence = target_sequence;
  state.tokens.assign(prompt.begin(), prompt.end());
  if (learning_) learning_->begin_request(id, learning_key);
  return id;
}

Status EarlyExitDrafter::advance(DraftRequestId request, int accepted, int32_t next) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), request);
  Request& state = it->second;
  if (accepted < 0 || accepted > static_cast<int>(state.proposal.size())) {
    return make_error("{}: {} tokens accepted of a proposal of {}", name(), accepted,
                      state.proposal.size());
  }
  // The drafted tokens' pending state was consumed by the verification pass, and the
  // target's cache was cut to what it kept: there is nothing of the drafter's to roll back.
  state.tokens.insert(state.tokens.end(), state.proposal.begin(),
                      state.proposal.begin() + accepted);
  state.tokens.push_back(next);
  state.proposal.clear();
  state.logged.clear();
  return {};
}

Status EarlyExitDrafter::observe_verification(DraftRequestId request, int accepted,
                                              std::span<const float> target_logits) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), request);
  return record_verification(request, it->second.proposal, it->second.logged, accepted, target_logits,
                             target_.config().vocab_size, target_.config().hidden_size);
}

Status EarlyExitDrafter::propose(std::span<const ProposalRequest> requests,
                                 std::vector<std::vector<DraftToken>>& proposals) {
  start_step();
  proposals.assign(requests.size(), {});
  std::vector<Request*> states;
  for (const ProposalRequest& request : requests) {
    const auto it = requests_.find(request.request);
    if (it == requests_.end())
      return make_error("{}: unknown draft request {}", name(), request.request);
    if (request.picker == nullptr) return make_error("{}: a proposal needs a token picker", name());
    it->second.proposal.clear();
    it->second.logged.clear();
    states.push_back(&it->second);
  }
  // One drafting pass per adapter: requests of different scopes draft apart.
  for (const auto& [adapter, members] : by_adapter(requests)) {
    DW_TRY(propose_group(requests, members, states, adapter.get(), proposals));
  }
  return {};
}

Status EarlyExitDrafter::propose_group(std::span<const ProposalRequest> requests,
                                       std::span<const size_t> members,
                                       std::span<Request* const> states,
                                       const DraftAdapter* adapter,
                                       std::vector<std::vector<DraftToken>>& proposals) {
  const bool logging = this->logging();
  const int64_t vocab = target_.config().vocab_size;
  LowRankAdapter low_rank;
  std::vector<float> exit_hidden;
  DraftHead head{exit_layer_, {}, nullptr, logging ? &exit_hidden : nullptr};
  if (adapter != nullptr) {
    low_rank = adapter->low_rank();
    head.norm_gain = adapter->gain;
    head.adapter = &low_rank;
  }
  const int64_t context = target_.context_length();
  const auto has_room = [this, context](SequenceId sequence) {
    return target_.sequence_length(sequence) + target_.pending_tokens(sequence) + 1 <= context;
  };
  std::vector<StepwiseRequest> active;
  PassLog log;
  for (const size_t i : members) {
    log.requests[states[i]->sequence] = &states[i]->logged;
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty() || !has_room(states[i]->sequence))
      continue;
    active.push_back({i, states[i]->sequence, states[i]->tokens.back()});
  }
  // Drafting passes run layers [0, E) and the draft head; their tokens stay pending.
  const DraftPass pass = [&](std::span<const ForwardRequest> batch, bool greedy,
                             std::vector<int32_t>& argmax, std::vector<float>& logits) {
    return head_pass(target_, head, batch, greedy, argmax, logits, logging ? &log : nullptr);
  };
  DW_TRY(draft_stepwise(requests, std::move(active), vocab, has_room, pass, proposals));
  for (const size_t i : members) {
    Request& state = *states[i];
    for (const DraftToken& draft : proposals[i]) state.proposal.push_back(draft.token);
    if (logging) finish_log(log, state.sequence, state.proposal, vocab, state.logged);
  }
  return {};
}

void EarlyExitDrafter::end(DraftRequestId request) {
  requests_.erase(request);
  if (learning_) learning_->end_request(request);
}

}  // namespace draftwise
