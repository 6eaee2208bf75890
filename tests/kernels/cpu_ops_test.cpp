// The CPU reference ops against plain double-precision loops, and the batch invariance of
// matmul that speculative decoding's exact greedy identity rests on.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/vector_math.h"
#include "tests/support/numeric.h"

namespace draftwise::cpu {
namespace {

using testing::random_values;

TEST(CpuFeatures, EnvironmentCanForcePortableKernels) {
  const char* forced = std::getenv("DRAFTWISE_CPU_ISA");
  if (forced != nullptr && std::string_view(forced) == "portable") {
    EXPECT_EQ(cpu_kernel_isa(), "portable");
  } else {
    EXPECT_EQ(cpu_kernel_isa(), cpu_has_avx2_fma() ? "avx2+fma" : "portable");
  }
}

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  for (const int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (const int64_t tasks : {0, 1, 3, 1000}) {
      std::vector<std::atomic<int>> counts(static_cast<size_t>(tasks));
      pool.parallel_for(tasks, [&](int64_t i) { counts[static_cast<size_t>(i)]++; });
      for (const auto& count : counts) EXPECT_EQ(count.load(), 1);
    }
  }
}

TEST(Matmul, MatchesDoublePrecisionProduct) {
  ThreadPool pool(3);
  for (const auto& [rows, in, out] : {std::tuple{1, 8, 8}, {3, 13, 5}, {7, 576, 19}, {70, 37, 130}}) {
    const auto x = random_values(static_cast<size_t>(rows * in), 1);
    const auto w = random_values(static_cast<size_t>(out * in), 2);
    const auto bias = random_values(static_cast<size_t>(out), 3);
    std::vector<float> y(static_cast<size_t>(rows * out), NAN);
    matmul(x.data(), w.data(), bias.data(), y.data(), rows, in, out, pool);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) {
        double expected = bias[o];
        double magnitude = std::abs(bias[o]);
        for (int i = 0; i < in; ++i) {
          expected += static_cast<double>(x[r * in + i]) * w[o * in + i];
          magnitude += std::abs(static_cast<double>(x[r * in + i]) * w[o * in + i]);
        }
        EXPECT_NEAR(y[r * out + o], expected, 1e-6 * magnitude + 1e-7)
            << "row " << r << " col " << o << " shape " << rows << "x" << in << "x" << out;
      }
    }
  }
}

TEST(Matmul, RowResultDoesNotDependOnBatchPositionOrThreads) {
  const int64_t in = 77, out = 45, rows = 23;
  const auto x = random_values(static_cast<size_t>(rows * in), 4);
  const auto w = random_values(static_cast<size_t>(out * in), 5);
  ThreadPool single(1);
  std::vector<float> full(static_cast<size_t>(rows * out));
  matmul(x.data(), w.data(), nullptr, full.data(), rows, in, out, single);
  for (const int threads : {2, 3}) {
    ThreadPool pool(threads);
    std::vector<float> again(full.size());
    matmul(x.data(), w.data(), nullptr, again.data(), rows, in, out, pool);
    EXPECT_EQ(0, std::memcmp(full.data(), again.data(), full.size() * sizeof(float)));
  }
  // Every row alone, and every window of rows starting anywhere, gives the same bits.
  ThreadPool pool(2);
  for (int64_t first = 0; first < rows; ++first) {
    for (const int64_t count : {int64_t{1}, int64_t{2}, int64_t{5}}) {
      if (first + count > rows) continue;
      std::vector<float> part(static_cast<size_t>(count * out));
      matmul(&x[first * in], w.data(), nullptr, part.data(), count, in, out, pool);
      EXPECT_EQ(0, std::memcmp(&full[first * out], part.data(), part.size() * sizeof(float)))
          << "rows " << first << "+" << count;
    }
  }
}

TEST(Matmul, DotEqualsOneElementOfMatmul) {
  ThreadPool pool(1);
  const auto a = random_values(61, 6);
  const auto b = random_values(61, 7);
  float element = 0.0f;
  matmul(a.data(), b.data(), nullptr, &element, 1, 61, 1, pool);
  EXPECT_EQ(dot(a.data(), b.data(), 61), element);
  EXPECT_FALSE(cpu_kernel_isa().empty());
}

TEST(Matmul, DotRowsEqualsDotOfEveryStridedRow) {
  const int64_t n = 19, stride = 25, count = 13;
  const auto x = random_values(n, 20);
  const auto w = random_values(stride * count, 21);
  std::vector<float> y(count, NAN);
  dot_rows(x.data(), w.data(), stride, count, n, y.data());
  for (int64_t j = 0; j < count; ++j) EXPECT_EQ(y[j], dot(x.data(), &w[j * stride], n)) << j;
}

