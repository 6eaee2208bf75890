#include "kernels/cpu/matmul.h"

#include "kernels/cpu/cpu_features.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DW_HAVE_X86 1
#endif

namespace draftwise::cpu {

namespace {

constexpr int kLanes = 8;
constexpr int kMaxTileRows = 4;
constexpr int kMaxTileCols = 8;
// Register budget per tile: rows × cols accumulators of eight lanes.
constexpr int tile_cols_for_rows(int rows) { return rows == 1 ? 8 : rows == 2 ? 6 : rows == 3 ? 4 : 3; }

// Computes a rows × cols tile: y[r * ldy + c] = x_r · w_c (+ bias[c]), where row r of x
// starts at x + r·in and row c of w at w + c·ldw.
using TileFn = void (*)(const float* x, const float* w, int64_t ldw, const float* bias, float* y,
                        int64_t in, int64_t ldy);
// y[i] += a · x[i]
using AxpyFn = void (*)(float a, const float* x, float* y, int64_t n);

// Portable version: eight scalar partial sums per element, the same order as the SIMD one.
template <int R, int C>
void tile_portable(const float* x, const float* w, int64_t ldw, const float* bias, float* y,
                   int64_t in, int64_t ldy) {
  float acc[R][C][kLanes] = {};
  for (int64_t i = 0; i < in; i += kLanes) {
    const int64_t width = std::min<int64_t>(kLanes, in - i);
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        for (int64_t lane = 0; lane < width; ++lane) {
          acc[r][c][lane] += x[r * in + i + lane] * w[c * ldw + i + lane];
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      const float* a = acc[r][c];
      float sum = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
      if (bias != nullptr) sum += bias[c];
      y[r * ldy + c] = sum;
    }
  }
}

#ifdef DW_HAVE_X86
__attribute__((target("avx2,fma"))) inline float horizontal_sum_avx(__m256 v) {
  const __m128 halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

template <int R, int C>
__attribute__((target("avx2,fma"))) void tile_avx2(const float* x, const float* w, int64_t ldw,
                                                   const float* bias, float* y, int64_t in,
                                                   int64_t ldy) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + kLanes <= in; i += kLanes) {
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = _mm256_loadu_ps(w + c * ldw + i);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * in + i);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (i < in) {
    alignas(32) int32_t mask_bits[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) mask_bits[lane] = i + lane < in ? -1 : 0;
    const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask_bits));
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = _mm256_maskload_ps(w + c * ldw + i, mask);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_maskload_ps(x + r * in + i, mask);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float sum = horizontal_sum_avx(acc[r][c]);
      if (bias != nullptr) sum += bias[c];
      y[r * ldy + c] = sum;
    }
  }
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

#endif

using TileTable = std::array<std::array<TileFn, kMaxTileCols + 1>, kMaxTileRows + 1>;

template <bool kAvx2, int R, int... Cs>
void fill_row(TileTable& table, std::integer_sequence<int, Cs...>) {
#ifdef DW_HAVE_X86
  if constexpr (kAvx2) {
    ((table[R][Cs + 1] = &tile_avx2<R, Cs + 1>), ...);
    return;
  }
#endif
  ((table[R][Cs + 1] = &tile_portable<R, Cs + 1>), ...);
}

template <bool kAvx2>
TileTable make_table() {
  TileTable table{};
  fill_row<kAvx2, 1>(table, std::make_integer_sequence<int, tile_cols_for_rows(1)>());
  fill_row<kAvx2, 2>(table, std::make_integer_sequence<int, tile_cols_for_rows(2)>());
  fill_row<kAvx2, 3>(table, std::make_integer_sequence<int, tile_cols_for_rows(3)>());
  fill_row<kAvx2, 4>(table, std::make_integer_sequence<int, tile_cols_for_rows(4)>());
  return table;
}

void axpy_portable(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

struct Kernels {
  TileTable tiles;
  AxpyFn axpy;
  std::string_view isa;
};

const Kernels& kernels() {
  static const Kernels selected = [] {
#ifdef DW_HAVE_X86
    if (cpu_has_avx2_fma()) return Kernels{make_table<true>(), axpy_avx2, "avx2+fma"};
#endif
    return Kernels{make_table<false>(), axpy_portable, "portable"};
  }();
  return selected;
}

// Task sizes: big enough to amortise scheduling, small enough to spread over the threads
// and keep a task's weights in L2.
constexpr int64_t kTaskRows = 64;
constexpr int64_t kTaskCols = 60;  // a multiple of every tile width (3, 4, 6)

}  // namespace

std::string_view cpu_kernel_isa() { return kernels().isa; }

float dot(const float* a, const float* b, int64_t n) {
  float result = 0.0f;
  kernels().tiles[1][1](a, b, n, nullptr, &result, n, 1);
  return result;
}

void dot_rows(const float* x, const float* w, int64_t w_stride, int64_t count, int64_t n, float* y) {
  const TileTable& tiles = kernels().tiles;
  constexpr int kCols = tile_cols_for_rows(1);
  for (int64_t j = 0; j < count; j += kCols) {
    const int cols = static_cast<int>(std::min<int64_t>(kCols, count - j));
    tiles[1][cols](x, w + j * w_stride, w_stride, nullptr, y + j, n, 1);
  }
}

void axpy(float a, const float* x, float* y, int64_t n) { kernels().axpy(a, x, y, n); }

void matmul(const float* x, const float* w, const float* bias, float* y, int64_t rows,
            int64_t in, int64_t out, ThreadPool& pool) {
  if (rows <= 0 || out <= 0) return;
  const TileTable& tiles = kernels().tiles;
  // With few rows (decode) the columns alone must feed every thread.
  const int64_t task_cols =
      rows <= kMaxTileRows
          ? std::clamp<int64_t>((out / (4 * pool.size()) + 7) / 8 * 8, 8, 512)
          : kTaskCols;
  const int64_t col_tasks = (out + task_cols - 1) / task_cols;
  const int64_t row_tasks = (rows + kTaskRows - 1) / kTaskRows;
  pool.parallel_for(col_tasks * row_tasks, [&](int64_t task) {
    const int64_t row_begin = (task / col_tasks) * kTaskRows;
    const int64_t row_end = std::min(rows, row_begin + kTaskRows);
    const int64_t col_begin = (task % col_tasks) * task_cols;
    const int64_t col_end = std::min(out, col_begin + task_cols);
    for (int64_t r = row_begin; r < row_end; r += kMaxTileRows) {
      const int tile_rows = static_cast<int>(std::min<int64_t>(kMaxTileRows, row_end - r));
      const int max_cols = tile_cols_for_rows(tile_rows);
      for (int64_t c = col_begin; c < col_end; c += max_cols) {
        const int tile_cols = static_cast<int>(std::min<int64_t>(max_cols, col_end - c));
        tiles[tile_rows][tile_cols](x + r * in, w + c * in, in, bias != nullptr ? bias + c : nullptr,
                                    y + r * out + c, in, out);
      }
    }
  });
}

}  // namespace draftwise::cpu
