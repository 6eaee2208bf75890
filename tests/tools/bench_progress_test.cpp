// The benchmark's progress: one rewritten status line on a terminal, periodic plain lines
// otherwise (the first and the last always), with running τ and tokens/s per mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "tools/bench_progress.h"

namespace draftwise {
namespace {

PromptOutcome outcome(int64_t tokens, double seconds, int drafts, int accepted) {
  PromptOutcome result;
  ModeOutcome plain;
  plain.tokens = tokens;
  plain.seconds = seconds;
  ModeOutcome drafting = plain;
  drafting.seconds = seconds / 2;
  for (int i = 0; i < drafts; ++i) drafting.speculation.add_step(4, i < accepted ? 2 : 0);
  result.modes = {plain, drafting};
  return result;
}

std::string written(std::FILE* file) {
  std::rewind(file);
  std::string text;
  for (int c = std::fgetc(file); c != EOF; c = std::fgetc(file)) text += static_cast<char>(c);
  return text;
}

size_t count(const std::string& text, char c) { return static_cast<size_t>(std::count(text.begin(), text.end(), c)); }

TEST(BenchProgress, TerminalRewritesOneStatusLine) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  BenchProgressDisplay display(file, /*terminal=*/true, 3, {"ar", "self:8@4"});
  for (int i = 0; i < 3; ++i) display.prompt_done("", "qa", std::to_string(i), outcome(100, 1.0, 10, 5));
  EXPECT_EQ(count(written(file), '\n'), 0u);
  EXPECT_EQ(count(written(file), '\r'), 3u);
  display.finish();
  const std::string text = written(file);
  EXPECT_EQ(count(text, '\n'), 1u);
  // 10 drafts a prompt, half of them with 2 accepted: τ = 1 + 10/10 = 2; 300 tokens in 1.5 s.
  EXPECT_NE(text.find("[3/3] qa 2: ar 100 tok/s; self:8@4 200 tok/s τ 2.00;"), std::string::npos) << text;
  std::fclose(file);
}

TEST(BenchProgress, NotATerminalPrintsPeriodicLinesAndTheLast) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  BenchProgressDisplay display(file, /*terminal=*/false, 5, {"ar", "self:8@4"}, /*interval_seconds=*/3600);
  for (int i = 1; i <= 5; ++i) display.prompt_done("learning", "qa", std::to_string(i), outcome(100, 1.0, 10, 0));
  display.finish();
  const std::string text = written(file);
  EXPECT_EQ(count(text, '\n'), 2u) << text;  // the first and the last
  EXPECT_EQ(count(text, '\r'), 0u);
  EXPECT_NE(text.find("[1/5] learning qa 1:"), std::string::npos) << text;
  EXPECT_NE(text.find("[5/5] learning qa 5:"), std::string::npos) << text;
  EXPECT_NE(text.find("τ 1.00"), std::string::npos) << text;
  std::fclose(file);
}

TEST(BenchProgress, RunningFiguresRestartWithEachPhaseAndCountMismatches) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  BenchProgressDisplay display(file, /*terminal=*/false, 2, {"ar", "self:8@4"}, 0);
  display.prompt_done("heldout_before", "qa", "1", outcome(100, 1.0, 10, 0));
  PromptOutcome differing = outcome(100, 1.0, 10, 10);
  differing.modes[1].difference = OutputDifference{};
  display.prompt_done("learning", "qa", "2", differing);
  const std::string line = display.line();
  EXPECT_NE(line.find("τ 3.00"), std::string::npos) << line;  // the learning phase alone
  EXPECT_NE(line.find("1 outputs differ from ar's"), std::string::npos) << line;
  std::fclose(file);
}

}  // namespace
}  // namespace draftwise
