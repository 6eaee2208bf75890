#include "tools/openai_api.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "engine/request_json.h"
#include "engine/speculation.h"
#include "tools/qttt_args.h"
#include "tools/speculation_json.h"

namespace draftwise {

namespace {

using Json = nlohmann::json;

ApiError bad(std::string param, std::string message) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), {}};
}

ApiError unsupported(const std::string& param, const std::string& what) {
  return bad(param, fmt::format("'{}' {} is not supported by this server", param, what));
}

bool present(const Json& body, const char* key) { return body.contains(key) && !body[key].is_null(); }

// An integer field (JSON integers only, or floats with an integral value such as 16.0).
std::optional<int64_t> integer_field(const Json& value) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    const double number = value.get<double>();
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 9e15) {
      return static_cast<int64_t>(number);
    }
  }
  return std::nullopt;
}

std::optional<ApiError> read_integer(const Json& body, const char* key, int64_t low, int64_t high,
                                     std::optional<int64_t>& out) {
  if (!present(body, key)) return std::nullopt;
  const std::optional<int64_t> value = integer_field(body[key]);
  if (!value) return bad(key, fmt::format("'{}' must be an integer", key));
  if (*value < low || *value > high) {
    return bad(key, high == std::numeric_limits<int64_t>::max()
                        ? fmt::format("'{}' must be at least {}, got {}", key, low, *value)
                        : fmt::format("'{}' must be in [{}, {}], got {}", key, low, high, *value));
  }
  out = value;
  return std::nullopt;
}

std::optional<ApiError> read_number(const Json& body, const char* key, double low, double high, bool low_open,
                                    std::optional<double>& out) {
  if (!present(body, key)) return std::nullopt;
  if (!body[key].is_number()) return bad(key, fmt::format("'{}' must be a number", key));
  const double value = body[key].get<double>();
  if (!std::isfinite(value) || value < low || value > high || (low_open && value == low)) {
    return bad(key, fmt::format("'{}' must be in {}{}, {}], got {}", key, low_open ? "(" : "[", low, high, value));
  }
  out = value;
  return std::nullopt;
}

std::optional<ApiError> read_prompt(const Json& body, CompletionCall& call) {
  if (!present(body, "prompt")) return bad("prompt", "'prompt' is required");
  const Json& prompt = body["prompt"];
  const auto token_ids = [&](const Json& list) -> std::optional<ApiError> {
    if (list.empty()) return bad("prompt", "'prompt' is an empty list of token ids");
    for (const Json& id : list) {
      const std::optional<int64_t> value = integer_field(id);
      if (!value || *value < 0 || *value > std::numeric_limits<int32_t>::max()) {
        return bad("prompt", "'prompt' token ids must be non-negative integers");
      }
      call.prompt_ids.push_back(static_cast<int32_t>(*value));
    }
    return std::nullopt;
  };
  if (prompt.is_string()) {
    call.prompt_text = prompt.get<std::string>();
    return std::nullopt;
  }
  if (!prompt.is_array() || prompt.empty()) {
    return bad("prompt", "'prompt' must be a string, a list of token ids, or a list of one of either");
  }
  if (prompt.size() == 1 && prompt[0].is_string()) {
    call.prompt_text = prompt[0].get<std::string>();
    return std::nullopt;
  }
  if (prompt.size() == 1 && prompt[0].is_array()) return token_ids(prompt[0]);
  if (prompt[0].is_number()) return token_ids(prompt);
  return bad("prompt", "only one prompt per request is supported; send several requests");
}

std::optional<ApiError> read_stop(const Json& body, CompletionCall& call) {
  if (!present(body, "stop")) return std::nullopt;
  const Json& stop = body["stop"];
  if (stop.is_string()) {
    if (!stop.get<std::string>().empty()) call.stop.push_back(stop.get<std::string>());
    return std::nullopt;
  }
  if (!stop.is_array() || stop.size() > 16) return bad("stop", "'stop' must be a string or a list of at most 16 strings");
  for (const Json& each : stop) {
    if (!each.is_string()) return bad("stop", "'stop' must be a string or a list of strings");
    if (!each.get<std::string>().empty()) call.stop.push_back(each.get<std::string>());
  }
  return std::nullopt;
}

