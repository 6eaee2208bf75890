// The drafter interface of speculative decoding: a drafter proposes up to k tokens that
// continue a sequence, each with the distribution it was drawn from; the target verifies
// the block in one forward pass (engine/speculation.h) and tells the drafter what it kept,
// and the drafter rolls its own state back to that. One drafter serves many requests at
// once: each has a handle, and proposals for several requests are made together.
//
// Lifecycle of a request: begin(prompt, target sequence, learning key); then advance(0, first
// token); then, every step, propose → the target verifies → (observe_verification, for a
// drafter that learns) → advance(accepted, next); end() frees it. The sequence the drafter
// continues is the prompt and every token advance() appended; its last token is, as for the
// target, not yet in any cache. between_steps() runs after every step of the engine: where a
// learning drafter updates its head, off the step itself.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "draft/token_distribution.h"
#include "kernels/status.h"
#include "target/decoder.h"

namespace draftwise {

struct DraftToken {
  int32_t token = 0;
  TokenDistribution distribution;  // q: what `token` was drawn from (one-hot when chosen deterministically)
};

// How a drafter that has logits picks its token: by the request's own sampling rule (the
// argmax when greedy), so that q is the distribution verification compares against.
class TokenPicker {
 public:
  virtual ~TokenPicker() = default;
  // Greedy: the argmax, q one-hot.
  virtual bool greedy() const = 0;
  //   logits: [vocab]; a non-finite logit is an error (a broken draft model)
  virtual Expected<DraftToken> pick(std::span<const float> logits) = 0;
};

using DraftRequestId = int64_t;

struct ProposalRequest {
  DraftRequestId request = 0;
  int max_tokens = 0;           // ≥ 0; the drafter may propose fewer
  TokenPicker* picker = nullptr;
  // Drafters with a distribution stop after a token whose probability under the draft
  // (softmax of its logits) is below this: a confidence cut-off. 0 never stops early.
  double min_probability = 0.0;
};

class Drafter {
 public:
  virtual ~Drafter() = default;

  // "ngram:3", "model:PATH", "self:8": the spec that made it.
  virtual std::string name() const = 0;

  // A new request whose target has prefilled `prompt` into `target_sequence` (which a
  // drafter that drafts with the target's own layers drafts in). `learning_key` picks the
  // adapter of a learning drafter whose scope is per key (an API key; DVI.md, Safety rails).
  virtual Expected<DraftRequestId> begin(std::span<const int32_t> prompt, SequenceId target_sequence,
                                         std::string_view learning_key) = 0;
  // The target settled on the first `accepted` tokens of the request's last proposal and
  // then on `next` (without a proposal, accepted is 0): they are appended to its sequence,
  // and whatever the drafter did for the rejected rest is rolled back.
  virtual Status advance(DraftRequestId request, int accepted, int32_t next) = 0;
  // Proposals for several requests, proposals[i] for requests[i] (resized to match).
  virtual Status propose(std::span<const ProposalRequest> requests,
                         std::vector<std::vector<DraftToken>>& proposals) = 0;
  virtual void end(DraftRequestId request) = 0;

  // Online learning (DVI.md). A drafter that learns asks for the target's logits of every
  // verification: observe_verification gets them ([checked rows, vocab]: one row per drafted
  // token, the bonus row after them) with the number kept, before advance().
  virtual bool wants_target_logits() const { return false; }
  virtual Status observe_verification(DraftRequestId /*request*/, int /*accepted*/,
                                      std::span<const float> /*target_logits*/) {
    return {};
  }
  virtual Status between_steps() { return {}; }
};

}  // namespace draftwise
