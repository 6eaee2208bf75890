#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "kernels/half.h"

namespace draftwise {
namespace {

TEST(Half, KnownFp16Values) {
  EXPECT_EQ(fp16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(fp16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_f32(0x0001), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(fp16_to_f32(0x0400), 6.103515625e-5f);         // smallest normal
  EXPECT_TRUE(std::isinf(fp16_to_f32(0x7C00)));
  EXPECT_TRUE(std::isnan(fp16_to_f32(0x7E00)));
  EXPECT_TRUE(std::signbit(fp16_to_f32(0x8000)));
}

TEST(Half, EveryFp16RoundTripsThroughF32) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const float value = fp16_to_f32(static_cast<uint16_t>(bits));
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(fp16_to_f32(f32_to_fp16(value))));
      continue;
    }
    ASSERT_EQ(f32_to_fp16(value), bits) << "fp16 bits " << bits;
  }
}

TEST(Half, F32ToFp16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // halfway, even stays
  EXPECT_EQ(f32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // halfway, rounds up to even
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7C00);                          // rounds to infinity
  EXPECT_EQ(f32_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(f32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to the smallest subnormal
  EXPECT_EQ(f32_to_fp16(std::ldexp(3.0f, -26)), 0x0001);
}

TEST(Half, Bf16IsTheTopHalfOfF32) {
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xC2F7), -123.5f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (down); 1 + 3*2^-8 rounds up.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace
}  // namespace draftwise
