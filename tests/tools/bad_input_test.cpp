// Every kind of bad model file, given to `draftwise inspect` as a user would: a one-line
// error on stderr that names the file and the problem, a non-zero exit, no crash.
#include <gtest/gtest.h>

#include "tests/support/gguf_builder.h"
#include "tests/support/run_command.h"
#include "tests/support/safetensors_builder.h"
#include "tests/support/test_paths.h"
#include "tests/support/tiny_model.h"

namespace draftwise {
namespace {

using testing::GgufBuilder;
using testing::SafetensorsBuilder;
using testing::ScratchDir;

// Runs `draftwise inspect path` and checks the failure is reported as it should be.
void expect_refused(const std::filesystem::path& path, const std::string& problem) {
  const testing::CommandResult result = testing::run_draftwise({"inspect", path.string()});
  EXPECT_EQ(result.signal, 0) << "crashed on " << path;
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_TRUE(result.out.empty()) << result.out;
  ASSERT_FALSE(result.err.empty());
  EXPECT_EQ(result.err.back(), '\n');
  EXPECT_EQ(result.err.find('\n'), result.err.size() - 1) << "more than one line: " << result.err;
  EXPECT_NE(result.err.find(path.string()), std::string::npos) << "file not named: " << result.err;
  EXPECT_NE(result.err.find(problem), std::string::npos)
      << "expected '" << problem << "' in: " << result.err;
}

std::string tiny_gguf() {
  return testing::tiny_model_gguf(testing::make_tiny_model(Architecture::llama, true, 1),
                                  TensorType::f32);
}

TEST(BadInput, MissingFile) {
  expect_refused("/nonexistent/model.gguf", "no such file or folder");
  ScratchDir dir;
  expect_refused(dir.path() / "absent.safetensors", "no such file or folder");
}

TEST(BadInput, TruncatedFile) {
  ScratchDir dir;
  const std::string gguf = tiny_gguf();
  for (const size_t length : {size_t{6}, size_t{100}, gguf.size() / 2, gguf.size() - 1}) {
    SCOPED_TRACE(length);
    const auto path = dir.write("cut.gguf", gguf.substr(0, length));
    const testing::CommandResult result = testing::run_draftwise({"inspect", path.string()});
    EXPECT_EQ(result.exit_code, 1);
    EXPECT_TRUE(result.err.find("truncated") != std::string::npos ||
                result.err.find("past the end") != std::string::npos)
        << result.err;
  }
  SafetensorsBuilder builder;
  builder.add_tensor("w", "F32", {8}, testing::f32_bytes(std::vector<float>(8, 1.0f)));
  const std::string file = builder.build();
  expect_refused(dir.write("cut.safetensors", file.substr(0, file.size() - 3)), "truncated");
  expect_refused(dir.write("tiny.safetensors", file.substr(0, 5)), "truncated");
}

TEST(BadInput, WrongMagic) {
  ScratchDir dir;
  std::string gguf = tiny_gguf();
  gguf.replace(0, 4, "GGML");
  expect_refused(dir.write("model.gguf", gguf), "not a GGUF file (wrong magic bytes)");
  expect_refused(dir.write("notes.txt", "hello, I am not a model\n"), "wrong magic bytes");
}

TEST(BadInput, HeaderLengthPastTheEnd) {
  ScratchDir dir;
  std::string bytes;
  testing::append_scalar<uint64_t>(bytes, 1u << 20);
  bytes += "{\"w\": {}}";
  expect_refused(dir.write("model.safetensors", bytes), "header length 1048576 runs past the end");
}

TEST(BadInput, TensorLeavesTheDataSection) {
  ScratchDir dir;
  GgufBuilder gguf;
  gguf.add_raw_tensor_info("blk.0.attn_q.weight", 0, {64, 64}, 0);
  gguf.append_data(std::string(1024, '\0'));
  expect_refused(
      dir.write("model.gguf", gguf.build()),
      "tensor 'blk.0.attn_q.weight' (16384 bytes at data offset 0) leaves the data section");

  SafetensorsBuilder safetensors;
  safetensors.add_tensor("w", "F32", {4}, testing::f32_bytes({1, 2, 3, 4}));
  nlohmann::json header = safetensors.header();
  header["w"]["data_offsets"] = {16, 32};
  expect_refused(dir.write("model.safetensors", safetensors.build_with(header.dump())),
                 "data_offsets [16, 32] leave the data section");
}

TEST(BadInput, OverlappingTensors) {
  ScratchDir dir;
  GgufBuilder gguf;
  gguf.add_raw_tensor_info("a", 0, {32}, 0);
  gguf.add_raw_tensor_info("b", 0, {32}, 64);
  gguf.append_data(std::string(256, '\0'));
  expect_refused(dir.write("model.gguf", gguf.build()), "tensors 'a' and 'b' overlap");

  SafetensorsBuilder safetensors;
  safetensors.add_tensor("a", "F32", {4}, testing::f32_bytes({1, 2, 3, 4}));
  safetensors.add_tensor("b", "F32", {4}, testing::f32_bytes({1, 2, 3, 4}));
  nlohmann::json header = safetensors.header();
  header["b"]["data_offsets"] = {8, 24};
  expect_refused(dir.write("model.safetensors", safetensors.build_with(header.dump())),
                 "tensors 'a' and 'b' overlap");
}

TEST(BadInput, UnknownDtypeOrQuantizationType) {
  ScratchDir dir;
  SafetensorsBuilder safetensors;
  safetensors.add_tensor("w", "F4", {4}, "ab");
  expect_refused(dir.write("model.safetensors", safetensors.build()), "unknown dtype 'F4'");

  GgufBuilder unknown;
  unknown.add_raw_tensor_info("w", 1234, {32}, 0);
  unknown.append_data(std::string(64, '\0'));
  expect_refused(dir.write("unknown.gguf", unknown.build()), "unknown tensor type 1234");

  GgufBuilder unsupported;
  unsupported.add_raw_tensor_info("w", 23 /* IQ4_XS */, {256}, 0);
  unsupported.append_data(std::string(256, '\0'));
  expect_refused(dir.write("iq.gguf", unsupported.build()),
                 "quantization type IQ4_XS, which draftwise cannot read");
}

TEST(BadInput, ShapeThatDisagreesWithTheConfig) {
  testing::TinyModel model = testing::make_tiny_model(Architecture::llama, true, 2);
  model.shapes["model.layers.1.self_attn.k_proj.weight"] = {32, 16};
  ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path() / "hf");
  expect_refused(dir.path() / "hf",
                 "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [32, 16] but the "
                 "config implies [16, 32]");
  // GGUF: the metadata's feed-forward length disagrees with the tensors.
  testing::TinyModel wide = testing::make_tiny_model(Architecture::llama, true, 2);
  wide.config.intermediate_size = 64;
  expect_refused(
      dir.write("model.gguf", testing::tiny_model_gguf(wide, TensorType::f32)),
      "tensor 'blk.0.ffn_gate.weight' has shape [48, 32] but the config implies [64, 32]");
}

TEST(BadInput, MissingTensor) {
  testing::TinyModel model = testing::make_tiny_model(Architecture::qwen2, false, 4);
  model.weights.erase("lm_head.weight");
  ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path() / "hf");
  expect_refused(dir.path() / "hf", "missing tensor 'lm_head.weight'");
  testing::TinyModel no_bias = testing::make_tiny_model(Architecture::qwen2, true, 4);
  no_bias.weights.erase("model.layers.0.self_attn.v_proj.bias");
  expect_refused(dir.write("model.gguf", testing::tiny_model_gguf(no_bias, TensorType::f32)),
                 "missing tensor 'blk.0.attn_v.bias'");
}

