// One request's generation as the engine's loops drive it (generate, generate_batch, the
// scheduler): its sequence, prefill progress, sampler, stop matching, text decoding and
// drafting state. Each step: wanted_drafts() → (the drafter proposes) → input() → the target
// runs every run's input in one forward pass → finish_step(). A run may be preempted (its
// cache and drafting state freed) and resumed later: it then prefills its prompt and what it
// has generated so far again, and goes on as if nothing had happened.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/generation.h"
#include "engine/stop_strings.h"
#include "engine/tokenizer/stream_decoder.h"

namespace draftwise {

class RequestRun {
 public:
  using Clock = std::chrono::steady_clock;

  // `prompt` must outlive the run.
  RequestRun(Decoder& decoder, const Tokenizer* tokenizer, std::span<const int32_t> prompt,
             const GenerationOptions& options, const OutputCallback& on_output);
  ~RequestRun();
  RequestRun(const RequestRun&) = delete;
  RequestRun& operator=(const RequestRun&) = delete;

  // The prompt and options, before anything runs.
  Status check() const;
  // Takes a sequence; the prompt is prefilled by the steps that follow (input() hands out
  // its chunks), or here at once when `prefill_now` (generate's plain loop).
  Status start(bool prefill_now);

  // The drafter, chosen after the run was made (the scheduler resolves it at admission);
  // only before the first start().
  void set_drafter(Drafter* drafter) { options_.drafter = drafter; }

  bool started() const { return sequence_ != 0; }
  bool prefilling() const { return started() && prefilled_ < context_size_; }
  bool finished() const { return finished_; }
  bool greedy() const { return options_.sampling.greedy(); }
  const GenerationOptions& options() const { return options_; }
  Drafter* drafter() const { return options_.drafter; }
  const DraftRequestId& draft_request() const { return draft_request_; }
  TokenPicker* picker() { return &picker_; }
  double min_probability() const { return draft_length_.min_probability(); }
  int64_t generated_tokens() const { return static_cast<int64_t>(result_.token_ids.size()); }
  // Tokens a (re)start prefills: the prompt, then on a resumed run every generated token but
  // the last (which the next step feeds).
  int64_t context_length() const;
  // Positions the run's sequence holds (0 when not started).
  int64_t cached_positions() const;
  // Prompt tokens still to prefill.
  int64_t prefill_remaining() const { return context_size_ - prefilled_; }
  // The request's qTTT adaptation (null: none yet, or no qTTT): kept through preemption.
  const std::shared_ptr<QueryAdaptation>& query_adaptation() const { return adaptation_; }

  // How many tokens the drafter may propose this step (0 while prefilling): the draft
  // length, within `cap`, what the request may still generate and the context may still hold.
  int wanted_drafts(int cap = std::numeric_limits<int>::max()) const;
  Status set_drafts(std::vector<DraftToken> drafts, int wanted);

  // This step's forward request. Prefilling: the next chunk of at most `prefill_budget`
  // (≥ 1) prompt tokens, the last one's logits asked for at the end of the prompt. Decoding:
  // the last token and the drafts, every row's logits asked for.
  ForwardRequest input(int64_t prefill_budget = std::numeric_limits<int64_t>::max());
  int64_t input_rows() const { return static_cast<int64_t>(step_rows_.size()); }
  int64_t input_tokens() const { return static_cast<int64_t>(step_tokens_.size()); }

  // Whether this step needs the target's logits, not only their argmax.
  bool needs_logits() const;

  // The step's outcome: the argmax of its rows when greedy, their logits ([rows, vocab])
  // when needs_logits().
  Status finish_step(std::span<const int32_t> argmax, std::span<const float> logits);

  // Ends the request where it is (finish reason `cancelled`); what was released stays.
  void cancel();
  // Frees the sequence and the drafter's state; start() later resumes the run.
  void preempt();

  // The result so far, the held-back text released (once finished or cancelled).
  GenerationResult take_result();

 private:
  int32_t context_token(int64_t index) const;
  Status begin_drafting();
  // qTTT: positions before this one are prefilled with W_Q alone; from it on, with ΔW_Q.
  int64_t adaptation_position() const { return static_cast<int64_t>(prompt_.size()) - 1; }
  bool adaptation_due() const {
    return options_.qttt.has_value() && !adaptation_attached_ && prefilled_ == adaptation_position();
  }
  // Trains the adaptation on the prefilled prompt, or gives the sequence the one the request
  // kept when it was preempted.
  Status adapt_queries();
  void release(std::string_view text, int32_t token, const TokenLogprob* logprob);
  // Appends the step's tokens until one ends the completion; `logits` the rows they came from
  // (for log-probabilities), or empty.
  void emit_block(std::span<const int32_t> tokens, std::span<const float> logits);
  bool emit(int32_t token, std::span<const float> row);

  Decoder& decoder_;
  const Tokenizer* tokenizer_;
  std::span<const int32_t> prompt_;
  GenerationOptions options_;
  OutputCallback on_output_;
  Sampler sampler_;
  StopStringMatcher stops_;
  std::optional<StreamDecoder> text_decoder_;
  // Drafts are drawn, and sampled verification decides, with random numbers of their own.
  SamplingPicker picker_;
  Rng verification_rng_;
  DraftLength draft_length_;
  SequenceId sequence_ = 0;
  DraftRequestId draft_request_ = 0;
  bool draft_started_ = false;
  bool finished_ = false;
  bool text_started_ = false;
  std::shared_ptr<QueryAdaptation> adaptation_;
  bool adaptation_attached_ = false;  // to the current sequence
  int64_t prefilled_ = 0;       // context tokens in the cache
  int64_t context_size_ = 0;    // context_length() at the last start()
  GenerationResult result_;
  Clock::time_point start_;
  Clock::time_point decode_start_;
  std::vector<DraftToken> drafts_;
  std::vector<int32_t> step_tokens_;
  std::vector<int32_t> step_rows_;
  std::vector<int32_t> produced_;
  bool step_is_prefill_ = false;
  int64_t length_before_step_ = 0;
};

// What one step may do: at most `token_budget` tokens in its forward pass (decode rows
// first; prefill chunks share the rest, and one prefill chunk always runs when nothing
// else does), and at most `max_drafts` drafted tokens per request.
struct StepLimits {
  int64_t token_budget = std::numeric_limits<int64_t>::max();
  int max_drafts = std::numeric_limits<int>::max();
};

// One step of every given run that is started and unfinished: proposals (one call per
// drafter), one batched forward pass, each run's verification or prefill progress.
// Prefilling runs beyond the budget sit the step out.
Status step_runs(Decoder& decoder, std::span<RequestRun* const> runs, const StepLimits& limits = {});

// The log-probabilities of `token` and the `top` most likely tokens under softmax(logits).
TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int top);

}  // namespace draftwise
