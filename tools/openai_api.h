// The OpenAI-compatible request and response bodies of `draftwise serve`:
// POST /v1/completions and /v1/chat/completions parsed into one call, errors in OpenAI's
// shape ({"error": {"message", "type", "param", "code"}}) with their HTTP status, and the
// response objects, whole and as stream chunks. Fields that would change the answer and that
// the engine does not do (n > 1, best_of, echo, suffix, logit_bias, penalties, tools, JSON
// response formats) are refused by name rather than ignored; fields without effect here
// (user, metadata, store, ...) are accepted. Per-request engine options go in the extension
// object "draftwise": {"draft": "ngram:3" | "self:8" | "none", "draft_len": N | "auto",
// "learn": "off" | "global" | "key" | "request", "qttt": SPEC | {"steps", "span", "lr", "rank",
// "optimizer", "seed"} | false}; a qTTT SPEC is what `generate --qttt` takes ("on", "off",
// "steps=8,rank=4"), true is "on", and an object gives the same keys as JSON values.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "engine/generation.h"
#include "target/model_config.h"
#include "target/qttt.h"

namespace draftwise {

struct ApiError {
  ApiError() = default;
  ApiError(int status_, std::string message_, std::string type_ = "invalid_request_error", std::string param_ = {},
           std::string code_ = {})
      : status(status_), message(std::move(message_)), type(std::move(type_)), param(std::move(param_)),
        code(std::move(code_)) {}
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, or empty
  std::string code;   // or empty
};
nlohmann::json api_error_json(const ApiError& error);

enum class ApiEndpoint { completions, chat_completions };

struct CompletionCall {
  ApiEndpoint endpoint = ApiEndpoint::completions;
  std::string model;
  std::optional<std::string> prompt_text;  // /v1/completions, text
  std::vector<int32_t> prompt_ids;         // /v1/completions, token ids
  std::vector<ChatMessage> messages;       // /v1/chat/completions
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature, top_p;
  std::optional<int64_t> top_k;
  std::optional<double> min_p;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
  int logprobs = -1;  // -1 none; else the number of alternatives per token (0..20)
  // The extension object.
  std::optional<std::string> draft;      // a drafter spec or "none"
  std::optional<std::string> draft_len;  // "N" or "auto"
  std::optional<std::string> learn;      // off, global, key, request
  // Unset: the server's default (serve --qttt); set: the request's own, none for off.
  std::optional<std::optional<QttOptions>> qttt;
};

// The body of a POST to `endpoint`; errors name the field.
std::variant<CompletionCall, ApiError> parse_completion_call(std::string_view body, ApiEndpoint endpoint);

// The qTTT options a call with `prompt_tokens` runs with: its own, else `server_default`, which a
// prompt of one token (nothing to train on) goes without. Its own options over `max_steps` steps,
// that the model cannot take (check_qtt_options), or with a one-token prompt are refused with a
// 400 whose param is "draftwise.qttt".
std::variant<std::optional<QttOptions>, ApiError> resolve_qttt(const CompletionCall& call,
                                                               const std::optional<QttOptions>& server_default,
                                                               int64_t max_steps, const ModelConfig& config,
                                                               int64_t prompt_tokens);

// What a response needs besides the result.
struct ResponseContext {
  std::string id;       // "cmpl-…" or "chatcmpl-…"
  int64_t created = 0;  // Unix seconds
  std::string model;
  std::string drafter;  // spec, or empty
};

// A token's bytes as the tokenizer spells them (for log-probabilities).
using TokenText = std::function<std::string(int32_t)>;

// The whole answer: a text_completion or chat.completion object with usage and, under
// "draftwise", the speculation statistics and, for an adapted request, "qttt" (qttt_json).
nlohmann::json completion_response(const CompletionCall& call, const ResponseContext& context,
                                   const GenerationResult& result, const TokenText& token_text);

// One stream chunk carrying `text` (and, for chat, the role in the first chunk), with the
// log-probabilities of the tokens it covers when asked for (empty: none).
nlohmann::json stream_chunk(const CompletionCall& call, const ResponseContext& context, std::string_view text,
                            bool first, const std::vector<TokenLogprob>& logprobs, const TokenText& token_text);
// The last chunk with content: empty text and the finish reason.
nlohmann::json stream_finish_chunk(const CompletionCall& call, const ResponseContext& context,
                                   const GenerationResult& result);
// The usage chunk of stream_options.include_usage: no choices, usage and draftwise statistics.
nlohmann::json stream_usage_chunk(const CompletionCall& call, const ResponseContext& context,
                                  const GenerationResult& result);

// The log-probabilities object of the endpoint's format ("tokens"/"token_logprobs"/
// "top_logprobs"/"text_offset" for completions, "content" for chat); `text_offset` is where
// the first token's text starts.
nlohmann::json logprobs_json(const CompletionCall& call, std::span<const TokenLogprob> logprobs,
                             const TokenText& token_text, int64_t text_offset = 0);

}  // namespace draftwise