TEST(BadInput, MalformedOrNonUtf8TokenizerJson) {
  const testing::TinyModel model = testing::make_tiny_model(Architecture::llama, true, 6);
  ScratchDir dir;
  testing::write_safetensors_folder(model, dir.path());
  dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,");
  expect_refused(dir.path(), "tokenizer.json: not valid JSON");
  dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\xc3\x28\": 0}}}");
  expect_refused(dir.path(), "tokenizer.json: not valid JSON");
}

TEST(BadInput, GgufStringOrArrayLengthThatWouldOverflow) {
  ScratchDir dir;
  const auto raw_entry = [](uint32_t type, const std::string& value) {
    std::string bytes;
    testing::append_scalar<uint32_t>(bytes, 0x46554747);
    testing::append_scalar<uint32_t>(bytes, 3);
    testing::append_scalar<uint64_t>(bytes, 0);
    testing::append_scalar<uint64_t>(bytes, 1);
    testing::append_scalar<uint64_t>(bytes, 4);
    bytes += "name";
    testing::append_scalar<uint32_t>(bytes, type);
    return bytes + value;
  };
  std::string string_length;
  testing::append_scalar<uint64_t>(string_length, 0xFFFFFFFFFFFFFFF0ull);
  expect_refused(dir.write("string.gguf", raw_entry(8, string_length + "xyz")),
                 "has length 18446744073709551600, past the end of the file");
  std::string array_length;
  testing::append_scalar<uint32_t>(array_length, 6);  // float32
  testing::append_scalar<uint64_t>(array_length, 0x4000000000000001ull);
  expect_refused(dir.write("array.gguf", raw_entry(9, array_length)), "cannot fit in the");
}

// Found in review: names from a file could break the one-line error with a newline or
// carry a terminal escape sequence.
TEST(BadInput, ControlCharactersInFileContentsAreEscaped) {
  ScratchDir dir;
  GgufBuilder gguf;
  gguf.add_raw_tensor_info("evil\nname\x1b[31m", 99, {32}, 0);
  gguf.append_data(std::string(64, '\0'));
  const auto path = dir.write("model.gguf", gguf.build());
  expect_refused(path, "tensor 'evil\\x0aname\\x1b[31m' has unknown tensor type 99");
}

TEST(BadInput, HugeNamesAreCutInTheMessage) {
  ScratchDir dir;
  GgufBuilder gguf;
  gguf.add_raw_tensor_info(std::string(100000, 'w'), 99, {32}, 0);
  gguf.append_data(std::string(64, '\0'));
  const testing::CommandResult result =
      testing::run_draftwise({"inspect", dir.write("model.gguf", gguf.build()).string()});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_LT(result.err.size(), 1100u);
  EXPECT_NE(result.err.find("more bytes)"), std::string::npos) << result.err.substr(0, 200);
  EXPECT_EQ(result.err.find('\n'), result.err.size() - 1);
}

TEST(BadInput, UsageErrorsExitWithTwo) {
  const testing::CommandResult missing = testing::run_draftwise({"inspect"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("missing PATH"), std::string::npos) << missing.err;
  const testing::CommandResult unknown = testing::run_draftwise({"inspect", "x", "--frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("unknown option '--frobnicate'"), std::string::npos);
  const testing::CommandResult command = testing::run_draftwise({"transmogrify"});
  EXPECT_EQ(command.exit_code, 2);
  EXPECT_NE(command.err.find("unknown command 'transmogrify'"), std::string::npos);
}

}  // namespace
}  // namespace draftwise
