#include "kernels/cpu/activation.h"

#include <algorithm>

#include "kernels/cpu/vector_math.h"

namespace draftwise::cpu {

void swiglu(const float* gate, const float* up, float* out, int64_t count) {
  // In blocks, so that exp runs vectorised over a small buffer.
  constexpr int64_t kBlock = 256;
  float negated_exp[kBlock];
  for (int64_t start = 0; start < count; start += kBlock) {
    const int64_t size = std::min(kBlock, count - start);
    for (int64_t i = 0; i < size; ++i) negated_exp[i] = -gate[start + i];
    exp_inplace(negated_exp, size);
    for (int64_t i = 0; i < size; ++i) {
      const int64_t at = start + i;
      out[at] = gate[at] / (1.0f + negated_exp[i]) * up[at];
    }
  }
}

}  // namespace draftwise::cpu
