// Tensor parallelism from the command line (--tp N, --rank R, --rendezvous HOST:PORT): one
// process per GPU. Started alone with --tp N, rank 0 starts ranks 1..N-1 itself on this
// machine, as copies of its own command with --rank R, --rendezvous 127.0.0.1:PORT and
// --device cuda:(D+R) added, in its environment (NCCL's settings included). On several
// machines every rank is started by hand with the same command, its own --rank and rank 0's
// address. A rank above 0 loads its shard, follows rank 0 and exits when rank 0 stops.
#pragma once

#include <memory>
#include <string>

#include "kernels/status.h"
#include "target/decoder.h"

namespace draftwise {

struct TensorParallelOptions {
  int size = 1;
  int rank = 0;
  std::string rendezvous;  // HOST:PORT; empty: rank 0 starts the other ranks on this machine
  int64_t timeout_ms = 120000;  // the rendezvous, joining NCCL, and every step
};

// "--tp", "--rank", "--rendezvous", "--tp-timeout" as given; errors name the option.
Expected<TensorParallelOptions> parse_tensor_parallel_options(std::string_view size, std::string_view rank,
                                                              std::string_view rendezvous, std::string_view timeout);

// The ranks a launcher started: at destruction (after rank 0's decoder, which stops them)
// they are given a few seconds to exit, then killed, and always reaped.
class LaunchedRanks {
 public:
  explicit LaunchedRanks(std::vector<int> pids) : pids_(std::move(pids)) {}
  ~LaunchedRanks();
  LaunchedRanks(const LaunchedRanks&) = delete;
  LaunchedRanks& operator=(const LaunchedRanks&) = delete;

 private:
  std::vector<int> pids_;
};

// Starts ranks 1..size-1 of this program's own command line (/proc/self/cmdline) with
// `--rank R --rendezvous 127.0.0.1:port --device cuda:(first_device + R)` appended.
Expected<std::unique_ptr<LaunchedRanks>> launch_ranks(int size, uint16_t port, int first_device);

}  // namespace draftwise
