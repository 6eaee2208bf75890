// UTF-8 and the few Unicode properties tokenizers need: letter/number/whitespace classes of
// regex \p{L}, \p{N}, \s, and NFC normalization.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace draftwise::unicode {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

struct DecodedCodePoint {
  char32_t code_point;  // U+FFFD when !valid
  size_t length;        // bytes consumed, >= 1
  bool valid;
};

// Decodes the code point starting at text[position]. An invalid sequence consumes its
// maximal subpart (the longest prefix of a valid sequence, at least one byte), the rule
// Python's bytes.decode(errors="replace") and the Unicode standard (3.9, U+FFFD
// substitution) follow.
DecodedCodePoint decode_utf8(std::string_view text, size_t position);

void append_utf8(std::string& out, char32_t code_point);

bool is_valid_utf8(std::string_view text);

// `text` with every invalid sequence replaced by U+FFFD (see decode_utf8).
std::string sanitize_utf8(std::string_view text);

// Number of bytes at the end of `text` that start a multi-byte sequence which is still
// incomplete but could become valid with more bytes (0 to 3).
size_t incomplete_utf8_suffix(std::string_view text);

// Code points of valid UTF-8 `text` with the byte offset where each starts;
// offsets.back() == text.size().
struct CodePoints {
  std::vector<char32_t> values;
  std::vector<size_t> offsets;  // values.size() + 1 entries
};
CodePoints split_code_points(std::string_view text);

bool is_letter(char32_t code_point);      // \p{L}: Lu Ll Lt Lm Lo
bool is_number(char32_t code_point);      // \p{N}: Nd Nl No
bool is_whitespace(char32_t code_point);  // \s: the White_Space property

// Canonical composition (NFC) of valid UTF-8 text.
std::string nfc(std::string_view text);

// The Unicode version the tables were generated from.
const char* tables_version();

}  // namespace draftwise::unicode
