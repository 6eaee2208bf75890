#include <gtest/gtest.h>

#include "engine/tokenizer/bpe.h"

namespace draftwise {
namespace {

// Token ids: 0 a, 1 b, 2 c, 10 ab, 11 bc, 12 aa, 13 abc, 14 aaa
TEST(BpeMergeTable, MergesLowestRankFirst) {
  BpeMergeTable merges;
  merges.add(1, 2, /*rank=*/0, /*result=*/11);   // b c -> bc
  merges.add(0, 1, /*rank=*/1, /*result=*/10);   // a b -> ab
  merges.add(10, 2, /*rank=*/2, /*result=*/13);  // ab c -> abc (never reached: bc wins)
  std::vector<int32_t> symbols = {0, 1, 2};
  merges.apply(symbols);
  EXPECT_EQ(symbols, (std::vector<int32_t>{0, 11}));
}

TEST(BpeMergeTable, EqualRanksMergeLeftmostFirst) {
  BpeMergeTable merges;
  merges.add(0, 0, 0, 12);   // a a -> aa
  merges.add(12, 0, 1, 14);  // aa a -> aaa
  std::vector<int32_t> symbols = {0, 0, 0, 0, 0};
  merges.apply(symbols);
  // Rank 0 merges the leftmost pairs first: a a a a a -> aa aa a; then (aa, a) merges at
  // the end only, since the first aa is now followed by aa.
  EXPECT_EQ(symbols, (std::vector<int32_t>{12, 14}));
}

TEST(BpeMergeTable, DuplicatePairTakesTheLaterRank) {
  BpeMergeTable merges;
  merges.add(0, 1, 2, 10);
  merges.add(0, 1, 5, 10);
  ASSERT_NE(merges.find(0, 1), nullptr);
  EXPECT_EQ(merges.find(0, 1)->rank, 5);
  EXPECT_EQ(merges.find(0, 1)->result, 10);
  EXPECT_EQ(merges.find(1, 0), nullptr);
  EXPECT_EQ(merges.size(), 1u);
}

TEST(BpeMergeTable, ShortInputsAreLeftAlone) {
  BpeMergeTable merges;
  merges.add(0, 1, 0, 10);
  std::vector<int32_t> empty;
  merges.apply(empty);
  EXPECT_TRUE(empty.empty());
  std::vector<int32_t> one = {0};
  merges.apply(one);
  EXPECT_EQ(one, std::vector<int32_t>{0});
}

}  // namespace
}  // namespace draftwise
