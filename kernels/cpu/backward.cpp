#include "kernels/cpu/backward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/vector_math.h"

namespace draftwise::cpu {

void matmul_nn(const float* x, const float* w, float* y, int64_t rows, int64_t inner, int64_t cols,
               bool accumulate, ThreadPool& pool) {
  // Tasks of up to 16 rows × 128 columns: the rows' partial sums stay in the L1 cache while
  // each row of w's column chunk is read once per task.
  constexpr int64_t kRows = 16;
  constexpr int64_t kCols = 128;
  const int64_t row_blocks = (rows + kRows - 1) / kRows;
  const int64_t col_blocks = (cols + kCols - 1) / kCols;
  pool.parallel_for(row_blocks * col_blocks, [&](int64_t task) {
    const int64_t row0 = task / col_blocks * kRows;
    const int64_t col0 = task % col_blocks * kCols;
    const int64_t row_count = std::min(kRows, rows - row0);
    const int64_t col_count = std::min(kCols, cols - col0);
    float sums[kRows][kCols];
    for (int64_t r = 0; r < row_count; ++r) {
      if (accumulate) {
        std::memcpy(sums[r], y + (row0 + r) * cols + col0, static_cast<size_t>(col_count) * sizeof(float));
      } else {
        std::fill(sums[r], sums[r] + col_count, 0.0f);
      }
    }
    for (int64_t k = 0; k < inner; ++k) {
      const float* w_row = w + k * cols + col0;
      for (int64_t r = 0; r < row_count; ++r) {
        const float a = x[(row0 + r) * inner + k];
        if (a != 0.0f) axpy(a, w_row, sums[r], col_count);
      }
    }
    for (int64_t r = 0; r < row_count; ++r) {
      std::memcpy(y + (row0 + r) * cols + col0, sums[r], static_cast<size_t>(col_count) * sizeof(float));
    }
  });
}

void weight_gradient(const float* dy, const float* x, float* g, int64_t rows, int64_t out, int64_t in,
                     ThreadPool& pool) {
  // g += dyᵀ x: dyᵀ is small ([out, rows]); the product is then matmul_nn's.
  std::vector<float> transposed(static_cast<size_t>(out * rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) transposed[static_cast<size_t>(o * rows + r)] = dy[r * out + o];
  }
  matmul_nn(transposed.data(), x, g, out, rows, in, true, pool);
}

void rms_norm_backward(const float* x, const float* weight, const float* dy, float* dx, int64_t rows,
                       int64_t dim, float eps, bool accumulate, ThreadPool& pool) {
  pool.parallel_for(rows, [&](int64_t row) {
    const float* in = x + row * dim;
    const float* grad = dy + row * dim;
    float* result = dx + row * dim;
    double squares = 0;
    double weighted = 0;  // Σ_j weight_j dy_j x_j
    for (int64_t i = 0; i < dim; ++i) {
      squares += static_cast<double>(in[i]) * in[i];
      weighted += static_cast<double>(weight[i]) * grad[i] * in[i];
    }
    const double inverse_rms = 1.0 / std::sqrt(squares / static_cast<double>(dim) + eps);
    const double correction = weighted * inverse_rms * inverse_rms * inverse_rms / static_cast<double>(dim);
    for (int64_t i = 0; i < dim; ++i) {
      const float value = static_cast<float>(inverse_rms * weight[i] * grad[i] - correction * in[i]);
      result[i] = accumulate ? result[i] + value : value;
    }
  });
}

void swiglu_backward(const float* gate_up, const float* d_out, float* d_gate_up, int64_t rows, int64_t ffn) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* gate = gate_up + row * 2 * ffn;
    const float* up = gate + ffn;
    const float* grad = d_out + row * ffn;
    float* d_gate = d_gate_up + row * 2 * ffn;
    float* d_up = d_gate + ffn;
    for (int64_t i = 0; i < ffn; ++i) {
      const float sigmoid = 1.0f / (1.0f + std::exp(-gate[i]));
      const float silu = gate[i] * sigmoid;
      d_up[i] = grad[i] * silu;
      d_gate[i] = grad[i] * up[i] * sigmoid * (1.0f + gate[i] * (1.0f - sigmoid));
    }
  }
}

void attention_query_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* d_out, float* d_q, int64_t new_tokens, int64_t first_position,
                              const AttentionShape& shape, ThreadPool& pool) {
  const int64_t group = shape.num_heads / shape.num_kv_heads;
  const int64_t head_dim = shape.head_dim;
  const int64_t kv_stride = shape.num_kv_heads * head_dim;
  pool.parallel_for(new_tokens * shape.num_heads, [&](int64_t task) {
    const int64_t t = task / shape.num_heads;
    const int64_t h = task % shape.num_heads;
    const int64_t position = first_position + t;
    const int64_t first_key = shape.window > 0 ? std::max<int64_t>(0, position - shape.window + 1) : 0;
    const int64_t count = position - first_key + 1;
    const int64_t at = (t * shape.num_heads + h) * head_dim;
    const float* keys = k + (h / group) * head_dim + first_key * kv_stride;
    const float* values = v + (h / group) * head_dim + first_key * kv_stride;

    thread_local std::vector<float> probabilities, value_grads;
    probabilities.resize(static_cast<size_t>(count));
    value_grads.resize(static_cast<size_t>(count));
    dot_rows(q + at, keys, kv_stride, count, head_dim, probabilities.data());
    float max_score = -INFINITY;
    for (float& score : probabilities) {
      score *= shape.scale;
      max_score = std::max(max_score, score);
    }
    for (float& score : probabilities) score -= max_score;
    exp_inplace(probabilities.data(), count);
    float total = 0.0f;
    for (const float p : probabilities) total += p;
    const float inverse_total = 1.0f / total;
    // do·v_j for every key, and do·o.
    dot_rows(d_out + at, values, kv_stride, count, head_dim, value_grads.data());
    const float out_grad = dot(d_out + at, out + at, head_dim);
    float* result = d_q + at;
    std::fill(result, result + head_dim, 0.0f);
    for (int64_t j = 0; j < count; ++j) {
      const float weight = probabilities[j] * inverse_total * (value_grads[j] - out_grad) * shape.scale;
      axpy(weight, keys + j * kv_stride, result, head_dim);
    }
  });
}

}  // namespace draftwise::cpu