TEST(Matmul, AxpyAddsAScaledVector) {
  const auto x = random_values(21, 22);
  auto y = random_values(21, 23);
  const auto before = y;
  axpy(0.75f, x.data(), y.data(), 21);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], before[i] + 0.75 * x[i], 1e-6);
}

TEST(RmsNorm, MatchesDefinition) {
  ThreadPool pool(2);
  const int64_t rows = 3, dim = 50;
  const auto x = random_values(rows * dim, 8);
  const auto weight = random_values(dim, 9);
  std::vector<float> y(x.size());
  rms_norm(x.data(), weight.data(), y.data(), rows, dim, 1e-5f, pool);
  for (int64_t r = 0; r < rows; ++r) {
    double square_sum = 0;
    for (int64_t i = 0; i < dim; ++i) square_sum += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(square_sum / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) {
      EXPECT_NEAR(y[r * dim + i], weight[i] * x[r * dim + i] * scale, 1e-5);
    }
  }
}

TEST(Rope, RotatesEachPairByPositionTimesFrequency) {
  const int64_t head_dim = 8, half = 4, heads = 2, tokens = 2;
  const std::vector<float> inv_freq = {1.0f, 0.5f, 0.25f, 0.125f};
  const std::vector<int64_t> positions = {3, 10};
  std::vector<float> cos(tokens * half), sin(tokens * half);
  rope_tables(positions.data(), tokens, inv_freq.data(), half, cos.data(), sin.data());
  for (const RopePairing pairing : {RopePairing::half_split, RopePairing::interleaved}) {
    const auto x = random_values(tokens * heads * head_dim, 10);
    auto rotated = x;
    apply_rope(rotated.data(), heads * head_dim, tokens, heads, head_dim, cos.data(), sin.data(),
               pairing);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t j = 0; j < half; ++j) {
          const int64_t base = (t * heads + h) * head_dim;
          const int64_t ia = base + (pairing == RopePairing::half_split ? j : 2 * j);
          const int64_t ib = base + (pairing == RopePairing::half_split ? j + half : 2 * j + 1);
          const double angle = static_cast<double>(positions[t]) * inv_freq[j];
          EXPECT_NEAR(rotated[ia], x[ia] * std::cos(angle) - x[ib] * std::sin(angle), 1e-5);
          EXPECT_NEAR(rotated[ib], x[ib] * std::cos(angle) + x[ia] * std::sin(angle), 1e-5);
        }
      }
    }
  }
}

TEST(Rope, InterleavedPairingOnPermutedHeadEqualsHalfSplit) {
  // llama.cpp stores Q/K rows so that pair j is (2j, 2j+1); rotating that layout with the
  // interleaved pairing and un-permuting equals rotating the original with half_split.
  const int64_t head_dim = 16, half = 8;
  std::vector<float> inv_freq(half);
  for (int64_t j = 0; j < half; ++j) inv_freq[j] = std::pow(10000.0f, -2.0f * j / head_dim);
  const int64_t position = 37;
  std::vector<float> cos(half), sin(half);
  rope_tables(&position, 1, inv_freq.data(), half, cos.data(), sin.data());
  auto original = random_values(head_dim, 11);
  std::vector<float> permuted(head_dim);
  for (int64_t j = 0; j < half; ++j) {
    permuted[2 * j] = original[j];
    permuted[2 * j + 1] = original[j + half];
  }
  apply_rope(original.data(), head_dim, 1, 1, head_dim, cos.data(), sin.data(), RopePairing::half_split);
  apply_rope(permuted.data(), head_dim, 1, 1, head_dim, cos.data(), sin.data(), RopePairing::interleaved);
  for (int64_t j = 0; j < half; ++j) {
    EXPECT_EQ(permuted[2 * j], original[j]);
    EXPECT_EQ(permuted[2 * j + 1], original[j + half]);
  }
}

