#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <map>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/unicode.h"

namespace draftwise {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 "▁"

// Byte of a SentencePiece byte token "<0xXX>".
std::optional<unsigned char> parse_byte_token(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  unsigned value = 0;
  for (const char c : token.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= static_cast<unsigned>(c - '0');
    } else if (c >= 'A' && c <= 'F') {
      value |= static_cast<unsigned>(c - 'A' + 10);
    } else if (c >= 'a' && c <= 'f') {
      value |= static_cast<unsigned>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
  }
  return static_cast<unsigned char>(value);
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  for (size_t position = 0;;) {
    const size_t found = text.find(from, position);
    if (found == std::string_view::npos) {
      out.append(text.substr(position));
      return out;
    }
    out.append(text.substr(position, found - position));
    out.append(to);
    position = found + from.size();
  }
}

// Start of the run of whitespace that ends at `end` (not before `floor`).
size_t whitespace_run_before(std::string_view text, size_t floor, size_t end) {
  while (end > floor) {
    size_t start = end - 1;
    while (start > floor && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    if (!unicode::is_whitespace(unicode::decode_utf8(text, start).code_point)) break;
    end = start;
  }
  return end;
}

// End of the run of whitespace that starts at `begin`.
size_t whitespace_run_after(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    const unicode::DecodedCodePoint decoded = unicode::decode_utf8(text, begin);
    if (!unicode::is_whitespace(decoded.code_point)) break;
    begin += decoded.length;
  }
  return begin;
}

}  // namespace

std::string_view tokenizer_model_name(TokenizerModel model) {
  return model == TokenizerModel::byte_level_bpe ? "byte-level BPE" : "SentencePiece BPE";
}

Expected<Tokenizer> Tokenizer::build(TokenizerDefinition definition, const std::string& source) {
  const size_t count = definition.tokens.size();
  if (count == 0) return make_error("{}: the vocabulary is empty", source);
  if (count > static_cast<size_t>(INT32_MAX)) {
    return make_error("{}: the vocabulary has {} tokens, too many", source, count);
  }
  if (definition.kinds.size() != count) {
    return make_error("{}: {} token types for {} tokens", source, definition.kinds.size(), count);
  }
  for (const auto& [name, id] : {std::pair{"BOS", definition.bos_id},
                                 {"EOS", definition.eos_id},
                                 {"unknown", definition.unk_id},
                                 {"padding", definition.pad_id},
                                 {"missing-byte", definition.missing_byte_id}}) {
    if (id && (*id < 0 || static_cast<size_t>(*id) >= count)) {
      return make_error("{}: {} token id {} is outside the vocabulary of {}", source, name, *id,
                        count);
    }
  }
  if (definition.add_bos && !definition.bos_id) {
    return make_error("{}: BOS is to be added but no BOS token is defined", source);
  }
  if (definition.add_eos && !definition.eos_id) {
    return make_error("{}: EOS is to be added but no EOS token is defined", source);
  }

  Tokenizer tokenizer;
  tokenizer.ids_.reserve(count);
  for (size_t id = 0; id < count; ++id) {
    // The first of duplicate spellings wins, as in Hugging Face's vocabulary.
    tokenizer.ids_.emplace(definition.tokens[id], static_cast<int32_t>(id));
  }
  tokenizer.byte_ids_.fill(-1);
  if (definition.model == TokenizerModel::byte_level_bpe) {
    for (int byte = 0; byte < 256; ++byte) {
      const auto it =
          tokenizer.ids_.find(byte_level::byte_to_symbol(static_cast<unsigned char>(byte)));
      if (it != tokenizer.ids_.end()) tokenizer.byte_ids_[byte] = it->second;
    }
  } else {
    for (size_t id = 0; id < count; ++id) {
      if (definition.kinds[id] != TokenKind::byte) continue;
      const std::optional<unsigned char> byte = parse_byte_token(definition.tokens[id]);
      if (!byte) {
        return make_error("{}: token {} ('{}') is marked as a byte token but is not <0xXX>", source,
                          id, definition.tokens[id]);
      }
      if (tokenizer.byte_ids_[*byte] < 0) tokenizer.byte_ids_[*byte] = static_cast<int32_t>(id);
    }
  }

  if (!definition.merges.empty()) {
    int32_t rank = 0;
    for (const auto& [left, right] : definition.merges) {
      const auto left_it = tokenizer.ids_.find(left);
      const auto right_it = tokenizer.ids_.find(right);
      const auto result_it = tokenizer.ids_.find(left + right);
      if (left_it == tokenizer.ids_.end() || right_it == tokenizer.ids_.end() ||
          result_it == tokenizer.ids_.end()) {
        return make_error("{}: merge {} ('{}' '{}') names a token that is not in the vocabulary",
                          source, rank, left, right);
      }
      tokenizer.merges_.add(left_it->second, right_it->second, rank++, result_it->second);
    }
  } else if (definition.model == TokenizerModel::sentencepiece_bpe) {
    // SentencePiece merges the adjacent pair whose concatenation is the normal piece of
    // highest score; ties go to the leftmost pair. Rank = position in descending score
    // order, with equal scores sharing a rank.
    if (definition.scores.size() != count) {
      return make_error("{}: SentencePiece vocabulary has {} scores for {} tokens", source,
                        definition.scores.size(), count);
    }
    std::map<float, int32_t, std::greater<float>> rank_of_score;
    for (size_t id = 0; id < count; ++id) {
      if (definition.kinds[id] == TokenKind::normal)
        rank_of_score.emplace(definition.scores[id], 0);
    }
    int32_t rank = 0;
    for (auto& [score, score_rank] : rank_of_score) score_rank = rank++;
    for (size_t id = 0; id < count; ++id) {
      if (definition.kinds[id] != TokenKind::normal) continue;
      const std::string& piece = definition.tokens[id];
      const int32_t piece_rank = rank_of_score.at(definition.scores[id]);
      for (size_t split = 1; split < piece.size(); ++split) {
        const auto left = tokenizer.ids_.find(piece.substr(0, split));
        const auto right = tokenizer.ids_.find(piece.substr(split));
        if (left == tokenizer.ids_.end() || right == tokenizer.ids_.end()) continue;
        if (definition.kinds[left->second] != TokenKind::normal ||
            definition.kinds[right->second] != TokenKind::normal) {
          continue;
        }
        tokenizer.merges_.add(left->second, right->second, piece_rank, static_cast<int32_t>(id));
      }
    }
  }

  for (size_t id = 0; id < count; ++id) {
    const TokenKind kind = definition.kinds[id];
    const std::string& text = definition.tokens[id];
    if (text.empty()) continue;
    if (kind == TokenKind::control || kind == TokenKind::user_defined ||
        kind == TokenKind::unknown) {
      tokenizer.specials_by_first_byte_[static_cast<unsigned char>(text[0])].push_back(
          static_cast<int32_t>(id));
    }
  }
  for (std::vector<int32_t>& candidates : tokenizer.specials_by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(), [&](int32_t a, int32_t b) {
      return definition.tokens[a].size() > definition.tokens[b].size();
    });
  }
  tokenizer.definition_ = std::move(definition);
  return tokenizer;
}

