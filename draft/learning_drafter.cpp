#include "draft/learning_drafter.h"

#include <algorithm>
#include <cmath>

namespace draftwise {

Status LearningDrafter::between_steps() {
  if (!learning_) return {};
  const double step_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - step_started_).count();
  return learning_->between_steps(step_seconds);
}

std::map<std::shared_ptr<const DraftAdapter>, std::vector<size_t>> LearningDrafter::by_adapter(
    std::span<const ProposalRequest> requests) const {
  std::map<std::shared_ptr<const DraftAdapter>, std::vector<size_t>> groups;
  for (size_t i = 0; i < requests.size(); ++i) {
    groups[learning_ ? learning_->adapter(requests[i].request) : nullptr].push_back(i);
  }
  return groups;
}

Status LearningDrafter::head_pass(Decoder& decoder, const DraftHead& head, std::span<const ForwardRequest> batch,
                                  bool greedy, std::vector<int32_t>& argmax, std::vector<float>& logits,
                                  PassLog* log) const {
  if (log == nullptr) {
    return greedy ? decoder.forward_draft_greedy(batch, head, argmax) : decoder.forward_draft(batch, head, logits);
  }
  const int64_t vocab = decoder.config().vocab_size;
  const int64_t hidden = decoder.config().hidden_size;
  DW_TRY(decoder.forward_draft(batch, head, logits));
  for (size_t row = 0; row < batch.size(); ++row) {
    const auto first = logits.begin() + static_cast<std::ptrdiff_t>(row * vocab);
    if (!std::all_of(first, first + vocab, [](float x) { return std::isfinite(x); })) {
      return make_error("{}: the draft head produced a non-finite logit", name());
    }
    std::vector<float>& kept = log->logits[batch[row].sequence];
    kept.insert(kept.end(), first, first + vocab);
    std::vector<float>& rows = log->requests.at(batch[row].sequence)->hidden;
    const auto h = head.exit_hidden->begin() + static_cast<std::ptrdiff_t>(row * hidden);
    rows.insert(rows.end(), h, h + hidden);
  }
  if (greedy) argmax = argmax_rows(logits, vocab);
  return {};
}

void LearningDrafter::finish_log(const PassLog& log, SequenceId sequence, std::span<const int32_t> proposal,
                                 int64_t vocab, Logged& logged) {
  const auto kept = log.logits.find(sequence);
  if (kept == log.logits.end()) return;  // nothing drafted
  // log p_S(a) of each drafted token under the head that drafted it (temperature 1).
  for (size_t j = 0; j < proposal.size(); ++j) {
    const float* z = kept->second.data() + j * static_cast<size_t>(vocab);
    const float largest = *std::max_element(z, z + vocab);
    float total = 0.0f;
    for (int64_t v = 0; v < vocab; ++v) total += std::exp(z[v] - largest);
    logged.log_probabilities.push_back(static_cast<float>(z[proposal[j]] - largest - std::log(total)));
  }
}

Status LearningDrafter::record_verification(DraftRequestId request, std::span<const int32_t> proposal,
                                            const Logged& logged, int accepted, std::span<const float> target_logits,
                                            int64_t vocab, int64_t hidden) {
  OnlineLearner* learner = learning_ ? learning_->learner(request) : nullptr;
  if (learner == nullptr || !learner->enabled()) return {};
  const int proposed = static_cast<int>(proposal.size());
  // A proposal made while learning was off (switched on since) has nothing to teach.
  if (static_cast<int64_t>(logged.hidden.size()) != proposed * hidden ||
      logged.log_probabilities.size() != proposal.size()) {
    return {};
  }
  if (accepted < 0 || accepted > proposed || static_cast<int64_t>(target_logits.size()) < proposed * vocab) {
    return make_error("{}: a verification of {} drafted tokens came with {} logits", name(), proposed,
                      target_logits.size());
  }
  for (int i = 0; i < proposed && i <= accepted; ++i) {
    DraftRecord record;
    const auto row = static_cast<size_t>(i);
    record.hidden.assign(logged.hidden.begin() + static_cast<std::ptrdiff_t>(row * hidden),
                         logged.hidden.begin() + static_cast<std::ptrdiff_t>((row + 1) * hidden));
    record.token = proposal[row];
    record.draft_log_probability = logged.log_probabilities[row];
    keep_top_logits(target_logits.subspan(row * static_cast<size_t>(vocab), static_cast<size_t>(vocab)),
                    learner->options().top_k, record);
    record.reward = i < accepted ? 1.0f : 0.0f;
    record.position = i;
    learner->add_record(std::move(record));
  }
  learner->observe_verification(proposed, accepted);
  return {};
}

}  // namespace draftwise
