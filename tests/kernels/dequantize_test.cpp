// Dequantization of every GGUF block format: hand-built blocks packed from chosen values,
// and random blocks against the values gguf-py (llama.cpp's Python package) gives.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/cpu/dequantize.h"
#include "kernels/half.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using Bytes = std::vector<unsigned char>;

void put_half(Bytes& block, size_t offset, float value) {
  const uint16_t bits = f32_to_fp16(value);
  std::memcpy(block.data() + offset, &bits, 2);
}

std::vector<float> dequantize(TensorType type, const Bytes& bytes, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count), std::nanf(""));
  const Status status =
      dequantize_to_f32(type, reinterpret_cast<const std::byte*>(bytes.data()), count, out.data());
  EXPECT_TRUE(status.ok()) << status.error().message;
  return out;
}

// Packs 32 4-bit values: value j < 16 in the low nibble of byte j, value j + 16 in the high.
void pack_nibbles(Bytes& block, size_t offset, const int* q) {
  for (int j = 0; j < 16; ++j)
    block[offset + j] = static_cast<unsigned char>((q[j] & 15) | ((q[j + 16] & 15) << 4));
}

// Packs the fifth bits of 32 values into a little-endian u32: bit j is value j's.
void pack_fifth_bits(Bytes& block, size_t offset, const int* q) {
  uint32_t bits = 0;
  for (int j = 0; j < 32; ++j) bits |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  std::memcpy(block.data() + offset, &bits, 4);
}

TEST(Dequantize, Q4_0) {
  Bytes block(18);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = (j * 7) % 16;
  put_half(block, 0, 0.5f);
  pack_nibbles(block, 2, q);
  const std::vector<float> values = dequantize(TensorType::q4_0, block, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(values[j], (q[j] - 8) * 0.5f) << j;
}

TEST(Dequantize, Q4_1) {
  Bytes block(20);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = 15 - (j % 16);
  put_half(block, 0, 0.25f);
  put_half(block, 2, -1.5f);
  pack_nibbles(block, 4, q);
  const std::vector<float> values = dequantize(TensorType::q4_1, block, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(values[j], q[j] * 0.25f - 1.5f) << j;
}

TEST(Dequantize, Q5_0) {
  Bytes block(22);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = (j * 11 + 3) % 32;
  put_half(block, 0, 2.0f);
  pack_fifth_bits(block, 2, q);
  pack_nibbles(block, 6, q);
  const std::vector<float> values = dequantize(TensorType::q5_0, block, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(values[j], (q[j] - 16) * 2.0f) << j;
}

TEST(Dequantize, Q5_1) {
  Bytes block(24);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = 31 - j;
  put_half(block, 0, 0.125f);
  put_half(block, 2, 3.0f);
  pack_fifth_bits(block, 4, q);
  pack_nibbles(block, 8, q);
  const std::vector<float> values = dequantize(TensorType::q5_1, block, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(values[j], q[j] * 0.125f + 3.0f) << j;
}

TEST(Dequantize, Q8_0AcrossTwoBlocks) {
  Bytes blocks(68);
  for (int b = 0; b < 2; ++b) {
    put_half(blocks, 34 * b, b == 0 ? 0.0625f : -4.0f);
    for (int j = 0; j < 32; ++j) {
      const auto value = static_cast<int8_t>(j * 8 - 128 + b);
      std::memcpy(&blocks[34 * b + 2 + j], &value, 1);
    }
  }
  const std::vector<float> values = dequantize(TensorType::q8_0, blocks, 64);
  for (int b = 0; b < 2; ++b) {
    for (int j = 0; j < 32; ++j) {
      EXPECT_EQ(values[32 * b + j], (j * 8 - 128 + b) * (b == 0 ? 0.0625f : -4.0f));
    }
  }
}

// 6-bit scales and mins of the eight sub-blocks, packed into 12 bytes as Q4_K/Q5_K keep them.
void pack_k_scales(Bytes& block, size_t offset, const int* scale, const int* min) {
  for (int j = 0; j < 4; ++j) {
    block[offset + j] = static_cast<unsigned char>(scale[j] | ((scale[j + 4] >> 4) << 6));
    block[offset + j + 4] = static_cast<unsigned char>(min[j] | ((min[j + 4] >> 4) << 6));
    block[offset + j + 8] =
        static_cast<unsigned char>((scale[j + 4] & 15) | ((min[j + 4] & 15) << 4));
  }
}

TEST(Dequantize, Q4_K) {
  Bytes block(144);
  const int scale[8] = {1, 63, 7, 32, 17, 48, 5, 60};
  const int min[8] = {0, 5, 62, 33, 40, 1, 63, 16};
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 5 + i / 32) % 16;
  put_half(block, 0, 0.5f);
  put_half(block, 2, 0.25f);
  pack_k_scales(block, 4, scale, min);
  // Sub-blocks 2p and 2p+1 share bytes 32p..32p+31: low nibble, high nibble.
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      block[16 + 32 * p + l] =
          static_cast<unsigned char>(q[64 * p + l] | (q[64 * p + 32 + l] << 4));
    }
  }
  const std::vector<float> values = dequantize(TensorType::q4_k, block, 256);
  for (int i = 0; i < 256; ++i) {
    const float expected = 0.5f * scale[i / 32] * q[i] - 0.25f * min[i / 32];
    EXPECT_EQ(values[i], expected) << i;
  }
}

TEST(Dequantize, Q5_K) {
  Bytes block(176);
  const int scale[8] = {63, 1, 2, 40, 33, 16, 9, 50};
  const int min[8] = {12, 0, 63, 7, 31, 32, 2, 45};
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 13 + 7) % 32;
  put_half(block, 0, -0.75f);
  put_half(block, 2, 1.0f);
  pack_k_scales(block, 4, scale, min);
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * p + l], hi = q[64 * p + 32 + l];
      block[48 + 32 * p + l] = static_cast<unsigned char>((lo & 15) | ((hi & 15) << 4));
      block[16 + l] |=
          static_cast<unsigned char>(((lo >> 4) << (2 * p)) | ((hi >> 4) << (2 * p + 1)));
    }
  }
  const std::vector<float> values = dequantize(TensorType::q5_k, block, 256);
  for (int i = 0; i < 256; ++i) {
    const float expected = -0.75f * scale[i / 32] * q[i] - 1.0f * min[i / 32];
    EXPECT_EQ(values[i], expected) << i;
  }
}

