#include "engine/generation.h"

#include <algorithm>
#include <chrono>

#include "engine/stop_strings.h"
#include "engine/tokenizer/stream_decoder.h"

namespace draftwise {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kPrefillChunk = 512;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Releases a sequence however generation ends.
class SequenceGuard {
 public:
  explicit SequenceGuard(Decoder& decoder) : decoder_(decoder), id_(decoder.create_sequence()) {}
  ~SequenceGuard() { decoder_.release_sequence(id_); }
  SequenceGuard(const SequenceGuard&) = delete;
  SequenceGuard& operator=(const SequenceGuard&) = delete;
  SequenceId id() const { return id_; }

 private:
  Decoder& decoder_;
  SequenceId id_;
};

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
  if (prompt.empty()) return make_error("the prompt is empty");
  if (options.max_tokens <= 0) {
    return make_error("max_tokens must be positive, got {}", options.max_tokens);
  }
  DW_TRY(validate_sampling_params(options.sampling));
  const int64_t vocab = decoder.config().vocab_size;
  for (const int32_t token : prompt) {
    if (token < 0 || token >= vocab) {
      return make_error("prompt token id {} is outside the vocabulary [0, {})", token, vocab);
    }
  }
  const int64_t context = decoder.context_length();
  if (static_cast<int64_t>(prompt.size()) >= context) {
    return make_error("the prompt has {} tokens; the model's context holds {}, which leaves no room to generate",
                      prompt.size(), context);
  }
  if (!options.stop.empty() && tokenizer == nullptr) {
    return make_error("stop strings need a tokenizer, and this model has none");
  }

  GenerationResult result;
  result.stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  Sampler sampler(options.sampling);
  StopStringMatcher stops(options.stop);
  std::optional<StreamDecoder> text_decoder;
  if (tokenizer != nullptr) text_decoder.emplace(*tokenizer, /*skip_special=*/true, /*at_sequence_start=*/false);
  const auto release = [&](std::string_view text, int32_t token) {
    result.text.append(text);
    if (on_output) on_output(text, token);
  };

  SequenceGuard sequence(decoder);
  // Greedy decoding asks the decoder for the argmax alone (a GPU then keeps the logits to
  // itself); sampling needs the logits on the host.
  const bool greedy = options.sampling.greedy();
  std::vector<float> logits;
  std::vector<int32_t> picked;
  const auto run = [&](const ForwardRequest& request) {
    return greedy ? decoder.forward_greedy(std::span(&request, 1), picked)
                  : decoder.forward(std::span(&request, 1), logits);
  };
  const Clock::time_point start = Clock::now();
  // Prefill in chunks, which bounds the activations; batch invariance keeps the logits
  // identical to a single pass.
  for (size_t done = 0; done < prompt.size(); done += kPrefillChunk) {
    const size_t size = std::min(kPrefillChunk, prompt.size() - done);
    const bool last_chunk = done + size == prompt.size();
    const std::vector<int32_t> rows = last_chunk ? std::vector<int32_t>{static_cast<int32_t>(size) - 1}
                                                 : std::vector<int32_t>{};
    DW_TRY(run(ForwardRequest{sequence.id(), prompt.subspan(done, size), rows}));
  }
  if (!greedy) DW_TRY(check_logits_finite(logits));
  std::vector<int32_t> produced = {greedy ? picked.front() : sampler.sample(logits)};
  SpeculationStats& speculation = result.stats.speculation;
  speculation.add_step(0, 0);

  // The drafter's side of the request, ended however generation ends.
  Drafter* const drafter = options.drafter;
  DraftRequestId draft_request = 0;
  if (drafter != nullptr) {
    DW_ASSIGN_OR_RETURN(draft_request, drafter->begin(prompt, sequence.id()));
  }
  struct DraftGuard {
    Drafter* drafter;
    DraftRequestId request;
    ~DraftGuard() {
      if (drafter != nullptr) drafter->end(request);
    }
  } draft_guard{drafter, draft_request};
  if (drafter != nullptr) DW_TRY(drafter->advance(draft_request, 0, produced.front()));
  // Drafts are drawn, and sampled verification decides, with random numbers of their own.
  SamplingPicker picker(options.sampling, options.sampling.seed ^ 0xD7AF7D7AF7ull);
  Rng verification_rng(options.sampling.seed ^ 0x7E51F1ull);
  DraftLength draft_length = options.draft_length;

