// Pieces of JSON requests that every front end reads the same way (bench prompts, batch
// lines, later the HTTP server): chat messages and sampling fields, with errors that name
// the field.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "kernels/status.h"

namespace draftwise {

// A non-empty list of {"role": "system"|"user"|"assistant", "content": string}.
Expected<std::vector<ChatMessage>> chat_messages_from_json(const nlohmann::json& messages);

}  // namespace draftwise
