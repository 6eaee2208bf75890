// One rank's NCCL communicator for tensor parallelism: the all-reduce after attention and
// after the MLP, the gathers of the LM head's logits or argmax keys. The communicator is
// non-blocking (ncclConfig_t::blocking = 0) so that a host never waits inside NCCL: every
// wait polls the communicator's asynchronous error, a liveness check of the peers (the
// control connections of target/tp_control.h) and a deadline, and a failed or late group
// is aborted (ncclCommAbort frees its kernels) with an error that says which, never a hang.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

#include <cuda_runtime_api.h>

#include "kernels/status.h"

namespace draftwise::cuda {

// ncclUniqueId's bytes, as the rendezvous carries them.
using NcclUniqueIdBytes = std::array<char, 128>;

enum class CollectiveType { kFloat32, kBfloat16, kUint64, kInt64 };
enum class ReduceOp { kSum, kMin };

class NcclGroup {
 public:
  // A fresh id (rank 0 makes it and hands it to the others through the rendezvous).
  static Expected<NcclUniqueIdBytes> unique_id();
  // Joins the group on `device`; `alive` is polled while waiting (an error ends the wait and
  // aborts the group); `timeout` bounds joining and every later wait.
  static Expected<std::unique_ptr<NcclGroup>> create(const NcclUniqueIdBytes& id, int rank, int size, int device,
                                                     std::chrono::milliseconds timeout,
                                                     std::function<Status()> alive);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // In-place sum (or minimum) over the ranks of data ([count] elements), enqueued on
  // `stream` (graph-capturable).
  Status all_reduce(void* data, size_t count, CollectiveType type, ReduceOp op, cudaStream_t stream);
  // recv ([size, count]) gets every rank's send ([count]) in rank order, enqueued on `stream`.
  Status all_gather(const void* send, void* recv, size_t count, CollectiveType type, cudaStream_t stream);
  // Ok, or the error that failed the group (sticky: a failed group stays failed).
  Status health() const { return failed_; }
  // Waits for `stream` to drain; on the group's error, a dead peer or the deadline, aborts
  // the group and returns the error (every later call fails at once).
  Status wait(cudaStream_t stream);

 private:
  NcclGroup(int rank, int size, std::chrono::milliseconds timeout, std::function<Status()> alive);
  // Polls a non-blocking call's completion (ncclInProgress) within the deadline; `stream`: the
  // stream the call enqueued on, or null.
  Status settle(const char* call, int result, cudaStream_t stream);
  // Marks the group failed and aborts its communicator, unless `stream` is being captured into
  // a graph (no abort may run then): the abort then waits for the next wait() or the end.
  Status fail(Status error, cudaStream_t stream = nullptr);

  struct Communicator;
  std::unique_ptr<Communicator> comm_;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  std::function<Status()> alive_;
  Status failed_;
};

}  // namespace draftwise::cuda