  // Appends one token; true when the completion ends with it.
  const auto emit = [&](int32_t token) {
    result.token_ids.push_back(token);
    const bool is_stop_token = std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(),
                                         token) != options.stop_token_ids.end();
    if (is_stop_token) {
      result.finish_reason = FinishReason::stop;
      release({}, token);
      return true;
    }
    std::string released;
    if (text_decoder) released = stops.push(text_decoder->push(token));
    release(released, token);
    if (stops.stopped()) {
      result.finish_reason = FinishReason::stop;
      return true;
    }
    // The next step would feed this token: it must fit in the context.
    if (static_cast<int64_t>(result.token_ids.size()) >= options.max_tokens ||
        static_cast<int64_t>(prompt.size() + result.token_ids.size()) >= context) {
      result.finish_reason = FinishReason::length;
      return true;
    }
    return false;
  };

  Clock::time_point decode_start = start;
  std::vector<DraftToken> drafts;
  std::vector<std::vector<DraftToken>> proposals;
  std::vector<int32_t> step_tokens;
  std::vector<int32_t> step_rows;
  for (;;) {
    bool finished = false;
    for (const int32_t token : produced) {
      finished = emit(token);
      if (result.token_ids.size() == 1) {
        result.stats.prefill_seconds = seconds_since(start);
        decode_start = Clock::now();
      }
      if (finished) break;
    }
    if (finished) break;

    // One target step: the last token and the drafts, verified in one forward pass.
    const int64_t length = decoder.sequence_length(sequence.id());
    drafts.clear();
    if (drafter != nullptr) {
      const int64_t remaining = options.max_tokens - static_cast<int64_t>(result.token_ids.size());
      const int64_t room = context - length - 1;
      const int wanted = static_cast<int>(std::min<int64_t>({draft_length.current(), remaining - 1, room}));
      if (wanted > 0) {
        const ProposalRequest request{draft_request, wanted, &picker, draft_length.min_probability()};
        DW_TRY(drafter->propose(std::span(&request, 1), proposals));
        drafts = std::move(proposals.front());
        if (static_cast<int>(drafts.size()) > wanted) {
          return make_error("{}: proposed {} tokens where {} were asked for", drafter->name(), drafts.size(), wanted);
        }
      }
    }
    step_tokens.assign(1, result.token_ids.back());
    step_rows.assign(1, 0);
    for (const DraftToken& draft : drafts) {
      step_tokens.push_back(draft.token);
      step_rows.push_back(static_cast<int32_t>(step_rows.size()));
    }
    DW_TRY(run(ForwardRequest{sequence.id(), step_tokens, step_rows}));
    Verdict verdict;
    if (greedy) {
      verdict = verify_greedy(drafts, picked);
    } else {
      DW_TRY(check_logits_finite(logits));
      verdict = drafts.empty() ? Verdict{0, sampler.sample(logits)}
                               : verify_sampled(drafts, logits, vocab, options.sampling, verification_rng);
    }
    // The cache keeps the last token and the accepted drafts; `next` is fed by the next step.
    if (!drafts.empty()) DW_TRY(decoder.truncate_sequence(sequence.id(), length + 1 + verdict.accepted));
    speculation.add_step(static_cast<int>(drafts.size()), verdict.accepted);
    draft_length.update(static_cast<int>(drafts.size()), verdict.accepted);
    if (drafter != nullptr) DW_TRY(drafter->advance(draft_request, verdict.accepted, verdict.next));
    produced.clear();
    for (int i = 0; i < verdict.accepted; ++i) produced.push_back(drafts[static_cast<size_t>(i)].token);
    produced.push_back(verdict.next);
  }
  speculation.generated_tokens = static_cast<int64_t>(result.token_ids.size());
  if (result.token_ids.size() > 1) result.stats.decode_seconds = seconds_since(decode_start);
  result.stats.completion_tokens = static_cast<int64_t>(result.token_ids.size());
  if (text_decoder && !stops.stopped()) {
    // The decoder's held-back bytes, then the stop matcher's held-back text.
    std::string rest = stops.push(text_decoder->finish());
    if (stops.stopped()) {
      result.finish_reason = FinishReason::stop;
    } else {
      rest += stops.finish();
    }
    if (!rest.empty()) release(rest, -1);
  }
  return result;
}

}  // namespace draftwise
