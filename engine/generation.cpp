#include "engine/generation.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>

#include "engine/stop_strings.h"
#include "engine/tokenizer/stream_decoder.h"

namespace draftwise {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kPrefillChunk = 512;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One request's generation as the loops below drive it: its sequence, sampler, stop
// matching, text decoding and drafting state. Each step: wanted_drafts() → (the drafter
// proposes) → input() → the target runs it → finish_step().
class RequestRun {
 public:
  RequestRun(Decoder& decoder, const Tokenizer* tokenizer, std::span<const int32_t> prompt,
             const GenerationOptions& options, const OutputCallback& on_output)
      : decoder_(decoder),
        tokenizer_(tokenizer),
        prompt_(prompt),
        options_(options),
        on_output_(on_output),
        sampler_(options.sampling),
        stops_(options.stop),
        picker_(options.sampling, options.sampling.seed ^ 0xD7AF7D7AF7ull),
        verification_rng_(options.sampling.seed ^ 0x7E51F1ull),
        draft_length_(options.draft_length) {}

  ~RequestRun() {
    if (draft_started_) options_.drafter->end(draft_request_);
    if (sequence_ != 0) decoder_.release_sequence(sequence_);
  }
  RequestRun(const RequestRun&) = delete;
  RequestRun& operator=(const RequestRun&) = delete;

  // The prompt and options, before anything runs.
  Status check() const {
    if (prompt_.empty()) return make_error("the prompt is empty");
    if (options_.max_tokens <= 0) return make_error("max_tokens must be positive, got {}", options_.max_tokens);
    DW_TRY(validate_sampling_params(options_.sampling));
    const int64_t vocab = decoder_.config().vocab_size;
    for (const int32_t token : prompt_) {
      if (token < 0 || token >= vocab) {
        return make_error("prompt token id {} is outside the vocabulary [0, {})", token, vocab);
      }
    }
    if (static_cast<int64_t>(prompt_.size()) >= decoder_.context_length()) {
      return make_error("the prompt has {} tokens; the model's context holds {}, which leaves no room to generate",
                        prompt_.size(), decoder_.context_length());
    }
    if (!options_.stop.empty() && tokenizer_ == nullptr) {
      return make_error("stop strings need a tokenizer, and this model has none");
    }
    return {};
  }

  // Prefill (in chunks, which bounds the activations; batch invariance keeps the logits
  // identical to a single pass), the first token, and the drafter's side of the request.
  Status begin() {
    if (tokenizer_ != nullptr) text_decoder_.emplace(*tokenizer_, /*skip_special=*/true, /*at_sequence_start=*/false);
    result_.stats.prompt_tokens = static_cast<int64_t>(prompt_.size());
    sequence_ = decoder_.create_sequence();
    start_ = Clock::now();
    std::vector<float> logits;
    std::vector<int32_t> picked;
    for (size_t done = 0; done < prompt_.size(); done += kPrefillChunk) {
      const size_t size = std::min(kPrefillChunk, prompt_.size() - done);
      const bool last_chunk = done + size == prompt_.size();
      const std::vector<int32_t> rows = last_chunk ? std::vector<int32_t>{static_cast<int32_t>(size) - 1}
                                                   : std::vector<int32_t>{};
      const ForwardRequest chunk{sequence_, prompt_.subspan(done, size), rows};
      if (greedy()) {
        DW_TRY(decoder_.forward_greedy(std::span(&chunk, 1), picked));
      } else {
        DW_TRY(decoder_.forward(std::span(&chunk, 1), logits));
      }
    }
    int32_t first = 0;
    if (greedy()) {
      first = picked.front();
    } else {
      DW_TRY(check_logits_finite(logits));
      first = sampler_.sample(logits);
    }
    result_.stats.speculation.add_step(0, 0);
    if (options_.drafter != nullptr) {
      DW_ASSIGN_OR_RETURN(draft_request_, options_.drafter->begin(prompt_, sequence_, options_.learning_key));
      draft_started_ = true;
      DW_TRY(options_.drafter->advance(draft_request_, 0, first));
    }
    emit_block({&first, 1});
    return {};
  }

  bool finished() const { return finished_; }
  bool greedy() const { return options_.sampling.greedy(); }
  Drafter* drafter() const { return options_.drafter; }
  const DraftRequestId& draft_request() const { return draft_request_; }
  TokenPicker* picker() { return &picker_; }
  double min_probability() const { return draft_length_.min_probability(); }

