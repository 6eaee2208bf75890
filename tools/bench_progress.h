// The benchmark's progress on stderr. On a terminal: one status line, rewritten after every
// prompt (prompts done, the phase, each mode's tokens/s and running τ, the time left).
// Otherwise (a log file, CI): the same as plain lines, at most one every `interval_seconds`,
// and always the last one.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/benchmark.h"

namespace draftwise {

class BenchProgressDisplay {
 public:
  BenchProgressDisplay(std::FILE* out, bool terminal, size_t total_prompts, std::vector<std::string> modes,
                       double interval_seconds = 5.0);

  // After each prompt: its phase ("" when there is one), category, id and outcome. The running
  // figures restart with each phase.
  void prompt_done(const std::string& phase, const std::string& category, const std::string& id,
                   const PromptOutcome& outcome);
  // Ends the terminal's status line.
  void finish();

  // The line for the state so far (exposed for tests).
  std::string line() const;

 private:
  std::FILE* out_;
  bool terminal_;
  size_t total_;
  std::vector<std::string> modes_;
  double interval_seconds_;
  std::chrono::steady_clock::time_point started_, last_printed_;
  bool printed_ = false;
  size_t done_ = 0;
  std::string phase_, last_prompt_;
  std::vector<int64_t> tokens_;
  std::vector<double> seconds_;
  std::vector<SpeculationStats> speculation_;
  size_t mismatches_ = 0;
  size_t printed_width_ = 0;
};

}  // namespace draftwise
