// Kernel launches with programmatic dependent launch (Hopper): a kernel launched through
// launch() may be scheduled while the kernel before it in the stream is still finishing,
// and its threads wait in wait_for_prior_grid() until that kernel has completed and its
// writes are visible. The launch latency of a chain of small kernels (a decode step) then
// overlaps the previous kernel's tail. Every kernel launched through launch() must call
// wait_for_prior_grid() before it touches memory that an earlier kernel wrote.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel in the stream be scheduled now; it still waits for this one to finish
// before reading what it wrote (wait_for_prior_grid).
__device__ __forceinline__ void release_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// launch() with the grid's blocks in thread-block clusters of cluster_x × 1 × 1 (1: none).
template <typename... Params, typename... Args>
cudaError_t launch_in_clusters(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                               cudaStream_t stream, unsigned cluster_x, Args... args) {
  cudaLaunchAttribute attributes[2] = {};
  unsigned count = 0;
  if (cluster_x > 1) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = cluster_x;
    attributes[count].val.clusterDim.y = 1;
    attributes[count].val.clusterDim.z = 1;
    ++count;
  }
  if (programmatic_launch_enabled()) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = attributes;
  config.numAttrs = count;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t stream, Args... args) {
  return launch_in_clusters(kernel, grid, block, shared_bytes, stream, 1u, args...);
}

}  // namespace draftwise::cuda
