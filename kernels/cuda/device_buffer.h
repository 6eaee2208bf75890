// Device memory owned by RAII handles, and checked copies between host and device.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/status.h"

namespace draftwise::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // cudaMalloc on the current device. Out of memory names `what`, the bytes asked for and
  // the bytes free.
  static Expected<DeviceBuffer> allocate(size_t bytes, const std::string& what);

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost): copies from it are true asynchronous DMA.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  static Expected<PinnedBuffer> allocate(size_t bytes, const std::string& what);
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

Status copy_to_device(void* device, const void* host, size_t bytes, cudaStream_t stream);
Status copy_to_host(void* host, const void* device, size_t bytes, cudaStream_t stream);

// A new device buffer holding a copy of `host`; `what` names it in an out-of-memory error.
template <typename T>
Expected<DeviceBuffer> upload(const std::vector<T>& host, const std::string& what, cudaStream_t stream) {
  DW_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::allocate(host.size() * sizeof(T), what));
  DW_TRY(copy_to_device(buffer.data(), host.data(), host.size() * sizeof(T), stream));
  return buffer;
}

// A CUDA stream owned by an RAII handle.
class Stream {
 public:
  static Expected<Stream> create();
  Stream() = default;
  ~Stream();
  Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  Status synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace draftwise::cuda
