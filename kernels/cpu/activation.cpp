#include "kernels/cpu/activation.h"

#include <cmath>

namespace draftwise::cpu {

void swiglu(const float* gate, const float* up, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace draftwise::cpu
