// Runs the draftwise binary as a user would and captures what it prints.
#pragma once

#include <string>
#include <vector>

namespace draftwise::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal, when killed by one
  std::string out;
  std::string err;
};

// Runs draftwise_binary() with `args` (no shell involved).
CommandResult run_draftwise(const std::vector<std::string>& args);

// Runs `draftwise command args...` and checks it is refused as a user's mistake must be: one
// line on stderr naming `problem`, exit code `exit_code` (2 for usage errors), no crash.
void expect_command_refused(const std::string& command, const std::vector<std::string>& args,
                            const std::string& problem, int exit_code = 1);

}  // namespace draftwise::testing
