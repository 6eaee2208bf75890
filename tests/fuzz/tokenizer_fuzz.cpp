// libFuzzer harness for the tokenizer and the Hugging Face folder files. The first byte
// picks what the rest is (by its value modulo 3):
//   0: text, encoded by the fixture tokenizers (SentencePiece from tokenizer.json and
//         from GGUF, byte-level BPE of every family) with these properties checked:
//         ids are in the vocabulary; decode(encode(text)) gives the text back (with invalid
//         UTF-8 replaced, and for SentencePiece "▁" read as a space), except where a
//         normalizer changes it; streaming decode equals decode and emits only valid UTF-8;
//   1: a tokenizer.json document, which must load or be refused with an error;
//   2: a config.json document, likewise.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "engine/tokenizer/unicode.h"
#include "kernels/mapped_file.h"
#include "target/gguf_reader.h"
#include "target/model_config.h"

namespace {

using namespace draftwise;

void require(bool condition) {
  if (!condition) __builtin_trap();
}

struct Fixtures {
  std::vector<Tokenizer> lossless;  // decode(encode(x)) == x
  std::vector<Tokenizer> normalizing;

  Fixtures() {
    const std::string root = std::string(DRAFTWISE_SOURCE_DIR) + "/tests/fixtures/tokenizer/";
    lossless.push_back(std::move(tokenizer_from_hf_folder(root + "llama2_sp")).value());
    const Expected<GgufFile> gguf = GgufFile::open(root + "llama2_sp.gguf");
    lossless.push_back(std::move(tokenizer_from_gguf(*gguf)).value());
    const std::string base = read_text_file(root + "bytelevel_small/tokenizer.json").value();
    const nlohmann::json families =
        nlohmann::json::parse(read_text_file(root + "bytelevel_families.json").value());
    for (const auto& [family, spec] : families.items()) {
      nlohmann::json json = nlohmann::json::parse(base);
      json["normalizer"] = spec["normalizer"];
      json["pre_tokenizer"] = spec["pre_tokenizer"];
      json["model"]["ignore_merges"] = spec["ignore_merges"];
      Tokenizer tokenizer =
          std::move(parse_tokenizer_json(json.dump(), std::nullopt, family)).value();
      (spec["normalizer"].is_null() ? lossless : normalizing).push_back(std::move(tokenizer));
    }
  }
};

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

void check_text(const Tokenizer& tokenizer, const std::string& text, bool lossless) {
  // SentencePiece spells spaces "▁", so a "▁" in the text comes back as a space (as it
  // does from SentencePiece itself).
  const std::string sanitized = unicode::sanitize_utf8(text);
  const std::string expected = tokenizer.model() == TokenizerModel::sentencepiece_bpe
                                   ? replace_all(sanitized, "\xE2\x96\x81", " ")
                                   : sanitized;
  for (const bool parse_special : {false, true}) {
    const std::vector<int32_t> ids =
        tokenizer.encode(text, {.add_special = false, .parse_special = parse_special});
    for (const int32_t id : ids) require(id >= 0 && id < tokenizer.vocab_size());
    const std::string decoded = tokenizer.decode(ids);
    require(unicode::is_valid_utf8(decoded));
    // SentencePiece re-adds "▁" after each special token it parses, so only the
    // literal reading round-trips there.
    const bool round_trips =
        lossless && (!parse_special || tokenizer.model() == TokenizerModel::byte_level_bpe);
    if (round_trips) require(decoded == expected);
    StreamDecoder stream(tokenizer, false, true);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string piece = stream.push(id);
      require(unicode::is_valid_utf8(piece));
      streamed += piece;
    }
    require(streamed + stream.finish() == decoded);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixtures fixtures;
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 3 == 0) {
    for (const Tokenizer& tokenizer : fixtures.lossless) check_text(tokenizer, rest, true);
    for (const Tokenizer& tokenizer : fixtures.normalizing) check_text(tokenizer, rest, false);
    return 0;
  }
  if (data[0] % 3 == 2) {
    (void)parse_hf_config(rest, "fuzz/config.json");
    return 0;
  }
  const Expected<Tokenizer> tokenizer = parse_tokenizer_json(rest, std::nullopt, "fuzz.json");
  if (tokenizer.ok()) {
    const std::vector<int32_t> ids = tokenizer->encode("Hello  world\n\t\xC3\xA9 <s> 123");
    for (const int32_t id : ids) require(id >= 0 && id < tokenizer->vocab_size());
    (void)tokenizer->decode(ids);
  }
  return 0;
}
