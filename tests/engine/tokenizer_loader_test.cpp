// Tokenizer files that are malformed or outside what the engine supports give an error
// naming the file and the problem.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer_loader.h"
#include "kernels/mapped_file.h"
#include "target/gguf_reader.h"
#include "tests/support/gguf_builder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using Json = nlohmann::json;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

Json small_bytelevel() {
  const Expected<std::string> text = read_text_file(
      (testing::fixtures_dir() / "tokenizer" / "bytelevel_small" / "tokenizer.json").string());
  EXPECT_TRUE(text.ok());
  return Json::parse(*text);
}

std::string error_of(const std::string& tokenizer_json,
                     std::optional<std::string> config = std::nullopt) {
  const Expected<Tokenizer> tokenizer =
      parse_tokenizer_json(tokenizer_json, config, "dir/tokenizer.json");
  EXPECT_FALSE(tokenizer.ok()) << "accepted a tokenizer it should refuse";
  if (tokenizer.ok()) return {};
  EXPECT_EQ(tokenizer.error().message.find('\n'), std::string::npos);
  return tokenizer.error().message;
}

TEST(TokenizerJson, RefusesMalformedAndNonUtf8Json) {
  EXPECT_TRUE(contains(error_of("{\"model\": "), "dir/tokenizer.json: not valid JSON"));
  EXPECT_TRUE(contains(error_of("{\"model\": {\"vocab\": {\"\xff\": 0}}}"), "not valid JSON"));
  EXPECT_TRUE(contains(error_of("[]"), "not a JSON object"));
  EXPECT_TRUE(contains(error_of("{}"), "missing 'model' object"));
}

