#include "engine/tokenizer/unicode.h"

#include <algorithm>
#include <cstdint>

#include "engine/tokenizer/unicode_tables.h"

namespace draftwise::unicode {
namespace {

namespace tables = unicode_tables;

bool in_ranges(const tables::CodePointRange* ranges, size_t count, char32_t code_point) {
  const tables::CodePointRange* end = ranges + count;
  const auto* it = std::upper_bound(
      ranges, end, code_point,
      [](char32_t value, const tables::CodePointRange& range) { return value < range.first; });
  return it != ranges && code_point <= (it - 1)->last;
}

uint8_t combining_class(char32_t code_point) {
  if (code_point < 0x300) return 0;
  const auto* begin = tables::kCombiningClasses;
  const auto* end = begin + tables::kCombiningClasses_count;
  const auto* it = std::upper_bound(
      begin, end, code_point,
      [](char32_t value, const tables::CombiningClassRange& range) { return value < range.first; });
  if (it == begin || code_point > (it - 1)->last) return 0;
  return (it - 1)->combining_class;
}

// Hangul syllables decompose and compose algorithmically (Unicode 3.12).
constexpr char32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161,
                   kTrailBase = 0x11A7;
constexpr char32_t kLeadCount = 19, kVowelCount = 21, kTrailCount = 28;
constexpr char32_t kSyllableCount = kLeadCount * kVowelCount * kTrailCount;

void decompose(char32_t code_point, std::u32string& out) {
  if (code_point >= kHangulBase && code_point < kHangulBase + kSyllableCount) {
    const char32_t index = code_point - kHangulBase;
    out.push_back(kLeadBase + index / (kVowelCount * kTrailCount));
    out.push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
    if (index % kTrailCount != 0) out.push_back(kTrailBase + index % kTrailCount);
    return;
  }
  const auto* begin = tables::kDecompositions;
  const auto* end = begin + tables::kDecompositions_count;
  const auto* it = std::lower_bound(
      begin, end, code_point,
      [](const tables::Decomposition& entry, char32_t value) { return entry.code_point < value; });
  if (it == end || it->code_point != code_point) {
    out.push_back(code_point);
    return;
  }
  decompose(it->first, out);
  if (it->second != 0) decompose(it->second, out);
}

// The primary composite of a pair, or 0.
char32_t compose(char32_t first, char32_t second) {
  if (first >= kLeadBase && first < kLeadBase + kLeadCount && second >= kVowelBase &&
      second < kVowelBase + kVowelCount) {
    return kHangulBase + ((first - kLeadBase) * kVowelCount + (second - kVowelBase)) * kTrailCount;
  }
  if (first >= kHangulBase && first < kHangulBase + kSyllableCount &&
      (first - kHangulBase) % kTrailCount == 0 && second > kTrailBase &&
      second < kTrailBase + kTrailCount) {
    return first + (second - kTrailBase);
  }
  const auto* begin = tables::kCompositions;
  const auto* end = begin + tables::kCompositions_count;
  const auto* it = std::lower_bound(
      begin, end, std::pair{first, second},
      [](const tables::Composition& entry, std::pair<char32_t, char32_t> key) {
        return entry.first != key.first ? entry.first < key.first : entry.second < key.second;
      });
  return it != end && it->first == first && it->second == second ? it->composed : 0;
}

}  // namespace

DecodedCodePoint decode_utf8(std::string_view text, size_t position) {
  const auto lead = static_cast<unsigned char>(text[position]);
  if (lead < 0x80) return {lead, 1, true};
  int continuation_bytes;
  char32_t code_point;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    continuation_bytes = 1;
    code_point = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    continuation_bytes = 2;
    code_point = lead & 0x0F;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    continuation_bytes = 3;
    code_point = lead & 0x07;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return {kReplacementCharacter, 1, false};
  }
  for (int k = 1; k <= continuation_bytes; ++k) {
    if (position + k >= text.size()) return {kReplacementCharacter, static_cast<size_t>(k), false};
    const auto byte = static_cast<unsigned char>(text[position + k]);
    if (byte < low || byte > high) return {kReplacementCharacter, static_cast<size_t>(k), false};
    low = 0x80;
    high = 0xBF;
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  return {code_point, static_cast<size_t>(continuation_bytes) + 1, true};
}

void append_utf8(std::string& out, char32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view text) {
  for (size_t position = 0; position < text.size();) {
    const DecodedCodePoint decoded = decode_utf8(text, position);
    if (!decoded.valid) return false;
    position += decoded.length;
  }
  return true;
}

namespace {

// Valid sequences copied, each invalid one replaced by U+FFFD: its maximal subpart at once,
// or one byte at a time.
std::string replace_invalid(std::string_view text, bool one_per_byte) {
  std::string out;
  out.reserve(text.size());
  for (size_t position = 0; position < text.size();) {
    const DecodedCodePoint decoded = decode_utf8(text, position);
    if (decoded.valid) {
      out.append(text.substr(position, decoded.length));
    } else {
      append_utf8(out, kReplacementCharacter);
    }
    position += decoded.valid || !one_per_byte ? decoded.length : 1;
  }
  return out;
}

}  // namespace

std::string sanitize_utf8(std::string_view text) {
  return replace_invalid(text, false);
}

std::string sanitize_utf8_per_byte(std::string_view text) {
  return replace_invalid(text, true);
}

size_t incomplete_utf8_suffix(std::string_view text) {
  const size_t size = text.size();
  for (size_t back = 1; back <= 3 && back <= size; ++back) {
    const size_t position = size - back;
    const auto byte = static_cast<unsigned char>(text[position]);
    if (byte < 0x80) return 0;
    if (byte >= 0xC0) {  // the last lead byte: is it cut off by the end of the text?
      const DecodedCodePoint decoded = decode_utf8(text, position);
      return !decoded.valid && position + decoded.length == size ? back : 0;
    }
  }
  return 0;
}

CodePoints split_code_points(std::string_view text) {
  CodePoints result;
  result.values.reserve(text.size());
  result.offsets.reserve(text.size() + 1);
  for (size_t position = 0; position < text.size();) {
    const DecodedCodePoint decoded = decode_utf8(text, position);
    result.values.push_back(decoded.code_point);
    result.offsets.push_back(position);
    position += decoded.length;
  }
  result.offsets.push_back(text.size());
  return result;
}

bool is_letter(char32_t code_point) {
  if (code_point < 0x80) {
    return (code_point >= 'a' && code_point <= 'z') || (code_point >= 'A' && code_point <= 'Z');
  }
  return in_ranges(tables::kLetters, tables::kLetters_count, code_point);
}

bool is_number(char32_t code_point) {
  if (code_point < 0x80) return code_point >= '0' && code_point <= '9';
  return in_ranges(tables::kNumbers, tables::kNumbers_count, code_point);
}

bool is_numeric(char32_t code_point) {
  if (code_point < 0x80) return code_point >= '0' && code_point <= '9';
  return in_ranges(tables::kNumeric, tables::kNumeric_count, code_point);
}

bool is_whitespace(char32_t code_point) {
  switch (code_point) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return code_point >= 0x2000 && code_point <= 0x200A;
  }
}

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return std::string(text);
  }
  // 1. Full canonical decomposition.
  std::u32string decomposed;
  for (size_t position = 0; position < text.size();) {
    const DecodedCodePoint decoded = decode_utf8(text, position);
    decompose(decoded.code_point, decomposed);
    position += decoded.length;
  }
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < decomposed.size();) {
    if (combining_class(decomposed[i]) == 0) {
      ++i;
      continue;
    }
    size_t run_end = i;
    while (run_end < decomposed.size() && combining_class(decomposed[run_end]) != 0) ++run_end;
    std::stable_sort(
        decomposed.begin() + i, decomposed.begin() + run_end,
        [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = run_end;
  }
  // 3. Canonical composition (UAX #15): a character composes with the last starter unless
  //    a character between them has a combining class >= its own.
  std::u32string composed;
  size_t starter = 0;
  bool have_starter = false;
  int last_class = -1;  // class of the last appended character; -1: none yet
  for (const char32_t c : decomposed) {
    const int c_class = combining_class(c);
    if (have_starter) {
      const bool adjacent = composed.size() == starter + 1;
      const bool unblocked = adjacent || (last_class != 0 && last_class < c_class);
      if (unblocked) {
        if (const char32_t pair = compose(composed[starter], c); pair != 0) {
          composed[starter] = pair;
          continue;
        }
      }
    }
    if (c_class == 0) {
      starter = composed.size();
      have_starter = true;
    }
    composed.push_back(c);
    last_class = c_class;
  }
  std::string out;
  out.reserve(text.size());
  for (const char32_t c : composed) append_utf8(out, c);
  return out;
}

}  // namespace draftwise::unicode
