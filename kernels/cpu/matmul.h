// Matrix products of the CPU reference: y = x · wᵀ (+ bias), the shape of every linear
// layer, with weights stored [out, in] row-major as in PyTorch.
//
// Batch invariance: every output element is one dot product with a fixed reduction order
// (eight interleaved fp32 partial sums over `in`, a tail chunk padded with zeros, a fixed
// pairwise sum of the eight, then the bias). Row tiling, column tiling and threads only
// choose *which* elements a task computes, never how, so a row's result does not depend on
// how many rows share the call, where the row sits, or the thread count. The instruction
// set (AVX2+FMA or portable code) is picked once per process at run time.
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/cpu/thread_pool.h"

namespace draftwise::cpu {

// y[r, o] = Σ_i x[r, i] · w[o, i] + bias[o]
//   x:    [rows, in]    row-major
//   w:    [out, in]     row-major
//   bias: [out] or nullptr
//   y:    [rows, out]   row-major, must not alias x or w
void matmul(const float* x, const float* w, const float* bias, float* y, int64_t rows,
            int64_t in, int64_t out, ThreadPool& pool);

// Σ_i a[i] · b[i] with the same reduction order as one element of matmul.
float dot(const float* a, const float* b, int64_t n);

// y[j] = x · w_j for j < count, where w_j starts at w + j·w_stride; each element with
// dot()'s reduction order, several rows at a time.
//   x: [n]   y: [count]
void dot_rows(const float* x, const float* w, int64_t w_stride, int64_t count, int64_t n, float* y);

// y[i] += a · x[i] (fused multiply-add where the instruction set has it).
void axpy(float a, const float* x, float* y, int64_t n);

// The instruction set the CPU kernels use on this machine ("avx2+fma" or "portable").
std::string_view cpu_kernel_isa();

}  // namespace draftwise::cpu
