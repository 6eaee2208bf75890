// Pre-tokenizers of the byte-level BPE families: the split of text into pieces that BPE
// then encodes one by one. Each family's regex is matched by hand, alternative by
// alternative in the regex's order (leftmost-first, as the Oniguruma engine of Hugging Face
// `tokenizers` matches), so no regex engine is needed:
//
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  as llama3 with \p{N} in place of \p{N}{1,3}
//   smollm: every numeric character split off on its own first (Digits with
//           individual_digits), then gpt2 within each remaining piece
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace draftwise {

enum class PreTokenizerKind { gpt2, llama3, qwen2, smollm };

std::string_view pre_tokenizer_name(PreTokenizerKind kind);
std::optional<PreTokenizerKind> pre_tokenizer_from_name(std::string_view name);

// The regex of a family, as written in a tokenizer.json Split pre-tokenizer.
std::string_view pre_tokenizer_regex(PreTokenizerKind kind);

// Splits valid UTF-8 `text` into pieces, appended to `pieces` as [begin, end) byte ranges
// that cover the text in order.
void pre_tokenize(PreTokenizerKind kind, std::string_view text,
                  std::vector<std::pair<size_t, size_t>>& pieces);

}  // namespace draftwise
