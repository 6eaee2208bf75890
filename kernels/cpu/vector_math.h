// Elementwise exp for softmax and SiLU, vectorised where the CPU allows.
//
// The AVX2 version is Cephes' expf (range reduction by ln 2 in two parts, a degree-6
// polynomial, scaling by 2^n), within 2 ulp of the exact value for x in [−87.3, 88.3];
// inputs outside are clamped to that range (exp(−87.3) ≈ 1.2e−38, the smallest normal);
// NaN stays NaN. Elsewhere std::exp. Each element is computed alone, so results never
// depend on n.
#pragma once

#include <cstdint>

namespace draftwise::cpu {

//   x: [n], replaced by exp(x)
void exp_inplace(float* x, int64_t n);

}  // namespace draftwise::cpu
