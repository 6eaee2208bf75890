// The draftwise subcommands. Each takes the arguments after its name, prints to stdout,
// reports errors on stderr in one line, and returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/status.h"

namespace draftwise {

int run_batch(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_context_bench(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_loadgen(const std::vector<std::string>& args);
int run_perf(const std::vector<std::string>& args);
int run_report(const std::vector<std::string>& args);
int run_serve(const std::vector<std::string>& args);
int run_version(const std::vector<std::string>& args);

// What `draftwise inspect --json` prints for the model at `path`.
Expected<nlohmann::json> inspect_model(const std::string& path);

}  // namespace draftwise
