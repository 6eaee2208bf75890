// RMSNorm of the CPU reference (Zhang & Sennrich 2019, as in Llama and Qwen2):
// y = x / sqrt(mean(x²) + eps) · weight, in fp32.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace draftwise::cpu {

//   x:      [rows, dim]
//   weight: [dim]
//   y:      [rows, dim], may alias x
void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps,
              ThreadPool& pool);

}  // namespace draftwise::cpu
