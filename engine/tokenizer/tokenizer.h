// Text <-> token ids for the two BPE families the engine's models use:
//   - byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2): text is split by the family's
//     pre-tokenizer, each piece's bytes are spelled in GPT-2's byte alphabet and merged;
//   - SentencePiece BPE (Llama 2 and the TTT checkpoints): spaces become U+2581 "▁", a
//     "▁" is prepended, characters are merged by piece score, and characters outside the
//     vocabulary fall back to byte tokens <0xXX>.
// Special tokens written in the text are matched first (longest match, left to right) when
// parse_special is set, as Hugging Face `tokenizers` does for added tokens.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "kernels/status.h"

namespace draftwise {

enum class TokenizerModel { byte_level_bpe, sentencepiece_bpe };
std::string_view tokenizer_model_name(TokenizerModel model);

enum class TokenKind : uint8_t {
  normal,
  byte,          // <0xXX> byte-fallback token (SentencePiece)
  control,       // special tokens: <s>, <|im_start|>...
  user_defined,  // added tokens that are not special
  unknown,       // <unk>
  unused,
};

// Where SentencePiece BPE prepends "▁": to every run of text between special tokens
// (Hugging Face's legacy Llama normalizer, and SentencePiece itself when there are no
// special tokens in the text), only to the text at the very start, or never.
enum class DummyPrefix { every_segment, first_segment, none };

// Everything a loader reads from a tokenizer.json or GGUF; Tokenizer::build validates it.
struct TokenizerDefinition {
  TokenizerModel model = TokenizerModel::byte_level_bpe;
  std::vector<std::string> tokens;  // by id, spelled as in the vocabulary
  std::vector<TokenKind> kinds;     // by id
  // Merge order: explicit merges (rank = position), or for SentencePiece without merges,
  // piece scores (higher merges first).
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<float> scores;
  PreTokenizerKind pre_tokenizer = PreTokenizerKind::gpt2;  // byte-level only
  bool nfc = false;               // NFC-normalize text before splitting (Qwen2)
  bool add_prefix_space = false;  // byte-level: prepend " " unless text starts with one
  bool ignore_merges = false;     // byte-level: a piece that is a token is kept whole (Llama 3)
  DummyPrefix dummy_prefix = DummyPrefix::every_segment;  // SentencePiece only
  // SentencePiece through Hugging Face's Metaspace pre-tokenizer: no "▁" is prepended to
  // text that already starts with one (a space), and with metaspace_split each "▁" starts
  // a new word that merges never cross.
  bool metaspace = false;
  bool metaspace_split = false;
  bool byte_fallback = true;  // SentencePiece only
  bool fuse_unk = false;      // consecutive unknown characters become one unknown token
  std::optional<int32_t> bos_id, eos_id, unk_id, pad_id;
  // Byte-level: the token for a byte whose symbol is not in the vocabulary (tokenizer.json's
  // model.unk_token). Unset: such a byte is dropped, as Hugging Face's BPE does without one.
  // GGUF files carry no such setting (their unknown_token_id comes from the tokenizer
  // config, which the BPE model itself ignores), so for them it stays unset.
  std::optional<int32_t> missing_byte_id;
  bool add_bos = false;
  bool add_eos = false;
  std::optional<std::string> chat_template;
  // Added tokens that absorb the whitespace before (lstrip) or after (rstrip) them when
  // matched in text, by id.
  struct AddedTokenStrip {
    bool left = false;
    bool right = false;
  };
  std::unordered_map<int32_t, AddedTokenStrip> added_token_strip;
};

struct EncodeOptions {
  bool add_special = true;    // add BOS/EOS as the tokenizer's config says
  bool parse_special = true;  // match special-token text (e.g. "<|im_end|>") as one token
};

class Tokenizer {
 public:
  // Checks the definition (ids in range, merges name known tokens...) and builds the
  // lookup tables. `source` names the file in errors.
  static Expected<Tokenizer> build(TokenizerDefinition definition, const std::string& source);

  // Any bytes are accepted: invalid UTF-8 is first replaced by U+FFFD per maximal subpart.
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;

  // Concatenated bytes of the tokens as text (invalid UTF-8 replaced by U+FFFD). For
  // SentencePiece the "▁" prepended at encoding is removed from the start.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The bytes one token contributes to decoded text (special tokens: their text, or
  // nothing when skipped). May be part of a UTF-8 character.
  std::string token_bytes(int32_t id, bool skip_special = false) const;

  // Decoded bytes as text, invalid UTF-8 replaced the way the family's reference does:
  // SentencePiece one U+FFFD per bad byte, byte-level BPE one per maximal subpart.
  std::string bytes_to_text(std::string_view bytes) const;

  int32_t vocab_size() const { return static_cast<int32_t>(definition_.tokens.size()); }
  const std::string& token(int32_t id) const { return definition_.tokens[id]; }
  TokenKind kind(int32_t id) const { return definition_.kinds[id]; }
  std::optional<int32_t> find(std::string_view token) const;
  bool is_special(int32_t id) const;

  TokenizerModel model() const { return definition_.model; }
  const TokenizerDefinition& definition() const { return definition_; }
  std::optional<int32_t> bos_id() const { return definition_.bos_id; }
  std::optional<int32_t> eos_id() const { return definition_.eos_id; }
  const std::optional<std::string>& chat_template() const { return definition_.chat_template; }
  size_t merge_count() const { return merges_.size(); }
  // Whether decode() removes one leading space (SentencePiece with a dummy prefix).
  bool strips_leading_space() const;

 private:
  Tokenizer() = default;
  void encode_segment(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;
  void encode_byte_level(std::string_view text, std::vector<int32_t>& out) const;
  void encode_sentencepiece(std::string_view text, bool at_text_start,
                            std::vector<int32_t>& out) const;
  void encode_sentencepiece_word(std::string_view word, std::vector<int32_t>& out) const;
  // Whether every byte has a <0xXX> token (SentencePiece byte fallback).
  bool has_byte_tokens(std::string_view bytes) const;
  // Longest special token spelled at text[position], or nullopt.
  std::optional<int32_t> match_special(std::string_view text, size_t position) const;

  TokenizerDefinition definition_;
  std::unordered_map<std::string, int32_t> ids_;
  BpeMergeTable merges_;
  std::array<int32_t, 256> byte_ids_{};  // byte-level symbol or <0xXX> token per byte; -1: none
  std::array<std::vector<int32_t>, 256> specials_by_first_byte_;  // longest first
};

}  // namespace draftwise
