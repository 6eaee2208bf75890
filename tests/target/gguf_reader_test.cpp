#include <gtest/gtest.h>

#include <cstring>

#include "target/gguf_reader.h"
#include "tests/support/gguf_builder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::append_scalar;
using testing::GgufBuilder;

Expected<GgufFile> parse(const std::string& bytes) {
  return GgufFile::parse({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()},
                         "test.gguf");
}

// Parses `bytes` expecting failure; returns the message.
std::string parse_error(const std::string& bytes) {
  const Expected<GgufFile> file = parse(bytes);
  EXPECT_FALSE(file.ok()) << "parsed a file it should refuse";
  if (file.ok()) return {};
  EXPECT_TRUE(file.error().message.starts_with("test.gguf: ")) << file.error().message;
  EXPECT_EQ(file.error().message.find('\n'), std::string::npos);
  return file.error().message;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string f32_data(std::initializer_list<float> values) {
  std::string bytes;
  for (const float value : values) append_scalar(bytes, value);
  return bytes;
}

TEST(GgufReader, ReadsEveryMetadataTypeIncludingNestedArrays) {
  for (const uint32_t version : {2u, 3u}) {
    GgufBuilder builder(version);
    builder.add("u8", GgufValue::unsigned_integer(gguf::ValueType::u8, 200));
    builder.add("i8", GgufValue::signed_integer(gguf::ValueType::i8, -100));
    builder.add("u16", GgufValue::unsigned_integer(gguf::ValueType::u16, 60000));
    builder.add("i16", GgufValue::signed_integer(gguf::ValueType::i16, -30000));
    builder.add("u32", GgufValue::unsigned_integer(gguf::ValueType::u32, 4000000000u));
    builder.add("i32", GgufValue::signed_integer(gguf::ValueType::i32, -2000000000));
    builder.add("u64", GgufValue::unsigned_integer(gguf::ValueType::u64, 1ull << 62));
    builder.add("i64", GgufValue::signed_integer(gguf::ValueType::i64, -(1ll << 60)));
    builder.add("f32", GgufValue::floating(gguf::ValueType::f32, 0.5));
    builder.add("f64", GgufValue::floating(gguf::ValueType::f64, -1e300));
    builder.add_bool("bool", true);
    builder.add_string("string", "héllo\n");
    const std::vector<GgufValue> inner_a{GgufValue::signed_integer(gguf::ValueType::i32, 1),
                                         GgufValue::signed_integer(gguf::ValueType::i32, 2)};
    const std::vector<GgufValue> outer{GgufValue::array(gguf::ValueType::i32, inner_a),
                                       GgufValue::array(gguf::ValueType::i32, {})};
    builder.add("nested", GgufValue::array(gguf::ValueType::array, outer));
    builder.add("flags", GgufValue::array(gguf::ValueType::boolean,
                                          {GgufValue::boolean(true), GgufValue::boolean(false)}));
    builder.add("u64s", GgufValue::array(gguf::ValueType::u64, {GgufValue::unsigned_integer(
                                                                   gguf::ValueType::u64, ~0ull)}));
    builder.add("doubles", GgufValue::array(gguf::ValueType::f64,
                                            {GgufValue::floating(gguf::ValueType::f64, -2.5)}));
    builder.add_strings("strings", {"a", "", "ccc"});

    const Expected<GgufFile> file = parse(builder.build());
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_EQ(file->version(), version);
    EXPECT_EQ(file->find("u8")->as_int(), 200);
    EXPECT_EQ(file->find("i8")->as_int(), -100);
    EXPECT_EQ(file->find("u16")->as_int(), 60000);
    EXPECT_EQ(file->find("i16")->as_int(), -30000);
    EXPECT_EQ(file->find("u32")->as_int(), 4000000000ll);
    EXPECT_EQ(file->find("i32")->as_int(), -2000000000);
    EXPECT_EQ(file->find("u64")->as_int(), 1ll << 62);
    EXPECT_EQ(file->find("i64")->as_int(), -(1ll << 60));
    EXPECT_EQ(file->find("f32")->as_float(), 0.5);
    EXPECT_EQ(file->find("f64")->as_float(), -1e300);
    EXPECT_EQ(file->find("bool")->as_bool(), true);
    EXPECT_EQ(*file->find("string")->as_string(), "héllo\n");
    const std::vector<GgufValue>* nested = file->find("nested")->as_arrays();
    ASSERT_NE(nested, nullptr);
    ASSERT_EQ(nested->size(), 2u);
    EXPECT_EQ(file->find("nested")->element_type(), gguf::ValueType::array);
    EXPECT_EQ((*nested)[0].as_numbers()->int_at(1), 2);
    EXPECT_EQ((*nested)[1].array_size(), 0u);
    EXPECT_EQ(file->find("flags")->as_numbers()->int_at(0), 1);
    EXPECT_EQ(file->find("flags")->as_numbers()->int_at(1), 0);
    EXPECT_FALSE(file->find("u64s")->as_numbers()->int_at(0).has_value());  // beyond int64
    EXPECT_EQ(file->find("doubles")->as_numbers()->float_at(0), -2.5);
    EXPECT_FALSE(file->find("doubles")->as_numbers()->int_at(0).has_value());
    EXPECT_EQ((*file->find("strings")->as_strings())[2], "ccc");
    EXPECT_EQ(file->find("strings")->to_display(), "[3 x string] \"a\", \"\", \"ccc\"");
    EXPECT_EQ(file->find("nested")->to_display(), "[2 x array] [2 x int32], [0 x int32]");
    EXPECT_EQ(file->find("absent"), nullptr);
    // Typed reads refuse other types instead of converting them.
    EXPECT_FALSE(file->find("string")->as_int().has_value());
    EXPECT_FALSE(file->find("f32")->as_int().has_value());
    EXPECT_EQ(file->find("u32")->as_string(), nullptr);
  }
}

// Found in review: numeric arrays once took 48 bytes per element in memory.
TEST(GgufReader, NumericArraysAreReadInPlace) {
  GgufBuilder builder;
  std::vector<GgufValue> bytes(100000, GgufValue::unsigned_integer(gguf::ValueType::u8, 7));
  builder.add("big", GgufValue::array(gguf::ValueType::u8, bytes));
  const std::string file_bytes = builder.build();
  const Expected<GgufFile> file = parse(file_bytes);
  ASSERT_TRUE(file.ok());
  const GgufNumbers* numbers = file->find("big")->as_numbers();
  ASSERT_NE(numbers, nullptr);
  EXPECT_EQ(numbers->size(), 100000u);
  EXPECT_EQ(numbers->int_at(99999), 7);
  const auto* begin = reinterpret_cast<const std::byte*>(file_bytes.data());
  EXPECT_GE(numbers->bytes().data(), begin);
  EXPECT_LE(numbers->bytes().data() + numbers->bytes().size(), begin + file_bytes.size());
}

TEST(GgufReader, TypedReadsNameTheKeyOnATypeMismatch) {
  GgufBuilder builder;
  builder.add_u32("count", 7);
  builder.add_string("name", "llama");
  builder.add_f32("eps", 0.5f);
  const std::string bytes = builder.build();
  const Expected<GgufFile> file = parse(bytes);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->read_int("count")->value(), 7);
  EXPECT_EQ(file->read_string("name")->value(), "llama");
  EXPECT_EQ(file->read_float("eps")->value(), 0.5);
  EXPECT_FALSE(file->read_bool("absent")->has_value());
  const auto wrong = file->read_int("name");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().message, "test.gguf: metadata 'name' must be an integer, got \"llama\"");
  EXPECT_FALSE(file->read_string("count").ok());
  EXPECT_FALSE(file->read_bool("eps").ok());
}