// Fields that would change the answer and that the engine does not do.
std::optional<ApiError> refuse_unsupported(const Json& body, ApiEndpoint endpoint) {
  if (present(body, "n")) {
    const std::optional<int64_t> n = integer_field(body["n"]);
    if (!n) return bad("n", "'n' must be an integer");
    if (*n != 1) return bad("n", fmt::format("'n' must be 1 (one choice per request), got {}", *n));
  }
  if (present(body, "best_of")) {
    const std::optional<int64_t> best_of = integer_field(body["best_of"]);
    if (!best_of || *best_of != 1) return unsupported("best_of", "other than 1");
  }
  if (present(body, "echo") && body["echo"] != false) return unsupported("echo", "true");
  if (present(body, "suffix") && body["suffix"] != "") return unsupported("suffix", "(insertion)");
  if (present(body, "logit_bias") && !(body["logit_bias"].is_object() && body["logit_bias"].empty())) {
    return unsupported("logit_bias", "");
  }
  for (const char* penalty : {"frequency_penalty", "presence_penalty"}) {
    if (present(body, penalty) && !(body[penalty].is_number() && body[penalty].get<double>() == 0.0)) {
      return unsupported(penalty, "other than 0");
    }
  }
  if (present(body, "repetition_penalty") &&
      !(body["repetition_penalty"].is_number() && body["repetition_penalty"].get<double>() == 1.0)) {
    return unsupported("repetition_penalty", "other than 1");
  }
  for (const char* key : {"tools", "functions"}) {
    if (present(body, key) && !(body[key].is_array() && body[key].empty())) return unsupported(key, "(tool calling)");
  }
  for (const char* key : {"tool_choice", "function_call"}) {
    if (present(body, key) && body[key] != "none") return unsupported(key, "(tool calling)");
  }
  if (present(body, "response_format")) {
    const Json& format = body["response_format"];
    if (!format.is_object() || format.value("type", "") != "text") return unsupported("response_format", "other than text");
  }
  if (endpoint == ApiEndpoint::chat_completions && present(body, "prompt")) {
    return bad("prompt", "/v1/chat/completions takes 'messages', not 'prompt'");
  }
  if (endpoint == ApiEndpoint::completions && present(body, "messages")) {
    return bad("messages", "/v1/completions takes 'prompt'; send 'messages' to /v1/chat/completions");
  }
  return std::nullopt;
}

std::optional<ApiError> read_logprobs(const Json& body, ApiEndpoint endpoint, CompletionCall& call) {
  if (endpoint == ApiEndpoint::completions) {
    std::optional<int64_t> logprobs;
    if (present(body, "logprobs") && body["logprobs"].is_boolean()) {
      return bad("logprobs", "'logprobs' of /v1/completions is the number of alternatives (0 to 20)");
    }
    if (auto error = read_integer(body, "logprobs", 0, kMaxTopLogprobs, logprobs)) return error;
    if (logprobs) call.logprobs = static_cast<int>(*logprobs);
    return std::nullopt;
  }
  bool wanted = false;
  if (present(body, "logprobs")) {
    if (!body["logprobs"].is_boolean()) return bad("logprobs", "'logprobs' must be true or false");
    wanted = body["logprobs"].get<bool>();
  }
  std::optional<int64_t> top;
  if (auto error = read_integer(body, "top_logprobs", 0, kMaxTopLogprobs, top)) return error;
  if (top && !wanted) return bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  if (wanted) call.logprobs = static_cast<int>(top.value_or(0));
  return std::nullopt;
}

