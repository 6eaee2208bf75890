#include "engine/request_run.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace draftwise {

namespace {

double seconds_since(RequestRun::Clock::time_point start) {
  return std::chrono::duration<double>(RequestRun::Clock::now() - start).count();
}

}  // namespace

RequestRun::RequestRun(Decoder& decoder, const Tokenizer* tokenizer, std::span<const int32_t> prompt,
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

RequestRun::~RequestRun() { preempt(); }

Status RequestRun::check() const {
  if (prompt_.empty()) return make_error("the prompt is empty");
  if (options_.max_tokens <= 0) return make_error("max_tokens must be positive, got {}", options_.max_tokens);
  if (options_.prefill_chunk <= 0) return make_error("the prefill chunk must be positive, got {}", options_.prefill_chunk);
  if (options_.logprobs > kMaxTopLogprobs) {
    return make_error("top_logprobs must be at most {}, got {}", kMaxTopLogprobs, options_.logprobs);
  }
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
  if (options_.qttt.has_value()) {
    DW_TRY(check_qtt_options(*options_.qttt, decoder_.config()));
    if (prompt_.size() < 2) {
      return make_error("qttt needs a prompt of at least 2 tokens to train on, got {}", prompt_.size());
    }
  }
  return {};
}

int64_t RequestRun::context_length() const {
  const int64_t generated = static_cast<int64_t>(result_.token_ids.size());
  return static_cast<int64_t>(prompt_.size()) + std::max<int64_t>(0, generated - 1);
}

int32_t RequestRun::context_token(int64_t index) const {
  const int64_t prompt = static_cast<int64_t>(prompt_.size());
  return index < prompt ? prompt_[static_cast<size_t>(index)] : result_.token_ids[static_cast<size_t>(index - prompt)];
}

int64_t RequestRun::cached_positions() const {
  return started() ? decoder_.sequence_length(sequence_) : 0;
}

Status RequestRun::start(bool prefill_now) {
  if (started()) return make_error("the request has started already");
  if (tokenizer_ != nullptr && !text_started_) {
    text_decoder_.emplace(*tokenizer_, /*skip_special=*/true, /*at_sequence_start=*/false);
    text_started_ = true;
  }
  result_.stats.prompt_tokens = static_cast<int64_t>(prompt_.size());
  sequence_ = decoder_.create_sequence();
  prefilled_ = 0;
  adaptation_attached_ = false;
  context_size_ = context_length();
  if (result_.token_ids.empty()) start_ = Clock::now();
  while (prefill_now && prefilling()) {
    const ForwardRequest chunk = input(options_.prefill_chunk);
    std::vector<int32_t> picked;
    std::vector<float> logits;
    if (needs_logits()) {
      DW_TRY(decoder_.forward(std::span(&chunk, 1), logits));
      if (greedy()) picked = argmax_rows(logits, decoder_.config().vocab_size);
    } else {
      DW_TRY(decoder_.forward_greedy(std::span(&chunk, 1), picked));
    }
    DW_TRY(finish_step(picked, logits));
  }
  return {};
}

Status RequestRun::adapt_queries() {
  if (adaptation_ != nullptr) {
    DW_TRY(decoder_.attach_query_adaptation(sequence_, adaptation_));
  } else {
    DW_ASSIGN_OR_RETURN(QttReport report, decoder_.adapt_queries(sequence_, prompt_, *options_.qttt));
    result_.stats.qttt = std::move(report);
    adaptation_ = decoder_.query_adaptation(sequence_);
  }
  adaptation_attached_ = true;
  return {};
}

Status RequestRun::begin_drafting() {
  if (options_.drafter == nullptr) return {};
  if (result_.token_ids.size() <= 1) {
    DW_ASSIGN_OR_RETURN(draft_request_, options_.drafter->begin(prompt_, sequence_, options_.learning_key));
  } else {
    std::vector<int32_t> context(static_cast<size_t>(context_length()));
    for (size_t i = 0; i < context.size(); ++i) context[i] = context_token(static_cast<int64_t>(i));
    DW_ASSIGN_OR_RETURN(draft_request_, options_.drafter->begin(context, sequence_, options_.learning_key));
  }
  draft_started_ = true;
  return options_.drafter->advance(draft_request_, 0, result_.token_ids.back());
}

int RequestRun::wanted_drafts(int cap) const {
  if (options_.drafter == nullptr || prefilling() || !draft_started_) return 0;
  const int64_t length = decoder_.sequence_length(sequence_);
  const int64_t remaining = options_.max_tokens - static_cast<int64_t>(result_.token_ids.size());
  const int64_t room = decoder_.context_length() - length - 1;
  return static_cast<int>(
      std::max<int64_t>(0, std::min<int64_t>({draft_length_.current(), remaining - 1, room, cap})));
}

Status RequestRun::set_drafts(std::vector<DraftToken> drafts, int wanted) {
  if (static_cast<int>(drafts.size()) > wanted) {
    return make_error("{}: proposed {} tokens where {} were asked for", options_.drafter->name(), drafts.size(), wanted);
  }
  drafts_ = std::move(drafts);
  return {};
}

ForwardRequest RequestRun::input(int64_t prefill_budget) {
  length_before_step_ = decoder_.sequence_length(sequence_);
  step_tokens_.clear();
  step_rows_.clear();
  step_is_prefill_ = prefilling();
  if (step_is_prefill_) {
    // With qTTT, a chunk ends where the adaptation starts (adapt_queries runs between them).
    const int64_t end = options_.qttt.has_value() && !adaptation_attached_ ? adaptation_position() : context_size_;
    const int64_t size =
        std::min({end - prefilled_, std::max<int64_t>(1, prefill_budget), options_.prefill_chunk});
    for (int64_t i = 0; i < size; ++i) step_tokens_.push_back(context_token(prefilled_ + i));
    // The end of a fresh prompt gives the first token; a resumed run already has its next.
    if (prefilled_ + size == context_size_ && result_.token_ids.empty()) {
      step_rows_.push_back(static_cast<int32_t>(size) - 1);
    }
    return {sequence_, step_tokens_, step_rows_};
  }
  step_tokens_.assign(1, result_.token_ids.back());
  step_rows_.assign(1, 0);
  for (const DraftToken& draft : drafts_) {
    step_tokens_.push_back(draft.token);
    step_rows_.push_back(static_cast<int32_t>(step_rows_.size()));
  }
  return {sequence_, step_tokens_, step_rows_};
}

bool RequestRun::needs_logits() const {
  if (step_is_prefill_ && step_rows_.empty()) return false;
  return !greedy() || options_.logprobs >= 0 ||
         (!step_is_prefill_ && !drafts_.empty() && options_.drafter->wants_target_logits());
}

Status RequestRun::finish_step(std::span<const int32_t> argmax, std::span<const float> logits) {
  if (step_is_prefill_) {
    prefilled_ += static_cast<int64_t>(step_tokens_.size());
    if (adaptation_due()) DW_TRY(adapt_queries());
    if (step_rows_.empty()) {
      if (!prefilling()) DW_TRY(begin_drafting());  // a resumed run, back where it was
      return {};
    }
    int32_t first = 0;
    if (greedy()) {
      first = argmax.front();
    } else {
      DW_TRY(check_logits_finite(logits));
      first = sampler_.sample(logits);
    }
    result_.stats.speculation.add_step(0, 0);
    emit_block({&first, 1}, logits);
    if (!finished_) DW_TRY(begin_drafting());
    return {};
  }
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
  emit_block(produced_, logits);
  return {};
}

void RequestRun::cancel() {
  if (finished_) return;
  finished_ = true;
  result_.finish_reason = FinishReason::cancelled;
  preempt();
  adaptation_ = nullptr;
}

void RequestRun::preempt() {
  if (draft_started_) options_.drafter->end(draft_request_);
  draft_started_ = false;
  drafts_.clear();
  if (sequence_ != 0) decoder_.release_sequence(sequence_);
  sequence_ = 0;
  prefilled_ = 0;
}

GenerationResult RequestRun::take_result() {
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
    if (!rest.empty()) release(rest, -1, nullptr);
  }
  return std::move(result_);
}

