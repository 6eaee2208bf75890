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

// `text` with every byte that does not begin a valid sequence replaced by U+FFFD, one per
// byte: SentencePiece's rule when it decodes byte-fallback tokens.
std::string sanitize_utf8_per_byte(std::string_view text);

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

// Character classes as Hugging Face `tokenizers` sees them. Each follows the Unicode version
// of the component it mirrors (tools/unicode_versions.py).
bool is_letter(char32_t code_point);      // regex \p{L}: Lu Ll Lt Lm Lo (Oniguruma, Unicode 16.0)
bool is_number(char32_t code_point);      // regex \p{N}: Nd Nl No (Oniguruma, Unicode 16.0)
bool is_numeric(char32_t code_point);     // Rust char::is_numeric, the Digits rule (Unicode 17.0)
bool is_whitespace(char32_t code_point);  // \s and char::is_whitespace: White_Space

// Canonical composition (NFC) of valid UTF-8 text (Unicode 15.1, as tokenizers' normalizer).
std::string nfc(std::string_view text);

}  // namespace draftwise::unicode
