// What the drafters with a trainable draft head share (DVI.md): the early-exit drafter's head
// on h_E of the target, and a draft model's own output head at full depth. With learning
// attached (draft/dvi_learning.h), drafting runs through the head of the request's adapter,
// one pass per adapter; while a learner logs, every drafted token's hidden state (the head's
// input) and its draft log-probability are kept, and each verification up to its first
// rejection becomes records for the learner; updates run between engine steps.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <vector>

#include "draft/drafter.h"
#include "draft/dvi_learning.h"
#include "target/decoder.h"

namespace draftwise {

class LearningDrafter : public Drafter {
 public:
  bool wants_target_logits() const override { return logging(); }
  Status between_steps() override;

  // The decoder whose LM head the draft head adapts (and whose shapes the adapter has).
  virtual Decoder& head_decoder() = 0;
  // Whether the head learns a lens unless told otherwise: an early exit's h_E is in another
  // basis than the one the final norm and LM head expect, a draft model's last hidden state
  // is not, and there the lens's first AdamW steps (every entry of M moves by about the
  // learning rate) only disturb a head that starts good.
  virtual bool lens_by_default() const = 0;
  // Attaches the adapter and its learners (before any request begins); null detaches.
  void set_learning(std::unique_ptr<DraftLearning> learning) { learning_ = std::move(learning); }
  DraftLearning* learning() { return learning_.get(); }
  const DraftLearning* learning() const { return learning_.get(); }

 protected:
  // What one request's last proposal left for the learner.
  struct Logged {
    std::vector<float> hidden;             // [drafted, hidden]: each token's head input
    std::vector<float> log_probabilities;  // [drafted]: log p_S of each drafted token
    void clear() {
      hidden.clear();
      log_probabilities.clear();
    }
  };
  // The logits and hidden rows of one proposal's head passes, by sequence, while logging.
  struct PassLog {
    std::map<SequenceId, Logged*> requests;
    std::map<SequenceId, std::vector<float>> logits;  // [drafted, vocab]
  };

  // Whether drafts are being logged for a learner (learning attached, on and enabled).
  bool logging() const { return learning_ != nullptr && learning_->learns() && learning_->enabled(); }
  // At the start of propose(): the engine step (for the learners' serving time) begins.
  void start_step() { step_started_ = std::chrono::steady_clock::now(); }
  // The requests (indices into `requests`) by the adapter they draft with; without learning,
  // all of them with none (the drafter's own head).
  std::map<std::shared_ptr<const DraftAdapter>, std::vector<size_t>> by_adapter(
      std::span<const ProposalRequest> requests) const;
  // One drafting pass through `head` on `decoder`: its rows' argmax when `greedy`, else their
  // logits. With `log`, the logits are always kept and, with the head's input rows
  // (head.exit_hidden must be set), appended to their requests' logs.
  Status head_pass(Decoder& decoder, const DraftHead& head, std::span<const ForwardRequest> batch, bool greedy,
                   std::vector<int32_t>& argmax, std::vector<float>& logits, PassLog* log) const;
  // After a logged proposal: log p_S(a) of each of its tokens, from the kept logits.
  static void finish_log(const PassLog& log, SequenceId sequence, std::span<const int32_t> proposal, int64_t vocab,
                         Logged& logged);
  // The records of one verification of `proposal` (records up to and including the first
  // rejection: reward 1 for kept tokens, 0 for it).
  Status record_verification(DraftRequestId request, std::span<const int32_t> proposal, const Logged& logged,
                             int accepted, std::span<const float> target_logits, int64_t vocab, int64_t hidden);

  std::unique_ptr<DraftLearning> learning_;

 private:
  std::chrono::steady_clock::time_point step_started_;  // the last propose()
};

}  // namespace draftwise
