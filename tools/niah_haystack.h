// The task of the needle-in-a-haystack benchmark (QTTT.md, "What to measure"; tools/niah_bench.h):
// real filler text, a fact (the needle) placed at a chosen depth of it, and a question about
// the fact at the end, rendered as a prompt of a chosen length in tokens whose expected
// continuation is the fact's number. Model-free: the prompt's format and tokenization come in
// as functions, so that the placement can be checked without a model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace draftwise {

struct Needle {
  std::string name;           // "Aurora"
  std::string number;         // "48213": 5 or 6 digits
  std::string fact;           // "The secret passcode of the Aurora vault is 48213."
  std::string question;       // "What is the secret passcode of the Aurora vault? Answer with the number only."
  std::string answer_prefix;  // "The secret passcode of the Aurora vault is": the answer's start,
                              // in the prompt
};

// The needle of trial `trial` under `seed`: a name from a fixed list and a number in
// [10000, 999999]. The same for every length and depth, so that cells compare the same facts.
Needle make_needle(uint64_t seed, int64_t trial);

// The filler in a Spec-Bench question file (data/spec_bench/question_dev.jsonl): its
// "summarization" articles without the leading "Summarize: " and its "rag" passages without
// the question on their last line, in file order, joined by blank lines. Errors name the file.
Expected<std::string> read_niah_filler(const std::string& path);

// How a prompt is written and tokenized.
struct NiahFormat {
  // The prompt text for a user message, ready for the answer: the chat template with the
  // assistant's turn opened, or plain text. The needle's answer prefix is appended to it.
  std::function<Expected<std::string>(const std::string& user_message)> render;
  // Token ids of text, special-token text as those tokens, nothing added.
  std::function<std::vector<int32_t>(std::string_view text)> encode;
};

// The filler cut into words, each after the first with the whitespace before it, and where
// sentences start; the words' token counts, each word encoded alone, place the needle.
class NiahFiller {
 public:
  NiahFiller(std::string_view text, const std::function<std::vector<int32_t>(std::string_view)>& encode);

  int64_t words() const { return static_cast<int64_t>(words_.size()); }
  // Tokens of words [0, k).
  int64_t tokens_before(int64_t k) const { return tokens_before_[static_cast<size_t>(k)]; }
  // Whether a sentence starts at word k (0 ≤ k ≤ words(): the start and the end count).
  bool sentence_start(int64_t k) const { return sentence_start_[static_cast<size_t>(k)]; }
  // The sentence start in [0, words] nearest to a `depth` share of words [0, words)'s tokens
  // (the earlier of two as near).
  int64_t needle_word(int64_t words, double depth) const;
  // Words [0, words) with the needle's fact before word `at` (at ≤ words), and where the
  // fact starts in that text.
  struct Haystack {
    std::string text;
    size_t fact_offset = 0;
  };
  Haystack haystack(int64_t words, int64_t at, std::string_view fact) const;

 private:
  std::vector<std::string> words_;
  std::vector<int64_t> tokens_before_;  // [words + 1]
  std::vector<bool> sentence_start_;    // [words + 1]
};

struct NiahPrompt {
  std::vector<int32_t> tokens;    // the prompt, ending with the answer prefix
  std::vector<int32_t> answer;    // the expected answer: the tokens " <number>" adds to the prompt's
  std::string text;               // the prompt's text
  int64_t haystack_position = 0;  // index in `tokens` of the haystack's first token
  int64_t needle_position = 0;    // index in `tokens` of the needle's first token
  int64_t needle_tokens = 0;
  int64_t filler_tokens = 0;  // the haystack's tokens other than the needle's
  double depth = 0;           // filler tokens before the needle ÷ filler tokens
};

// The prompt of `length` tokens, or the longest shorter one that whole words of the filler
// make (a word's tokens short of `length` at most): the filler's first words with the needle at
// the sentence start nearest to `depth` (in [0, 1]) of their tokens, a blank line, the question,
// rendered, then the answer prefix. Errors: a length too short for the needle, question and
// format alone, or longer than the filler gives.
Expected<NiahPrompt> build_niah_prompt(const NiahFiller& filler, const Needle& needle, int64_t length, double depth,
                                       const NiahFormat& format);

}  // namespace draftwise
