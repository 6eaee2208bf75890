#include "draft/model_drafter.h"

#include <algorithm>

namespace draftwise {

namespace {

constexpr int64_t kPrefillChunk = 512;

}  // namespace

ModelDrafter::ModelDrafter(std::unique_ptr<Decoder> model, std::string name)
    : model_(std::move(model)), name_(std::move(name)) {}

ModelDrafter::~ModelDrafter() {
  for (const auto& [id, state] : requests_) model_->release_sequence(state.sequence);
}

Expected<DraftRequestId> ModelDrafter::begin(std::span<const int32_t> prompt, SequenceId,
                                             std::string_view learning_key) {
  const DraftRequestId id = next_id_++;
  Request& state = requests_[id];
  state.sequence = model_->create_sequence();
  state.tokens.assign(prompt.begin(), prompt.end());
  if (learning_) learning_->begin_request(id, learning_key);
  return id;
}

int64_t ModelDrafter::cached_tokens(DraftRequestId request) const {
  const auto it = requests_.find(request);
  return it == requests_.end() ? -1 : model_->sequence_length(it->second.sequence);
}

Status ModelDrafter::advance(DraftRequestId request, int accepted, int32_t next) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name_, request);
  Request& state = it->second;
  if (accepted < 0 || accepted > static_cast<int>(state.proposal.size())) {
    return make_error("{}: {} tokens accepted of a proposal of {}", name_, accepted, state.proposal.size());
  }
  // The cache holds the sequence's tokens but its last, then the proposal's but its last:
  // what stays valid is the sequence and the accepted drafts.
  const int64_t valid =
      std::min(model_->sequence_length(state.sequence), static_cast<int64_t>(state.tokens.size()) + accepted);
  DW_TRY(model_->truncate_sequence(state.sequence, valid));
  state.tokens.insert(state.tokens.end(), state.proposal.begin(), state.proposal.begin() + accepted);
  state.tokens.push_back(next);
  state.proposal.clear();
  state.logged.clear();
  return {};
}

Status ModelDrafter::observe_verification(DraftRequestId request, int accepted, std::span<const float> target_logits) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name_, request);
  return record_verification(request, it->second.proposal, it->second.logged, accepted, target_logits,
                             model_->config().vocab_size, model_->config().hidden_size);
}

Status ModelDrafter::catch_up(Request& state) {
  const int64_t end = static_cast<int64_t>(state.tokens.size()) - 1;
  for (int64_t fed = model_->sequence_length(state.sequence); fed < end; fed = model_->sequence_length(state.sequence)) {
    const int64_t size = std::min(kPrefillChunk, end - fed);
    const std::span<const int32_t> chunk(state.tokens.data() + fed, static_cast<size_t>(size));
    const ForwardRequest request{state.sequence, chunk, {}};
    std::vector<float> ignored;
    DW_TRY(model_->forward(std::span(&request, 1), ignored));
  }
  return {};
}

Status ModelDrafter::propose(std::span<const ProposalRequest> requests, std::vector<std::vector<DraftToken>>& proposals) {
  start_step();
  proposals.assign(requests.size(), {});
  std::vector<Request*> states;
  for (const ProposalRequest& request : requests) {
    const auto it = requests_.find(request.request);
    if (it == requests_.end()) return make_error("{}: unknown draft request {}", name_, request.request);
    if (request.picker == nullptr) return make_error("{}: a proposal needs a token picker", name_);
    it->second.proposal.clear();
    it->second.logged.clear();
    states.push_back(&it->second);
  }
  std::vector<StepwiseRequest> active;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty()) continue;
    DW_TRY(catch_up(*states[i]));
    if (has_room(states[i]->sequence)) active.push_back({i, states[i]->sequence, states[i]->tokens.back()});
  }
  // One drafting pass per adapter: requests of different scopes draft apart.
  for (const auto& [adapter, members] : by_adapter(requests)) {
    DW_TRY(propose_group(requests, members, states, active, adapter.get(), proposals));
  }
  return {};
}

Status ModelDrafter::propose_group(std::span<const ProposalRequest> requests, std::span<const size_t> members,
                                   std::span<Request* const> states, const std::vector<StepwiseRequest>& active,
                                   const DraftAdapter* adapter, std::vector<std::vector<DraftToken>>& proposals) {
  const bool logging = adapter != nullptr && this->logging();
  const int64_t vocab = model_->config().vocab_size;
  std::vector<StepwiseRequest> drafting;
  PassLog log;
  for (const size_t i : members) {
    log.requests[states[i]->sequence] = &states[i]->logged;
    for (const StepwiseRequest& request : active) {
      if (request.index == i) drafting.push_back(request);
    }
  }
  // With an adapter: every layer, then the trainable head in place of the model's own.
  LowRankAdapter low_rank;
  std::vector<float> final_hidden;
  DraftHead head{static_cast<int>(model_->config().num_layers), {}, nullptr, logging ? &final_hidden : nullptr};
  if (adapter != nullptr) {
    low_rank = adapter->low_rank();
    head.norm_gain = adapter->gain;
    head.adapter = &low_rank;
  }
  const DraftPass pass = [&](std::span<const ForwardRequest> batch, bool greedy, std::vector<int32_t>& argmax,
                             std::vector<float>& logits) {
    if (adapter == nullptr) return greedy ? model_->forward_greedy(batch, argmax) : model_->forward(batch, logits);
    return head_pass(*model_, head, batch, greedy, argmax, logits, logging ? &log : nullptr);
  };
  DW_TRY(draft_stepwise(requests, std::move(drafting), vocab,
                        [this](SequenceId sequence) { return has_room(sequence); }, pass, proposals));
  for (const size_t i : members) {
    Request& state = *states[i];
    for (const DraftToken& draft : proposals[i]) state.proposal.push_back(draft.token);
    if (logging) finish_log(log, state.sequence, state.proposal, vocab, state.logged);
  }
  return {};
}

void ModelDrafter::end(DraftRequestId request) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return;
  model_->release_sequence(it->second.sequence);
  requests_.erase(it);
  if (learning_) learning_->end_request(request);
}

}  // namespace draftwise
