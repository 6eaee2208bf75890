#include "draft/early_exit_drafter.h"

#include <fmt/format.h>

#include "draft/draft_probability.h"

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
  // Each active request feeds one token a step through layers [0, E): the sequence's last
  // token, then each draft but the final one.
  std::vector<size_t> active;
  std::vector<int32_t> inputs(requests.size());
  const auto has_room = [&](size_t i) {
    const SequenceId sequence = states[i]->sequence;
    return target_.sequence_length(sequence) + target_.pending_tokens(sequence) + 1 <= context;
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty() || !has_room(i)) continue;
    inputs[i] = states[i]->tokens.back();
    active.push_back(i);
  }
  static const std::vector<int32_t> first_row = {0};
  std::vector<ForwardRequest> batch;
  std::vector<float> logits;
  std::vector<int32_t> argmax;
  while (!active.empty()) {
    batch.clear();
    bool greedy = true;
    for (const size_t i : active) {
      batch.push_back({states[i]->sequence, std::span(&inputs[i], 1), first_row});
      greedy = greedy && requests[i].picker->greedy() && requests[i].min_probability <= 0.0;
    }
    if (greedy) {
      DW_TRY(target_.forward_draft_greedy(batch, head, argmax));
    } else {
      DW_TRY(target_.forward_draft(batch, head, logits));
    }
    const size_t vocab = static_cast<size_t>(target_.config().vocab_size);
    std::vector<size_t> still_active;
    for (size_t row = 0; row < active.size(); ++row) {
      const size_t i = active[row];
      DraftToken drafted;
      bool confident = true;
      if (greedy) {
        drafted = {argmax[row], TokenDistribution::one_hot(argmax[row])};
      } else {
        const std::span<const float> row_logits(logits.data() + row * vocab, vocab);
        DW_ASSIGN_OR_RETURN(drafted, requests[i].picker->pick(row_logits));
        confident = softmax_probability(row_logits, drafted.token) >= requests[i].min_probability;
      }
      states[i]->proposal.push_back(drafted.token);
      proposals[i].push_back(std::move(drafted));
      if (confident && has_room(i) && static_cast<int>(proposals[i].size()) < requests[i].max_tokens) {
        inputs[i] = states[i]->proposal.back();
        still_active.push_back(i);
      }
    }
    active.swap(still_active);
  }
  return {};
}

void EarlyExitDrafter::end(DraftRequestId request) { requests_.erase(request); }

}  // namespace draftwise
