// The process-wide switch of launch.cuh.
#include <atomic>

#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

namespace {
std::atomic<bool> programmatic_launch{true};
}

bool programmatic_launch_enabled() { return programmatic_launch.load(std::memory_order_relaxed); }
void set_programmatic_launch(bool enabled) { programmatic_launch.store(enabled, std::memory_order_relaxed); }

}  // namespace draftwise::cuda
