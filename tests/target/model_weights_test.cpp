#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>

#include "kernels/half.h"
#include "target/checkpoint.h"
#include "target/model_weights.h"
#include "tests/support/test_paths.h"
#include "tests/support/tiny_model.h"

namespace draftwise {
namespace {

using testing::ScratchDir;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

struct Loaded {
  std::optional<Checkpoint> checkpoint;
  std::optional<ModelWeights> weights;
};

Loaded load_and_bind(const std::string& path) {
  Loaded loaded;
  Expected<Checkpoint> checkpoint = Checkpoint::open(path);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  if (!checkpoint.ok()) return loaded;
  loaded.checkpoint = std::move(checkpoint).value();
  Expected<ModelConfig> config = load_model_config(*loaded.checkpoint);
  EXPECT_TRUE(config.ok()) << config.error().message;
  if (!config.ok()) return loaded;
  Expected<ModelWeights> weights = ModelWeights::bind(*loaded.checkpoint, *config);
  EXPECT_TRUE(weights.ok()) << weights.error().message;
  if (weights.ok()) loaded.weights = std::move(weights).value();
  return loaded;
}

TEST(ModelWeights, UnpermuteUndoesLlamaCppPermutation) {
  for (const auto& [heads, head_dim, cols] : {std::tuple{4, 8, 3}, {1, 4, 1}, {3, 64, 5}}) {
    std::vector<float> rows(static_cast<size_t>(heads * head_dim * cols));
    std::iota(rows.begin(), rows.end(), 0.0f);
    std::vector<float> permuted = testing::permute_like_llama_cpp(rows, heads, cols);
    EXPECT_NE(permuted, rows);
    unpermute_rope_rows(permuted.data(), heads, head_dim, cols);
    EXPECT_EQ(permuted, rows);
  }
}

TEST(ModelWeights, GgufNamesMapToHuggingFaceNames) {
  EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.12.self_attn.o_proj.weight"),
            "blk.12.attn_output.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.self_attn.k_proj.bias"), "blk.0.attn_k.bias");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.ffn_norm.weight");
  EXPECT_EQ(gguf_tensor_name("lm_head.weight"), "output.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.1.unknown.weight"), "");
}

// The same model stored as safetensors (HF order) and as GGUF (llama.cpp's Q/K order)
// loads to the same fp32 tensors.
TEST(ModelWeights, GgufAndSafetensorsTwinsLoadIdentically) {
  for (const Architecture architecture : {Architecture::llama, Architecture::qwen2}) {
    SCOPED_TRACE(std::string(architecture_name(architecture)));
    const testing::TinyModel model =
        testing::make_tiny_model(architecture, architecture == Architecture::llama, 7);
    ScratchDir dir;
    testing::write_safetensors_folder(model, dir.path() / "hf");
    const std::string gguf_path =
        dir.write("model.gguf", testing::tiny_model_gguf(model, TensorType::f32)).string();
    const Loaded hf = load_and_bind((dir.path() / "hf").string());
    const Loaded gguf = load_and_bind(gguf_path);
    ASSERT_TRUE(hf.weights && gguf.weights);
    ASSERT_EQ(hf.weights->tensors().size(), model.weights.size());
    ASSERT_EQ(gguf.weights->tensors().size(), model.weights.size());
    for (const WeightTensor& tensor : hf.weights->tensors()) {
      const WeightTensor* twin = gguf.weights->find(tensor.name);
      ASSERT_NE(twin, nullptr) << tensor.name;
      const Expected<std::vector<float>> a = hf.weights->load_f32(tensor);
      const Expected<std::vector<float>> b = gguf.weights->load_f32(*twin);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(*a, model.weights.at(tensor.name)) << tensor.name;
      EXPECT_EQ(*b, model.weights.at(tensor.name)) << tensor.name;
    }
  }
}

