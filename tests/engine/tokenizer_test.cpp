// Behaviour of Tokenizer beyond the corpus ids: special-token handling, BOS/EOS, decoding
// options, and the streaming decoder's UTF-8 guarantees.
#include <gtest/gtest.h>

#include "engine/tokenizer/stream_decoder.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "engine/tokenizer/unicode.h"
#include "target/gguf_reader.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

const Tokenizer& sentencepiece() {
  static const Tokenizer tokenizer = [] {
    Expected<Tokenizer> loaded =
        tokenizer_from_hf_folder((testing::fixtures_dir() / "tokenizer" / "llama2_sp").string());
    if (!loaded.ok()) throw std::runtime_error(loaded.error().message);
    return std::move(loaded).value();
  }();
  return tokenizer;
}

TEST(Tokenizer, SentencePieceConfigAddsBosAndKnowsItsSpecials) {
  const Tokenizer& tokenizer = sentencepiece();
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_TRUE(tokenizer.is_special(1));
  EXPECT_EQ(tokenizer.token(2), "</s>");
  const std::vector<int32_t> plain = tokenizer.encode("Hello world", {.add_special = false});
  const std::vector<int32_t> with_bos = tokenizer.encode("Hello world");
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), plain);
}

TEST(Tokenizer, SpecialTokenTextIsOneTokenOnlyWhenParsed) {
  const Tokenizer& tokenizer = sentencepiece();
  const std::vector<int32_t> parsed =
      tokenizer.encode("a</s>b", {.add_special = false, .parse_special = true});
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), 2), 1);
  const std::vector<int32_t> literal =
      tokenizer.encode("a</s>b", {.add_special = false, .parse_special = false});
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 2), 0);
  EXPECT_GT(literal.size(), parsed.size());
}

TEST(Tokenizer, DecodeSkipsSpecialTokensWhenAsked) {
  const Tokenizer& tokenizer = sentencepiece();
  std::vector<int32_t> ids = tokenizer.encode("Hi there");  // starts with <s>
  ids.push_back(2);
  EXPECT_EQ(tokenizer.decode(ids, /*skip_special=*/true), "Hi there");
  EXPECT_EQ(tokenizer.decode(ids, /*skip_special=*/false), "<s> Hi there</s>");
}

TEST(Tokenizer, RoundTripsTextAndReplacesInvalidBytes) {
  const Tokenizer& tokenizer = sentencepiece();
  for (const std::string text :
       {"plain words", "  leading spaces", "tabs\tand\nnewlines\n",
        "\u00e9t\u00e9 \u4e2d\u6587 \U0001F600", "digits 12345 and 3.14"}) {
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text, {.add_special = false})), text);
  }
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("bad \xff byte", {.add_special = false})),
            "bad \xEF\xBF\xBD byte");
}

// A SentencePiece vocabulary without byte fallback: unknown characters become <unk>, and
// with fuse_unk a run of them becomes one. Expected ids are what Hugging Face tokenizers
// 0.23.3 gives for the same tokenizer.json.
TEST(Tokenizer, FuseUnkJoinsRunsOfUnknownCharacters) {
  const std::string vocabulary = R"({
    "added_tokens": [{"id": 0, "content": "<unk>", "special": true, "normalized": false}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": false, "fuse_unk": FUSE,
              "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "\u2581a": 3, "b": 4},
              "merges": [["\u2581", "a"]]}})";
  const auto with_fuse = [&](bool fuse) {
    std::string text = vocabulary;
    text.replace(text.find("FUSE"), 4, fuse ? "true" : "false");
    Expected<Tokenizer> tokenizer = parse_tokenizer_json(text, std::nullopt, "fuse.json");
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.error().message;
    return std::move(tokenizer).value();
  };
  const Tokenizer fused = with_fuse(true);
  const Tokenizer separate = with_fuse(false);
  const EncodeOptions plain{.add_special = false};
  EXPECT_EQ(fused.encode("a\u65e5\u672ca", plain), (std::vector<int32_t>{3, 0, 2}));
  EXPECT_EQ(fused.encode("a\u65e5b\u672c\u672c", plain), (std::vector<int32_t>{3, 0, 4, 0}));
  EXPECT_EQ(separate.encode("a\u65e5\u672ca", plain), (std::vector<int32_t>{3, 0, 0, 2}));
  EXPECT_EQ(separate.encode("a\u65e5b\u672c\u672c", plain),
            (std::vector<int32_t>{3, 0, 4, 0, 0}));
}

TEST(StreamDecoder, HoldsBackSplitCharactersUntilComplete) {
  const Tokenizer& tokenizer = sentencepiece();
  // U+1F600 is outside the small vocabulary: it falls back to four byte tokens.
  const std::vector<int32_t> ids = tokenizer.encode("\U0001F600!", {.add_special = false});
  ASSERT_GE(ids.size(), 5u);
  StreamDecoder stream(tokenizer, false, true);
  std::vector<std::string> pieces;
  for (const int32_t id : ids) pieces.push_back(stream.push(id));
  pieces.push_back(stream.finish());
  std::string joined;
  for (const std::string& piece : pieces) {
    EXPECT_TRUE(unicode::is_valid_utf8(piece));
    joined += piece;
  }
  EXPECT_EQ(joined, "\U0001F600!");
  // The emoji appears whole in exactly one piece.
  EXPECT_EQ(std::count_if(pieces.begin(), pieces.end(),
                          [](const std::string& piece) {
                            return piece.find("\U0001F600") != std::string::npos;
                          }),
            1);
}

TEST(StreamDecoder, FinishReplacesAnUnfinishedCharacter) {
  const Tokenizer& tokenizer = sentencepiece();
  const std::optional<int32_t> lead = tokenizer.find("<0xF0>");
  ASSERT_TRUE(lead.has_value());
  StreamDecoder stream(tokenizer, false, false);
  EXPECT_EQ(stream.push(*lead), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
}

TEST(StreamDecoder, ContinuationKeepsTheLeadingSpace) {
  const Tokenizer& tokenizer = sentencepiece();
  const std::vector<int32_t> ids = tokenizer.encode("the end", {.add_special = false});
  StreamDecoder start(tokenizer, false, /*at_sequence_start=*/true);
  StreamDecoder middle(tokenizer, false, /*at_sequence_start=*/false);
  std::string from_start, from_middle;
  for (const int32_t id : ids) {
    from_start += start.push(id);
    from_middle += middle.push(id);
  }
  EXPECT_EQ(from_start, "the end");
  EXPECT_EQ(from_middle, " the end");
}

TEST(Tokenizer, DefaultModelChatMarkersAreSingleTokens) {
  DW_REQUIRE_DEFAULT_MODEL();
  const Expected<GgufFile> gguf = GgufFile::open(testing::default_model_path().string());
  ASSERT_TRUE(gguf.ok());
  const Expected<Tokenizer> tokenizer = tokenizer_from_gguf(*gguf);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  const std::vector<int32_t> ids = tokenizer->encode("<|im_start|>user\nHi<|im_end|>\n");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);                                   // <|im_start|>
  EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end());  // <|im_end|>
  EXPECT_TRUE(tokenizer->chat_template().has_value());
  EXPECT_NE(tokenizer->chat_template()->find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(tokenizer->decode(ids, /*skip_special=*/true), "user\nHi\n");
}

}  // namespace
}  // namespace draftwise
