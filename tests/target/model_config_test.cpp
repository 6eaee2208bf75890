#include <gtest/gtest.h>

#include <cstring>

#include "kernels/mapped_file.h"
#include "target/checkpoint.h"
#include "target/model_config.h"
#include "tests/support/gguf_builder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string config_path(const std::string& name) {
  return (testing::source_dir() / "configs" / name).string();
}

TEST(ModelConfig, ReadsLlama32WithLlama3RopeScaling) {
  const Expected<ModelConfig> config = load_hf_config(config_path("llama-3.2-1b.json"));
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->architecture, Architecture::llama);
  EXPECT_EQ(config->num_layers, 16);
  EXPECT_EQ(config->hidden_size, 2048);
  EXPECT_EQ(config->num_heads, 32);
  EXPECT_EQ(config->num_kv_heads, 8);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_EQ(config->rope_theta, 500000.0);
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::llama3);
  EXPECT_EQ(config->rope_scaling.factor, 32.0);
  EXPECT_EQ(config->rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(config->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(config->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_FALSE(config->attention_qkv_bias);
  EXPECT_EQ(config->bos_token_id, 128000);
  EXPECT_EQ(config->eos_token_ids, std::vector<int64_t>{128001});
}

TEST(ModelConfig, ReadsQwen2WithAttentionBias) {
  const Expected<ModelConfig> config = load_hf_config(config_path("qwen2.5-7b.json"));
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->architecture, Architecture::qwen2);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->num_kv_heads, 4);
  EXPECT_TRUE(config->attention_qkv_bias);
  EXPECT_FALSE(config->attention_out_bias);
  EXPECT_FALSE(config->tie_word_embeddings);
}

TEST(ModelConfig, ReadsMistralDefaultsAndSlidingWindow) {
  const Expected<ModelConfig> config = parse_hf_config(R"({
      "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "sliding_window": 4096, "rope_theta": 1000000.0,
      "eos_token_id": [2, 32000]})",
                                                       "mistral.json");
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->architecture, Architecture::mistral);
  EXPECT_EQ(config->sliding_window, 4096);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->rms_norm_eps, 1e-6);
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{2, 32000}));
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::none);
}

TEST(ModelConfig, RefusesBadConfigsWithTheKeyNamed) {
  const auto error_of = [](const std::string& text) {
    const Expected<ModelConfig> config = parse_hf_config(text, "config.json");
    EXPECT_FALSE(config.ok());
    return config.ok() ? std::string() : config.error().message;
  };
  const std::string base =
      R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2)";
  EXPECT_TRUE(contains(error_of("{"), "config.json: not valid JSON"));
  EXPECT_TRUE(contains(error_of(R"({"architectures": ["GPT2LMHeadModel"], )" + base + "}"),
                       "architecture 'GPT2LMHeadModel' is not supported"));
  EXPECT_TRUE(
      contains(error_of(R"({"model_type": "llama", "vocab_size": 10})"), "missing 'hidden_size'"));
  EXPECT_TRUE(contains(error_of(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": "8"})"),
                       "'hidden_size' must be an integer"));
  EXPECT_TRUE(
      contains(error_of(R"({"model_type": "llama", "num_key_value_heads": 3, )" + base + "}"),
               "not a multiple of 3 key/value heads"));
  EXPECT_TRUE(contains(
      error_of(R"({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4}, )" +
               base + "}"),
      "type 'yarn' is not supported"));
  EXPECT_TRUE(contains(error_of(R"({"model_type": "llama", "hidden_act": "gelu", )" + base + "}"),
                       "hidden_act 'gelu' is not supported"));
  EXPECT_TRUE(contains(
      error_of(
          R"({"model_type": "llama", "num_hidden_layers": 0, "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2})"),
      "'num_hidden_layers' must be positive"));
}

TEST(ModelConfig, ReadsTransformers5RopeParameters) {
  const Expected<ModelConfig> config = parse_hf_config(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 1, "num_attention_heads": 2,
          "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}})",
      "config.json");
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->rope_theta, 500000.0);
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::llama3);
  EXPECT_EQ(config->rope_scaling.factor, 32.0);
}

TEST(ModelConfig, RefusesExtentsBeyondInt32AndIntegersBeyondInt64) {
  const Expected<ModelConfig> huge = parse_hf_config(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 1099511627776, "num_attention_heads": 2})",
      "config.json");
  ASSERT_FALSE(huge.ok());
  EXPECT_TRUE(contains(huge.error().message, "layer count 1099511627776 is larger than"));
  const Expected<ModelConfig> wraps = parse_hf_config(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 1, "num_attention_heads": 2, "bos_token_id": 18446744073709551615})",
      "config.json");
  ASSERT_FALSE(wraps.ok());
  EXPECT_TRUE(contains(wraps.error().message, "'bos_token_id' must be an integer"));
}

