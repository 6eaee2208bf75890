#include "tools/batch_lines.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "engine/request_json.h"

namespace draftwise {

namespace {

using nlohmann::json;

const char* const kFields[] = {"id", "prompt", "messages", "max_tokens", "temperature", "top_p", "seed", "stop"};

}  // namespace

Expected<BatchLine> parse_batch_line(std::string_view text, int64_t number, json& id) {
  id = number;
  const json line = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (line.is_discarded()) return make_error("line {}: not valid JSON", number);
  if (!line.is_object()) return make_error("line {}: not a JSON object", number);
  BatchLine parsed;
  if (line.contains("id")) {
    if (!line["id"].is_string() && !line["id"].is_number_integer()) {
      return make_error("line {}: \"id\" must be a string or an integer", number);
    }
    id = line["id"];
  }
  parsed.id = id;
  for (const auto& [key, value] : line.items()) {
    if (std::find(std::begin(kFields), std::end(kFields), key) == std::end(kFields)) {
      return make_error("line {}: unknown field \"{}\"", number, key);
    }
  }
  if (line.contains("prompt") == line.contains("messages")) {
    return make_error("line {}: give exactly one of \"prompt\" and \"messages\"", number);
  }
  if (line.contains("prompt")) {
    if (!line["prompt"].is_string() || line["prompt"].get<std::string>().empty()) {
      return make_error("line {}: \"prompt\" must be a non-empty string", number);
    }
    parsed.prompt = line["prompt"].get<std::string>();
  } else {
    Expected<std::vector<ChatMessage>> messages = chat_messages_from_json(line["messages"]);
    if (!messages.ok()) return make_error("line {}: {}", number, messages.error().message);
    parsed.messages = std::move(*messages);
  }
  if (line.contains("max_tokens")) {
    if (!line["max_tokens"].is_number_integer() || line["max_tokens"].get<int64_t>() <= 0) {
      return make_error("line {}: \"max_tokens\" must be a positive integer", number);
    }
    parsed.max_tokens = line["max_tokens"].get<int64_t>();
  }
  for (const char* key : {"temperature", "top_p"}) {
    if (!line.contains(key)) continue;
    if (!line[key].is_number() || !std::isfinite(line[key].get<double>())) {
      return make_error("line {}: \"{}\" must be a number", number, key);
    }
    (std::string_view(key) == "temperature" ? parsed.temperature : parsed.top_p) = line[key].get<double>();
  }
  if (line.contains("seed")) {
    if (!line["seed"].is_number_integer() || line["seed"].get<int64_t>() < 0) {
      return make_error("line {}: \"seed\" must be an integer ≥ 0", number);
    }
    parsed.seed = line["seed"].get<uint64_t>();
  }
  if (line.contains("stop")) {
    const json& stop = line["stop"];
    if (stop.is_string()) {
      parsed.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& each : stop) {
        if (!each.is_string()) return make_error("line {}: \"stop\" must be a string or a list of strings", number);
        parsed.stop.push_back(each.get<std::string>());
      }
    } else {
      return make_error("line {}: \"stop\" must be a string or a list of strings", number);
    }
    for (const std::string& each : parsed.stop) {
      if (each.empty()) return make_error("line {}: a stop string is empty", number);
    }
  }
  return parsed;
}

json batch_output_id(std::string_view text) {
  const json line = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (line.is_discarded() || !line.is_object() || !line.contains("id")) return nullptr;
  if (!line.contains("text") && !line.contains("error")) return nullptr;
  return line["id"];
}

json batch_error_record(const json& id, const std::string& message, const std::string& type) {
  return {{"id", id}, {"error", {{"message", message}, {"type", type}}}};
}

}  // namespace draftwise
