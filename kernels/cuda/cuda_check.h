// Turns CUDA runtime results into Status values with a message naming the call.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/status.h"

namespace draftwise {

inline Status cuda_status(cudaError_t result, const char* call) {
  if (result == cudaSuccess) return {};
  return make_error("CUDA error in {}: {} ({})", call, cudaGetErrorString(result),
                    cudaGetErrorName(result));
}

}  // namespace draftwise

// Returns a Status error from the enclosing function when a CUDA runtime call fails.
#define DW_CUDA_TRY(call) DW_TRY(::draftwise::cuda_status((call), #call))
