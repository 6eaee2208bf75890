#include <gtest/gtest.h>

#include "kernels/cuda/device.h"

namespace draftwise {
namespace {

TEST(CudaDevice, ListsVisibleDevicesWithTheirMemory) {
  const Expected<std::vector<CudaDeviceInfo>> devices = list_cuda_devices();
  if (!devices.ok() || devices->empty()) {
    GTEST_SKIP() << "no CUDA device: "
                 << (devices.ok() ? std::string("none visible") : devices.error().message);
  }
  for (const CudaDeviceInfo& device : *devices) {
    EXPECT_FALSE(device.name.empty());
    EXPECT_GE(device.compute_major, 7);
    EXPECT_GT(device.multiprocessors, 0);
    EXPECT_GT(device.total_bytes, 0u);
    EXPECT_LE(device.free_bytes, device.total_bytes);
  }
}

}  // namespace
}  // namespace draftwise