TEST(ModelConfig, DeeplyNestedValuesGiveAShortError) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const Expected<ModelConfig> config =
      parse_hf_config(R"({"model_type": "llama", "vocab_size": )" + deep + "}", "config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().message,
            "config.json: 'vocab_size' must be an integer, got an array of 1 values");
}

TEST(ModelConfig, ReadsGgufMetadataAndTensorsPresent) {
  testing::GgufBuilder builder;
  builder.add_string("general.architecture", "qwen2");
  builder.add_u32("qwen2.block_count", 2);
  builder.add_u32("qwen2.embedding_length", 64);
  builder.add_u32("qwen2.feed_forward_length", 96);
  builder.add_u32("qwen2.attention.head_count", 4);
  builder.add_u32("qwen2.attention.head_count_kv", 2);
  builder.add_f32("qwen2.rope.freq_base", 1000000.0f);
  builder.add_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  builder.add_u32("tokenizer.ggml.eos_token_id", 7);
  builder.add_tensor("token_embd.weight", TensorType::f32, {10, 64},
                     std::string(10 * 64 * 4, '\0'));
  builder.add_tensor("output.weight", TensorType::f32, {10, 64}, std::string(10 * 64 * 4, '\0'));
  builder.add_tensor("blk.0.attn_q.bias", TensorType::f32, {64}, std::string(64 * 4, '\0'));
  // Frequency factors must be positive: a file of zeros is refused, 1.0 … 8.0 is read.
  testing::GgufBuilder zero_factors = builder;
  zero_factors.add_tensor("rope_freqs.weight", TensorType::f32, {8}, std::string(8 * 4, '\0'));
  const std::string zero_bytes = zero_factors.build();
  const Expected<GgufFile> zero_gguf = GgufFile::parse(
      {reinterpret_cast<const std::byte*>(zero_bytes.data()), zero_bytes.size()}, "zero.gguf");
  ASSERT_TRUE(zero_gguf.ok()) << zero_gguf.error().message;
  const Expected<ModelConfig> refused = config_from_gguf(*zero_gguf);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(contains(refused.error().message, "RoPE frequency factors must be positive"));

  std::string factors(8 * 4, '\0');
  for (int i = 0; i < 8; ++i) {
    const float factor = 1.0f + static_cast<float>(i);
    std::memcpy(&factors[i * 4], &factor, 4);
  }
  builder.add_tensor("rope_freqs.weight", TensorType::f32, {8}, factors);
  const std::string bytes = builder.build();
  const Expected<GgufFile> gguf =
      GgufFile::parse({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "q.gguf");
  ASSERT_TRUE(gguf.ok()) << gguf.error().message;
  const Expected<ModelConfig> config = config_from_gguf(*gguf);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->architecture, Architecture::qwen2);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->vocab_size, 10);
  EXPECT_EQ(config->rope_theta, 1000000.0);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_TRUE(config->attention_qkv_bias);
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::freq_factors);
  EXPECT_EQ(config->rope_scaling.freq_factors,
            (std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f}));
  EXPECT_EQ(config->max_position_embeddings, 2048);
  EXPECT_EQ(config->eos_token_ids, std::vector<int64_t>{7});
}

TEST(ModelConfig, RefusesUnsupportedGgufArchitecture) {
  testing::GgufBuilder builder;
  builder.add_string("general.architecture", "phi3");
  const std::string bytes = builder.build();
  const Expected<GgufFile> gguf =
      GgufFile::parse({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "phi.gguf");
  ASSERT_TRUE(gguf.ok());
  const Expected<ModelConfig> config = config_from_gguf(*gguf);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().message,
            "phi.gguf: GGUF architecture 'phi3' is not supported (llama, qwen2)");
}

TEST(ModelConfig, ReadsTheDefaultModel) {
  DW_REQUIRE_DEFAULT_MODEL();
  const Expected<Checkpoint> checkpoint = Checkpoint::open(testing::default_model_path().string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  const Expected<ModelConfig> config = load_model_config(*checkpoint);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->architecture, Architecture::llama);
  EXPECT_EQ(config->num_layers, 30);
  EXPECT_EQ(config->hidden_size, 576);
  EXPECT_EQ(config->intermediate_size, 1536);
  EXPECT_EQ(config->num_heads, 9);
  EXPECT_EQ(config->num_kv_heads, 3);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->vocab_size, 49152);
  EXPECT_EQ(config->rope_theta, 100000.0);
  EXPECT_EQ(config->max_position_embeddings, 8192);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_FALSE(config->attention_qkv_bias);
}

}  // namespace
}  // namespace draftwise
