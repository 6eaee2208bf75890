#include "kernels/cpu/norm.h"

#include <cmath>

#include "kernels/cpu/matmul.h"

namespace draftwise::cpu {

void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps,
              ThreadPool& pool) {
  pool.parallel_for(rows, [&](int64_t row) {
    const float* in = x + row * dim;
    float* out = y + row * dim;
    const float mean_square = dot(in, in, dim) / static_cast<float>(dim);
    const float inverse_rms = 1.0f / std::sqrt(mean_square + eps);
    for (int64_t i = 0; i < dim; ++i) out[i] = weight[i] * (in[i] * inverse_rms);
  });
}

}  // namespace draftwise::cpu
