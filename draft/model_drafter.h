// Drafting with a separate model (Leviathan et al. 2023): any model the engine loads, with
// the target's vocabulary (checked by whoever builds the drafter), proposes the tokens one
// at a time by the request's sampling rule, every request of a proposal in one batched
// forward per drafted position. Its key/value cache rolls back like the target's: after
// verification it keeps exactly the tokens the target kept. With learning attached (DVI.md),
// it drafts through a trainable head in place of its own final norm and LM head, at full
// depth (DraftHead::exit_layer = its layer count): the head starts as the model's own and
// learns from the target's verifications as the early-exit drafter's does.
#pragma once

#include <memory>
#include <unordered_map>

#include "draft/learning_drafter.h"
#include "draft/stepwise_drafting.h"
#include "target/decoder.h"

namespace draftwise {

class ModelDrafter final : public LearningDrafter {
 public:
  // `name` is the spec that made it ("model:PATH").
  ModelDrafter(std::unique_ptr<Decoder> model, std::string name);
  ~ModelDrafter() override;

  std::string name() const override { return name_; }
  Expected<DraftRequestId> begin(std::span<const int32_t> prompt, SequenceId target_sequence,
                                 std::string_view learning_key) override;
  Status advance(DraftRequestId request, int accepted, int32_t next) override;
  Status propose(std::span<const ProposalRequest> requests, std::vector<std::vector<DraftToken>>& proposals) override;
  void end(DraftRequestId request) override;
  Status observe_verification(DraftRequestId request, int accepted, std::span<const float> target_logits) override;
  Decoder& head_decoder() override { return *model_; }
  bool lens_by_default() const override { return false; }

  const Decoder& model() const { return *model_; }
  // The positions the draft model's cache holds for a request (-1 for an unknown one).
  int64_t cached_tokens(DraftRequestId request) const;

 private:
  struct Request {
    SequenceId sequence = 0;
    // The sequence: prompt and every appended token. The draft model's cache holds a prefix
    // of it (and after a proposal, the drafts but the last).
    std::vector<int32_t> tokens;
    std::vector<int32_t> proposal;  // the last one, until advance()
    Logged logged;                  // while learning: each drafted token's final hidden state and log p_S
  };
  // Runs the tokens the cache lacks, but the last, through the model (in chunks, no logits).
  Status catch_up(Request& state);
  // Whether the draft model's cache of `sequence` takes one more token.
  bool has_room(SequenceId sequence) const {
    return model_->sequence_length(sequence) + 1 <= model_->context_length();
  }
  // Drafts for the requests `members` (indices into requests, each in `active` when it
  // drafts) with one adapter's head, or the model's own head when learning is not attached.
  Status propose_group(std::span<const ProposalRequest> requests, std::span<const size_t> members,
                       std::span<Request* const> states, const std::vector<StepwiseRequest>& active,
                       const DraftAdapter* adapter, std::vector<std::vector<DraftToken>>& proposals);

  std::unique_ptr<Decoder> model_;
  std::string name_;
  std::unordered_map<DraftRequestId, Request> requests_;
  DraftRequestId next_id_ = 1;
};

}  // namespace draftwise