// "draftwise.qttt": a spec, true ("on"), false ("off"), or an object of the spec's keys. The
// object is written as a spec, so that parse_qtt_spec checks both forms alike.
std::optional<ApiError> read_qttt(const Json& value, CompletionCall& call) {
  const std::string param = "draftwise.qttt";
  std::string spec;
  if (value.is_boolean()) {
    spec = value.get<bool>() ? "on" : "off";
  } else if (value.is_string()) {
    spec = value.get<std::string>();
  } else if (value.is_object()) {
    for (const auto& [key, field] : value.items()) {
      const std::string name = param + "." + key;
      std::string text;
      if (key == "steps" || key == "span" || key == "seed") {
        const std::optional<int64_t> integer = integer_field(field);
        if (!integer) return bad(param, fmt::format("'{}' must be an integer", name));
        text = std::to_string(*integer);
      } else if (key == "lr") {
        if (!field.is_number()) return bad(param, fmt::format("'{}' must be a number", name));
        text = fmt::format("{}", field.get<double>());
      } else if (key == "rank") {
        const std::optional<int64_t> integer = integer_field(field);
        if (!integer && field != "full") return bad(param, fmt::format("'{}' must be an integer or \"full\"", name));
        text = integer ? std::to_string(*integer) : "full";
      } else if (key == "optimizer") {
        if (field != "adam" && field != "sgd") return bad(param, fmt::format("'{}' must be \"adam\" or \"sgd\"", name));
        text = field.get<std::string>();
      } else {
        return bad(param, fmt::format("unknown field '{}' (steps, span, lr, rank, optimizer, seed)", name));
      }
      spec += (spec.empty() ? "" : ",") + key + "=" + text;
    }
    if (spec.empty()) spec = "on";
  } else {
    return bad(param, "'draftwise.qttt' must be a spec (\"on\", \"off\", \"steps=8,rank=4\"), an object of its keys "
                      "(steps, span, lr, rank, optimizer, seed), or false");
  }
  if (spec == "off") {
    call.qttt.emplace(std::nullopt);
    return std::nullopt;
  }
  Expected<QttOptions> options = parse_qtt_spec(spec);
  // parse_qtt_spec's errors start "qttt: " and name the key.
  if (!options.ok()) return bad(param, "draftwise." + options.error().message);
  call.qttt.emplace(*options);
  return std::nullopt;
}

std::optional<ApiError> read_extension(const Json& body, CompletionCall& call) {
  if (!present(body, "draftwise")) return std::nullopt;
  const Json& extension = body["draftwise"];
  if (!extension.is_object()) return bad("draftwise", "'draftwise' must be an object");
  for (const auto& [key, value] : extension.items()) {
    if (key == "draft") {
      if (!value.is_string() || value.get<std::string>().empty()) {
        return bad("draftwise.draft", "'draftwise.draft' must be a drafter spec (ngram:N, self:E, model:PATH) or \"none\"");
      }
      call.draft = value.get<std::string>();
    } else if (key == "draft_len") {
      if (value.is_string() && value == "auto") {
        call.draft_len = "auto";
      } else if (const std::optional<int64_t> length = integer_field(value);
                 length && *length >= 1 && *length <= DraftLength::kMaxDraftLength) {
        call.draft_len = std::to_string(*length);
      } else {
        return bad("draftwise.draft_len",
                   fmt::format("'draftwise.draft_len' must be an integer in [1, {}] or \"auto\"",
                               DraftLength::kMaxDraftLength));
      }
    } else if (key == "learn") {
      if (!value.is_string() || (value != "off" && value != "global" && value != "key" && value != "request")) {
        return bad("draftwise.learn", "'draftwise.learn' must be \"off\", \"global\", \"key\" or \"request\"");
      }
      call.learn = value.get<std::string>();
    } else if (key == "qttt") {
      if (auto error = read_qttt(value, call)) return error;
    } else {
      return bad("draftwise." + key, fmt::format("unknown field 'draftwise.{}' (draft, draft_len, learn, qttt)", key));
    }
  }
  return std::nullopt;
}

std::string finish_reason(const GenerationResult& result) {
  return std::string(finish_reason_name(result.finish_reason));
}

Json usage_json(const GenerationResult& result) {
  return {{"prompt_tokens", result.stats.prompt_tokens},
          {"completion_tokens", result.stats.completion_tokens},
          {"total_tokens", result.stats.prompt_tokens + result.stats.completion_tokens}};
}

// The "draftwise" object of a response: the speculation statistics, and the request's query
// adaptation when it had one.
Json draftwise_json(const ResponseContext& context, const GenerationResult& result) {
  Json statistics = speculation_json(result.stats.speculation, context.drafter);
  if (result.stats.qttt) statistics["qttt"] = qttt_json(*result.stats.qttt);
  return statistics;
}