TEST(TokenizerJson, RefusesUnsupportedModelsAndPipelines) {
  Json unigram = small_bytelevel();
  unigram["model"]["type"] = "Unigram";
  EXPECT_TRUE(contains(error_of(unigram.dump()), "tokenizer model 'Unigram' is not supported"));

  Json regex = small_bytelevel();
  regex["pre_tokenizer"] = {{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Split"},
                               {"pattern", {{"Regex", "\\w+"}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                              {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  EXPECT_TRUE(contains(error_of(regex.dump()), "regex is not one of the supported families"));

  Json bert = small_bytelevel();
  bert["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  EXPECT_TRUE(contains(error_of(bert.dump()), "pre_tokenizer 'BertPreTokenizer' is not supported"));

  Json lowercase = small_bytelevel();
  lowercase["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_TRUE(contains(error_of(lowercase.dump()), "normalizer 'Lowercase' is not supported"));

  Json dropout = small_bytelevel();
  dropout["model"]["dropout"] = 0.1;
  EXPECT_TRUE(contains(error_of(dropout.dump()), "dropout is not supported"));

  Json nothing = small_bytelevel();
  nothing["pre_tokenizer"] = nullptr;
  EXPECT_TRUE(contains(error_of(nothing.dump()), "cannot tell the tokenizer family"));
}

Json small_sentencepiece() {
  const Expected<std::string> text = read_text_file(
      (testing::fixtures_dir() / "tokenizer" / "llama2_sp" / "tokenizer.json").string());
  EXPECT_TRUE(text.ok());
  return Json::parse(*text);
}

// Settings the engine does not implement are refused rather than ignored (found in review:
// ignoring them silently changed the ids).
TEST(TokenizerJson, RefusesSettingsItWouldOtherwiseIgnore) {
  Json single_word = small_sentencepiece();
  single_word["added_tokens"][1]["single_word"] = true;
  EXPECT_TRUE(contains(error_of(single_word.dump()), "added token '<s>' has single_word"));

  Json normalized = small_sentencepiece();
  normalized["added_tokens"][2]["normalized"] = true;
  EXPECT_TRUE(
      contains(error_of(normalized.dump()), "added token '</s>' is matched after normalization"));

  Json mixed = small_sentencepiece();
  mixed["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", true}};
  EXPECT_TRUE(contains(error_of(mixed.dump()), "together with SentencePiece"));

  Json doubled = small_sentencepiece();
  doubled["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
  EXPECT_TRUE(contains(error_of(doubled.dump()), "both a Prepend normalizer and a Metaspace"));

  Json prepend = small_bytelevel();
  prepend["normalizer"] = {{"type", "Prepend"}, {"prepend", "\u2581"}};
  EXPECT_TRUE(contains(error_of(prepend.dump()), "Prepend or Replace normalizer with byte-level"));
}

TEST(TokenizerJson, RefusesInconsistentVocabularies) {
  Json merge = small_bytelevel();
  merge["model"]["merges"].push_back("zzzq zzzr");
  EXPECT_TRUE(contains(error_of(merge.dump()), "names a token that is not in the vocabulary"));

  Json bad_merge = small_bytelevel();
  bad_merge["model"]["merges"].push_back("one");
  EXPECT_TRUE(contains(error_of(bad_merge.dump()), "merge 'one' is not two tokens"));

  Json negative = small_bytelevel();
  negative["model"]["vocab"]["Ġnew"] = -4;
  EXPECT_TRUE(contains(error_of(negative.dump()), "'Ġnew' is not a valid token id"));

  Json clash = small_bytelevel();
  clash["model"]["vocab"]["Ġclash"] = 5;
  EXPECT_TRUE(contains(error_of(clash.dump()), "vocabulary id 5 is given to both"));

  Json sparse = small_bytelevel();
  sparse["added_tokens"].push_back({{"id", 2000000000}, {"content", "<far>"}, {"special", true}});
  EXPECT_TRUE(contains(error_of(sparse.dump()), "far beyond"));

  Json unknown_unk = small_bytelevel();
  unknown_unk["model"]["unk_token"] = "<nope>";
  EXPECT_TRUE(
      contains(error_of(unknown_unk.dump()), "unk_token '<nope>' is not in the vocabulary"));
}

TEST(TokenizerJson, RefusesBadTokenizerConfig) {
  const std::string tokenizer = small_bytelevel().dump();
  EXPECT_TRUE(contains(error_of(tokenizer, "{\"bos_token\": \"<nope>\"}"),
                       "dir/tokenizer_config.json: bos_token '<nope>' is not in the vocabulary"));
  EXPECT_TRUE(
      contains(error_of(tokenizer, "{\"add_bos_token\": \"yes\"}"), "must be true or false"));
  EXPECT_TRUE(contains(error_of(tokenizer, "{\"add_bos_token\": true}"),
                       "BOS is to be added but no BOS token is defined"));
  EXPECT_TRUE(contains(error_of(tokenizer, "{"), "dir/tokenizer_config.json: not valid JSON"));
}

TEST(TokenizerJson, ReadsChatTemplateAndSpecialTokensFromConfig) {
  const Expected<Tokenizer> tokenizer =
      parse_tokenizer_json(small_bytelevel().dump(),
                           R"({"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>",
          "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ messages }}"}]})",
                           "t.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  EXPECT_EQ(tokenizer->token(*tokenizer->bos_id()), "<|im_start|>");
  EXPECT_EQ(tokenizer->token(*tokenizer->eos_id()), "<|im_end|>");
  EXPECT_EQ(tokenizer->chat_template(), "{{ messages }}");
  EXPECT_FALSE(tokenizer->definition().add_bos);
}

TEST(TokenizerJson, MissingFilesAreNamed) {
  testing::ScratchDir dir;
  const Expected<Tokenizer> tokenizer = tokenizer_from_hf_folder(dir.path().string());
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_TRUE(contains(tokenizer.error().message, "tokenizer.json: cannot open"));
}

Expected<Tokenizer> from_gguf(const testing::GgufBuilder& builder, std::string* storage) {
  *storage = builder.build();
  Expected<GgufFile> gguf = GgufFile::parse(
      {reinterpret_cast<const std::byte*>(storage->data()), storage->size()}, "t.gguf");
  if (!gguf.ok()) return gguf.error();
  return tokenizer_from_gguf(*gguf);
}

TEST(TokenizerGguf, RefusesMissingOrMistypedKeys) {
  std::string storage;
  testing::GgufBuilder none;
  none.add_string("general.architecture", "llama");
  Expected<Tokenizer> result = from_gguf(none, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message, "t.gguf: the file has no tokenizer");

  testing::GgufBuilder bert;
  bert.add_string("tokenizer.ggml.model", "bert");
  result = from_gguf(bert, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(contains(result.error().message, "tokenizer model 'bert' is not supported"));

  testing::GgufBuilder no_merges;
  no_merges.add_string("tokenizer.ggml.model", "gpt2");
  no_merges.add_strings("tokenizer.ggml.tokens", {"a", "b"});
  result = from_gguf(no_merges, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message, "t.gguf: missing metadata 'tokenizer.ggml.merges'");

  testing::GgufBuilder wrong_types;
  wrong_types.add_string("tokenizer.ggml.model", "llama");
  wrong_types.add_i32s("tokenizer.ggml.tokens", {1, 2});
  result = from_gguf(wrong_types, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(
      contains(result.error().message, "'tokenizer.ggml.tokens' must be an array of strings"));

  testing::GgufBuilder short_scores;
  short_scores.add_string("tokenizer.ggml.model", "llama");
  short_scores.add_strings("tokenizer.ggml.tokens", {"a", "b", "c"});
  short_scores.add_f32s("tokenizer.ggml.scores", {0.0f});
  result = from_gguf(short_scores, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(contains(result.error().message, "tokenizer.ggml.scores has 1 entries for 3 tokens"));

  testing::GgufBuilder bad_bos;
  bad_bos.add_string("tokenizer.ggml.model", "gpt2");
  bad_bos.add_strings("tokenizer.ggml.tokens", {"a", "b", "ab"});
  bad_bos.add_strings("tokenizer.ggml.merges", {"a b"});
  bad_bos.add_u32("tokenizer.ggml.bos_token_id", 9);
  result = from_gguf(bad_bos, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(contains(result.error().message, "BOS token id 9 is outside the vocabulary of 3"));

  testing::GgufBuilder unknown_pre;
  unknown_pre.add_string("tokenizer.ggml.model", "gpt2");
  unknown_pre.add_string("tokenizer.ggml.pre", "deepseek-coder");
  unknown_pre.add_strings("tokenizer.ggml.tokens", {"a"});
  unknown_pre.add_strings("tokenizer.ggml.merges", {});
  result = from_gguf(unknown_pre, &storage);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(contains(result.error().message, "pre-tokenizer 'deepseek-coder' is not supported"));
}

}  // namespace
}  // namespace draftwise