// Attention by the textbook formula in double precision.
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t new_tokens,
                                    int64_t first_position, const AttentionShape& shape) {
  const int64_t hd = shape.head_dim, kv_stride = shape.num_kv_heads * hd;
  std::vector<double> out(static_cast<size_t>(new_tokens * shape.num_heads * hd), 0.0);
  for (int64_t t = 0; t < new_tokens; ++t) {
    const int64_t p = first_position + t;
    const int64_t lo = shape.window > 0 ? std::max<int64_t>(0, p - shape.window + 1) : 0;
    for (int64_t h = 0; h < shape.num_heads; ++h) {
      const int64_t kvh = h / (shape.num_heads / shape.num_kv_heads);
      std::vector<double> weights;
      for (int64_t j = lo; j <= p; ++j) {
        double s = 0;
        for (int64_t d = 0; d < hd; ++d) {
          s += static_cast<double>(q[(t * shape.num_heads + h) * hd + d]) * k[j * kv_stride + kvh * hd + d];
        }
        weights.push_back(s * shape.scale);
      }
      const double m = *std::max_element(weights.begin(), weights.end());
      double total = 0;
      for (double& w : weights) total += (w = std::exp(w - m));
      for (int64_t j = lo; j <= p; ++j) {
        for (int64_t d = 0; d < hd; ++d) {
          out[(t * shape.num_heads + h) * hd + d] += weights[j - lo] / total * v[j * kv_stride + kvh * hd + d];
        }
      }
    }
  }
  return out;
}

TEST(Attention, MatchesNaiveCausalGroupedQueryAttention) {
  ThreadPool pool(2);
  for (const int64_t window : {int64_t{0}, int64_t{4}}) {
    const AttentionShape shape{6, 2, 16, 0.25f, window};
    const int64_t first_position = 5, new_tokens = 4, cached = first_position + new_tokens;
    const auto q = random_values(new_tokens * 6 * 16, 12);
    const auto k = random_values(cached * 2 * 16, 13);
    const auto v = random_values(cached * 2 * 16, 14);
    std::vector<float> out(q.size(), NAN);
    attention(q.data(), k.data(), v.data(), out.data(), new_tokens, first_position, shape, pool);
    const auto expected = naive_attention(q, k, v, new_tokens, first_position, shape);
    for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], expected[i], 1e-5) << i;
  }
}

TEST(Attention, TokenResultDoesNotDependOnHowManyTokensShareTheCall) {
  ThreadPool pool(3);
  const AttentionShape shape{4, 1, 8, 0.35f, 0};
  const int64_t tokens = 9;
  const auto q = random_values(tokens * 4 * 8, 15);
  const auto k = random_values(tokens * 8, 16);
  const auto v = random_values(tokens * 8, 17);
  std::vector<float> all(q.size());
  attention(q.data(), k.data(), v.data(), all.data(), tokens, 0, shape, pool);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<float> one(4 * 8);
    attention(&q[t * 32], k.data(), v.data(), one.data(), 1, t, shape, pool);
    EXPECT_EQ(0, std::memcmp(one.data(), &all[t * 32], one.size() * sizeof(float))) << t;
  }
}

TEST(VectorMath, ExpIsWithinTwoUlpsOverTheNormalRange) {
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  auto y = x;
  exp_inplace(y.data(), static_cast<int64_t>(y.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double exact = std::exp(static_cast<double>(x[i]));
    EXPECT_LE(std::abs(y[i] - exact), 2.5 * std::ldexp(1.0, std::ilogb(exact) - 23)) << x[i];
  }
  EXPECT_EQ(y.back(), 1.0f);
  std::vector<float> extremes = {-1000.0f, 1000.0f, -87.3f, 88.3f, 1.0f};
  exp_inplace(extremes.data(), 5);
  EXPECT_GE(extremes[0], 0.0f);
  EXPECT_LT(extremes[0], 2e-38f);
  EXPECT_GT(extremes[1], 1e38f);  // clamped to exp(88.3) by AVX2, inf by std::exp
  EXPECT_NEAR(extremes[4], std::exp(1.0), 1e-6);
  std::vector<float> not_a_number(9, NAN);
  exp_inplace(not_a_number.data(), 9);
  for (const float value : not_a_number) EXPECT_TRUE(std::isnan(value));
}

TEST(Swiglu, IsSiluOfGateTimesUp) {
  auto gate = random_values(600, 24, 4.0f);
  gate[0] = -100.0f;
  gate[1] = 100.0f;
  const auto up = random_values(600, 25);
  std::vector<float> out(gate.size());
  swiglu(gate.data(), up.data(), out.data(), static_cast<int64_t>(gate.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    const double expected = g / (1.0 + std::exp(-g)) * up[i];
    EXPECT_NEAR(out[i], expected, 1e-6 * std::max(1.0, std::abs(expected))) << g;
  }
}

}  // namespace
}  // namespace draftwise::cpu