  // How many tokens the drafter may propose this step: the draft length, within what the
  // request may still generate and the context may still hold.
  int wanted_drafts() const {
    if (options_.drafter == nullptr) return 0;
    const int64_t length = decoder_.sequence_length(sequence_);
    const int64_t remaining = options_.max_tokens - static_cast<int64_t>(result_.token_ids.size());
    const int64_t room = decoder_.context_length() - length - 1;
    return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>({draft_length_.current(), remaining - 1, room})));
  }

  Status set_drafts(std::vector<DraftToken> drafts, int wanted) {
    if (static_cast<int>(drafts.size()) > wanted) {
      return make_error("{}: proposed {} tokens where {} were asked for", options_.drafter->name(), drafts.size(),
                        wanted);
    }
    drafts_ = std::move(drafts);
    return {};
  }

  // This step's forward request: the last token and the drafts, every row's logits asked for.
  ForwardRequest input() {
    length_before_step_ = decoder_.sequence_length(sequence_);
    step_tokens_.assign(1, result_.token_ids.back());
    step_rows_.assign(1, 0);
    for (const DraftToken& draft : drafts_) {
      step_tokens_.push_back(draft.token);
      step_rows_.push_back(static_cast<int32_t>(step_rows_.size()));
    }
    return {sequence_, step_tokens_, step_rows_};
  }
  int64_t input_rows() const { return static_cast<int64_t>(step_rows_.size()); }

  // Whether this step's verification needs the target's logits, not only their argmax.
  bool needs_logits() const {
    return !greedy() || (!drafts_.empty() && options_.drafter->wants_target_logits());
  }

  // The step's outcome: the argmax of its rows when greedy, and their logits ([rows, vocab])
  // when needs_logits().
  Status finish_step(std::span<const int32_t> argmax, std::span<const float> logits) {
    Verdict verdict;
    if (greedy()) {
      verdict = verify_greedy(drafts_, argmax);
    } else {
      DW_TRY(check_logits_finite(logits));
      verdict = drafts_.empty() ? Verdict{0, sampler_.sample(logits)}
                                : verify_sampled(drafts_, logits, decoder_.config().vocab_size, options_.sampling,
                                                 verification_rng_);
    }
    // The cache keeps the last token and the accepted drafts; `next` is fed by the next step.
    if (!drafts_.empty()) DW_TRY(decoder_.truncate_sequence(sequence_, length_before_step_ + 1 + verdict.accepted));
    const int proposed = static_cast<int>(drafts_.size());
    result_.stats.speculation.add_step(proposed, verdict.accepted);
    draft_length_.update(proposed, verdict.accepted);
    if (proposed > 0 && options_.drafter->wants_target_logits()) {
      DW_TRY(options_.drafter->observe_verification(draft_request_, verdict.accepted, logits));
    }
    if (options_.drafter != nullptr) DW_TRY(options_.drafter->advance(draft_request_, verdict.accepted, verdict.next));
    produced_.clear();
    for (int i = 0; i < verdict.accepted; ++i) produced_.push_back(drafts_[static_cast<size_t>(i)].token);
    produced_.push_back(verdict.next);
    drafts_.clear();
    emit_block(produced_);
    return {};
  }

  GenerationResult take_result() {
    if (result_.token_ids.size() > 1) result_.stats.decode_seconds = seconds_since(decode_start_);
    result_.stats.completion_tokens = static_cast<int64_t>(result_.token_ids.size());
    result_.stats.speculation.generated_tokens = result_.stats.completion_tokens;
    if (text_decoder_ && !stops_.stopped()) {
      // The decoder's held-back bytes, then the stop matcher's held-back text.
      std::string rest = stops_.push(text_decoder_->finish());
      if (stops_.stopped()) {
        result_.finish_reason = FinishReason::stop;
      } else {
        rest += stops_.finish();
      }
      if (!rest.empty()) release(rest, -1);
    }
    return std::move(result_);
  }

 private:
  void release(std::string_view text, int32_t token) {
    result_.text.append(text);
    if (on_output_) on_output_(text, token);
  }

  // Appends the step's tokens until one ends the completion.
  void emit_block(std::span<const int32_t> tokens) {
    for (const int32_t token : tokens) {
      finished_ = emit(token);
      if (result_.token_ids.size() == 1) {
        result_.stats.prefill_seconds = seconds_since(start_);
        decode_start_ = Clock::now();
      }
      if (finished_) return;
    }
  }

  // Appends one token; true when the completion ends with it.
  bool emit(int32_t token) {
    result_.token_ids.push_back(token);
    const bool is_stop_token = std::find(options_.stop_token_ids.begin(), options_.stop_token_ids.end(), token) !=
                               options_.stop_token_ids.end();
    if (is_stop_token) {
      result_.finish_reason = FinishReason::stop;
      release({}, token);
      return true;
    }
    std::string released;
    if (text_decoder_) released = stops_.push(text_decoder_->push(token));
    release(released, token);
    if (stops_.stopped()) {
      result_.finish_reason = FinishReason::stop;
      return true;
    }
    // The next step would feed this token: it must fit in the context.
    if (static_cast<int64_t>(result_.token_ids.size()) >= options_.max_tokens ||
        static_cast<int64_t>(prompt_.size() + result_.token_ids.size()) >= decoder_.context_length()) {
      result_.finish_reason = FinishReason::length;
      return true;
    }
    return false;
  }

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
  GenerationResult result_;
  Clock::time_point start_;
  Clock::time_point decode_start_;
  std::vector<DraftToken> drafts_;
  std::vector<int32_t> step_tokens_;
  std::vector<int32_t> step_rows_;
  std::vector<int32_t> produced_;
  int64_t length_before_step_ = 0;
};

