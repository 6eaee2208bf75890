#include <gtest/gtest.h>

#include <limits>

#include "kernels/tensor_type.h"

namespace draftwise {
namespace {

TEST(TensorType, BytesOfWholeBlocks) {
  EXPECT_EQ(tensor_type_bytes(TensorType::f32, 10), 40u);
  EXPECT_EQ(tensor_type_bytes(TensorType::bf16, 3), 6u);
  EXPECT_EQ(tensor_type_bytes(TensorType::q4_0, 64), 36u);
  EXPECT_EQ(tensor_type_bytes(TensorType::q6_k, 512), 420u);
  EXPECT_EQ(tensor_type_bytes(TensorType::q4_k, 0), 0u);
}

TEST(TensorType, RejectsPartialBlocksNegativeCountsAndOverflow) {
  EXPECT_FALSE(tensor_type_bytes(TensorType::q8_0, 33).has_value());
  EXPECT_FALSE(tensor_type_bytes(TensorType::f32, -1).has_value());
  EXPECT_FALSE(tensor_type_bytes(TensorType::f64, std::numeric_limits<int64_t>::max()).has_value());
}

TEST(TensorType, ElementCountDetectsOverflow) {
  const int64_t ok[] = {4, 5, 6};
  EXPECT_EQ(checked_element_count(ok, 3), 120);
  const int64_t big[] = {int64_t{1} << 40, int64_t{1} << 30};
  EXPECT_FALSE(checked_element_count(big, 2).has_value());
  const int64_t negative[] = {3, -1};
  EXPECT_FALSE(checked_element_count(negative, 2).has_value());
  const int64_t empty[] = {0, int64_t{1} << 62, 8};
  EXPECT_EQ(checked_element_count(empty, 3), 0);
}

}  // namespace
}  // namespace draftwise
