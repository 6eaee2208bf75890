#include "engine/tokenizer/pre_tokenizer.h"

#include <cstdint>

#include "engine/tokenizer/unicode.h"

namespace draftwise {
namespace {

using unicode::is_letter;
using unicode::is_number;
using unicode::is_whitespace;

bool is_other(char32_t c) {
  return !is_whitespace(c) && !is_letter(c) && !is_number(c);
}
bool is_newline(char32_t c) {
  return c == '\r' || c == '\n';
}

// Matches over the code points [begin, end) of one piece. Each function returns the end of
// the match starting at `at`, or `at` when its alternative does not match.
class Matcher {
 public:
  Matcher(const std::vector<char32_t>& text, size_t end) : text_(text), end_(end) {}

  // 's|'t|'re|'ve|'m|'ll|'d, optionally ASCII-case-insensitive ((?i:...) also folds
  // U+017F LATIN SMALL LETTER LONG S to s).
  size_t contraction(size_t at, bool ignore_case) const {
    if (text_[at] != '\'' || at + 1 >= end_) return at;
    const auto lower = [&](size_t i) -> char32_t {
      const char32_t c = text_[i];
      if (!ignore_case) return c;
      if (c >= 'A' && c <= 'Z') return c + ('a' - 'A');
      return c == 0x17F ? U's' : c;
    };
    const char32_t first = lower(at + 1);
    if (first == 's' || first == 't' || first == 'm' || first == 'd') return at + 2;
    if (at + 2 < end_) {
      const char32_t second = lower(at + 2);
      if ((first == 'r' && second == 'e') || (first == 'v' && second == 'e') ||
          (first == 'l' && second == 'l')) {
        return at + 3;
      }
    }
    return at;
  }

  // ` ?X+` for a class X.
  template <typename Class>
  size_t optional_space_run(size_t at, Class in_class) const {
    size_t i = at;
    if (text_[i] == ' ') ++i;
    if (i >= end_ || !in_class(text_[i])) return at;
    return run(i, in_class);
  }

  template <typename Class>
  size_t run(size_t at, Class in_class, size_t max_length = SIZE_MAX) const {
    size_t i = at;
    while (i < end_ && i - at < max_length && in_class(text_[i])) ++i;
    return i;
  }

  // \s+(?!\S): a whitespace run, minus its last character when a non-space follows.
  size_t whitespace_not_before_text(size_t at) const {
    if (!is_whitespace(text_[at])) return at;
    const size_t stop = run(at, is_whitespace);
    if (stop == end_) return stop;
    return stop - at >= 2 ? stop - 1 : at;
  }

  // \s+
  size_t whitespace(size_t at) const { return run(at, is_whitespace); }

  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t word_with_prefix(size_t at) const {
    if (is_letter(text_[at])) return run(at, is_letter);
    const char32_t c = text_[at];
    if (!is_newline(c) && !is_number(c) && at + 1 < end_ && is_letter(text_[at + 1])) {
      return run(at + 1, is_letter);
    }
    return at;
  }

  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  size_t symbols_then_newlines(size_t at) const {
    const size_t stop = optional_space_run(at, is_other);
    return stop == at ? at : run(stop, is_newline);
  }

  // \s*[\r\n]+: the whitespace run up to and including its last newline.
  size_t whitespace_through_newline(size_t at) const {
    if (!is_whitespace(text_[at])) return at;
    const size_t stop = run(at, is_whitespace);
    for (size_t i = stop; i > at; --i) {
      if (is_newline(text_[i - 1])) return i;
    }
    return at;
  }

  size_t gpt2(size_t at) const {
    size_t stop;
    if ((stop = contraction(at, false)) != at) return stop;
    if ((stop = optional_space_run(at, is_letter)) != at) return stop;
    if ((stop = optional_space_run(at, is_number)) != at) return stop;
    if ((stop = optional_space_run(at, is_other)) != at) return stop;
    if ((stop = whitespace_not_before_text(at)) != at) return stop;
    if ((stop = whitespace(at)) != at) return stop;
    return at + 1;  // unreachable: every code point is in one of the classes above
  }

  size_t llama3(size_t at, size_t max_digits) const {
    size_t stop;
    if ((stop = contraction(at, true)) != at) return stop;
    if ((stop = word_with_prefix(at)) != at) return stop;
    if ((stop = run(at, is_number, max_digits)) != at) return stop;
    if ((stop = symbols_then_newlines(at)) != at) return stop;
    if ((stop = whitespace_through_newline(at)) != at) return stop;
    if ((stop = whitespace_not_before_text(at)) != at) return stop;
    if ((stop = whitespace(at)) != at) return stop;
    return at + 1;
  }

 private:
  const std::vector<char32_t>& text_;
  size_t end_;
};

void split_with_regex(PreTokenizerKind kind, const unicode::CodePoints& code_points, size_t begin,
                      size_t end, std::vector<std::pair<size_t, size_t>>& pieces) {
  const Matcher matcher(code_points.values, end);
  for (size_t at = begin; at < end;) {
    const size_t stop = kind == PreTokenizerKind::llama3  ? matcher.llama3(at, 3)
                        : kind == PreTokenizerKind::qwen2 ? matcher.llama3(at, 1)
                                                          : matcher.gpt2(at);
    pieces.emplace_back(code_points.offsets[at], code_points.offsets[stop]);
    at = stop;
  }
}

}  // namespace

std::string_view pre_tokenizer_name(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::gpt2:
      return "gpt2";
    case PreTokenizerKind::llama3:
      return "llama3";
    case PreTokenizerKind::qwen2:
      return "qwen2";
    case PreTokenizerKind::smollm:
      return "smollm";
  }
  return "unknown";
}

std::optional<PreTokenizerKind> pre_tokenizer_from_name(std::string_view name) {
  for (const PreTokenizerKind kind : {PreTokenizerKind::gpt2, PreTokenizerKind::llama3,
                                      PreTokenizerKind::qwen2, PreTokenizerKind::smollm}) {
    if (name == pre_tokenizer_name(kind)) return kind;
  }
  return std::nullopt;
}

std::string_view pre_tokenizer_regex(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::gpt2:
    case PreTokenizerKind::smollm:
      return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    case PreTokenizerKind::llama3:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    case PreTokenizerKind::qwen2:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  }
  return {};
}

void pre_tokenize(PreTokenizerKind kind, std::string_view text,
                  std::vector<std::pair<size_t, size_t>>& pieces) {
  const unicode::CodePoints code_points = unicode::split_code_points(text);
  const size_t count = code_points.values.size();
  if (kind != PreTokenizerKind::smollm) {
    split_with_regex(kind, code_points, 0, count, pieces);
    return;
  }
  // Digits(individual_digits=true): each numeric character (Rust's char::is_numeric) is a
  // piece of its own; the regex then runs within each stretch between them (lookahead
  // stops at the stretch's end).
  size_t stretch = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!unicode::is_numeric(code_points.values[i])) continue;
    split_with_regex(kind, code_points, stretch, i, pieces);
    pieces.emplace_back(code_points.offsets[i], code_points.offsets[i + 1]);
    stretch = i + 1;
  }
  split_with_regex(kind, code_points, stretch, count, pieces);
}

}  // namespace draftwise
