#include <gtest/gtest.h>

#include <cstring>

#include "kernels/half.h"
#include "target/safetensors_reader.h"
#include "tests/support/gguf_builder.h"
#include "tests/support/safetensors_builder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::f32_bytes;
using testing::SafetensorsBuilder;
using testing::ScratchDir;

Expected<SafetensorsFile> parse(const std::string& bytes) {
  return SafetensorsFile::parse({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()},
                                "test.safetensors");
}

std::string parse_error(const std::string& bytes) {
  const Expected<SafetensorsFile> file = parse(bytes);
  EXPECT_FALSE(file.ok()) << "parsed a file it should refuse";
  if (file.ok()) return {};
  EXPECT_TRUE(file.error().message.starts_with("test.safetensors: ")) << file.error().message;
  EXPECT_EQ(file.error().message.find('\n'), std::string::npos);
  return file.error().message;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string half_bytes(std::initializer_list<float> values, bool bf16) {
  std::string bytes;
  for (const float value : values) {
    testing::append_scalar<uint16_t>(bytes, bf16 ? f32_to_bf16(value) : f32_to_fp16(value));
  }
  return bytes;
}

TEST(SafetensorsReader, ReadsDtypesShapesAndMetadata) {
  SafetensorsBuilder builder;
  builder.add_tensor("w.f32", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6}));
  builder.add_tensor("w.f16", "F16", {2}, half_bytes({0.5f, -2}, false));
  builder.add_tensor("w.bf16", "BF16", {1, 2}, half_bytes({3, 4}, true));
  builder.add_tensor("w.i8", "I8", {4}, std::string("\x01\xff\x02\x03", 4));
  builder.add_tensor("w.u8", "U8", {2, 2}, std::string("\x01\x02\x03\x04", 4));
  builder.add_tensor("scalar", "F32", {}, f32_bytes({9}));
  builder.add_tensor("empty", "F32", {0, 5}, "");
  builder.add_metadata("format", "pt");
  const std::string bytes = builder.build();
  const Expected<SafetensorsFile> file = parse(bytes);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(file->metadata().at("format"), "pt");
  std::map<std::string, const SafetensorsTensor*> by_name;
  for (const SafetensorsTensor& tensor : file->tensors()) by_name[tensor.name] = &tensor;
  ASSERT_EQ(by_name.size(), 7u);
  EXPECT_EQ(by_name["w.f32"]->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(by_name["w.f16"]->type, TensorType::f16);
  EXPECT_EQ(by_name["w.bf16"]->type, TensorType::bf16);
  EXPECT_EQ(by_name["w.i8"]->type, TensorType::i8);
  EXPECT_EQ(by_name["w.u8"]->type, TensorType::u8);
  EXPECT_TRUE(by_name["scalar"]->shape.empty());
  EXPECT_EQ(by_name["empty"]->data.size(), 0u);
  float last;
  std::memcpy(&last, by_name["w.f32"]->data.data() + 20, 4);
  EXPECT_EQ(last, 6.0f);
}

TEST(SafetensorsReader, RefusesTruncatedFiles) {
  SafetensorsBuilder builder;
  builder.add_tensor("w", "F32", {4}, f32_bytes({1, 2, 3, 4}));
  const std::string bytes = builder.build();
  for (size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE(length);
    const std::string message = parse_error(bytes.substr(0, length));
    EXPECT_TRUE(contains(message, "truncated") || contains(message, "past the end")) << message;
  }
}

TEST(SafetensorsReader, RefusesHeaderLengthPastTheEnd) {
  std::string bytes;
  testing::append_scalar<uint64_t>(bytes, 1000);
  bytes += "{}";
  EXPECT_TRUE(contains(parse_error(bytes), "header length 1000 runs past the end"));
  std::string huge;
  testing::append_scalar<uint64_t>(huge, ~0ull);
  EXPECT_TRUE(contains(parse_error(huge), "runs past the end"));
}

TEST(SafetensorsReader, RefusesMalformedHeaders) {
  SafetensorsBuilder builder;
  builder.add_tensor("w", "F32", {1}, f32_bytes({1}));
  EXPECT_TRUE(contains(parse_error(builder.build_with("{\"w\": ")), "not valid JSON"));
  EXPECT_TRUE(contains(parse_error(builder.build_with("[1, 2]")), "not a JSON object"));
  EXPECT_TRUE(contains(parse_error(builder.build_with("{\"w\": \"\xff\xfe\"}")), "not valid JSON"));
  EXPECT_TRUE(contains(parse_error(builder.build_with("{\"w\": {\"dtype\": \"F32\"}}")),
                       "missing array 'shape'"));
  EXPECT_TRUE(contains(parse_error(builder.build_with(
                           R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})")),
                       "non-negative integers"));
  EXPECT_TRUE(contains(parse_error(builder.build_with(
                           R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4]}})")),
                       "data_offsets"));
  EXPECT_TRUE(contains(parse_error(builder.build_with(R"({"__metadata__": {"a": 1}})")),
                       "is not a string"));
}

TEST(SafetensorsReader, RefusesUnknownDtype) {
  SafetensorsBuilder builder;
  builder.add_tensor("w", "Q9", {4}, f32_bytes({1, 2, 3, 4}));
  const std::string message = parse_error(builder.build());
  EXPECT_TRUE(contains(message, "tensor 'w': unknown dtype 'Q9'")) << message;
}

