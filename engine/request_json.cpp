#include "engine/request_json.h"

namespace draftwise {

Expected<std::vector<ChatMessage>> chat_messages_from_json(const nlohmann::json& messages) {
  if (!messages.is_array() || messages.empty()) return make_error("\"messages\" must be a non-empty list");
  std::vector<ChatMessage> result;
  for (const nlohmann::json& message : messages) {
    if (!message.is_object() || !message.contains("role") || !message.contains("content") ||
        !message["role"].is_string() || !message["content"].is_string()) {
      return make_error("every message needs a string \"role\" and \"content\"");
    }
    const std::string role = message["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant") {
      return make_error("unknown role '{}' (system, user or assistant)", role);
    }
    result.push_back({role, message["content"].get<std::string>()});
  }
  return result;
}

}  // namespace draftwise
