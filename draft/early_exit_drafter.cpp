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
  state.proposal_hidden.clear();
  state.proposal_log_probabilities.clear();
  return {};
}

Status EarlyExitDrafter::observe_verification(DraftRequestId request, int accepted,
                                              std::span<const float> target_logits) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), request);
  OnlineLearner* learner = learning_ ? learning_->learner(request) : nullptr;
  if (learner == nullptr || !learner->enabled()) return {};
  const Request& state = it->second;
  const int proposed = static_cast<int>(state.proposal.size());
  const int64_t vocab = target_.config().vocab_size;
  const int64_t hidden = target_.config().hidden_size;
  // A proposal made while learning was off (switched on since) has nothing to teach.
  if (static_cast<int64_t>(state.proposal_hidden.size()) != proposed * hidden) return {};
  if (accepted < 0 || accepted > proposed ||
      static_cast<int64_t>(target_logits.size()) < proposed * vocab) {
    return make_error("{}: a verification of {} drafted tokens came with {} logits", name(),
                      proposed, target_logits.size());
  }
  // Records up to and including the first rejection: reward 1 for kept tokens, 0 for it.
  for (int i = 0; i < proposed && i <= accepted; ++i) {
    DraftRecord record;
    const auto row = static_cast<size_t>(i);
    record.hidden.assign(
        state.proposal_hidden.begin() + static_cast<std::ptrdiff_t>(row * hidden),
        state.proposal_hidden.begin() + static_cast<std::ptrdiff_t>((row + 1) * hidden));
    record.token = state.proposal[row];
    record.draft_log_probability = state.proposal_log_probabilities[row];
    keep_top_logits(
        target_logits.subspan(row * static_cast<size_t>(vocab), static_cast<size_t>(vocab)),
        learner->options().top_k, record);
    record.reward = i < accepted ? 1.0f : 0.0f;
    record.position = i;
    learner->add_record(std::move(record));
  }
  learner->observe_verification(proposed, accepted);
  return {};
}

Status EarlyExitDrafter::between_steps() {
  if (!learning_) return {};
  const double step_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - step_started_).count();
  return learning_->between_steps(step_seconds);
}

Status EarlyExitDrafter::propose(std::span<const ProposalRequest> requests,
                                 std::vector<std::vector<DraftToken>>& proposals) {
  step_started_ = std::chrono::steady_clock::now();
  proposals.assign(requests.size(), {});
  std::vector<Request*> states;
  for (const ProposalRequest& request : requests) {
    const auto it = requests_.find(request.request);
    if (it == requests_.end())
      return make_error("{}: unknown draft request {}", name(), request.request);
    if (request.picker == nullptr) return make_error("{}: a proposal needs a token picker", name());
    it->second.proposal.clear();
    it->second.proposal_hidden.clear();
    it->second.proposal_log_probabilities.clear();
    states.push_back(&it->second);
  }
  if (!learning_) {
    std::vector<size_t> everyone(requests.size());
    for (size_t i = 0; i < everyone.size(); ++i) everyone[i] = i;
    return propose_group(requests, everyone, states, nullptr, proposals);
  }
  // One drafting pass per adapter: requests of different scopes draft apart.
  std::map<std::shared_ptr<const DraftAdapter>, std::vector<size_t>> groups;
  for (size_t i = 0; i < requests.size(); ++i)
    groups[learning_->adapter(requests[i].request)].push_back(i);
  for (const auto& [adapter, members] : groups) {
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
  const int64_t hidden = target_.config().hidden_size;
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
  std::map<SequenceId, Request*> by_sequence;
  for (const size_t i : members) {
    by_sequence[states[i]->sequence] = states[i];
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty() || !has_room(states[i]->sequence))
      continue;
    active.push_back({i, states[i]->sequence, states[i]->tokens.back()});
  }
  // Drafting passes run layers [0, E) and the draft head; their tokens stay pending. When
  // learning, every pass keeps its logits and h_E rows, by sequence, for the records.
  std::map<SequenceId, std::vector<float>> drafted_logits;  // [drafted, vocab] per sequence
  const DraftPass pass = [&](std::span<const ForwardRequest> batch, bool greedy,
                             std::vector<int32_t>& argmax, std::vector<float>& logits) -> Status {
    if (!logging) {
      return greedy ? target_.forward_draft_greedy(batch, head, argmax)
                    : target_.forward_draft(batch, head, logits);
    }
    DW_TRY(target_.forward_draft(batch, head, logits));
    for (size_t row = 0; row < batch.size(); ++row) {
      const auto first = logits.begin() + static_cast<std::ptrdiff_t>(row * vocab);
      if (!std::all_of(first, first + vocab, [](float x) { return std::isfinite(x); })) {
        return make_error("{}: the draft head produced a non-finite logit", name());
      }
      std::vector<float>& kept = drafted_logits[batch[row].sequence];
      kept.insert(kept.end(), first, first + vocab);
      std::vector<float>& rows = by_sequence.at(batch[row].sequence)->proposal_hidden;
      const auto h = exit_hidden.begin() + static_cast<std::ptrdiff_t>(row * hidden);
      rows.insert(rows.end(), h, h + hidden);
    }
    if (greedy) argmax = argmax_rows(logits, vocab);
    return {};
  };
  DW_TRY(draft_stepwise(requests, std::move(active), vocab, has_room, pass, proposals));
  for (const size_t i : members) {
    Request& state = *states[i];
    for (const DraftToken& draft : proposals[i]) state.proposal.push_back(draft.token);
    if (!logging) continue;
    // log p_S(a) of each drafted token under the head that drafted it (temperature 1).
    const std::vector<float>& kept = drafted_logits[state.sequence];
    for (size_t j = 0; j < state.proposal.size(); ++j) {
      const float* z = kept.data() + j * static_cast<size_t>(vocab);
      const float largest = *std::max_element(z, z + vocab);
      float total = 0.0f;
      for (int64_t v = 0; v < vocab; ++v) total += std::exp(z[v] - largest);
      state.proposal_log_probabilities.push_back(
          static_cast<float>(z[state.proposal[j]] - largest - std::log(total)));
    }
  }
  return {};
}

void EarlyExitDrafter::end(DraftRequestId request) {
  requests_.erase(request);
  if (learning_) learning_->end_request(request);
}

}  // namespace draftwise