// One step of every unfinished run: proposals (one call per drafter), one batched forward
// pass, each run's verification.
Status step(Decoder& decoder, std::span<RequestRun* const> runs) {
  std::map<Drafter*, std::vector<size_t>> by_drafter;
  std::vector<int> wanted(runs.size(), 0);
  for (size_t i = 0; i < runs.size(); ++i) {
    wanted[i] = runs[i]->wanted_drafts();
    if (wanted[i] > 0) by_drafter[runs[i]->drafter()].push_back(i);
  }
  std::vector<ProposalRequest> proposal_requests;
  std::vector<std::vector<DraftToken>> proposals;
  for (const auto& [drafter, members] : by_drafter) {
    proposal_requests.clear();
    for (const size_t i : members) {
      proposal_requests.push_back({runs[i]->draft_request(), wanted[i], runs[i]->picker(), runs[i]->min_probability()});
    }
    DW_TRY(drafter->propose(proposal_requests, proposals));
    for (size_t m = 0; m < members.size(); ++m) DW_TRY(runs[members[m]]->set_drafts(std::move(proposals[m]), wanted[members[m]]));
  }
  std::vector<ForwardRequest> batch;
  bool argmax_only = true;
  for (RequestRun* run : runs) {
    batch.push_back(run->input());
    argmax_only = argmax_only && !run->needs_logits();
  }
  // Greedy requests alone ask for the argmax only (a GPU keeps the logits to itself), unless
  // a learning drafter wants to see the target's logits.
  std::vector<int32_t> argmax;
  std::vector<float> logits;
  if (argmax_only) {
    DW_TRY(decoder.forward_greedy(batch, argmax));
  } else {
    DW_TRY(decoder.forward(batch, logits));
  }
  const size_t vocab = static_cast<size_t>(decoder.config().vocab_size);
  size_t row = 0;
  for (RequestRun* run : runs) {
    const size_t rows = static_cast<size_t>(run->input_rows());
    if (argmax_only) {
      DW_TRY(run->finish_step(std::span(argmax).subspan(row, rows), {}));
    } else {
      const std::span<const float> own = std::span(logits).subspan(row * vocab, rows * vocab);
      const std::vector<int32_t> picks = run->greedy() ? argmax_rows(own, decoder.config().vocab_size)
                                                       : std::vector<int32_t>();
      DW_TRY(run->finish_step(picks, own));
    }
    row += rows;
  }
  // Learning drafters update between steps, never inside one.
  for (const auto& [drafter, members] : by_drafter) DW_TRY(drafter->between_steps());
  return {};
}

}  // namespace

std::string_view finish_reason_name(FinishReason reason) {
  return reason == FinishReason::stop ? "stop" : "length";
}

double GenerationStats::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens) / prefill_seconds : 0.0;
}

double GenerationStats::decode_tokens_per_second() const {
  return decode_seconds > 0 && completion_tokens > 1
             ? static_cast<double>(completion_tokens - 1) / decode_seconds
             : 0.0;
}

Expected<GenerationResult> generate(Decoder& decoder, const Tokenizer* tokenizer,
                                    std::span<const int32_t> prompt,
                                    const GenerationOptions& options,
                                    const OutputCallback& on_output) {
  RequestRun run(decoder, tokenizer, prompt, options, on_output);
  DW_TRY(run.check());
  DW_TRY(run.begin());
  RequestRun* const runs[] = {&run};
  while (!run.finished()) DW_TRY(step(decoder, runs));
  return run.take_result();
}

std::vector<Expected<GenerationResult>> generate_batch(Decoder& decoder, const Tokenizer* tokenizer,
                                                       std::span<const GenerationRequest> requests) {
  std::vector<std::optional<Expected<GenerationResult>>> outcomes(requests.size());
  std::vector<std::unique_ptr<RequestRun>> runs;
  for (const GenerationRequest& request : requests) {
    runs.push_back(std::make_unique<RequestRun>(decoder, tokenizer, request.prompt, request.options, request.on_output));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    Status started = runs[i]->check();
    if (started.ok()) started = runs[i]->begin();
    if (!started.ok()) outcomes[i] = started.error();
  }
  std::vector<size_t> active;
  std::vector<RequestRun*> stepping;
  for (;;) {
    active.clear();
    stepping.clear();
    for (size_t i = 0; i < runs.size(); ++i) {
      if (outcomes[i].has_value()) continue;
      if (runs[i]->finished()) {
        outcomes[i] = runs[i]->take_result();
        runs[i].reset();  // frees its sequence now
        continue;
      }
      active.push_back(i);
      stepping.push_back(runs[i].get());
    }
    if (active.empty()) break;
    if (const Status stepped = step(decoder, stepping); !stepped.ok()) {
      for (const size_t i : active) outcomes[i] = stepped.error();
    }
  }
  std::vector<Expected<GenerationResult>> results;
  for (std::optional<Expected<GenerationResult>>& outcome : outcomes) results.push_back(std::move(*outcome));
  return results;
}

}  // namespace draftwise
