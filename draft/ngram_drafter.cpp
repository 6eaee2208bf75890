#include "draft/ngram_drafter.h"

#include <algorithm>

#include <fmt/format.h>

namespace draftwise {

std::vector<int32_t> ngram_continuation(std::span<const int32_t> sequence, int n, int max_tokens) {
  const int64_t length = static_cast<int64_t>(sequence.size());
  if (n <= 0 || max_tokens <= 0 || length < n + 1) return {};
  const std::span<const int32_t> suffix = sequence.subspan(static_cast<size_t>(length - n));
  // Most recent first; an occurrence must leave at least one token after it.
  for (int64_t start = length - n - 1; start >= 0; --start) {
    if (!std::equal(suffix.begin(), suffix.end(), sequence.begin() + start)) continue;
    const int64_t from = start + n;
    const int64_t to = std::min(length, from + max_tokens);
    return {sequence.begin() + from, sequence.begin() + to};
  }
  return {};
}

Expected<std::unique_ptr<NgramDrafter>> NgramDrafter::create(int n) {
  if (n < 1 || n > kMaxN) return make_error("ngram:{}: n must be in [1, {}]", n, kMaxN);
  return std::unique_ptr<NgramDrafter>(new NgramDrafter(n));
}

std::string NgramDrafter::name() const { return fmt::format("ngram:{}", n_); }

Expected<DraftRequestId> NgramDrafter::begin(std::span<const int32_t> prompt, SequenceId, std::string_view) {
  const DraftRequestId id = next_id_++;
  requests_[id].sequence.assign(prompt.begin(), prompt.end());
  return id;
}

Status NgramDrafter::advance(DraftRequestId request, int accepted, int32_t next) {
  const auto it = requests_.find(request);
  if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), request);
  Request& state = it->second;
  if (accepted < 0 || accepted > static_cast<int>(state.proposal.size())) {
    return make_error("{}: {} tokens accepted of a proposal of {}", name(), accepted, state.proposal.size());
  }
  state.sequence.insert(state.sequence.end(), state.proposal.begin(), state.proposal.begin() + accepted);
  state.sequence.push_back(next);
  state.proposal.clear();
  return {};
}

Status NgramDrafter::propose(std::span<const ProposalRequest> requests, std::vector<std::vector<DraftToken>>& proposals) {
  proposals.assign(requests.size(), {});
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto it = requests_.find(requests[i].request);
    if (it == requests_.end()) return make_error("{}: unknown draft request {}", name(), requests[i].request);
    Request& state = it->second;
    state.proposal = ngram_continuation(state.sequence, n_, requests[i].max_tokens);
    for (const int32_t token : state.proposal) proposals[i].push_back({token, TokenDistribution::one_hot(token)});
  }
  return {};
}

void NgramDrafter::end(DraftRequestId request) { requests_.erase(request); }

}  // namespace draftwise
