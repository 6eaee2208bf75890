// The CUDA devices this process can see.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "kernels/status.h"

namespace draftwise {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
};

// Lists the visible devices. A machine without a GPU or driver gives an error saying so.
Expected<std::vector<CudaDeviceInfo>> list_cuda_devices();

}  // namespace draftwise
