#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/unicode.h"
#include "tests/support/hex.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::from_hex;

nlohmann::json load_cases() {
  std::ifstream in(testing::fixtures_dir() / "unicode" / "cases.json");
  EXPECT_TRUE(in) << "missing tests/fixtures/unicode/cases.json";
  return in ? nlohmann::json::parse(in) : nlohmann::json::object();
}

TEST(Unicode, ReplacementMatchesPythonOnRandomBytes) {
  const nlohmann::json cases = load_cases();
  ASSERT_GT(cases["replace"].size(), 1000u);
  for (const auto& entry : cases["replace"]) {
    const std::string input = from_hex(entry[0]);
    const std::string expected = from_hex(entry[1]);
    ASSERT_EQ(unicode::sanitize_utf8(input), expected) << "input " << entry[0];
    EXPECT_EQ(unicode::is_valid_utf8(input), input == expected) << entry[0];
  }
}

TEST(Unicode, NfcMatchesHuggingFaceTokenizers) {
  const nlohmann::json cases = load_cases();
  ASSERT_GT(cases["nfc"].size(), 2000u);
  for (const auto& entry : cases["nfc"]) {
    ASSERT_EQ(unicode::nfc(from_hex(entry[0])), from_hex(entry[1])) << "input " << entry[0];
  }
}

TEST(Unicode, MaximalSubpartReplacement) {
  // Unicode 15, table 3-8: each maximal subpart of an ill-formed sequence is one U+FFFD.
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(unicode::sanitize_utf8("\xC0\xAF"), fffd + fffd);             // overlong lead
  EXPECT_EQ(unicode::sanitize_utf8("\xE0\x80\xAF"), fffd + fffd + fffd);  // overlong
  EXPECT_EQ(unicode::sanitize_utf8("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(unicode::sanitize_utf8("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // > U+10FFFF
  EXPECT_EQ(unicode::sanitize_utf8("\xF0\x9F\x98"
                                   "a"),
            fffd + "a");  // truncated emoji
  EXPECT_EQ(unicode::sanitize_utf8("a\xE2\x82"), "a" + fffd);
  EXPECT_EQ(unicode::sanitize_utf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Unicode, IncompleteSuffixIsWhatMoreBytesCouldComplete) {
  EXPECT_EQ(unicode::incomplete_utf8_suffix(""), 0u);
  EXPECT_EQ(unicode::incomplete_utf8_suffix("abc"), 0u);
  EXPECT_EQ(unicode::incomplete_utf8_suffix("a\xF0\x9F\x98"), 3u);
  EXPECT_EQ(unicode::incomplete_utf8_suffix("a\xF0\x9F"), 2u);
  EXPECT_EQ(unicode::incomplete_utf8_suffix("a\xE2"), 1u);
  EXPECT_EQ(unicode::incomplete_utf8_suffix("\xF0\x9F\x98\x80"), 0u);  // complete
  EXPECT_EQ(unicode::incomplete_utf8_suffix("a\xED\xA0"), 0u);         // can never be valid
  EXPECT_EQ(unicode::incomplete_utf8_suffix("a\x80"), 0u);             // stray continuation
  EXPECT_EQ(unicode::incomplete_utf8_suffix("\xC3"), 1u);
}

TEST(Unicode, CharacterClasses) {
  EXPECT_TRUE(unicode::is_letter(U'a'));
  EXPECT_TRUE(unicode::is_letter(U'\u00E9'));   // é
  EXPECT_TRUE(unicode::is_letter(U'\u4E2D'));   // 中
  EXPECT_TRUE(unicode::is_letter(U'\u02B0'));   // modifier letter (Lm)
  EXPECT_FALSE(unicode::is_letter(U'\u0301'));  // combining mark (Mn)
  EXPECT_FALSE(unicode::is_letter(U'1'));
  EXPECT_TRUE(unicode::is_number(U'\u0663'));  // Arabic-Indic 3 (Nd)
  EXPECT_TRUE(unicode::is_number(U'\u00B2'));  // superscript 2 (No)
  EXPECT_TRUE(unicode::is_number(U'\u216B'));  // Roman numeral twelve (Nl)
  EXPECT_FALSE(unicode::is_number(U'x'));
  // Each class follows the Unicode version of the tokenizers component it mirrors.
  EXPECT_TRUE(unicode::is_letter(U'\U00031350'));  // CJK Ext H (15.0)
  EXPECT_TRUE(unicode::is_number(U'\U00010D40'));  // Garay digit (16.0): regex knows it
  EXPECT_TRUE(unicode::is_numeric(U'\U00010D40'));
  EXPECT_FALSE(unicode::is_number(U'\U00011DE0'));   // a 17.0 digit: regex does not...
  EXPECT_TRUE(unicode::is_numeric(U'\U00011DE0'));   // ...but Rust's is_numeric does
  EXPECT_FALSE(unicode::is_letter(U'\u088F'));       // a 17.0 letter
  EXPECT_FALSE(unicode::is_numeric(U'\U0001246F'));  // an 18.0 number
  EXPECT_TRUE(unicode::is_whitespace(U'\u3000'));
  EXPECT_TRUE(unicode::is_whitespace(U'\u0085'));
  EXPECT_FALSE(unicode::is_whitespace(U'\u200B'));  // zero-width space is not White_Space
  EXPECT_FALSE(unicode::is_whitespace(U'\u001C'));
}

TEST(Unicode, SplitCodePointsKeepsOffsets) {
  const unicode::CodePoints points = unicode::split_code_points("a\u00E9\U0001F600");
  EXPECT_EQ(points.values, (std::vector<char32_t>{U'a', U'\u00E9', U'\U0001F600'}));
  EXPECT_EQ(points.offsets, (std::vector<size_t>{0, 1, 3, 7}));
}

}  // namespace
}  // namespace draftwise
