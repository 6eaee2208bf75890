// Token ids on the fixture corpus (tests/fixtures/tokenizer/corpus.jsonl: prose in many
// languages, code, whitespace runs, digits, emoji, special tokens inside text, invalid
// UTF-8) equal the reference tokenizers' ids, made by tools/make_tokenizer_fixtures.py.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "engine/tokenizer/unicode.h"
#include "kernels/mapped_file.h"
#include "target/gguf_reader.h"
#include "tests/support/hex.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using Json = nlohmann::json;
using testing::from_hex;

std::filesystem::path tokenizer_fixtures() {
  return testing::fixtures_dir() / "tokenizer";
}

struct CorpusEntry {
  std::string name;
  std::string bytes;
};

const std::vector<CorpusEntry>& corpus() {
  static const std::vector<CorpusEntry> entries = [] {
    std::vector<CorpusEntry> loaded;
    std::ifstream in(tokenizer_fixtures() / "corpus.jsonl");
    for (std::string line; std::getline(in, line);) {
      const Json entry = Json::parse(line);
      loaded.push_back({entry["name"], from_hex(entry["hex"])});
    }
    return loaded;
  }();
  return entries;
}

// Expected rows by corpus position; each row's name must match the corpus entry's.
std::vector<Json> expected_rows(const std::string& file) {
  std::vector<Json> rows;
  std::ifstream in(tokenizer_fixtures() / file);
  for (std::string line; std::getline(in, line);) rows.push_back(Json::parse(line));
  EXPECT_EQ(rows.size(), corpus().size()) << file;
  return rows;
}

// `ids` decoded one token at a time; every piece must be whole UTF-8.
std::string stream_decode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  StreamDecoder stream(tokenizer, false, true);
  std::string streamed;
  for (const int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_TRUE(unicode::is_valid_utf8(piece));
    streamed += piece;
  }
  return streamed + stream.finish();
}

// Ids of every corpus entry equal `key` of the expected rows; returns the mismatches.
int compare_ids(const Tokenizer& tokenizer, const std::vector<Json>& rows, const char* key,
                const EncodeOptions& options) {
  int mismatches = 0;
  for (size_t i = 0; i < rows.size() && i < corpus().size(); ++i) {
    const CorpusEntry& entry = corpus()[i];
    EXPECT_EQ(rows[i]["name"], entry.name);
    const std::vector<int32_t> expected = rows[i][key].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = tokenizer.encode(entry.bytes, options);
    if (ids != expected) {
      ++mismatches;
      ADD_FAILURE() << entry.name << ": ids differ from the reference\n  got      "
                    << Json(ids).dump() << "\n  expected " << Json(expected).dump();
    }
  }
  return mismatches;
}

// The corpus has enough of each kind of text to mean something.
TEST(TokenizerCorpus, CorpusCoversTheRequiredKinds) {
  ASSERT_GE(corpus().size(), 300u);
  std::map<std::string, int> categories;
  std::ifstream in(tokenizer_fixtures() / "corpus.jsonl");
  for (std::string line; std::getline(in, line);) ++categories[Json::parse(line)["category"]];
  for (const char* category :
       {"prose", "code", "whitespace", "digits", "emoji", "special", "invalid_utf8"}) {
    EXPECT_GE(categories[category], 20) << category;
  }
  EXPECT_GE(categories["unicode_versions"], 12);
  int invalid = 0;
  for (const CorpusEntry& entry : corpus()) invalid += !unicode::is_valid_utf8(entry.bytes);
  EXPECT_GE(invalid, 20);
}

TEST(TokenizerCorpus, DefaultModelMatchesHuggingFaceTokenizers) {
  DW_REQUIRE_DEFAULT_MODEL();
  const Expected<GgufFile> gguf = GgufFile::open(testing::default_model_path().string());
  ASSERT_TRUE(gguf.ok()) << gguf.error().message;
  const Expected<Tokenizer> tokenizer = tokenizer_from_gguf(*gguf);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  const std::vector<Json> rows = expected_rows("expected_smollm2.jsonl");
  EXPECT_EQ(compare_ids(*tokenizer, rows, "ids", {.add_special = true, .parse_special = true}), 0);
  // Decoding the reference ids gives the reference text, at once and streamed.
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::vector<int32_t> ids = rows[i]["ids"].get<std::vector<int32_t>>();
    const std::string expected = from_hex(rows[i]["decoded_hex"]);
    EXPECT_EQ(tokenizer->decode(ids), expected) << corpus()[i].name;
    EXPECT_EQ(stream_decode(*tokenizer, ids), expected) << corpus()[i].name;
  }
}

void check_sentencepiece(const Tokenizer& tokenizer) {
  const std::vector<Json> rows = expected_rows("expected_llama2_sp.jsonl");
  // SentencePiece itself never reads special tokens out of text...
  EXPECT_EQ(compare_ids(tokenizer, rows, "ids", {.add_special = false, .parse_special = false}), 0);
  // ...Hugging Face does: the text between them is encoded piece by piece.
  EXPECT_EQ(compare_ids(tokenizer, rows, "ids_parse_special",
                        {.add_special = false, .parse_special = true}),
            0);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::vector<int32_t> ids = rows[i]["ids"].get<std::vector<int32_t>>();
    const std::string expected = from_hex(rows[i]["decoded_hex"]);
    EXPECT_EQ(tokenizer.decode(ids), expected) << corpus()[i].name;
    EXPECT_EQ(stream_decode(tokenizer, ids), expected) << corpus()[i].name;
  }
  // BOS is added when asked for, as the tokenizer config says.
  const std::vector<int32_t> with_bos = tokenizer.encode("hello", {.add_special = true});
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos.front(), 1);
}

