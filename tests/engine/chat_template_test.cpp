// Chat rendering against what transformers' apply_chat_template rendered for the default
// model (tests/fixtures/models/default_model.json), and the other families' layouts.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

TEST(ChatTemplate, DefaultModelRendersAndTokenizesExactlyAsTransformers) {
  DW_REQUIRE_DEFAULT_MODEL();
  auto checkpoint = Checkpoint::open(testing::default_model_path().string());
  ASSERT_TRUE(checkpoint.ok());
  auto tokenizer = load_tokenizer(*checkpoint);
  ASSERT_TRUE(tokenizer.ok() && tokenizer->has_value());
  const Tokenizer& tok = **tokenizer;
  ASSERT_TRUE(tok.chat_template().has_value());
  auto chat = ChatTemplate::recognize(*tok.chat_template(), "<|im_start|>", "<|im_end|>");
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  EXPECT_EQ(chat->family(), ChatFamily::chatml);
  EXPECT_EQ(chat->default_system_prompt(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const auto fixture = nlohmann::json::parse(testing::read_file(testing::fixtures_dir() / "models/default_model.json"));
  for (const auto& entry : fixture["prompts"]) {
    const std::vector<ChatMessage> messages = {{"user", entry["prompt"].get<std::string>()}};
    const auto text = chat->render(messages, true);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, entry["text"].get<std::string>());
    EXPECT_EQ(tok.encode(*text, EncodeOptions{.add_special = false, .parse_special = true}),
              entry["input_ids"].get<std::vector<int32_t>>());
  }
}

TEST(ChatTemplate, ChatMlWithASystemMessageDropsTheDefault) {
  const std::string jinja =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
      "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
      "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  auto chat = ChatTemplate::recognize(jinja, "", "<|im_end|>");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->default_system_prompt(), "You are a helpful assistant.");
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}};
  EXPECT_EQ(*chat->render(messages, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
}

TEST(ChatTemplate, Llama3LayoutWithAndWithoutThe31Preamble) {
  const std::string llama30 =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
      "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
      "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
      "{{ content }}{% endfor %}";
  auto chat = ChatTemplate::recognize(llama30, "<|begin_of_text|>", "<|eot_id|>");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->family(), ChatFamily::llama3);
  const std::vector<ChatMessage> messages = {{"user", "  Hi there \n"}};
  EXPECT_EQ(*chat->render(messages, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const std::string llama31 = llama30 + "{%- set date_string = \"26 Jul 2024\" %}Cutting Knowledge Date";
  auto chat31 = ChatTemplate::recognize(llama31, "<|begin_of_text|>", "<|eot_id|>");
  ASSERT_TRUE(chat31.ok());
  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(*chat31->render(with_system, false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
            "December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplate, Llama2FoldsTheSystemMessageIntoTheFirstTurn) {
  auto chat = ChatTemplate::recognize("{{ bos_token + '[INST] ' }} <<SYS>>", "<s>", "</s>");
  ASSERT_TRUE(chat.ok());
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  EXPECT_EQ(*chat->render(messages, true),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]");
  const std::vector<ChatMessage> not_alternating = {{"user", "a"}, {"user", "b"}};
  EXPECT_FALSE(chat->render(not_alternating, true).ok());
}

TEST(ChatTemplate, MistralAlternatesInstBlocksWithoutASystemRole) {
  const std::string jinja =
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
      "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
      "{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
  auto chat = ChatTemplate::recognize(jinja, "<s>", "</s>");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->family(), ChatFamily::mistral);
  const std::vector<ChatMessage> messages = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  EXPECT_EQ(*chat->render(messages, true), "<s>[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]");
  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_FALSE(chat->render(with_system, true).ok());
}

TEST(ChatTemplate, UnknownFamiliesRolesAndEmptyChatsAreRefused) {
  const auto unknown = ChatTemplate::recognize("{{ messages[0]['content'] }}", "", "");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("not one draftwise renders"), std::string::npos);
  auto chat = ChatTemplate::recognize("<|im_start|><|im_end|>", "", "");
  ASSERT_TRUE(chat.ok());
  EXPECT_FALSE(chat->render({}, true).ok());
  const std::vector<ChatMessage> tool = {{"tool", "x"}};
  const auto refused = chat->render(tool, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("'tool'"), std::string::npos);
}

}  // namespace
}  // namespace draftwise