TEST(ModelWeights, Fp16GgufLoadsAsRoundedValues) {
  const testing::TinyModel model = testing::make_tiny_model(Architecture::llama, false, 11);
  ScratchDir dir;
  const std::string path =
      dir.write("model.gguf", testing::tiny_model_gguf(model, TensorType::f16)).string();
  const Loaded gguf = load_and_bind(path);
  ASSERT_TRUE(gguf.weights);
  const WeightTensor* q = gguf.weights->find("model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->source->type, TensorType::f16);
  const Expected<std::vector<float>> values = gguf.weights->load_f32(*q);
  ASSERT_TRUE(values.ok());
  const std::vector<float>& original = model.weights.at(q->name);
  for (size_t i = 0; i < original.size(); ++i) {
    ASSERT_EQ((*values)[i], fp16_to_f32(f32_to_fp16(original[i]))) << i;
  }
}

TEST(ModelWeights, MissingTensorIsNamed) {
  testing::TinyModel model = testing::make_tiny_model(Architecture::llama, true, 3);
  model.weights.erase("model.layers.1.mlp.up_proj.weight");
  ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path());
  const Expected<Checkpoint> checkpoint = Checkpoint::open(dir.path().string());
  ASSERT_TRUE(checkpoint.ok());
  const Expected<ModelWeights> weights =
      ModelWeights::bind(*checkpoint, *load_model_config(*checkpoint));
  ASSERT_FALSE(weights.ok());
  EXPECT_TRUE(
      contains(weights.error().message, "missing tensor 'model.layers.1.mlp.up_proj.weight'"));

  const std::string gguf_path =
      dir.write("model.gguf", testing::tiny_model_gguf(model, TensorType::f32)).string();
  const Expected<Checkpoint> gguf = Checkpoint::open(gguf_path);
  ASSERT_TRUE(gguf.ok());
  const Expected<ModelWeights> gguf_weights = ModelWeights::bind(*gguf, *load_model_config(*gguf));
  ASSERT_FALSE(gguf_weights.ok());
  EXPECT_TRUE(contains(gguf_weights.error().message,
                       "missing tensor 'blk.1.ffn_up.weight' (model.layers.1.mlp.up_proj.weight)"));
}

TEST(ModelWeights, ShapeThatDisagreesWithTheConfigIsNamed) {
  testing::TinyModel model = testing::make_tiny_model(Architecture::llama, true, 5);
  model.shapes["model.layers.0.mlp.gate_proj.weight"] = {32, 48};  // transposed
  ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path());
  const Expected<Checkpoint> checkpoint = Checkpoint::open(dir.path().string());
  ASSERT_TRUE(checkpoint.ok());
  const Expected<ModelWeights> weights =
      ModelWeights::bind(*checkpoint, *load_model_config(*checkpoint));
  ASSERT_FALSE(weights.ok());
  EXPECT_TRUE(contains(weights.error().message,
                       "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [32, 48] but the "
                       "config implies [48, 32]"))
      << weights.error().message;
}

// Found in review: a huge layer count once made bind() allocate without bound.
TEST(ModelWeights, LayerCountBeyondTheFileIsRefusedUpFront) {
  testing::TinyModel model = testing::make_tiny_model(Architecture::llama, true, 12);
  ScratchDir dir;
  const std::string path =
      dir.write("model.gguf", testing::tiny_model_gguf(model, TensorType::f32)).string();
  const Expected<Checkpoint> checkpoint = Checkpoint::open(path);
  ASSERT_TRUE(checkpoint.ok());
  ModelConfig config = *load_model_config(*checkpoint);
  config.num_layers = std::numeric_limits<int32_t>::max();
  const Expected<ModelWeights> weights = ModelWeights::bind(*checkpoint, config);
  ASSERT_FALSE(weights.ok());
  EXPECT_TRUE(contains(weights.error().message,
                       "the config has 2147483647 layers but the file holds only 20 tensors"))
      << weights.error().message;
}

TEST(ModelWeights, DefaultModelBindsAndDequantizesToFiniteValues) {
  DW_REQUIRE_DEFAULT_MODEL();
  const Loaded loaded = load_and_bind(testing::default_model_path().string());
  ASSERT_TRUE(loaded.weights);
  EXPECT_EQ(loaded.weights->tensors().size(), 1u + 30u * 9u + 1u);  // tied head
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.29.self_attn.k_proj.weight", "model.norm.weight"}) {
    const WeightTensor* tensor = loaded.weights->find(name);
    ASSERT_NE(tensor, nullptr) << name;
    const Expected<std::vector<float>> values = loaded.weights->load_f32(*tensor);
    ASSERT_TRUE(values.ok()) << values.error().message;
    double sum_squares = 0;
    for (const float value : *values) {
      ASSERT_TRUE(std::isfinite(value)) << name;
      sum_squares += static_cast<double>(value) * value;
    }
    EXPECT_GT(sum_squares, 0.0) << name;
  }
}

}  // namespace
}  // namespace draftwise
