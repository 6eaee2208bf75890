#include "kernels/cpu/rope.h"

#include <cmath>

namespace draftwise::cpu {

void rope_tables(const int64_t* positions, int64_t tokens, const float* inv_freq, int64_t half,
                 float* cos, float* sin) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < half; ++j) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[j];
      cos[t * half + j] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[t * half + j] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void apply_rope(float* x, int64_t row_stride, int64_t tokens, int64_t heads, int64_t head_dim,
                const float* cos, const float* sin, RopePairing pairing) {
  const int64_t half = head_dim / 2;
  // Element offsets of pair j's two members within a head.
  const int64_t first_step = pairing == RopePairing::half_split ? 1 : 2;
  const int64_t second_offset = pairing == RopePairing::half_split ? half : 1;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* head = x + t * row_stride + h * head_dim;
      for (int64_t j = 0; j < half; ++j) {
        float& a = head[j * first_step];
        float& b = head[j * first_step + second_offset];
        const float rotated_a = a * c[j] - b * s[j];
        const float rotated_b = b * c[j] + a * s[j];
        a = rotated_a;
        b = rotated_b;
      }
    }
  }
}

}  // namespace draftwise::cpu