TEST(SafetensorsReader, RefusesOffsetsOutsideTheDataAndSizeMismatch) {
  SafetensorsBuilder builder;
  builder.add_tensor("w", "F32", {4}, f32_bytes({1, 2, 3, 4}));
  nlohmann::json header = builder.header();
  header["w"]["data_offsets"] = {8, 24};
  EXPECT_TRUE(contains(parse_error(builder.build_with(header.dump())), "leave the data section"));
  header["w"]["data_offsets"] = {12, 4};
  EXPECT_TRUE(contains(parse_error(builder.build_with(header.dump())), "reversed"));
  header["w"]["data_offsets"] = {0, 8};
  EXPECT_TRUE(contains(parse_error(builder.build_with(header.dump())), "span 8 bytes but 4 F32"));
  header["w"]["shape"] = {1ll << 40, 1ll << 40};
  header["w"]["data_offsets"] = {0, 16};
  EXPECT_TRUE(contains(parse_error(builder.build_with(header.dump())), "shape is too large"));
}

TEST(SafetensorsReader, RefusesHolesAndTrailingBytes) {
  SafetensorsBuilder builder;
  builder.add_tensor("a", "F32", {2}, f32_bytes({1, 2}));
  builder.add_tensor("b", "F32", {2}, f32_bytes({3, 4}));
  nlohmann::json header = builder.header();
  header.erase("a");
  EXPECT_TRUE(
      contains(parse_error(builder.build_with(header.dump())), "8 unused bytes before tensor 'b'"));
  header = builder.header();
  header.erase("b");
  EXPECT_TRUE(
      contains(parse_error(builder.build_with(header.dump())), "8 bytes after the last tensor"));
}

TEST(SafetensorsReader, RefusesOverlappingTensors) {
  SafetensorsBuilder builder;
  builder.add_tensor("a", "F32", {2}, f32_bytes({1, 2}));
  builder.add_tensor("b", "F32", {2}, f32_bytes({3, 4}));
  nlohmann::json header = builder.header();
  header["b"]["data_offsets"] = {4, 12};
  const std::string message = parse_error(builder.build_with(header.dump()));
  EXPECT_TRUE(contains(message, "tensors 'a' and 'b' overlap")) << message;
}

TEST(SafetensorsCheckpoint, ReadsShardsThroughTheIndex) {
  ScratchDir dir;
  SafetensorsBuilder first, second;
  first.add_tensor("a", "F32", {1}, f32_bytes({1}));
  second.add_tensor("b", "F32", {2}, f32_bytes({2, 3}));
  dir.write("model-00001-of-00002.safetensors", first.build());
  dir.write("model-00002-of-00002.safetensors", second.build());
  dir.write("model.safetensors.index.json",
            R"({"metadata": {"total_size": 12}, "weight_map": {
                "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  const Expected<SafetensorsCheckpoint> checkpoint =
      SafetensorsCheckpoint::open_folder(dir.path().string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message;
  ASSERT_EQ(checkpoint->shards().size(), 2u);
  EXPECT_EQ(checkpoint->shards()[1].tensors()[0].name, "b");
}

TEST(SafetensorsCheckpoint, RefusesInconsistentShards) {
  ScratchDir dir;
  SafetensorsBuilder shard;
  shard.add_tensor("a", "F32", {1}, f32_bytes({1}));
  dir.write("one.safetensors", shard.build());
  dir.write("two.safetensors", shard.build());
  const auto open_with_index = [&](const std::string& index) {
    dir.write("model.safetensors.index.json", index);
    return SafetensorsCheckpoint::open_folder(dir.path().string());
  };
  const auto missing =
      open_with_index(R"({"weight_map": {"a": "one.safetensors", "z": "one.safetensors"}})");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(contains(missing.error().message, "places tensor 'z' in one.safetensors"));
  const auto unlisted = open_with_index(R"({"weight_map": {"z": "one.safetensors"}})");
  ASSERT_FALSE(unlisted.ok());
  EXPECT_TRUE(
      contains(unlisted.error().message, "tensor 'a' is in one.safetensors, but the index"));
  const auto twice =
      open_with_index(R"({"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}})");
  ASSERT_FALSE(twice.ok());
  EXPECT_TRUE(contains(twice.error().message, "tensor 'a' is in both"));
  const auto escape = open_with_index(R"({"weight_map": {"a": "../one.safetensors"}})");
  ASSERT_FALSE(escape.ok());
  EXPECT_TRUE(contains(escape.error().message, "must be a file in the same folder"));
  const auto absent = open_with_index(R"({"weight_map": {"a": "three.safetensors"}})");
  ASSERT_FALSE(absent.ok());
  EXPECT_TRUE(contains(absent.error().message, "three.safetensors: cannot open"));
  const auto malformed = open_with_index(R"({"weight_map": [)");
  ASSERT_FALSE(malformed.ok());
  EXPECT_TRUE(contains(malformed.error().message, "not valid JSON"));
}

TEST(SafetensorsCheckpoint, EmptyFolderSaysWhatIsMissing) {
  ScratchDir dir;
  const auto checkpoint = SafetensorsCheckpoint::open_folder(dir.path().string());
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_TRUE(contains(checkpoint.error().message, "no model.safetensors"));
}

}  // namespace
}  // namespace draftwise