std::optional<int32_t> Tokenizer::find(std::string_view token) const {
  const auto it = ids_.find(std::string(token));
  return it == ids_.end() ? std::nullopt : std::optional<int32_t>(it->second);
}

bool Tokenizer::is_special(int32_t id) const {
  const TokenKind kind = definition_.kinds[id];
  return kind == TokenKind::control || kind == TokenKind::unknown;
}

bool Tokenizer::strips_leading_space() const {
  return definition_.model == TokenizerModel::sentencepiece_bpe &&
         definition_.dummy_prefix != DummyPrefix::none;
}

std::optional<int32_t> Tokenizer::match_special(std::string_view text, size_t position) const {
  for (const int32_t id : specials_by_first_byte_[static_cast<unsigned char>(text[position])]) {
    if (text.substr(position).starts_with(definition_.tokens[id])) return id;
  }
  return std::nullopt;
}

std::vector<int32_t> Tokenizer::encode(std::string_view raw_text,
                                       const EncodeOptions& options) const {
  const std::string sanitized =
      unicode::is_valid_utf8(raw_text) ? std::string() : unicode::sanitize_utf8(raw_text);
  const std::string_view text = sanitized.empty() ? raw_text : std::string_view(sanitized);

  std::vector<int32_t> out;
  if (options.add_special && definition_.add_bos) out.push_back(*definition_.bos_id);
  size_t segment_start = 0;
  if (options.parse_special) {
    for (size_t position = 0; position < text.size();) {
      const std::optional<int32_t> special = match_special(text, position);
      if (!special) {
        ++position;
        continue;
      }
      size_t match_begin = position;
      size_t match_end = position + definition_.tokens[*special].size();
      if (const auto strip = definition_.added_token_strip.find(*special);
          strip != definition_.added_token_strip.end()) {
        if (strip->second.left) {
          match_begin = whitespace_run_before(text, segment_start, match_begin);
        }
        if (strip->second.right) match_end = whitespace_run_after(text, match_end);
      }
      encode_segment(text.substr(segment_start, match_begin - segment_start), segment_start == 0,
                     out);
      out.push_back(*special);
      position = segment_start = match_end;
    }
  }
  encode_segment(text.substr(segment_start), segment_start == 0, out);
  if (options.add_special && definition_.add_eos) out.push_back(*definition_.eos_id);
  return out;
}

void Tokenizer::encode_segment(std::string_view text, bool at_text_start,
                               std::vector<int32_t>& out) const {
  if (text.empty()) return;
  if (definition_.model == TokenizerModel::byte_level_bpe) {
    encode_byte_level(text, out);
  } else {
    encode_sentencepiece(text, at_text_start, out);
  }
}

