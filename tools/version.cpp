// draftwise version: what this binary was built with and which GPUs it can use.
#include <fmt/format.h>

#include "tools/cli_args.h"
#include "tools/commands.h"

#ifdef DRAFTWISE_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace draftwise {

int run_version(const std::vector<std::string>& args) {
  ArgParser parser("version", "Prints the build configuration and the visible CUDA devices.");
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(args)) return *exit_code;
  fmt::print("draftwise {}\n", DRAFTWISE_VERSION);
  fmt::print("  compiler   {}\n", __VERSION__);
#ifdef DRAFTWISE_HAVE_CUDA
  fmt::print("  CUDA       built (sm_90, sm_90a)\n");
  const Expected<std::vector<CudaDeviceInfo>> devices = list_cuda_devices();
  if (!devices.ok()) {
    fmt::print("  devices    none usable: {}\n", devices.error().message);
  } else if (devices->empty()) {
    fmt::print("  devices    none\n");
  } else {
    for (const CudaDeviceInfo& device : *devices) {
      fmt::print("  cuda:{}     {} (sm_{}{}, {} SMs, {:.1f} GiB, {:.1f} GiB free)\n", device.index,
                 device.name, device.compute_major, device.compute_minor, device.multiprocessors,
                 static_cast<double>(device.total_bytes) / (1 << 30),
                 static_cast<double>(device.free_bytes) / (1 << 30));
    }
  }
#else
  fmt::print("  CUDA       not built (no nvcc found at configure time)\n");
#endif
  return 0;
}

}  // namespace draftwise
