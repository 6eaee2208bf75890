#include <gtest/gtest.h>

#include "engine/stop_strings.h"

namespace draftwise {
namespace {

// Pushes pieces one at a time and returns everything released, the held tail included.
std::string stream(StopStringMatcher& matcher, std::initializer_list<const char*> pieces) {
  std::string out;
  for (const char* piece : pieces) out += matcher.push(piece);
  return out + matcher.finish();
}

TEST(StopStrings, CutsAtTheFirstStopStringAcrossPieces) {
  StopStringMatcher matcher({"\n\n", "END"});
  EXPECT_EQ(stream(matcher, {"Hello", " wor", "ld.\n", "\nMore"}), "Hello world.");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.matched(), "\n\n");
  EXPECT_EQ(matcher.push("ignored"), "");
}

TEST(StopStrings, HoldsBackOnlyWhatCouldStartAStopString) {
  StopStringMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.push("abcS"), "abc");
  EXPECT_EQ(matcher.push("T"), "");
  EXPECT_EQ(matcher.push("x"), "STx");
  EXPECT_EQ(matcher.finish(), "");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopStrings, ReleasesTheHeldTailAtTheEnd) {
  StopStringMatcher matcher({"STOP"});
  EXPECT_EQ(stream(matcher, {"abc", "ST"}), "abcST");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopStrings, EarliestOfSeveralWins) {
  StopStringMatcher matcher({"cd", "b"});
  EXPECT_EQ(stream(matcher, {"abcd"}), "a");
  EXPECT_EQ(matcher.matched(), "b");
}

TEST(StopStrings, NoStopStringsPassEverythingThrough) {
  StopStringMatcher matcher({"", ""});
  EXPECT_EQ(matcher.push("any text"), "any text");
  EXPECT_FALSE(matcher.stopped());
}

}  // namespace
}  // namespace draftwise
