#include "kernels/cpu/vector_math.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DW_HAVE_X86 1
#endif

namespace draftwise::cpu {

namespace {

constexpr float kExpMin = -87.3f;
constexpr float kExpMax = 88.3f;

#ifdef DW_HAVE_X86
__attribute__((target("avx2,fma"))) __m256 exp_avx2(__m256 x) {
  // max/min return their second operand when one is NaN: x goes second so NaN survives.
  x = _mm256_min_ps(_mm256_set1_ps(kExpMax), _mm256_max_ps(_mm256_set1_ps(kExpMin), x));
  // n = round(x / ln 2); r = x − n·ln 2, with ln 2 split so that n·C1 is exact.
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                                   _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
}

__attribute__((target("avx2,fma"))) void exp_inplace_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp_avx2(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float tail[8] = {};
    std::copy(x + i, x + n, tail);
    _mm256_storeu_ps(tail, exp_avx2(_mm256_loadu_ps(tail)));
    std::copy(tail, tail + (n - i), x + i);
  }
}
#endif

}  // namespace

void exp_inplace(float* x, int64_t n) {
#ifdef DW_HAVE_X86
  if (cpu_has_avx2_fma()) {
    exp_inplace_avx2(x, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

}  // namespace draftwise::cpu
