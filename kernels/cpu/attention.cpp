#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/vector_math.h"

namespace draftwise::cpu {

void attention(const float* q, const float* k, const float* v, float* out, int64_t new_tokens,
               int64_t first_position, const AttentionShape& shape, ThreadPool& pool) {
  const int64_t group = shape.num_heads / shape.num_kv_heads;
  const int64_t head_dim = shape.head_dim;
  const int64_t kv_stride = shape.num_kv_heads * head_dim;
  pool.parallel_for(new_tokens * shape.num_heads, [&](int64_t task) {
    const int64_t t = task / shape.num_heads;
    const int64_t h = task % shape.num_heads;
    const int64_t position = first_position + t;
    const int64_t first_key = shape.window > 0 ? std::max<int64_t>(0, position - shape.window + 1) : 0;
    const float* query = q + (t * shape.num_heads + h) * head_dim;
    const float* keys = k + (h / group) * head_dim;
    const float* values = v + (h / group) * head_dim;

    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(position - first_key + 1));
    dot_rows(query, keys + first_key * kv_stride, kv_stride, position - first_key + 1, head_dim,
             scores.data());
    float max_score = -INFINITY;
    for (float& score : scores) {
      score *= shape.scale;
      max_score = std::max(max_score, score);
    }
    for (float& score : scores) score -= max_score;
    exp_inplace(scores.data(), static_cast<int64_t>(scores.size()));
    float total = 0.0f;
    for (const float score : scores) total += score;
    float* result = out + (t * shape.num_heads + h) * head_dim;
    std::fill(result, result + head_dim, 0.0f);
    for (int64_t j = first_key; j <= position; ++j) {
      axpy(scores[j - first_key], values + j * kv_stride, result, head_dim);
    }
    const float inverse_total = 1.0f / total;
    for (int64_t d = 0; d < head_dim; ++d) result[d] *= inverse_total;
  });
}

}  // namespace draftwise::cpu
