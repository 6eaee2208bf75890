#include "draft/model_drafter.h"

#include <algorithm>

#include "draft/draft_probability.h"

namespace draftwise {

namespace {

constexpr int64_t kPrefillChunk = 512;

}  // namespace

ModelDrafter::ModelDrafter(std::unique_ptr<Decoder> model, std::string name)
    : model_(std::move(model)), name_(std::move(name)) {}

ModelDrafter::~ModelDrafter() {
  for (const auto& [id, state] : requests_) model_->release_sequence(state.sequence);
}

Expected<DraftRequestId> ModelDrafter::begin(std::span<const int32_t> prompt, SequenceId) {
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
  const int64_t valid = std::min(state.fed, static_cast<int64_t>(state.tokens.size()) + accepted);
  DW_TRY(model_->truncate_sequence(state.sequence, valid));
  state.fed = valid;
  state.tokens.insert(state.tokens.end(), state.proposal.begin(), state.proposal.begin() + accepted);
  state.tokens.push_back(next);
  state.proposal.clear();
  return {};
}

Status ModelDrafter::catch_up(Request& state) {
  const int64_t end = static_cast<int64_t>(state.tokens.size()) - 1;
  while (state.fed < end) {
    const int64_t size = std::min(kPrefillChunk, end - state.fed);
    const std::span<const int32_t> chunk(state.tokens.data() + state.fed, static_cast<size_t>(size));
    const ForwardRequest request{state.sequence, chunk, {}};
    std::vector<float> ignored;
    DW_TRY(model_->forward(std::span(&request, 1), ignored));
    state.fed += size;
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
  // Each active request feeds one token a step: its sequence's last, then its last draft.
  std::vector<size_t> active;
  std::vector<int32_t> inputs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].max_tokens <= 0 || states[i]->tokens.empty()) continue;
    DW_TRY(catch_up(*states[i]));
    if (states[i]->fed + 1 > model_->context_length()) continue;
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
      DW_TRY(model_->forward_greedy(batch, argmax));
    } else {
      DW_TRY(model_->forward(batch, logits));
    }
    const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
    std::vector<size_t> still_active;
    for (size_t row = 0; row < active.size(); ++row) {
      const size_t i = active[row];
      Request& state = *states[i];
      ++state.fed;
      DraftToken drafted;
      bool confident = true;
      if (greedy) {
        drafted = {argmax[row], TokenDistribution::one_hot(argmax[row])};
      } else {
        const std::span<const float> row_logits(logits.data() + row * vocab, vocab);
        DW_ASSIGN_OR_RETURN(drafted, requests[i].picker->pick(row_logits));
        confident = softmax_probability(row_logits, drafted.token) >= requests[i].min_probability;
      }
      state.proposal.push_back(drafted.token);
      proposals[i].push_back(std::move(drafted));
      const bool room = state.fed + 1 <= model_->context_length();
      if (confident && room && static_cast<int>(proposals[i].size()) < requests[i].max_tokens) {
        inputs[i] = state.proposal.back();
        still_active.push_back(i);
      }
    }
    active.swap(still_active);
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