void Tokenizer::encode_byte_level(std::string_view raw_text, std::vector<int32_t>& out) const {
  std::string text = definition_.nfc ? unicode::nfc(raw_text) : std::string(raw_text);
  if (definition_.add_prefix_space && text[0] != ' ') text.insert(text.begin(), ' ');
  std::vector<std::pair<size_t, size_t>> pieces;
  pre_tokenize(definition_.pre_tokenizer, text, pieces);
  std::vector<int32_t> symbols;
  std::string spelled;
  for (const auto& [begin, end] : pieces) {
    if (definition_.ignore_merges) {
      spelled.clear();
      for (size_t i = begin; i < end; ++i) {
        spelled += byte_level::byte_to_symbol(static_cast<unsigned char>(text[i]));
      }
      if (const auto it = ids_.find(spelled); it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    symbols.clear();
    for (size_t i = begin; i < end; ++i) {
      const int32_t id = byte_ids_[static_cast<unsigned char>(text[i])];
      if (id >= 0) {
        symbols.push_back(id);
      } else if (definition_.missing_byte_id) {
        symbols.push_back(*definition_.missing_byte_id);
      }
    }
    merges_.apply(symbols);
    out.insert(out.end(), symbols.begin(), symbols.end());
  }
}

void Tokenizer::encode_sentencepiece(std::string_view raw_text, bool at_text_start,
                                     std::vector<int32_t>& out) const {
  std::string text = replace_all(raw_text, " ", kSpaceMarker);
  bool prefix = definition_.dummy_prefix == DummyPrefix::every_segment ||
                (definition_.dummy_prefix == DummyPrefix::first_segment && at_text_start);
  if (definition_.metaspace && text.starts_with(kSpaceMarker)) prefix = false;
  if (prefix) text.insert(0, kSpaceMarker);
  if (!definition_.metaspace_split) {
    encode_sentencepiece_word(text, out);
    return;
  }
  // Split before every "▁" (Hugging Face's MergedWithNext): words never merge together.
  size_t word_start = 0;
  for (size_t found = text.find(kSpaceMarker, 1); found != std::string::npos;
       found = text.find(kSpaceMarker, found + kSpaceMarker.size())) {
    encode_sentencepiece_word(std::string_view(text).substr(word_start, found - word_start), out);
    word_start = found;
  }
  encode_sentencepiece_word(std::string_view(text).substr(word_start), out);
}

void Tokenizer::encode_sentencepiece_word(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<int32_t> symbols;
  bool previous_unknown = false;  // the last character became the unknown token
  for (size_t position = 0; position < text.size();) {
    const size_t length = unicode::decode_utf8(text, position).length;
    const auto it = ids_.find(std::string(text.substr(position, length)));
    bool unknown = false;
    if (it != ids_.end() && definition_.kinds[it->second] == TokenKind::normal) {
      symbols.push_back(it->second);
    } else if (definition_.byte_fallback && has_byte_tokens(text.substr(position, length))) {
      for (size_t i = position; i < position + length; ++i) {
        symbols.push_back(byte_ids_[static_cast<unsigned char>(text[i])]);
      }
    } else if (definition_.unk_id) {
      unknown = true;
      if (!(definition_.fuse_unk && previous_unknown)) symbols.push_back(*definition_.unk_id);
    }
    previous_unknown = unknown;
    position += length;
  }
  merges_.apply(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

bool Tokenizer::has_byte_tokens(std::string_view bytes) const {
  return std::all_of(bytes.begin(), bytes.end(),
                     [&](char byte) { return byte_ids_[static_cast<unsigned char>(byte)] >= 0; });
}

std::string Tokenizer::token_bytes(int32_t id, bool skip_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  const TokenKind kind = definition_.kinds[id];
  const std::string& text = definition_.tokens[id];
  if (skip_special && (kind == TokenKind::control || kind == TokenKind::unknown)) return {};
  if (definition_.model == TokenizerModel::sentencepiece_bpe) {
    if (kind == TokenKind::byte) {
      if (const std::optional<unsigned char> byte = parse_byte_token(text)) {
        return std::string(1, static_cast<char>(*byte));
      }
    }
    return replace_all(text, kSpaceMarker, " ");
  }
  // Byte-level: map each character back to its byte; a token with characters outside the
  // byte alphabet (a special token written in plain text) is taken as it is.
  std::string bytes;
  for (size_t position = 0; position < text.size();) {
    const unicode::DecodedCodePoint decoded = unicode::decode_utf8(text, position);
    const std::optional<unsigned char> byte = byte_level::symbol_to_byte(decoded.code_point);
    if (!decoded.valid || !byte) return text;
    bytes.push_back(static_cast<char>(*byte));
    position += decoded.length;
  }
  return bytes;
}

std::string Tokenizer::bytes_to_text(std::string_view bytes) const {
  return definition_.model == TokenizerModel::sentencepiece_bpe
             ? unicode::sanitize_utf8_per_byte(bytes)
             : unicode::sanitize_utf8(bytes);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (const int32_t id : ids) bytes += token_bytes(id, skip_special);
  if (strips_leading_space() && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
  return bytes_to_text(bytes);
}

}  // namespace draftwise
