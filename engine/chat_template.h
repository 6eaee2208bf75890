// Chat formatting from a model's own template metadata (tokenizer.chat_template in GGUF,
// chat_template in tokenizer_config.json).
//
// draftwise does not run Jinja yet. It recognises the template families of the models it
// loads and renders them natively, reproducing what transformers' apply_chat_template
// renders for plain text messages:
//   chatml  <|im_start|>role\n…<|im_end|>\n (SmolLM2, Qwen2), with the template's default
//           system prompt when the conversation has none
//   llama3  <|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|> (Llama 3, and 3.1's
//           "Cutting Knowledge Date" system preamble)
//   llama2  <s>[INST] <<SYS>>\n…\n<</SYS>>\n\n… [/INST] … </s> (Llama 2 chat)
//   mistral <s>[INST] … [/INST]…</s>[INST] … [/INST] (Mistral-7B-Instruct v0.1/v0.2, no
//           system role)
// A template of any other family is refused with an error that says so.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kernels/status.h"

namespace draftwise {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatFamily { chatml, llama3, llama2, mistral };
std::string_view chat_family_name(ChatFamily family);
// "chatml", "llama3", "llama2", "mistral".
Expected<ChatFamily> parse_chat_family(std::string_view name);

class ChatTemplate {
 public:
  // `bos_text` / `eos_text`: the tokenizer's BOS and EOS token text, which templates insert.
  static Expected<ChatTemplate> recognize(std::string_view jinja, std::string bos_text,
                                          std::string eos_text);
  // A family named by the user (serve --chat-template), for a template recognize() refuses.
  static ChatTemplate of_family(ChatFamily family, std::string bos_text, std::string eos_text);

  // The prompt text, to be tokenized without adding special tokens (and with special-token
  // text parsed as tokens). Refuses unknown roles and empty conversations.
  Expected<std::string> render(std::span<const ChatMessage> messages,
                               bool add_generation_prompt) const;

  ChatFamily family() const { return family_; }
  const std::optional<std::string>& default_system_prompt() const { return default_system_; }

 private:
  ChatFamily family_ = ChatFamily::chatml;
  std::optional<std::string> default_system_;
  bool llama31_preamble_ = false;
  std::string bos_text_;
  std::string eos_text_;
};

}  // namespace draftwise
