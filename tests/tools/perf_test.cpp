// `draftwise perf` refuses bad arguments with one line naming the problem, before it touches
// a GPU; builds without CUDA say that they have none. (Its measurements need a GPU and are
// run by scripts/gpu_perf.sh: docs/perf.md.)
#include <gtest/gtest.h>

#include "tests/support/run_command.h"

namespace draftwise {
namespace {

void expect_refused(const std::vector<std::string>& args, const std::string& problem) {
  std::vector<std::string> command = {"perf"};
  command.insert(command.end(), args.begin(), args.end());
  const testing::CommandResult result = testing::run_draftwise(command);
  EXPECT_EQ(result.signal, 0);
  EXPECT_EQ(result.exit_code, 1) << result.err;
  ASSERT_FALSE(result.err.empty());
  EXPECT_EQ(result.err.find('\n'), result.err.size() - 1) << "more than one line: " << result.err;
#ifdef DRAFTWISE_HAVE_CUDA
  EXPECT_NE(result.err.find(problem), std::string::npos) << "expected '" << problem << "' in: " << result.err;
#else
  (void)problem;
  EXPECT_NE(result.err.find("no CUDA backend"), std::string::npos) << result.err;
#endif
}

TEST(Perf, RefusesBadArgumentsBeforeTouchingTheGpu) {
  expect_refused({}, "give at least one --model PATH or --random-weights CONFIG.json");
  const std::string model = "--random-weights=configs/llama-3.2-1b.json";
  expect_refused({model, "--device", "cpu"}, "give --device cuda");
  expect_refused({model, "--batches", "0"}, "--batches: 0 is outside [1, 1024]");
  expect_refused({model, "--batches", "1,x"}, "--batches");
  expect_refused({model, "--contexts", "512,-5"}, "--contexts: -5 is outside [1, 16777216]");
  expect_refused({model, "--contexts", "512,"}, "--contexts");
  expect_refused({model, "--prefill", "-1"}, "--prefill must be 0 (none) or positive");
  expect_refused({model, "--steps", "0"}, "--steps and --repeats must be positive");
}

#ifdef DRAFTWISE_HAVE_CUDA
TEST(Perf, HelpDescribesTheCommand) {
  const testing::CommandResult result = testing::run_draftwise({"perf", "--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("--random-weights"), std::string::npos) << result.out;
}
#endif

}  // namespace
}  // namespace draftwise
