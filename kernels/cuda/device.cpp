// Device enumeration through the CUDA runtime: name, compute capability, memory.
#include "kernels/cuda/device.h"

#include "kernels/cuda/cuda_check.h"

namespace draftwise {

Expected<std::vector<CudaDeviceInfo>> list_cuda_devices() {
  int count = 0;
  DW_CUDA_TRY(cudaGetDeviceCount(&count));
  std::vector<CudaDeviceInfo> devices;
  for (int index = 0; index < count; ++index) {
    cudaDeviceProp properties{};
    DW_CUDA_TRY(cudaGetDeviceProperties(&properties, index));
    CudaDeviceInfo info;
    info.index = index;
    info.name = properties.name;
    info.compute_major = properties.major;
    info.compute_minor = properties.minor;
    info.multiprocessors = properties.multiProcessorCount;
    DW_CUDA_TRY(cudaSetDevice(index));
    DW_CUDA_TRY(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
    devices.push_back(std::move(info));
  }
  return devices;
}

}  // namespace draftwise