Json chunk_base(const CompletionCall& call, const ResponseContext& context) {
  const bool chat = call.endpoint == ApiEndpoint::chat_completions;
  return {{"id", context.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", context.created},
          {"model", context.model}};
}

std::vector<int> byte_values(const std::string& bytes) {
  std::vector<int> values;
  for (const char c : bytes) values.push_back(static_cast<unsigned char>(c));
  return values;
}

}  // namespace

Json api_error_json(const ApiError& error) {
  return {{"error",
           {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? Json(nullptr) : Json(error.param)},
            {"code", error.code.empty() ? Json(nullptr) : Json(error.code)}}}};
}

std::variant<CompletionCall, ApiError> parse_completion_call(std::string_view text, ApiEndpoint endpoint) {
  Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return bad("", "the request body is not valid JSON");
  if (!body.is_object()) return bad("", "the request body must be a JSON object");
  CompletionCall call;
  call.endpoint = endpoint;
  if (auto error = refuse_unsupported(body, endpoint)) return *error;
  if (present(body, "model")) {
    if (!body["model"].is_string()) return bad("model", "'model' must be a string");
    call.model = body["model"].get<std::string>();
  }
  if (endpoint == ApiEndpoint::completions) {
    if (auto error = read_prompt(body, call)) return *error;
  } else {
    if (!present(body, "messages")) return bad("messages", "'messages' is required");
    Expected<std::vector<ChatMessage>> messages = chat_messages_from_json(body["messages"]);
    if (!messages.ok()) return bad("messages", messages.error().message);
    call.messages = std::move(*messages);
  }
  constexpr int64_t kAny = std::numeric_limits<int64_t>::max();
  if (present(body, "max_completion_tokens")) {
    if (auto error = read_integer(body, "max_completion_tokens", 1, kAny, call.max_tokens)) return *error;
  } else if (auto error = read_integer(body, "max_tokens", 1, kAny, call.max_tokens)) {
    return *error;
  }
  if (auto error = read_number(body, "temperature", 0.0, 1e6, false, call.temperature)) return *error;
  if (auto error = read_number(body, "top_p", 0.0, 1.0, true, call.top_p)) return *error;
  if (auto error = read_number(body, "min_p", 0.0, 1.0, false, call.min_p)) return *error;
  std::optional<int64_t> top_k;
  if (auto error = read_integer(body, "top_k", -1, kAny, top_k)) return *error;
  if (top_k && *top_k > 0) call.top_k = top_k;
  std::optional<int64_t> seed;
  if (auto error = read_integer(body, "seed", 0, kAny, seed)) return *error;
  if (seed) call.seed = static_cast<uint64_t>(*seed);
  if (auto error = read_stop(body, call)) return *error;
  if (present(body, "stream")) {
    if (!body["stream"].is_boolean()) return bad("stream", "'stream' must be true or false");
    call.stream = body["stream"].get<bool>();
  }
  if (present(body, "stream_options")) {
    const Json& options = body["stream_options"];
    if (!options.is_object()) return bad("stream_options", "'stream_options' must be an object");
    if (present(options, "include_usage")) {
      if (!options["include_usage"].is_boolean()) {
        return bad("stream_options.include_usage", "'stream_options.include_usage' must be true or false");
      }
      call.include_usage = options["include_usage"].get<bool>();
    }
  }
  if (auto error = read_logprobs(body, endpoint, call)) return *error;
  if (auto error = read_extension(body, call)) return *error;
  return call;
}

