#include "tests/support/greedy_reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "tests/support/test_paths.h"

namespace draftwise::testing {

void record_greedy_step(const std::vector<float>& logits, GreedyReference& reference) {
  const auto best = std::max_element(logits.begin(), logits.end());
  float second = -INFINITY;
  float largest = 0.0f;
  for (auto it = logits.begin(); it != logits.end(); ++it) {
    if (it != best) second = std::max(second, *it);
    largest = std::max(largest, std::fabs(*it));
  }
  reference.tokens.push_back(static_cast<int32_t>(best - logits.begin()));
  reference.relative_margins.push_back((*best - second) / std::max(largest, 1e-6f));
}

GreedyReference greedy_reference(Decoder& decoder, const std::vector<int32_t>& prompt,
                                 int64_t count) {
  GreedyReference reference;
  const SequenceId sequence = decoder.create_sequence();
  std::vector<float> logits;
  const std::vector<int32_t> last = {static_cast<int32_t>(prompt.size()) - 1};
  EXPECT_TRUE(decoder.forward(std::vector<ForwardRequest>{{sequence, prompt, last}}, logits).ok());
  const std::vector<int32_t> first = {0};
  for (int64_t i = 0; i < count; ++i) {
    record_greedy_step(logits, reference);
    const std::vector<int32_t> next = {reference.tokens.back()};
    EXPECT_TRUE(decoder.forward(std::vector<ForwardRequest>{{sequence, next, first}}, logits).ok());
  }
  decoder.release_sequence(sequence);
  return reference;
}

bool equal_up_to_a_near_tie(const std::vector<int32_t>& tokens, const GreedyReference& reference,
                            bool& identical) {
  size_t first_difference = 0;
  while (first_difference < tokens.size() && first_difference < reference.tokens.size() &&
         tokens[first_difference] == reference.tokens[first_difference]) {
    ++first_difference;
  }
  identical =
      first_difference == reference.tokens.size() && tokens.size() == reference.tokens.size();
  if (identical) return true;
  for (size_t i = 0; i <= first_difference && i < reference.relative_margins.size(); ++i) {
    if (reference.relative_margins[i] < kNearTie) return true;
  }
  return false;
}

std::vector<std::vector<int32_t>> short_dev_prompts(const Tokenizer& tokenizer, size_t count) {
  const auto chat =
      ChatTemplate::recognize(*tokenizer.chat_template(), "", tokenizer.token(*tokenizer.eos_id()));
  EXPECT_TRUE(chat.ok());
  std::ifstream file(source_dir() / "data/spec_bench/question_dev.jsonl");
  std::map<std::string, int> taken;
  std::vector<std::vector<int32_t>> prompts;
  for (std::string line; std::getline(file, line) && prompts.size() < count;) {
    const nlohmann::json question = nlohmann::json::parse(line);
    const std::string category = question["category"];
    if (category == "summarization" || category == "rag" || taken[category]++ >= 2) continue;
    const std::vector<ChatMessage> messages = {{"user", question["turns"][0].get<std::string>()}};
    prompts.push_back(
        tokenizer.encode(*chat->render(messages, true), EncodeOptions{.add_special = false}));
  }
  EXPECT_EQ(prompts.size(), count);
  return prompts;
}

}  // namespace draftwise::testing
