#include "draft/model_drafter.h"

#include <algorithm>

#include "draft/stepwise_drafting.h"

namespace draftwise {

namespace {

constexpr int64_t kPrefillChunk = 512;

}  // namespace

ModelDrafter::ModelDrafter(std::unique_ptr<Decoder> model, std::string name)
    : model_(std::move(model)), name_(std::move(name)) {}

ModelDrafter::~ModelDrafter() {
  for (const auto& [id, state] : requests_) model_->release_sequence(state.sequence);
}

Expected<DraftRequestId> ModelDrafter::begin(std::span<const int32_t> prompt, SequenceId, std::string_view) {
  const DraftRequestId id = next_id_++;
  Request& state = requests_[id];
  state.sequence = model_->create_sequence();
  state.tokens.assign(prompt.begin(), prompt.end());
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
  return {};
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
  proposals.assign(requests.size(), {});
  std::vector<Request*> states;
  for (const ProposalRequest& request : requests) {
    const auto it = requests_.find(request.request);
    if (it == requests_.end()) return make_error("{}: unknown draft request {}", name_, request.request);
    if (request.picker == nullptr) return make_error("{}: a proposal needs a token picker", name_);
    it->second.proposal.clear();
    states.push_back(&it->second);
  }
  const auto has_room = [this](SequenceId sequence) {
    return model_->sequence_length(sequence) + 1 <= model_->context_length();
  };
  std::vector<StepwiseRequest> active;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty()) continue;
    DW_TRY(catch_up(*states[i]));
    if (has_room(states[i]->sequence)) active.push_back({i, states[i]->sequence, states[i]->tokens.back()});
  }
  const DraftPass pass = [this](std::span<const ForwardRequest> batch, bool greedy, std::vector<int32_t>& argmax,
                                std::vector<float>& logits) {
    return greedy ? model_->forward_greedy(batch, argmax) : model_->forward(batch, logits);
  };
  DW_TRY(draft_stepwise(requests, std::move(active), model_->config().vocab_size, has_room, pass, proposals));
  for (size_t i = 0; i < requests.size(); ++i) {
    for (const DraftToken& draft : proposals[i]) states[i]->proposal.push_back(draft.token);
  }
  return {};
}

void ModelDrafter::end(DraftRequestId request) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return;
  model_->release_sequence(it->second.sequence);
  requests_.erase(it);
}

}  // namespace draftwise