TEST(GgufReader, TensorsAreViewsAtAlignedOffsets) {
  for (const uint32_t alignment : {32u, 64u, 8u}) {
    GgufBuilder builder;
    builder.set_alignment(alignment);
    builder.add_tensor("a", TensorType::f32, {3}, f32_data({1, 2, 3}));
    builder.add_tensor("b", TensorType::f32, {2, 2}, f32_data({4, 5, 6, 7}));
    const std::string bytes = builder.build();
    const Expected<GgufFile> file = parse(bytes);
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_EQ(file->alignment(), alignment);
    const GgufTensorInfo* b = file->find_tensor("b");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(b->offset % alignment, 0u);
    float values[4];
    std::memcpy(values, file->tensor_data(*b).data(), sizeof values);
    EXPECT_EQ(values[3], 7.0f);
  }
}

TEST(GgufReader, ShapeIsRowMajorReverseOfNe) {
  GgufBuilder builder;
  builder.add_raw_tensor_info("w", 2 /* Q4_0 */, {64, 3}, 0);
  builder.append_data(std::string(3 * 36, '\0'));
  const Expected<GgufFile> file = parse(builder.build());
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(file->tensors()[0].shape, (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(file->tensors()[0].type, TensorType::q4_0);
  EXPECT_EQ(file->tensors()[0].nbytes, 3u * 36u);
}

TEST(GgufReader, RefusesWrongMagic) {
  std::string bytes = GgufBuilder().build();
  bytes[0] = 'X';
  EXPECT_TRUE(contains(parse_error(bytes), "not a GGUF file (wrong magic bytes)"));
  EXPECT_TRUE(contains(parse_error("{\"not\": \"gguf\"}"), "wrong magic"));
}

TEST(GgufReader, RefusesUnsupportedVersionsAndBigEndian) {
  EXPECT_TRUE(contains(parse_error(GgufBuilder(1).build()), "version 1 is not supported"));
  EXPECT_TRUE(contains(parse_error(GgufBuilder(4).build()), "version 4 is newer"));
  std::string big_endian = GgufBuilder(3).build();
  const uint32_t swapped = 0x03000000;
  std::memcpy(&big_endian[4], &swapped, 4);
  EXPECT_TRUE(contains(parse_error(big_endian), "big-endian"));
}

TEST(GgufReader, RefusesEveryTruncation) {
  GgufBuilder builder;
  builder.add_string("general.architecture", "llama");
  builder.add_strings("tokens", {"a", "b"});
  builder.add_tensor("t", TensorType::f32, {4}, f32_data({1, 2, 3, 4}));
  const std::string bytes = builder.build();
  ASSERT_TRUE(parse(bytes).ok());
  for (size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE(length);
    const std::string message = parse_error(bytes.substr(0, length));
    EXPECT_TRUE(contains(message, "truncated") || contains(message, "past the end") ||
                contains(message, "leaves the data section") || contains(message, "cannot fit") ||
                contains(message, "more than the file can hold"))
        << message;
  }
}

TEST(GgufReader, RefusesTensorLeavingTheDataSection) {
  GgufBuilder builder;
  builder.add_raw_tensor_info("w", 0 /* F32 */, {16}, 0);
  builder.append_data(std::string(32, '\0'));  // 16 floats need 64 bytes
  const std::string message = parse_error(builder.build());
  EXPECT_TRUE(contains(message, "tensor 'w'")) << message;
  EXPECT_TRUE(contains(message, "leaves the data section")) << message;

  GgufBuilder far;
  far.add_raw_tensor_info("w", 0, {4}, 1ull << 40);
  far.append_data(std::string(64, '\0'));
  EXPECT_TRUE(contains(parse_error(far.build()), "leaves the data section"));
}

TEST(GgufReader, RefusesOverlappingTensors) {
  GgufBuilder builder;
  builder.add_raw_tensor_info("first", 0, {16}, 0);
  builder.add_raw_tensor_info("second", 0, {8}, 32);
  builder.append_data(std::string(128, '\0'));
  const std::string message = parse_error(builder.build());
  EXPECT_TRUE(contains(message, "tensors 'first' and 'second' overlap")) << message;
}

TEST(GgufReader, RefusesMisalignedOffsetAndBadAlignment) {
  GgufBuilder misaligned;
  misaligned.add_raw_tensor_info("w", 0, {4}, 4);
  misaligned.append_data(std::string(64, '\0'));
  EXPECT_TRUE(contains(parse_error(misaligned.build()), "not a multiple of the alignment"));

  GgufBuilder bad;
  bad.add_u32("general.alignment", 24);
  EXPECT_TRUE(contains(parse_error(bad.build()), "power of two"));
}

TEST(GgufReader, RefusesUnknownAndUnsupportedTensorTypes) {
  GgufBuilder unknown;
  unknown.add_raw_tensor_info("w", 99, {32}, 0);
  unknown.append_data(std::string(256, '\0'));
  EXPECT_TRUE(contains(parse_error(unknown.build()), "tensor 'w' has unknown tensor type 99"));

  GgufBuilder iq;
  iq.add_raw_tensor_info("w", 16 /* IQ2_XXS */, {256}, 0);
  iq.append_data(std::string(256, '\0'));
  EXPECT_TRUE(
      contains(parse_error(iq.build()), "quantization type IQ2_XXS, which draftwise cannot read"));
}

TEST(GgufReader, RefusesBadShapes) {
  GgufBuilder partial_block;
  partial_block.add_raw_tensor_info("w", 8 /* Q8_0 */, {33}, 0);
  partial_block.append_data(std::string(64, '\0'));
  EXPECT_TRUE(contains(parse_error(partial_block.build()), "not a multiple of the Q8_0 block"));

  GgufBuilder overflow;
  overflow.add_raw_tensor_info("w", 0, {1ull << 40, 1ull << 40}, 0);
  EXPECT_TRUE(contains(parse_error(overflow.build()), "overflows"));

  GgufBuilder too_many_dims;
  too_many_dims.add_raw_tensor_info("w", 0, {1, 1, 1, 1, 1}, 0);
  EXPECT_TRUE(contains(parse_error(too_many_dims.build()), "has 5 dimensions"));
}

// Writes a header with one metadata entry whose bytes the test supplies.
std::string with_raw_metadata(const std::string& key, uint32_t type, const std::string& value) {
  std::string bytes;
  append_scalar<uint32_t>(bytes, gguf::kMagic);
  append_scalar<uint32_t>(bytes, 3);
  append_scalar<uint64_t>(bytes, 0);
  append_scalar<uint64_t>(bytes, 1);
  append_scalar<uint64_t>(bytes, key.size());
  bytes += key;
  append_scalar<uint32_t>(bytes, type);
  return bytes + value;
}

TEST(GgufReader, RefusesStringAndArrayLengthsThatWouldOverflow) {
  std::string huge_string;
  append_scalar<uint64_t>(huge_string, ~0ull);
  huge_string += "abc";
  const std::string string_message = parse_error(with_raw_metadata("name", 8, huge_string));
  EXPECT_TRUE(contains(string_message, "past the end of the file")) << string_message;

  std::string huge_array;
  append_scalar<uint32_t>(huge_array, 8);  // of strings
  append_scalar<uint64_t>(huge_array, 1ull << 61);
  const std::string array_message = parse_error(with_raw_metadata("tokens", 9, huge_array));
  EXPECT_TRUE(contains(array_message, "cannot fit")) << array_message;

  std::string huge_counts;
  append_scalar<uint32_t>(huge_counts, gguf::kMagic);
  append_scalar<uint32_t>(huge_counts, 3);
  append_scalar<uint64_t>(huge_counts, ~0ull);
  append_scalar<uint64_t>(huge_counts, ~0ull);
  EXPECT_TRUE(contains(parse_error(huge_counts), "more than the file can hold"));
}

TEST(GgufReader, RefusesBadMetadata) {
  EXPECT_TRUE(contains(parse_error(with_raw_metadata("x", 13, "")), "unknown value type 13"));
  std::string bad_bool(1, '\x02');
  EXPECT_TRUE(contains(parse_error(with_raw_metadata("flag", 7, bad_bool)), "must be 0 or 1"));
  std::string bad_element;
  append_scalar<uint32_t>(bad_element, 77);
  append_scalar<uint64_t>(bad_element, 0);
  EXPECT_TRUE(contains(parse_error(with_raw_metadata("list", 9, bad_element)),
                       "array of unknown value type 77"));
  // Arrays nested past the limit.
  std::string deep;
  for (int i = 0; i < 20; ++i) {
    append_scalar<uint32_t>(deep, 9);
    append_scalar<uint64_t>(deep, 1);
  }
  std::string value;
  append_scalar<uint32_t>(value, 9);
  append_scalar<uint64_t>(value, 1);
  EXPECT_TRUE(contains(parse_error(with_raw_metadata("deep", 9, value + deep)), "nests arrays"));

  GgufBuilder duplicate;
  duplicate.add_u32("k", 1);
  duplicate.add_u32("k", 2);
  EXPECT_TRUE(contains(parse_error(duplicate.build()), "metadata key 'k' appears twice"));

  GgufBuilder duplicate_tensor;
  duplicate_tensor.add_tensor("t", TensorType::f32, {1}, f32_data({1}));
  duplicate_tensor.add_tensor("t", TensorType::f32, {1}, f32_data({2}));
  EXPECT_TRUE(contains(parse_error(duplicate_tensor.build()), "tensor 't' appears twice"));
}

TEST(GgufReader, OpenNamesTheFileWhenItIsMissingOrAFolder) {
  const Expected<GgufFile> missing = GgufFile::open("/nonexistent/model.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(contains(missing.error().message, "/nonexistent/model.gguf: cannot open"));
  testing::ScratchDir scratch;
  const Expected<GgufFile> folder = GgufFile::open(scratch.path().string());
  ASSERT_FALSE(folder.ok());
  EXPECT_TRUE(contains(folder.error().message, "not a regular file"));
}

TEST(GgufReader, ReadsTheDefaultModel) {
  DW_REQUIRE_DEFAULT_MODEL();
  const Expected<GgufFile> file = GgufFile::open(testing::default_model_path().string());
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->tensors().size(), 272u);
  EXPECT_EQ(*file->find("general.architecture")->as_string(), "llama");
  EXPECT_EQ(file->find("tokenizer.ggml.tokens")->as_strings()->size(), 49152u);
  EXPECT_EQ(file->find("tokenizer.ggml.token_type")->as_numbers()->size(), 49152u);
  const GgufTensorInfo* embedding = file->find_tensor("token_embd.weight");
  ASSERT_NE(embedding, nullptr);
  EXPECT_EQ(embedding->type, TensorType::q8_0);
  EXPECT_EQ(embedding->shape, (std::vector<int64_t>{49152, 576}));
}

}  // namespace
}  // namespace draftwise
