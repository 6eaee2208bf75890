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

  // One operand of product(): a row-major matrix, used as it is or transposed.
  struct Operand {
    const void* data = nullptr;
    bool transposed = false;  // op(X) = Xᵀ of the stored matrix
  };
  // c[m, n] = op(a) · op(b) + beta · c, all row-major: op(a) is [m, k] (a stored [m, k], or
  // [k, m] when transposed), op(b) is [k, n] (b stored [k, n], or [n, k] when transposed).
  // a and b are both bf16 or both fp32 (inputs_fp32); c is fp32 or bf16 (c_fp32); fp32
  // accumulation. The backward passes' products (dx = dy · W, dW = dyᵀ · x) and fp32 adapters.
  Status product(Operand a, Operand b, bool inputs_fp32, void* c, bool c_fp32, int64_t m, int64_t n, int64_t k,
                 float beta, cudaStream_t stream) const;

 private:
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
};

}  // namespace draftwise::cuda
