// The lines of `draftwise batch`. Input, one JSON object a line:
//   {"id": any, "prompt": TEXT | "messages": [{"role", "content"}, ...],
//    optional "max_tokens", "temperature", "top_p", "seed", "stop": TEXT | [TEXT, ...]}
// A line without an id gets its line number (from 1) as its id. "prompt" is raw text (no chat
// template); "messages" go through the model's chat template.
// Output, one a line: {"id", "text", "finish_reason", "usage": {...}, "speculation": {...}},
// with "qttt": {...} (tools/qttt_args.h) when the request's queries were adapted (--qttt), or
// {"id", "error": {"message", "type"}}.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "kernels/status.h"

namespace draftwise {

struct BatchLine {
  nlohmann::json id;                     // as given, or the line number
  std::optional<std::string> prompt;     // raw text
  std::vector<ChatMessage> messages;     // when no prompt
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature, top_p;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
};

// One input line (`number` from 1). On an error, `id` still holds the line's id when it had a
// readable one (else the line number), for the error record.
Expected<BatchLine> parse_batch_line(std::string_view text, int64_t number, nlohmann::json& id);

// The id of an output line, or null when the line is not a complete output record (a torn
// last line after a kill).
nlohmann::json batch_output_id(std::string_view text);

// {"id", "error": {"message", "type"}}; type "invalid_request_error" for a bad line,
// "generation_error" for a request that failed.
nlohmann::json batch_error_record(const nlohmann::json& id, const std::string& message, const std::string& type);

}  // namespace draftwise