std::variant<std::optional<QttOptions>, ApiError> resolve_qttt(const CompletionCall& call,
                                                               const std::optional<QttOptions>& server_default,
                                                               int64_t max_steps, const ModelConfig& config,
                                                               int64_t prompt_tokens) {
  // qTTT trains on the positions before the last prompt token (RequestRun::adapt_queries).
  const bool trainable = prompt_tokens >= 2;
  if (!call.qttt) return trainable ? server_default : std::nullopt;
  const std::optional<QttOptions>& options = *call.qttt;
  if (!options) return options;
  if (!trainable) {
    return bad("draftwise.qttt", fmt::format("'draftwise.qttt' needs a prompt of at least 2 tokens to train on, "
                                             "got {}",
                                             prompt_tokens));
  }
  if (options->steps > max_steps) {
    return bad("draftwise.qttt", fmt::format("'draftwise.qttt' asks for {} steps; this server allows at most {} "
                                             "(serve --qttt-max-steps)",
                                             options->steps, max_steps));
  }
  if (const Status checked = check_qtt_options(*options, config); !checked.ok()) {
    return bad("draftwise.qttt", "draftwise." + checked.error().message);
  }
  return options;
}

Json logprobs_json(const CompletionCall& call, std::span<const TokenLogprob> logprobs, const TokenText& token_text,
                   int64_t text_offset) {
  if (call.endpoint == ApiEndpoint::chat_completions) {
    Json content = Json::array();
    for (const TokenLogprob& each : logprobs) {
      const std::string text = token_text(each.token);
      Json top = Json::array();
      for (const auto& [token, logprob] : each.top) {
        const std::string alternative = token_text(token);
        top.push_back({{"token", alternative}, {"logprob", logprob}, {"bytes", byte_values(alternative)}});
      }
      content.push_back({{"token", text}, {"logprob", each.logprob}, {"bytes", byte_values(text)}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  Json tokens = Json::array(), token_logprobs = Json::array(), top_logprobs = Json::array(), offsets = Json::array();
  int64_t offset = text_offset;
  for (const TokenLogprob& each : logprobs) {
    const std::string text = token_text(each.token);
    tokens.push_back(text);
    token_logprobs.push_back(each.logprob);
    Json top = Json::object();
    for (const auto& [token, logprob] : each.top) top[token_text(token)] = logprob;
    top_logprobs.push_back(top);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(text.size());
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

Json completion_response(const CompletionCall& call, const ResponseContext& context, const GenerationResult& result,
                         const TokenText& token_text) {
  const bool chat = call.endpoint == ApiEndpoint::chat_completions;
  Json choice = {{"index", 0}, {"finish_reason", finish_reason(result)}};
  choice["logprobs"] = call.logprobs >= 0 ? logprobs_json(call, result.logprobs, token_text) : Json(nullptr);
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", result.text}};
  } else {
    choice["text"] = result.text;
  }
  return {{"id", context.id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", context.created},
          {"model", context.model},
          {"choices", Json::array({choice})},
          {"usage", usage_json(result)},
          {"draftwise", draftwise_json(context, result)}};
}

Json stream_chunk(const CompletionCall& call, const ResponseContext& context, std::string_view text, bool first,
                  const std::vector<TokenLogprob>& logprobs, const TokenText& token_text) {
  Json chunk = chunk_base(call, context);
  Json choice = {{"index", 0}, {"finish_reason", nullptr}};
  choice["logprobs"] = call.logprobs >= 0 && !logprobs.empty() ? logprobs_json(call, logprobs, token_text) : Json(nullptr);
  if (call.endpoint == ApiEndpoint::chat_completions) {
    Json delta = {{"content", std::string(text)}};
    if (first) delta["role"] = "assistant";
    choice["delta"] = delta;
  } else {
    choice["text"] = std::string(text);
  }
  chunk["choices"] = Json::array({choice});
  return chunk;
}

Json stream_finish_chunk(const CompletionCall& call, const ResponseContext& context, const GenerationResult& result) {
  Json chunk = chunk_base(call, context);
  Json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason(result)}};
  if (call.endpoint == ApiEndpoint::chat_completions) {
    choice["delta"] = Json::object();
  } else {
    choice["text"] = "";
  }
  chunk["choices"] = Json::array({choice});
  return chunk;
}

Json stream_usage_chunk(const CompletionCall& call, const ResponseContext& context, const GenerationResult& result) {
  Json chunk = chunk_base(call, context);
  chunk["choices"] = Json::array();
  chunk["usage"] = usage_json(result);
  chunk["draftwise"] = draftwise_json(context, result);
  return chunk;
}

}  // namespace draftwise
