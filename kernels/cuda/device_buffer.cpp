#include "kernels/cuda/device_buffer.h"

#include "kernels/cuda/cuda_check.h"

namespace draftwise::cuda {

namespace {
constexpr double kMiB = 1024.0 * 1024.0;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Expected<DeviceBuffer> DeviceBuffer::allocate(size_t bytes, const std::string& what) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  const cudaError_t result = cudaMalloc(&buffer.data_, bytes);
  if (result == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky error of the failed allocation
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    return make_error("out of GPU memory allocating {}: asked for {:.1f} MiB, {:.1f} MiB of {:.1f} MiB free",
                      what, static_cast<double>(bytes) / kMiB, static_cast<double>(free_bytes) / kMiB,
                      static_cast<double>(total_bytes) / kMiB);
  }
  DW_TRY(cuda_status(result, "cudaMalloc"));
  buffer.bytes_ = bytes;
  return buffer;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Expected<PinnedBuffer> PinnedBuffer::allocate(size_t bytes, const std::string& what) {
  PinnedBuffer buffer;
  if (bytes == 0) return buffer;
  if (const cudaError_t result = cudaMallocHost(&buffer.data_, bytes); result != cudaSuccess) {
    cudaGetLastError();
    return make_error("cannot allocate {:.1f} MiB of page-locked host memory for {}: {}",
                      static_cast<double>(bytes) / kMiB, what, cudaGetErrorString(result));
  }
  buffer.bytes_ = bytes;
  return buffer;
}

Status copy_to_device(void* device, const void* host, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return {};
  DW_CUDA_TRY(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
  DW_CUDA_TRY(cudaStreamSynchronize(stream));
  return {};
}

Status copy_to_host(void* host, const void* device, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return {};
  DW_CUDA_TRY(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream));
  DW_CUDA_TRY(cudaStreamSynchronize(stream));
  return {};
}

Expected<Stream> Stream::create() {
  Stream stream;
  DW_CUDA_TRY(cudaStreamCreateWithFlags(&stream.stream_, cudaStreamNonBlocking));
  return stream;
}

Stream::~Stream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

Status Stream::synchronize() const {
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  return {};
}

}  // namespace draftwise::cuda
