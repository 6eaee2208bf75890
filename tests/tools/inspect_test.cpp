#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"
#include "tests/support/test_paths.h"
#include "tests/support/tiny_model.h"
#include "tools/commands.h"

namespace draftwise {
namespace {

using Json = nlohmann::json;

// The acceptance check of the foundation issue, through the command a user runs.
TEST(Inspect, DefaultModelJsonReportsItsShapeAndChatTemplate) {
  DW_REQUIRE_DEFAULT_MODEL();
  const testing::CommandResult result =
      testing::run_draftwise({"inspect", testing::default_model_path().string(), "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const Json report = Json::parse(result.out);
  EXPECT_EQ(report["architecture"], "llama");
  EXPECT_EQ(report["num_layers"], 30);
  EXPECT_EQ(report["hidden_size"], 576);
  EXPECT_EQ(report["num_heads"], 9);
  EXPECT_EQ(report["num_kv_heads"], 3);
  EXPECT_EQ(report["vocab_size"], 49152);
  EXPECT_EQ(report["has_chat_template"], true);
  EXPECT_EQ(report["tensor_count"], 272);
  EXPECT_EQ(report["tensor_types"]["Q4_1"], 210);
  EXPECT_EQ(report["tokenizer"]["model"], "byte-level BPE");
  EXPECT_EQ(report["tokenizer"]["pre_tokenizer"], "smollm");
  EXPECT_EQ(report["tokenizer"]["vocab_size"], 49152);
  EXPECT_EQ(report["tokenizer"]["eos"]["text"], "<|im_end|>");
  // 134.5M parameters: embedding 49152x576 (tied head) + 30 layers + final norm.
  const int64_t per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536 + 2 * 576;
  EXPECT_EQ(report["parameter_count"], 49152 * 576 + 30 * per_layer + 576);
}

TEST(Inspect, TextOutputNamesTheEssentials) {
  DW_REQUIRE_DEFAULT_MODEL();
  const testing::CommandResult result =
      testing::run_draftwise({"inspect", testing::default_model_path().string(), "--tensors"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  for (const char* expected : {"num_layers", "30", "byte-level BPE (smollm pre-tokenizer)",
                               "chat template            yes", "blk.29.ffn_down.weight"}) {
    EXPECT_NE(result.out.find(expected), std::string::npos) << expected << "\n" << result.out;
  }
}

TEST(Inspect, HuggingFaceFolderWithTokenizer) {
  const testing::TinyModel model = testing::make_tiny_model(Architecture::qwen2, false, 8);
  testing::ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path());
  const std::filesystem::path fixture = testing::fixtures_dir() / "tokenizer" / "llama2_sp";
  std::filesystem::copy_file(fixture / "tokenizer.json", dir.path() / "tokenizer.json");
  std::filesystem::copy_file(fixture / "tokenizer_config.json",
                             dir.path() / "tokenizer_config.json");
  const Expected<Json> report = inspect_model(dir.path().string());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ((*report)["format"], "safetensors");
  EXPECT_EQ((*report)["architecture"], "qwen2");
  EXPECT_EQ((*report)["attention_bias"], true);
  EXPECT_EQ((*report)["tie_word_embeddings"], false);
  EXPECT_EQ((*report)["tensor_types"]["F32"], static_cast<int64_t>(model.weights.size()));
  EXPECT_EQ((*report)["tokenizer"]["model"], "SentencePiece BPE");
  EXPECT_EQ((*report)["tokenizer"]["add_bos"], true);
  EXPECT_EQ((*report)["has_chat_template"], false);
}

TEST(Inspect, FolderWithoutTokenizerReportsNone) {
  const testing::TinyModel model = testing::make_tiny_model(Architecture::llama, true, 9);
  testing::ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path());
  const Expected<Json> report = inspect_model(dir.path().string());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_TRUE((*report)["tokenizer"].is_null());
  EXPECT_EQ((*report)["num_layers"], 2);
}

TEST(Inspect, TokenizerOnlyGguf) {
  const Expected<Json> report =
      inspect_model((testing::fixtures_dir() / "tokenizer" / "llama2_sp.gguf").string());
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ((*report)["tensor_count"], 0);
  EXPECT_FALSE(report->contains("architecture"));
  EXPECT_EQ((*report)["tokenizer"]["vocab_size"], 2000);
  EXPECT_EQ((*report)["tokenizer"]["bos"]["text"], "<s>");
}

TEST(Inspect, HelpDescribesTheCommand) {
  const testing::CommandResult result = testing::run_draftwise({"inspect", "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("usage: draftwise inspect PATH"), std::string::npos);
  EXPECT_NE(result.out.find("--json"), std::string::npos);
}

}  // namespace
}  // namespace draftwise