void RequestRun::release(std::string_view text, int32_t token, const TokenLogprob* logprob) {
  result_.text.append(text);
  if (on_output_) on_output_(OutputEvent{text, token, logprob});
}

void RequestRun::emit_block(std::span<const int32_t> tokens, std::span<const float> logits) {
  const size_t vocab = static_cast<size_t>(decoder_.config().vocab_size);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::span<const float> row =
        logits.size() >= (i + 1) * vocab ? logits.subspan(i * vocab, vocab) : std::span<const float>();
    finished_ = emit(tokens[i], row);
    if (result_.token_ids.size() == 1) {
      result_.stats.prefill_seconds = seconds_since(start_);
      decode_start_ = Clock::now();
    }
    if (finished_) return;
  }
}

bool RequestRun::emit(int32_t token, std::span<const float> row) {
  result_.token_ids.push_back(token);
  const TokenLogprob* logprob = nullptr;
  if (options_.logprobs >= 0 && !row.empty()) {
    result_.logprobs.push_back(token_logprob(row, token, options_.logprobs));
    logprob = &result_.logprobs.back();
  }
  const bool is_stop_token = std::find(options_.stop_token_ids.begin(), options_.stop_token_ids.end(), token) !=
                             options_.stop_token_ids.end();
  if (is_stop_token) {
    result_.finish_reason = FinishReason::stop;
    release({}, token, logprob);
    return true;
  }
  std::string released;
  if (text_decoder_) released = stops_.push(text_decoder_->push(token));
  release(released, token, logprob);
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

TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int top) {
  double max_logit = -std::numeric_limits<double>::infinity();
  for (const float value : logits) max_logit = std::max(max_logit, static_cast<double>(value));
  double sum = 0;
  for (const float value : logits) sum += std::exp(static_cast<double>(value) - max_logit);
  const double log_sum = max_logit + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(static_cast<double>(logits[static_cast<size_t>(token)]) - log_sum);
  if (top > 0) {
    std::vector<int32_t> order(logits.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    const size_t count = std::min(order.size(), static_cast<size_t>(top));
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(count), order.end(),
                      [&](int32_t a, int32_t b) {
                        const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
                        return la > lb || (la == lb && a < b);
                      });
    for (size_t i = 0; i < count; ++i) {
      out.top.emplace_back(order[i],
                           static_cast<float>(static_cast<double>(logits[static_cast<size_t>(order[i])]) - log_sum));
    }
  }
  return out;
}