TEST(Dequantize, Q6_K) {
  Bytes block(210);
  int8_t scale[16];
  for (int s = 0; s < 16; ++s) scale[s] = static_cast<int8_t>(s * 17 - 128);
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 29 + 3) % 64;
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = q[128 * half + l], q2 = q[128 * half + l + 32];
      const int q3 = q[128 * half + l + 64], q4 = q[128 * half + l + 96];
      block[64 * half + l] = static_cast<unsigned char>((q1 & 15) | ((q3 & 15) << 4));
      block[64 * half + l + 32] = static_cast<unsigned char>((q2 & 15) | ((q4 & 15) << 4));
      block[128 + 32 * half + l] = static_cast<unsigned char>((q1 >> 4) | ((q2 >> 4) << 2) |
                                                              ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
  std::memcpy(&block[192], scale, 16);
  put_half(block, 208, 0.5f);
  const std::vector<float> values = dequantize(TensorType::q6_k, block, 256);
  for (int i = 0; i < 256; ++i) {
    const float expected = 0.5f * static_cast<float>(scale[i / 16]) * static_cast<float>(q[i] - 32);
    EXPECT_EQ(values[i], expected) << i;
  }
}

TEST(Dequantize, PlainFloats) {
  const float f32[] = {1.5f, -0.0f, 3e38f};
  Bytes f32_bytes(sizeof f32);
  std::memcpy(f32_bytes.data(), f32, sizeof f32);
  EXPECT_EQ(dequantize(TensorType::f32, f32_bytes, 3), std::vector<float>(f32, f32 + 3));
  // fp16: 1.0, -2.0, 65504, smallest subnormal; bf16: 1.0, -123.5.
  const Bytes f16_bytes = {0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00};
  EXPECT_EQ(dequantize(TensorType::f16, f16_bytes, 4),
            (std::vector<float>{1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f}));
  const Bytes bf16_bytes = {0x80, 0x3F, 0xF7, 0xC2};
  EXPECT_EQ(dequantize(TensorType::bf16, bf16_bytes, 2), (std::vector<float>{1.0f, -123.5f}));
  const double f64[] = {0.1, -2.0};
  Bytes f64_bytes(sizeof f64);
  std::memcpy(f64_bytes.data(), f64, sizeof f64);
  EXPECT_EQ(dequantize(TensorType::f64, f64_bytes, 2), (std::vector<float>{0.1f, -2.0f}));
}

// Found by the GGUF fuzzer: an empty tensor's data pointer may be null.
TEST(Dequantize, EmptyTensorWithoutStorageReadsNothing) {
  for (const TensorType type : {TensorType::f32, TensorType::f16, TensorType::q4_k}) {
    EXPECT_TRUE(dequantize_to_f32(type, nullptr, 0, nullptr).ok());
  }
}

TEST(Dequantize, RejectsPartialBlocksAndIntegerTypes) {
  std::vector<float> out(64);
  const Bytes block(34);
  const auto* src = reinterpret_cast<const std::byte*>(block.data());
  const Status partial = dequantize_to_f32(TensorType::q8_0, src, 31, out.data());
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.error().message.find("32-value blocks"), std::string::npos);
  const Status integer = dequantize_to_f32(TensorType::i8, src, 4, out.data());
  ASSERT_FALSE(integer.ok());
  EXPECT_NE(integer.error().message.find("I8"), std::string::npos);
}

TEST(Dequantize, MatchesGgufPyOnRandomBlocks) {
  std::ifstream in(testing::fixtures_dir() / "dequant" / "gguf_py_reference.json");
  ASSERT_TRUE(in) << "missing fixture";
  const nlohmann::json reference = nlohmann::json::parse(in);
  const std::map<std::string, TensorType> types = {
      {"Q4_0", TensorType::q4_0}, {"Q4_1", TensorType::q4_1}, {"Q5_0", TensorType::q5_0},
      {"Q5_1", TensorType::q5_1}, {"Q8_0", TensorType::q8_0}, {"Q4_K", TensorType::q4_k},
      {"Q5_K", TensorType::q5_k}, {"Q6_K", TensorType::q6_k}, {"F16", TensorType::f16},
      {"BF16", TensorType::bf16}};
  size_t checked = 0;
  for (const auto& entry : reference["cases"]) {
    const std::string name = entry["type"];
    SCOPED_TRACE(name);
    const std::string hex = entry["hex"];
    Bytes bytes;
    for (size_t i = 0; i < hex.size(); i += 2) {
      bytes.push_back(static_cast<unsigned char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    const std::vector<float> expected = entry["values"].get<std::vector<float>>();
    const std::vector<float> values =
        dequantize(types.at(name), bytes, static_cast<int64_t>(expected.size()));
    for (size_t i = 0; i < expected.size(); ++i) {
      // gguf-py computes in numpy float32 with its own operation order: allow one rounding.
      EXPECT_NEAR(values[i], expected[i], 1e-6f * std::max(1.0f, std::fabs(expected[i]))) << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, types.size());
}

}  // namespace
}  // namespace draftwise
