#include "kernels/cuda/nccl_group.h"

#include <nccl.h>

#include <cstring>
#include <thread>

#include "kernels/cuda/cuda_check.h"

namespace draftwise::cuda {
namespace {

ncclDataType_t nccl_type(CollectiveType type) {
  switch (type) {
    case CollectiveType::kFloat32: return ncclFloat32;
    case CollectiveType::kBfloat16: return ncclBfloat16;
    case CollectiveType::kUint64: return ncclUint64;
    case CollectiveType::kInt64: return ncclInt64;
  }
  return ncclFloat32;
}

}  // namespace

struct NcclGroup::Communicator {
  ncclComm_t comm = nullptr;
  bool failed = false;
  bool aborted = false;
  void abort() {
    if (comm != nullptr && !aborted) ncclCommAbort(comm);
    aborted = true;
  }
  ~Communicator() {
    if (comm == nullptr) return;
    if (failed) abort();
    // A healthy group is finalized (flushing what it issued); a failed one is aborted.
    if (!aborted) {
      ncclCommFinalize(comm);
      ncclResult_t state = ncclInProgress;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (state == ncclInProgress && std::chrono::steady_clock::now() < deadline) {
        ncclCommGetAsyncError(comm, &state);
        if (state == ncclInProgress) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (state != ncclSuccess) {
        ncclCommAbort(comm);
        return;
      }
    }
    if (!aborted) ncclCommDestroy(comm);
  }
};

Expected<NcclUniqueIdBytes> NcclGroup::unique_id() {
  ncclUniqueId id;
  if (const ncclResult_t result = ncclGetUniqueId(&id); result != ncclSuccess) {
    return make_error("NCCL error in ncclGetUniqueId: {}", ncclGetErrorString(result));
  }
  NcclUniqueIdBytes bytes;
  static_assert(sizeof(id.internal) == bytes.size());
  std::memcpy(bytes.data(), id.internal, bytes.size());
  return bytes;
}

Expected<std::unique_ptr<NcclGroup>> NcclGroup::create(const NcclUniqueIdBytes& id, int rank, int size, int device,
                                                        std::chrono::milliseconds timeout,
                                                        std::function<Status()> alive) {
  if (size < 1 || rank < 0 || rank >= size) return make_error("rank {} is not in a group of {}", rank, size);
  DW_CUDA_TRY(cudaSetDevice(device));
  std::unique_ptr<NcclGroup> group(new NcclGroup(rank, size, timeout, std::move(alive)));
  group->comm_ = std::make_unique<Communicator>();
  ncclUniqueId nccl_id;
  std::memcpy(nccl_id.internal, id.data(), id.size());
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t result = ncclCommInitRankConfig(&group->comm_->comm, size, nccl_id, rank, &config);
  DW_TRY(group->settle("ncclCommInitRankConfig", result, nullptr));
  return group;
}

NcclGroup::NcclGroup(int rank, int size, std::chrono::milliseconds timeout, std::function<Status()> alive)
    : rank_(rank), size_(size), timeout_(timeout), alive_(std::move(alive)) {}

NcclGroup::~NcclGroup() = default;

Status NcclGroup::fail(Status error, cudaStream_t stream) {
  failed_ = error;
  if (comm_ == nullptr) return error;
  comm_->failed = true;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (stream != nullptr && cudaStreamIsCapturing(stream, &capture) != cudaSuccess) cudaGetLastError();
  if (capture == cudaStreamCaptureStatusNone) comm_->abort();
  return error;
}

Status NcclGroup::settle(const char* call, int code, cudaStream_t stream) {
  auto result = static_cast<ncclResult_t>(code);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (result == ncclInProgress) {
    if (comm_->comm != nullptr) ncclCommGetAsyncError(comm_->comm, &result);
    if (result != ncclInProgress) break;
    if (alive_) {
      if (Status alive = alive_(); !alive.ok()) return fail(std::move(alive), stream);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(make_error("NCCL: {} did not finish within {} ms (rank {} of {}): a rank is gone or stuck", call,
                             timeout_.count(), rank_, size_),
                  stream);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (result != ncclSuccess) {
    return fail(make_error("NCCL error in {} (rank {} of {}): {}", call, rank_, size_, ncclGetErrorString(result)),
                stream);
  }
  return {};
}

Status NcclGroup::all_reduce(void* data, size_t count, CollectiveType type, ReduceOp op, cudaStream_t stream) {
  if (!failed_.ok()) return failed_;
  const ncclRedOp_t nccl_op = op == ReduceOp::kSum ? ncclSum : ncclMin;
  return settle("ncclAllReduce", ncclAllReduce(data, data, count, nccl_type(type), nccl_op, comm_->comm, stream), stream);
}

Status NcclGroup::all_gather(const void* send, void* recv, size_t count, CollectiveType type, cudaStream_t stream) {
  if (!failed_.ok()) return failed_;
  return settle("ncclAllGather", ncclAllGather(send, recv, count, nccl_type(type), comm_->comm, stream), stream);
}

Status NcclGroup::wait(cudaStream_t stream) {
  if (!failed_.ok()) {
    comm_->abort();  // one deferred from a capture
    return failed_;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (int polls = 0;; ++polls) {
    const cudaError_t state = cudaStreamQuery(stream);
    if (state == cudaSuccess) return {};
    if (state != cudaErrorNotReady) return fail(cuda_status(state, "cudaStreamQuery"));
    ncclResult_t group_state = ncclSuccess;
    ncclCommGetAsyncError(comm_->comm, &group_state);
    if (group_state != ncclSuccess && group_state != ncclInProgress) {
      return fail(make_error("NCCL error on rank {} of {}: {}", rank_, size_, ncclGetErrorString(group_state)));
    }
    // The peers' liveness costs a system call: every few hundred polls.
    if (alive_ && polls % 256 == 255) {
      if (Status alive = alive_(); !alive.ok()) return fail(std::move(alive));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(make_error("NCCL: a step did not finish within {} ms (rank {} of {}): a rank is gone or stuck",
                             timeout_.count(), rank_, size_));
    }
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace draftwise::cuda