Status step_runs(Decoder& decoder, std::span<RequestRun* const> all_runs, const StepLimits& limits) {
  std::vector<RequestRun*> runs;
  int64_t budget = limits.token_budget;
  // Decoding runs first; each asks for its drafts within the budget.
  std::vector<int> wanted;
  for (RequestRun* run : all_runs) {
    if (!run->started() || run->finished() || run->prefilling()) continue;
    const int drafts = run->wanted_drafts(
        static_cast<int>(std::clamp<int64_t>(budget - 1, 0, static_cast<int64_t>(limits.max_drafts))));
    runs.push_back(run);
    wanted.push_back(drafts);
    budget -= 1 + drafts;
  }
  const size_t decoding = runs.size();
  std::vector<int64_t> prefill_budgets;
  for (RequestRun* run : all_runs) {
    if (!run->started() || run->finished() || !run->prefilling()) continue;
    if (budget <= 0 && !runs.empty()) break;
    const int64_t size = std::min(run->prefill_remaining(), std::max<int64_t>(budget, 1));
    runs.push_back(run);
    prefill_budgets.push_back(size);
    budget -= size;
  }
  if (runs.empty()) return {};

  std::map<Drafter*, std::vector<size_t>> by_drafter;
  for (size_t i = 0; i < decoding; ++i) {
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
    for (size_t m = 0; m < members.size(); ++m) {
      DW_TRY(runs[members[m]]->set_drafts(std::move(proposals[m]), wanted[members[m]]));
    }
  }
  std::vector<ForwardRequest> batch;
  bool argmax_only = true;
  for (size_t i = 0; i < runs.size(); ++i) {
    batch.push_back(i < decoding ? runs[i]->input() : runs[i]->input(prefill_budgets[i - decoding]));
    argmax_only = argmax_only && !runs[i]->needs_logits();
  }
  // Greedy requests alone ask for the argmax only (a GPU keeps the logits to itself), unless
  // a learning drafter wants to see the target's logits or log-probabilities were asked for.
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
      const std::vector<int32_t> picks =
          run->greedy() ? argmax_rows(own, decoder.config().vocab_size) : std::vector<int32_t>();
      DW_TRY(run->finish_step(picks, own));
    }
    row += rows;
  }
  // Learning drafters update between steps, never inside one.
  for (const auto& [drafter, members] : by_drafter) DW_TRY(drafter->between_steps());
  return {};
}

}  // namespace draftwise
