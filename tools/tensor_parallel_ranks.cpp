#include "tools/tensor_parallel_ranks.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

#include "target/tp_control.h"
#include "tools/cli_args.h"

extern char** environ;

namespace draftwise {

Expected<TensorParallelOptions> parse_tensor_parallel_options(std::string_view size, std::string_view rank,
                                                              std::string_view rendezvous, std::string_view timeout) {
  TensorParallelOptions options;
  DW_ASSIGN_OR_RETURN(const int64_t ranks, parse_integer_option("--tp", size));
  if (ranks < 1 || ranks > 64) return make_error("--tp must be in [1, 64], got {}", ranks);
  options.size = static_cast<int>(ranks);
  if (!rank.empty()) {
    DW_ASSIGN_OR_RETURN(const int64_t value, parse_integer_option("--rank", rank));
    if (value < 0 || value >= ranks) return make_error("--rank {} is not in 0..{} (--tp {})", value, ranks - 1, ranks);
    options.rank = static_cast<int>(value);
  }
  options.rendezvous = std::string(rendezvous);
  if (!options.rendezvous.empty()) DW_TRY(parse_rendezvous_address(options.rendezvous));
  if (options.rank > 0 && options.rendezvous.empty()) {
    return make_error("--rank {} needs --rendezvous HOST:PORT (rank 0's address)", options.rank);
  }
  DW_ASSIGN_OR_RETURN(const double seconds, parse_number_option("--tp-timeout", timeout));
  if (!(seconds >= 1 && seconds <= 86400)) return make_error("--tp-timeout must be in [1, 86400] seconds");
  options.timeout_ms = static_cast<int64_t>(seconds * 1000);
  return options;
}

LaunchedRanks::~LaunchedRanks() {
  // Rank 0's decoder has told them to stop; give them time to leave NCCL and exit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<bool> reaped(pids_.size(), false);
  size_t left = pids_.size();
  while (left > 0 && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < pids_.size(); ++i) {
      if (!reaped[i] && ::waitpid(pids_[i], nullptr, WNOHANG) != 0) {
        reaped[i] = true;
        --left;
      }
    }
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < pids_.size(); ++i) {
    if (reaped[i]) continue;
    ::kill(pids_[i], SIGKILL);
    ::waitpid(pids_[i], nullptr, 0);
  }
}

Expected<std::unique_ptr<LaunchedRanks>> launch_ranks(int size, uint16_t port, int first_device) {
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  if (!cmdline) return make_error("cannot read /proc/self/cmdline to start the other ranks");
  const std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  std::vector<std::string> arguments;
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\0', start);
    arguments.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (arguments.empty()) return make_error("/proc/self/cmdline is empty");
  std::vector<int> pids;
  for (int rank = 1; rank < size; ++rank) {
    std::vector<std::string> rank_arguments = arguments;
    for (const std::string& extra : {std::string("--rank"), std::to_string(rank), std::string("--rendezvous"),
                                     "127.0.0.1:" + std::to_string(port), std::string("--device"),
                                     "cuda:" + std::to_string(first_device + rank)}) {
      rank_arguments.push_back(extra);
    }
    std::vector<char*> argv;
    for (std::string& argument : rank_arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    // The same program, in this process's environment (NCCL_* and CUDA_* included).
    const int failed = ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ);
    if (failed != 0) {
      for (const int started : pids) ::kill(started, SIGKILL);
      const LaunchedRanks reap(std::move(pids));
      return make_error("could not start tensor-parallel rank {}: {}", rank, std::strerror(failed));
    }
    pids.push_back(pid);
  }
  return std::make_unique<LaunchedRanks>(std::move(pids));
}

}  // namespace draftwise
