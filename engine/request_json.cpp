#include "engine/request_json.h"

namespace draftwise {

Expected<std::vector<ChatMessage>> chat_messages_from_json(const nlohmann::json& messages) {
  if (!messages.is_array() || messages.empty()) return make_error("\"messages\" must be a non-empty list");
  std::vector<ChatMessage> result;
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& message = messages[i];
    if (!message.is_object() || !message.contains("role") || !message.contains("content") ||
        !message["role"].is_string()) {
      return make_error("messages[{}]: every message needs a string \"role\" and a \"content\"", i);
    }
    std::string role = message["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant") {
      return make_error("messages[{}]: unknown role '{}' (system, developer, user or assistant)", i, role);
    }
    // A string, or OpenAI's list of content parts of which only text ones are understood.
    const nlohmann::json& content = message["content"];
    std::string text;
    if (content.is_string()) {
      text = content.get<std::string>();
    } else if (content.is_array()) {
      for (const nlohmann::json& part : content) {
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return make_error("messages[{}]: only text content parts ({{\"type\": \"text\", \"text\": ...}}) are supported",
                            i);
        }
        text += part["text"].get<std::string>();
      }
    } else {
      return make_error("messages[{}]: \"content\" must be a string or a list of text parts", i);
    }
    result.push_back({role, std::move(text)});
  }
  return result;
}

}  // namespace draftwise
