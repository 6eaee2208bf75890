// Matrix products through cuBLASLt: y = x · wᵀ with bf16 inputs and fp32 accumulation, the
// layout of every linear layer (weights [out, in] row-major, as on the CPU).
#pragma once

#include <cstdint>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/ops.h"
#include "kernels/status.h"

namespace draftwise::cuda {

class Gemm {
 public:
  // A cuBLASLt handle and a 32 MiB workspace on the current device.
  static Expected<Gemm> create();
  Gemm() = default;
  ~Gemm();
  Gemm(Gemm&& other) noexcept;
  Gemm& operator=(Gemm&& other) noexcept;
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y[r, o] = Σ_i x[r, i] · w[o, i]
  //   x: [rows, in] bf16    w: [out, in] bf16    y: [rows, out], bf16 or fp32 (y_fp32)
  Status matmul(const bf16* x, const bf16* w, void* y, bool y_fp32, int64_t rows, int64_t in,
                int64_t out, cudaStream_t stream) const;

 private:
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
};

}  // namespace draftwise::cuda
