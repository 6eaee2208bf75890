// One completion, start to finish, on any Decoder: prefill the prompt, then sample one token
// per step until EOS, a stop string, max_tokens or the end of the context; or, with a
// drafter, verify the drafter's block of proposed tokens in each target step and keep the
// accepted ones and the target's next token (speculative decoding: the output is exactly the
// target's, token for token when greedy, in distribution when sampling).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "draft/drafter.h"
#include "engine/sampling.h"
#include "engine/speculation.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/status.h"
#include "target/decoder.h"

namespace draftwise {

struct GenerationOptions {
  int64_t max_tokens = 256;  // > 0
  SamplingParams sampling;
  std::vector<std::string> stop;       // stop strings (need a tokenizer)
  std::vector<int32_t> stop_token_ids; // EOS and other end-of-turn tokens
  // Speculative decoding: the drafter (null: none) and its draft length. The drafter must
  // draft in the target's vocabulary.
  Drafter* drafter = nullptr;
  DraftLength draft_length = DraftLength::fixed(4);
  // Which adapter a learning drafter with per-key scope uses for this request.
  std::string learning_key;
  // Log-probabilities of the target's distribution (the raw logits' log-softmax, before
  // temperature and filters) for every generated token: -1 none, else the token's own and
  // the `logprobs` most likely tokens' (at most kMaxTopLogprobs).
  int logprobs = -1;
  // Prompt tokens a prefill forward pass takes at most (bounds the activations).
  int64_t prefill_chunk = 512;
  // qTTT (QTTT.md): after every prompt token but the last is prefilled, the request's query
  // projections are adapted on that context; the last prompt token and every generated one
  // then run with W_Q + ΔW_Q. The adaptation is the request's own and ends with it.
  std::optional<QttOptions> qttt;
};

inline constexpr int kMaxTopLogprobs = 20;

// One generated token's log-probability and the most likely alternatives, most likely first.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

// stop: EOS or a stop string; length: max_tokens or the context; cancelled: the caller gave
// up (a closed connection, a shutdown).
enum class FinishReason { stop, length, cancelled };
std::string_view finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled"

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double prefill_seconds = 0;  // prompt forward pass and the first token
  double decode_seconds = 0;   // every later token
  SpeculationStats speculation;  // target steps and, with a drafter, acceptance
  std::optional<QttReport> qttt;  // the request's adaptation (its time is part of prefill_seconds)
  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;  // tokens after the first ÷ decode_seconds
};

struct GenerationResult {
  std::vector<int32_t> token_ids;  // every sampled token, a final EOS included
  std::string text;                // decoded, without EOS or the stop string; empty without a tokenizer
  std::vector<TokenLogprob> logprobs;  // one per token of token_ids when options.logprobs ≥ 0
  FinishReason finish_reason = FinishReason::length;
  GenerationStats stats;
};

// Output as it becomes final: `text` is the newly released text (may be empty, always empty
// without a tokenizer), `token` the token just sampled, or -1 for text held back until the
// end (an unfinished character, a possible start of a stop string); `logprob` the token's
// log-probabilities when they were asked for, else null.
struct OutputEvent {
  std::string_view text;
  int32_t token = -1;
  const TokenLogprob* logprob = nullptr;
};
using OutputCallback = std::function<void(const OutputEvent& event)>;

// Checks the prompt (non-empty, ids inside the vocabulary, room for one more token in the
// context) and the options, then generates. `tokenizer` may be null: then no text and no
// stop strings.
Expected<GenerationResult> generate(Decoder& decoder, const Tokenizer* tokenizer,
                                    std::span<const int32_t> prompt,
                                    const GenerationOptions& options,
                                    const OutputCallback& on_output = {});

struct GenerationRequest {
  std::span<const int32_t> prompt;
  GenerationOptions options;  // requests may share a drafter, or have their own
  OutputCallback on_output;
};

// Several requests generated together: after each one's prefill, every step is one batched
// forward pass over all unfinished requests, each with its last token and its drafts, and
// each keeps its own number of accepted tokens. A request's results do not depend on its
// batch (on the CPU, bit for bit). results[i] belongs to requests[i]; a request refused by
// its checks fails alone, a failed batched pass fails the requests it ran.
std::vector<Expected<GenerationResult>> generate_batch(Decoder& decoder, const Tokenizer* tokenizer,
                                                       std::span<const GenerationRequest> requests);

}  // namespace draftwise
