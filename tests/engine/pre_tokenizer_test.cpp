// Splits of each byte-level family, as Hugging Face `tokenizers` gives them for the same
// text (its pre_tokenize_str output, with GPT-2's byte alphabet mapped back to text).
#include <gtest/gtest.h>

#include "engine/tokenizer/pre_tokenizer.h"

namespace draftwise {
namespace {

std::vector<std::string> split(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> pieces;
  pre_tokenize(kind, text, pieces);
  std::vector<std::string> out;
  size_t expected_begin = 0;
  for (const auto& [begin, end] : pieces) {
    EXPECT_EQ(begin, expected_begin) << "pieces must cover the text in order";
    EXPECT_LT(begin, end);
    out.emplace_back(text.substr(begin, end - begin));
    expected_begin = end;
  }
  EXPECT_EQ(expected_begin, text.size());
  return out;
}

using Pieces = std::vector<std::string>;

const char kMixed[] = "Hello  world\n\n  it's 12345 \u0663\u0664 (x) I'M ok!!\t\n";
const char kQuotes[] = "abc123def   \"quoted\"\r\n\r\n  end ";
const char kContractions[] = "we'RE done, they'LL go; \u017f'\u017f";

TEST(PreTokenizer, Gpt2) {
  EXPECT_EQ(split(PreTokenizerKind::gpt2, kMixed),
            (Pieces{"Hello", " ", " world", "\n\n ", " it", "'s", " 12345", " \u0663\u0664", " (",
                    "x", ")", " I", "'", "M", " ok", "!!", "\t\n"}));
  EXPECT_EQ(split(PreTokenizerKind::gpt2, kQuotes),
            (Pieces{"abc", "123", "def", "  ", " \"", "quoted", "\"", "\r\n\r\n ", " end", " "}));
  EXPECT_EQ(split(PreTokenizerKind::gpt2, kContractions),
            (Pieces{"we", "'", "RE", " done", ",", " they", "'", "LL", " go", ";", " \u017f", "'",
                    "\u017f"}));
}

TEST(PreTokenizer, Llama3) {
  EXPECT_EQ(
      split(PreTokenizerKind::llama3, kMixed),
      (Pieces{"Hello",        " ",  " world", "\n\n", " ",  " it", "'s",  " ",  "123", "45", " ",
              "\u0663\u0664", " (", "x",      ")",    " I", "'M",  " ok", "!!", "\t\n"}));
  EXPECT_EQ(split(PreTokenizerKind::llama3, kQuotes),
            (Pieces{"abc", "123", "def", "  ", " \"", "quoted", "\"\r\n\r\n", " ", " end", " "}));
  EXPECT_EQ(split(PreTokenizerKind::llama3, kContractions),
            (Pieces{"we", "'RE", " done", ",", " they", "'LL", " go", ";", " \u017f", "'\u017f"}));
}

TEST(PreTokenizer, Qwen2) {
  EXPECT_EQ(split(PreTokenizerKind::qwen2, kMixed),
            (Pieces{"Hello", " ", " world", "\n\n", " ",  " it", "'s",     " ",
                    "1",     "2", "3",      "4",    "5",  " ",   "\u0663", "\u0664",
                    " (",    "x", ")",      " I",   "'M", " ok", "!!",     "\t\n"}));
  EXPECT_EQ(
      split(PreTokenizerKind::qwen2, kQuotes),
      (Pieces{"abc", "1", "2", "3", "def", "  ", " \"", "quoted", "\"\r\n\r\n", " ", " end", " "}));
}

TEST(PreTokenizer, SmolLMSplitsDigitsFirst) {
  EXPECT_EQ(split(PreTokenizerKind::smollm, kMixed),
            (Pieces{"Hello", " ", " world", "\n\n ", " it", "'s",     " ",      "1",
                    "2",     "3", "4",      "5",     " ",   "\u0663", "\u0664", " (",
                    "x",     ")", " I",     "'",     "M",   " ok",    "!!",     "\t\n"}));
  EXPECT_EQ(
      split(PreTokenizerKind::smollm, kQuotes),
      (Pieces{"abc", "1", "2", "3", "def", "  ", " \"", "quoted", "\"", "\r\n\r\n ", " end", " "}));
}

TEST(PreTokenizer, EmptyTextHasNoPieces) {
  for (const PreTokenizerKind kind : {PreTokenizerKind::gpt2, PreTokenizerKind::llama3,
                                      PreTokenizerKind::qwen2, PreTokenizerKind::smollm}) {
    EXPECT_TRUE(split(kind, "").empty());
  }
}

TEST(PreTokenizer, NamesRoundTrip) {
  for (const PreTokenizerKind kind : {PreTokenizerKind::gpt2, PreTokenizerKind::llama3,
                                      PreTokenizerKind::qwen2, PreTokenizerKind::smollm}) {
    EXPECT_EQ(pre_tokenizer_from_name(pre_tokenizer_name(kind)), kind);
  }
  EXPECT_FALSE(pre_tokenizer_from_name("bert").has_value());
}

}  // namespace
}  // namespace draftwise