TEST(TokenizerCorpus, SentencePieceFromTokenizerJsonMatchesSentencePiece) {
  const Expected<Tokenizer> tokenizer =
      tokenizer_from_hf_folder((tokenizer_fixtures() / "llama2_sp").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  EXPECT_EQ(tokenizer->model(), TokenizerModel::sentencepiece_bpe);
  check_sentencepiece(*tokenizer);
}

// The same vocabulary stated other ways in tokenizer.json (Metaspace pre-tokenizer with
// each prepend scheme and split; added tokens with lstrip/rstrip), against Hugging Face.
TEST(TokenizerCorpus, SentencePieceVariantsMatchHuggingFaceTokenizers) {
  std::ifstream variants_in(tokenizer_fixtures() / "llama2_sp_variants.json");
  const Json variants = Json::parse(variants_in);
  const Expected<std::string> base =
      read_text_file((tokenizer_fixtures() / "llama2_sp" / "tokenizer.json").string());
  ASSERT_TRUE(base.ok());
  const std::vector<Json> rows = expected_rows("expected_llama2_sp_variants.jsonl");
  ASSERT_EQ(variants.size(), 4u);
  for (const auto& [variant, spec] : variants.items()) {
    SCOPED_TRACE(variant);
    Json tokenizer_json = Json::parse(*base);
    if (spec["normalizer"] != "legacy") tokenizer_json["normalizer"] = spec["normalizer"];
    tokenizer_json["pre_tokenizer"] = spec["pre_tokenizer"];
    for (Json& token : tokenizer_json["added_tokens"]) {
      const auto strip = spec["strip"].find(token["content"].get<std::string>());
      if (strip == spec["strip"].end()) continue;
      token["lstrip"] = (*strip)[0];
      token["rstrip"] = (*strip)[1];
    }
    const Expected<Tokenizer> tokenizer =
        parse_tokenizer_json(tokenizer_json.dump(), std::nullopt, variant + ".json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
    EXPECT_EQ(compare_ids(*tokenizer, rows, variant.c_str(), {.add_special = false}), 0);
  }
}

// Byte runs that are not valid UTF-8 decode as SentencePiece decodes them: one U+FFFD for
// each byte that starts no valid character.
TEST(TokenizerCorpus, SentencePieceDecodeMatchesSentencePiece) {
  const Expected<Tokenizer> tokenizer =
      tokenizer_from_hf_folder((tokenizer_fixtures() / "llama2_sp").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  std::ifstream in(tokenizer_fixtures() / "expected_llama2_sp_decode.jsonl");
  int cases = 0;
  for (std::string line; std::getline(in, line); ++cases) {
    const Json row = Json::parse(line);
    const std::vector<int32_t> ids = row["ids"].get<std::vector<int32_t>>();
    const std::string expected = from_hex(row["decoded_hex"]);
    EXPECT_EQ(tokenizer->decode(ids), expected) << row["ids"].dump();
    EXPECT_EQ(stream_decode(*tokenizer, ids), expected) << row["ids"].dump();
  }
  EXPECT_EQ(cases, 300);
}

TEST(TokenizerCorpus, SentencePieceFromGgufMatchesSentencePiece) {
  const Expected<GgufFile> gguf =
      GgufFile::open((tokenizer_fixtures() / "llama2_sp.gguf").string());
  ASSERT_TRUE(gguf.ok()) << gguf.error().message;
  const Expected<Tokenizer> tokenizer = tokenizer_from_gguf(*gguf);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  EXPECT_EQ(tokenizer->model(), TokenizerModel::sentencepiece_bpe);
  check_sentencepiece(*tokenizer);
}

// One small byte-level vocabulary read with each family's pre-tokenizer (and Qwen2's NFC)
// as a tokenizer.json would state it.
TEST(TokenizerCorpus, ByteLevelFamiliesMatchHuggingFaceTokenizers) {
  std::ifstream families_in(tokenizer_fixtures() / "bytelevel_families.json");
  const Json families = Json::parse(families_in);
  const Expected<std::string> base =
      read_text_file((tokenizer_fixtures() / "bytelevel_small" / "tokenizer.json").string());
  ASSERT_TRUE(base.ok());
  ASSERT_EQ(families.size(), 5u);
  for (const auto& [family, spec] : families.items()) {
    SCOPED_TRACE(family);
    Json tokenizer_json = Json::parse(*base);
    tokenizer_json["normalizer"] = spec["normalizer"];
    tokenizer_json["pre_tokenizer"] = spec["pre_tokenizer"];
    tokenizer_json["model"]["ignore_merges"] = spec["ignore_merges"];
    const Expected<Tokenizer> tokenizer =
        parse_tokenizer_json(tokenizer_json.dump(), std::nullopt, family + ".json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
    const std::vector<Json> rows = expected_rows("expected_bytelevel_" + family + ".jsonl");
    EXPECT_EQ(compare_ids(*tokenizer, rows, "ids", {}), 0);
  }
}

}  // namespace
}  // namespace draftwise
