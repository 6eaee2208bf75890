// launch_floor: what a dependent step costs on this GPU when it does almost nothing, the floor
// under a decode step of many small kernels (docs/kernel-notes.md, "On the H200").
//
// 1. A CUDA graph of 150 kernels, each reading one value the previous kernel wrote (a true
//    dependency through L2) and writing one, replayed back to back and then with a host
//    synchronisation after each replay; with and without programmatic dependent launch, for
//    grids of 36, 132 and 264 blocks of 256 threads.
// 2. One persistent kernel doing the same 150 steps separated by a grid-wide barrier (an
//    atomic arrival counter and a generation word, every block resident).
// Prints microseconds per kernel, per replay and per barrier. Built with the CUDA code
// (build-gpu/kernels/launch_floor); run it on the GPU machine.
#include <cstdio>

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;
constexpr int kValues = 1 << 16;
constexpr int kSteps = 150;
constexpr int kReplays = 20;

__global__ void step_kernel(float* data) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const float value = data[(blockIdx.x * 97 + threadIdx.x) % kValues];
  __syncthreads();
  if (threadIdx.x == 0) data[(blockIdx.x * 31) % kValues] = value + 1.0f;
}

__device__ unsigned int arrived;
__device__ volatile unsigned int generation;

__device__ void grid_barrier() {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned int seen = generation;
    __threadfence();
    if (atomicAdd(&arrived, 1) == gridDim.x - 1) {
      arrived = 0;
      __threadfence();
      generation = seen + 1;
    } else {
      while (generation == seen) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

__global__ void persistent_kernel(float* data) {
  for (int step = 0; step < kSteps; ++step) {
    const float value = __ldcg(&data[(blockIdx.x * 97 + threadIdx.x + step) % kValues]);
    if (threadIdx.x == 0) __stcg(&data[(blockIdx.x * 31 + step) % kValues], value + 1.0f);
    grid_barrier();
  }
}

bool check(cudaError_t result, const char* what) {
  if (result == cudaSuccess) return true;
  std::fprintf(stderr, "launch_floor: %s: %s\n", what, cudaGetErrorString(result));
  return false;
}

// Milliseconds between two events recorded around `work` on `stream`.
template <typename Work>
bool time_ms(cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, Work work, float& ms) {
  if (!check(cudaEventRecord(start, stream), "cudaEventRecord") || !work() ||
      !check(cudaEventRecord(stop, stream), "cudaEventRecord") || !check(cudaEventSynchronize(stop), "sync") ||
      !check(cudaGetLastError(), "a kernel")) {
    return false;
  }
  return check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
}

}  // namespace

int main() {
  float* data = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  if (!check(cudaMalloc(&data, kValues * sizeof(float)), "cudaMalloc") ||
      !check(cudaMemset(data, 0, kValues * sizeof(float)), "cudaMemset") ||
      !check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate") ||
      !check(cudaEventCreate(&start), "cudaEventCreate") || !check(cudaEventCreate(&stop), "cudaEventCreate")) {
    return 1;
  }
  for (const int programmatic : {0, 1}) {
    for (const int grid : {36, 132, 264}) {
      cudaLaunchAttribute attribute{};
      attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attribute.val.programmaticStreamSerializationAllowed = 1;
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(grid);
      config.blockDim = dim3(kThreads);
      config.stream = stream;
      config.attrs = &attribute;
      config.numAttrs = programmatic;
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      if (!check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture")) return 1;
      for (int k = 0; k < kSteps; ++k) {
        if (!check(cudaLaunchKernelEx(&config, step_kernel, data), "cudaLaunchKernelEx")) return 1;
      }
      if (!check(cudaStreamEndCapture(stream, &graph), "capture") ||
          !check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate")) {
        return 1;
      }
      for (int warm = 0; warm < 5; ++warm) {
        if (!check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch")) return 1;
      }
      float chained = 0.0f;
      float synchronised = 0.0f;
      const bool timed =
          time_ms(stream, start, stop,
                  [&] {
                    for (int r = 0; r < kReplays; ++r) {
                      if (!check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch")) return false;
                    }
                    return true;
                  },
                  chained) &&
          time_ms(stream, start, stop,
                  [&] {
                    for (int r = 0; r < kReplays; ++r) {
                      if (!check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch") ||
                          !check(cudaStreamSynchronize(stream), "sync")) {
                        return false;
                      }
                    }
                    return true;
                  },
                  synchronised);
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      if (!timed) return 1;
      std::printf("graph of %d kernels, grid %d, programmatic launch %s: %.2f us a kernel back to back; %.1f us a "
                  "replay with a host sync after each\n",
                  kSteps, grid, programmatic ? "on " : "off", chained * 1e3f / kReplays / kSteps,
                  synchronised * 1e3f / kReplays);
    }
  }
  // The barrier needs every block resident at once: larger grids than the device holds are skipped.
  int device = 0;
  int multiprocessors = 0;
  int per_multiprocessor = 0;
  if (!check(cudaGetDevice(&device), "cudaGetDevice") ||
      !check(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device), "attribute") ||
      !check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, persistent_kernel, kThreads, 0),
             "occupancy")) {
    return 1;
  }
  for (const int grid : {36, 132, 264}) {
    if (grid > multiprocessors * per_multiprocessor) {
      std::printf("persistent kernel, grid %d: skipped, more blocks than the device holds at once\n", grid);
      continue;
    }
    for (int warm = 0; warm < 3; ++warm) persistent_kernel<<<grid, kThreads, 0, stream>>>(data);
    float ms = 0.0f;
    const bool timed = time_ms(stream, start, stop,
                               [&] {
                                 for (int r = 0; r < kReplays; ++r) {
                                   persistent_kernel<<<grid, kThreads, 0, stream>>>(data);
                                 }
                                 return true;
                               },
                               ms);
    if (!timed) return 1;
    std::printf("persistent kernel, grid %d: %.2f us a grid barrier\n", grid, ms * 1e3f / kReplays / kSteps);
  }
  return 0;
}
