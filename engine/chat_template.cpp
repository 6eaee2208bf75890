#include "engine/chat_template.h"

#include <ctime>

namespace draftwise {

namespace {

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Python's str.strip() on ASCII whitespace, as Jinja's trim filter does.
std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

// The literal system prompt a ChatML template writes when the conversation has none:
// '<|im_start|>system\n' + TEXT + '<|im_end|>' with TEXT free of template syntax.
std::optional<std::string> chatml_default_system(std::string_view jinja) {
  constexpr std::string_view kOpen = "<|im_start|>system";
  for (size_t at = jinja.find(kOpen); at != std::string_view::npos; at = jinja.find(kOpen, at + 1)) {
    std::string_view rest = jinja.substr(at + kOpen.size());
    if (rest.starts_with("\n")) {
      rest.remove_prefix(1);
    } else if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else {
      continue;
    }
    const size_t end = rest.find("<|im_end|>");
    if (end == std::string_view::npos) continue;
    const std::string_view text = rest.substr(0, end);
    if (text.empty() || text.find_first_of("'\"{}+") != std::string_view::npos) continue;
    return std::string(text);
  }
  return std::nullopt;
}

// Llama 3.1/3.2 date line: strftime_now when the template asks for it, else its fallback.
std::string llama3_date(std::string_view jinja) {
  if (contains(jinja, "strftime_now")) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%d %b %Y", &local);
    return buffer;
  }
  constexpr std::string_view kSet = "date_string = \"";
  const size_t at = jinja.find(kSet);
  if (at != std::string_view::npos) {
    const size_t end = jinja.find('"', at + kSet.size());
    if (end != std::string_view::npos) return std::string(jinja.substr(at + kSet.size(), end - at - kSet.size()));
  }
  return "26 Jul 2024";
}

Status check_roles(std::span<const ChatMessage> messages) {
  if (messages.empty()) return make_error("a chat needs at least one message");
  for (const ChatMessage& message : messages) {
    if (message.role != "system" && message.role != "user" && message.role != "assistant") {
      return make_error("chat role '{}' is not supported (system, user, assistant)", message.role);
    }
  }
  return {};
}

}  // namespace

std::string_view chat_family_name(ChatFamily family) {
  switch (family) {
    case ChatFamily::chatml:
      return "chatml";
    case ChatFamily::llama3:
      return "llama3";
    case ChatFamily::llama2:
      return "llama2";
    case ChatFamily::mistral:
      return "mistral";
  }
  return "unknown";
}

Expected<ChatTemplate> ChatTemplate::recognize(std::string_view jinja, std::string bos_text,
                                               std::string eos_text) {
  ChatTemplate chat;
  chat.bos_text_ = std::move(bos_text);
  chat.eos_text_ = std::move(eos_text);
  if (contains(jinja, "<|im_start|>") && contains(jinja, "<|im_end|>")) {
    chat.family_ = ChatFamily::chatml;
    chat.default_system_ = chatml_default_system(jinja);
  } else if (contains(jinja, "<|start_header_id|>") && contains(jinja, "<|eot_id|>")) {
    chat.family_ = ChatFamily::llama3;
    if (contains(jinja, "Cutting Knowledge Date")) {
      chat.llama31_preamble_ = true;
      chat.default_system_ = "Cutting Knowledge Date: December 2023\nToday Date: " + llama3_date(jinja) + "\n\n";
    }
  } else if (contains(jinja, "[INST]") && contains(jinja, "<<SYS>>")) {
    chat.family_ = ChatFamily::llama2;
  } else if (contains(jinja, "'[INST] ' + message['content'] + ' [/INST]'")) {
    chat.family_ = ChatFamily::mistral;
  } else {
    return make_error(
        "the model's chat template is not one draftwise renders yet (ChatML, Llama 3, "
        "Llama 2, Mistral v0.1); format the prompt yourself and pass it without --chat");
  }
  return chat;
}

ChatTemplate ChatTemplate::of_family(ChatFamily family, std::string bos_text, std::string eos_text) {
  ChatTemplate chat;
  chat.family_ = family;
  chat.bos_text_ = std::move(bos_text);
  chat.eos_text_ = std::move(eos_text);
  return chat;
}

Expected<ChatFamily> parse_chat_family(std::string_view name) {
  for (const ChatFamily family : {ChatFamily::chatml, ChatFamily::llama3, ChatFamily::llama2, ChatFamily::mistral}) {
    if (chat_family_name(family) == name) return family;
  }
  return make_error("unknown chat template '{}' (chatml, llama3, llama2 or mistral)", name);
}

Expected<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                           bool add_generation_prompt) const {
  DW_TRY(check_roles(messages));
  std::string text;
  switch (family_) {
    case ChatFamily::chatml:
      if (messages.front().role != "system" && default_system_) {
        text += "<|im_start|>system\n" + *default_system_ + "<|im_end|>\n";
      }
      for (const ChatMessage& message : messages) {
        text += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) text += "<|im_start|>assistant\n";
      break;
    case ChatFamily::llama3: {
      text += bos_text_;
      size_t first = 0;
      if (llama31_preamble_) {
        // 3.1+: a system block always comes first, the date preamble then the system text.
        std::string_view system;
        if (messages.front().role == "system") {
          system = trim(messages.front().content);
          first = 1;
        }
        text += "<|start_header_id|>system<|end_header_id|>\n\n" + *default_system_ +
                std::string(system) + "<|eot_id|>";
      }
      for (size_t i = first; i < messages.size(); ++i) {
        text += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
                std::string(trim(messages[i].content)) + "<|eot_id|>";
      }
      if (add_generation_prompt) text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
    case ChatFamily::llama2: {
      size_t first = 0;
      std::string system_prefix;
      if (messages.front().role == "system") {
        system_prefix = "<<SYS>>\n" + messages.front().content + "\n<</SYS>>\n\n";
        first = 1;
      }
      for (size_t i = first; i < messages.size(); ++i) {
        const bool user_turn = (i - first) % 2 == 0;
        if ((messages[i].role == "user") != user_turn || messages[i].role == "system") {
          return make_error("Llama 2 chats must alternate user/assistant/user/… after an optional system message");
        }
        if (user_turn) {
          const std::string content = (i == first ? system_prefix : std::string()) + messages[i].content;
          text += bos_text_ + "[INST] " + std::string(trim(content)) + " [/INST]";
        } else {
          text += " " + std::string(trim(messages[i].content)) + " " + eos_text_;
        }
      }
      break;
    }
    case ChatFamily::mistral:
      text += bos_text_;
      for (size_t i = 0; i < messages.size(); ++i) {
        const bool user_turn = i % 2 == 0;
        if (messages[i].role != (user_turn ? "user" : "assistant")) {
          return make_error("this Mistral chat template takes alternating user/assistant messages, starting with user, and no system message");
        }
        text += user_turn ? "[INST] " + messages[i].content + " [/INST]" : messages[i].content + eos_text_;
      }
      break;
  }
  return text;
}

}  // namespace draftwise
