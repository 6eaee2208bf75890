// Every CUDA op against its CPU reference op on fresh random inputs (llama.cpp's
// test-backend-ops pattern): several shapes each, sizes that are no multiple of any tile,
// outputs poisoned (all bits set: NaN) before each run. Bounds on ‖out − ref‖ / ‖ref‖:
// 1e-5 where the output is fp32 and the inputs exact, 1e-2 where it is bf16.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/device_dequantize.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/ops.h"
#include "kernels/half.h"
#include "tests/support/numeric.h"

namespace draftwise::cuda {
namespace {

using ::draftwise::bf16_to_f32;
using ::draftwise::f32_to_bf16;

constexpr double kBf16Bound = 1e-2;
constexpr double kF32Bound = 1e-5;

using testing::random_values;
using testing::relative_l2;

// Rounds to bf16 and back, so the CPU reference sees exactly the GPU's inputs.
std::vector<float> bf16_rounded(std::vector<float> values) {
  for (float& value : values) value = bf16_to_f32(f32_to_bf16(value));
  return values;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
  return bits;
}

std::vector<float> from_bf16(const std::vector<uint16_t>& bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = bf16_to_f32(bits[i]);
  return values;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA device visible: the CUDA op tests need a GPU";
    }
    auto stream = Stream::create();
    ASSERT_TRUE(stream.ok()) << stream.error().message;
    stream_ = std::move(stream).value();
  }

  template <typename T>
  DeviceBuffer upload(const std::vector<T>& host) {
    auto buffer = cuda::upload(host, "test input", stream_.get());
    EXPECT_TRUE(buffer.ok()) << buffer.error().message;
    return std::move(buffer).value();
  }

  // A device buffer of `count` T, every byte 0xFF (NaN for float and bf16).
  template <typename T>
  DeviceBuffer poisoned(size_t count) {
    auto buffer = DeviceBuffer::allocate(std::max<size_t>(count * sizeof(T), 1), "test output");
    EXPECT_TRUE(buffer.ok());
    EXPECT_EQ(cudaMemsetAsync(buffer->data(), 0xFF, count * sizeof(T), stream_.get()), cudaSuccess);
    return std::move(buffer).value();
  }

  template <typename T>
  std::vector<T> download(const DeviceBuffer& buffer, size_t count) {
    std::vector<T> host(count);
    const Status status = copy_to_host(host.data(), buffer.data(), count * sizeof(T), stream_.get());
    EXPECT_TRUE(status.ok()) << status.error().message;
    return host;
  }

  Stream stream_;
  cpu::ThreadPool pool_{2};
};

TEST_F(CudaOps, GemmMatchesCpuMatmul) {
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok()) << gemm.error().message;
  for (const auto& [rows, in, out] : {std::tuple{1, 64, 96}, {7, 130, 33}, {67, 576, 1000}, {300, 1536, 577}}) {
    const auto x = bf16_rounded(random_values(static_cast<size_t>(rows * in), 1));
    const auto w = bf16_rounded(random_values(static_cast<size_t>(out * in), 2, 0.05f));
    std::vector<float> ref(static_cast<size_t>(rows * out));
    cpu::matmul(x.data(), w.data(), nullptr, ref.data(), rows, in, out, pool_);
    const DeviceBuffer dx = upload(to_bf16(x));
    const DeviceBuffer dw = upload(to_bf16(w));
    for (const bool fp32_out : {false, true}) {
      const size_t count = ref.size();
      DeviceBuffer dy = fp32_out ? poisoned<float>(count) : poisoned<uint16_t>(count);
      const Status status = gemm->matmul(dx.as<bf16>(), dw.as<bf16>(), dy.data(), fp32_out, rows, in, out,
                                         stream_.get());
      ASSERT_TRUE(status.ok()) << status.error().message;
      const auto y = fp32_out ? download<float>(dy, count) : from_bf16(download<uint16_t>(dy, count));
      // fp32 output: inputs are exact, only the summation order differs (1e-5 with fp32
      // accumulation over `in` terms; allow for cuBLAS's split-K orders).
      EXPECT_LE(relative_l2(y, ref), fp32_out ? 1e-5 * std::sqrt(in / 64.0) : kBf16Bound)
          << rows << "x" << in << "x" << out << (fp32_out ? " fp32" : " bf16");
    }
  }
}

// gemv against cpu::matmul, for every row bucket (1, 2, 4 rows, and 3 between),
// odd output counts (an unpaired last row), bias, fp32 and bf16 outputs.
TEST_F(CudaOps, GemvMatchesCpuMatmul) {
  for (const auto& [rows, in, out] : {std::tuple{1, 64, 96}, {2, 576, 961}, {3, 136, 33}, {4, 4096, 130},
                                      {4, 1536, 577}, {1, 14336, 40}}) {
    ASSERT_TRUE(gemv_supported(rows, in));
    const auto x = bf16_rounded(random_values(static_cast<size_t>(rows * in), 1));
    const auto w = bf16_rounded(random_values(static_cast<size_t>(out * in), 2, 0.05f));
    const auto bias = bf16_rounded(random_values(static_cast<size_t>(out), 9));
    const DeviceBuffer dx = upload(to_bf16(x));
    const DeviceBuffer dw = upload(to_bf16(w));
    const DeviceBuffer dbias = upload(to_bf16(bias));
    for (const bool with_bias : {false, true}) {
      std::vector<float> ref(static_cast<size_t>(rows * out));
      cpu::matmul(x.data(), w.data(), with_bias ? bias.data() : nullptr, ref.data(), rows, in, out, pool_);
      for (const bool fp32_out : {false, true}) {
        LinearSource source;
        source.x = dx.as<bf16>();
        DeviceBuffer dy = fp32_out ? poisoned<float>(ref.size()) : poisoned<uint16_t>(ref.size());
        ASSERT_EQ(gemv(source, rows, dw.as<bf16>(), with_bias ? dbias.as<bf16>() : nullptr, in, out,
                       GemvEpilogue::kStore, dy.data(), fp32_out, stream_.get()),
                  cudaSuccess);
        const auto y = fp32_out ? download<float>(dy, ref.size()) : from_bf16(download<uint16_t>(dy, ref.size()));
        EXPECT_LE(relative_l2(y, ref), fp32_out ? 1e-5 * std::sqrt(in / 64.0) : kBf16Bound)
            << rows << "x" << in << "x" << out << (fp32_out ? " fp32" : " bf16") << (with_bias ? " bias" : "");
      }
    }
  }
  EXPECT_FALSE(gemv_supported(5, 64));
  EXPECT_FALSE(gemv_supported(1, 100));       // not a multiple of 8
  EXPECT_FALSE(gemv_supported(4, 14336));     // rows do not fit in shared memory
}

// The fused input: rms_norm(residual + delta) of gathered rows, the sum stored for the next
// layer; and the SwiGLU output: silu(x·gate) · (x·up).
TEST_F(CudaOps, GemvWithNormedInputAndSwigluMatchesCpu) {
  for (const auto& [rows, total_rows, in, ffn] : {std::tuple{1, 1, 576, 1536}, {3, 5, 2048, 100}, {4, 4, 4096, 64}}) {
    const auto residual = random_values(static_cast<size_t>(total_rows * in), 3);
    const auto delta = bf16_rounded(random_values(residual.size(), 4));
    const auto norm_weight = random_values(static_cast<size_t>(in), 5);
    const auto w = bf16_rounded(random_values(static_cast<size_t>(2 * ffn * in), 6, 0.05f));
    std::vector<int32_t> row_index(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) row_index[r] = (total_rows - 1 - 2 * r + 3 * total_rows) % total_rows;
    if (rows == total_rows) {
      for (int r = 0; r < rows; ++r) row_index[r] = r;
    }
    std::vector<float> summed = residual;
    for (size_t i = 0; i < summed.size(); ++i) summed[i] += delta[i];
    std::vector<float> picked(static_cast<size_t>(rows * in));
    for (int r = 0; r < rows; ++r) std::copy_n(&summed[row_index[r] * in], in, &picked[r * in]);
    std::vector<float> normed(picked.size());
    cpu::rms_norm(picked.data(), norm_weight.data(), normed.data(), rows, in, 1e-5f, pool_);
    normed = bf16_rounded(normed);  // the kernel keeps its input rows as bf16
    std::vector<float> gate_up(static_cast<size_t>(rows * 2 * ffn));
    cpu::matmul(normed.data(), w.data(), nullptr, gate_up.data(), rows, in, 2 * ffn, pool_);
    std::vector<float> ref(static_cast<size_t>(rows * ffn));
    for (int r = 0; r < rows; ++r) cpu::swiglu(&gate_up[r * 2 * ffn], &gate_up[r * 2 * ffn + ffn], &ref[r * ffn], ffn);

    const DeviceBuffer dres = upload(residual);
    const DeviceBuffer ddelta = upload(to_bf16(delta));
    const DeviceBuffer dnorm = upload(norm_weight);
    const DeviceBuffer dw = upload(to_bf16(w));
    const DeviceBuffer dindex = upload(row_index);
    DeviceBuffer dsum = poisoned<float>(residual.size());
    DeviceBuffer dy = poisoned<uint16_t>(ref.size());
    LinearSource source;
    source.residual = dres.as<float>();
    source.delta = ddelta.as<bf16>();
    source.residual_out = dsum.as<float>();
    source.norm_weight = dnorm.as<float>();
    source.row_index = dindex.as<int32_t>();
    source.eps = 1e-5f;
    ASSERT_EQ(gemv(source, rows, dw.as<bf16>(), nullptr, in, 2 * ffn, GemvEpilogue::kSwiglu, dy.data(), false,
                   stream_.get()),
              cudaSuccess);
    EXPECT_LE(relative_l2(from_bf16(download<uint16_t>(dy, ref.size())), ref), kBf16Bound) << rows << "x" << in;
    const auto sums = download<float>(dsum, summed.size());
    for (int r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < in; ++i) ASSERT_EQ(sums[row_index[r] * in + i], summed[row_index[r] * in + i]);
    }
    // Refused: the sum written over the residual the other blocks still read.
    source.residual_out = dres.as<float>();
    EXPECT_NE(gemv(source, rows, dw.as<bf16>(), nullptr, in, 2 * ffn, GemvEpilogue::kSwiglu, dy.data(), false,
                   stream_.get()),
              cudaSuccess);
  }
}

// The fused decode kernel equals apply_rope on q and k followed by write_kv_cache, bit for bit.
TEST_F(CudaOps, RopeAndWriteKvEqualsRopeThenCacheWrite) {
  for (const auto& [tokens, heads, kv_heads, head_dim] : {std::tuple{1, 9, 3, 64}, {5, 32, 8, 128}, {3, 4, 4, 6}}) {
    const int64_t kv_dim = kv_heads * head_dim;
    const int64_t row_stride = (heads + 2 * kv_heads) * head_dim;
    const int64_t half = head_dim / 2;
    std::vector<float> inv_freq(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j) inv_freq[j] = std::pow(500000.0f, -2.0f * j / head_dim);
    std::vector<int32_t> positions(static_cast<size_t>(tokens)), slots(static_cast<size_t>(tokens));
    for (int t = 0; t < tokens; ++t) {
      positions[t] = 1000 + 13 * t;
      slots[t] = (7 * t + 2) % 40;
    }
    const auto qkv = to_bf16(random_values(static_cast<size_t>(tokens * row_stride), 10));
    const DeviceBuffer dpos = upload(positions);
    const DeviceBuffer dslots = upload(slots);
    const DeviceBuffer dfreq = upload(inv_freq);
    DeviceBuffer fused_qkv = upload(qkv);
    DeviceBuffer split_qkv = upload(qkv);
    const std::vector<uint16_t> empty_cache(static_cast<size_t>(40 * kv_dim), 0x7FC1);
    DeviceBuffer fused_k = upload(empty_cache), fused_v = upload(empty_cache);
    DeviceBuffer split_k = upload(empty_cache), split_v = upload(empty_cache);
    ASSERT_EQ(rope_and_write_kv(fused_qkv.as<bf16>(), row_stride, tokens, heads, kv_heads, head_dim, dpos.as<int32_t>(),
                                dfreq.as<float>(), 0, dslots.as<int32_t>(), fused_k.as<bf16>(), fused_v.as<bf16>(),
                                stream_.get()),
              cudaSuccess);
    ASSERT_EQ(apply_rope(split_qkv.as<bf16>(), row_stride, tokens, heads + kv_heads, head_dim, dpos.as<int32_t>(),
                         dfreq.as<float>(), 0, stream_.get()),
              cudaSuccess);
    ASSERT_EQ(write_kv_cache(split_qkv.as<bf16>(), row_stride, heads * head_dim, heads * head_dim + kv_dim,
                             dslots.as<int32_t>(), tokens, kv_dim, split_k.as<bf16>(), split_v.as<bf16>(),
                             stream_.get()),
              cudaSuccess);
    const size_t cache = empty_cache.size();
    EXPECT_EQ(download<uint16_t>(fused_k, cache), download<uint16_t>(split_k, cache));
    EXPECT_EQ(download<uint16_t>(fused_v, cache), download<uint16_t>(split_v, cache));
    const size_t q_and_k = static_cast<size_t>(tokens * row_stride);
    EXPECT_EQ(download<uint16_t>(fused_qkv, q_and_k), download<uint16_t>(split_qkv, q_and_k));
  }
}

// The qkv gemv's RoPE epilogue equals a plain gemv followed by rope_and_write_kv, bit for
// bit: the same rotation of the same bf16 values, the same cache slots.
TEST_F(CudaOps, GemvRopeEpilogueEqualsGemvThenRopeAndWriteKv) {
  for (const auto& [rows, in, heads, kv_heads, head_dim] : {std::tuple{1, 576, 9, 3, 64}, {3, 256, 4, 2, 32},
                                                            {4, 4096, 32, 8, 128}}) {
    const int64_t kv_dim = kv_heads * head_dim;
    const int64_t out = (heads + 2 * kv_heads) * head_dim;
    const auto x = to_bf16(random_values(static_cast<size_t>(rows * in), 11));
    const auto w = to_bf16(random_values(static_cast<size_t>(out * in), 12, 0.05f));
    const auto bias = to_bf16(random_values(static_cast<size_t>(out), 13));
    std::vector<float> inv_freq(static_cast<size_t>(head_dim / 2));
    for (int64_t j = 0; j < head_dim / 2; ++j) inv_freq[j] = std::pow(10000.0f, -2.0f * j / head_dim);
    std::vector<int32_t> positions(static_cast<size_t>(rows)), slots(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      positions[r] = 77 + 300 * r;
      slots[r] = 5 * r + 1;
    }
    const DeviceBuffer dx = upload(x), dw = upload(w), dbias = upload(bias), dfreq = upload(inv_freq);
    const DeviceBuffer dpos = upload(positions), dslots = upload(slots);
    const std::vector<uint16_t> empty_cache(static_cast<size_t>(32 * kv_dim), 0x7FC1);
    DeviceBuffer fused_k = upload(empty_cache), fused_v = upload(empty_cache);
    DeviceBuffer split_k = upload(empty_cache), split_v = upload(empty_cache);
    DeviceBuffer fused_y = poisoned<uint16_t>(static_cast<size_t>(rows * out));
    DeviceBuffer split_y = poisoned<uint16_t>(static_cast<size_t>(rows * out));
    LinearSource source;
    source.x = dx.as<bf16>();
    const RopeCacheWrite rope{dpos.as<int32_t>(), dfreq.as<float>(), dslots.as<int32_t>(), fused_k.as<bf16>(),
                              fused_v.as<bf16>(), heads, kv_heads, head_dim};
    ASSERT_EQ(gemv(source, rows, dw.as<bf16>(), dbias.as<bf16>(), in, out, GemvEpilogue::kRopeWriteKv, fused_y.data(),
                   false, stream_.get(), &rope),
              cudaSuccess);
    ASSERT_EQ(gemv(source, rows, dw.as<bf16>(), dbias.as<bf16>(), in, out, GemvEpilogue::kStore, split_y.data(), false,
                   stream_.get()),
              cudaSuccess);
    ASSERT_EQ(rope_and_write_kv(split_y.as<bf16>(), out, rows, heads, kv_heads, head_dim, dpos.as<int32_t>(),
                                dfreq.as<float>(), 0, dslots.as<int32_t>(), split_k.as<bf16>(), split_v.as<bf16>(),
                                stream_.get()),
              cudaSuccess);
    const size_t cache = empty_cache.size();
    EXPECT_EQ(download<uint16_t>(fused_y, static_cast<size_t>(rows * out)),
              download<uint16_t>(split_y, static_cast<size_t>(rows * out)));
    EXPECT_EQ(download<uint16_t>(fused_k, cache), download<uint16_t>(split_k, cache));
    EXPECT_EQ(download<uint16_t>(fused_v, cache), download<uint16_t>(split_v, cache));
    // Refused without its arguments.
    EXPECT_NE(gemv(source, rows, dw.as<bf16>(), nullptr, in, out, GemvEpilogue::kRopeWriteKv, fused_y.data(), false,
                   stream_.get()),
              cudaSuccess);
  }
}

TEST_F(CudaOps, FillUniformIsDeterministicAndHasTheAskedSpread) {
  const int64_t count = 1 << 20;
  DeviceBuffer a = poisoned<uint16_t>(count);
  DeviceBuffer b = poisoned<uint16_t>(count);
  ASSERT_EQ(fill_uniform_bf16(a.as<bf16>(), count, 77, 0.5f, stream_.get()), cudaSuccess);
  ASSERT_EQ(fill_uniform_bf16(b.as<bf16>(), count, 77, 0.5f, stream_.get()), cudaSuccess);
  const auto values = from_bf16(download<uint16_t>(a, count));
  EXPECT_EQ(download<uint16_t>(a, count), download<uint16_t>(b, count));
  double sum = 0.0;
  double squares = 0.0;
  for (const float v : values) {
    ASSERT_TRUE(v >= -0.5f && v <= 0.5f) << v;
    sum += v;
    squares += static_cast<double>(v) * v;
  }
  const double mean = sum / count;
  EXPECT_NEAR(mean, 0.0, 2e-3);
  EXPECT_NEAR(std::sqrt(squares / count - mean * mean), 0.5 / std::sqrt(3.0), 2e-3);
}

TEST_F(CudaOps, AddRmsNormMatchesCpu) {
  for (const auto& [rows, dim] : {std::pair{1, 64}, {5, 577}, {33, 2048}}) {
    for (const bool with_delta : {false, true}) {
      const auto residual = random_values(static_cast<size_t>(rows * dim), 3);
      const auto delta = bf16_rounded(random_values(residual.size(), 4));
      const auto weight = random_values(static_cast<size_t>(dim), 5);
      std::vector<float> summed = residual;
      if (with_delta) {
        for (size_t i = 0; i < summed.size(); ++i) summed[i] += delta[i];
      }
      std::vector<float> ref(summed.size());
      cpu::rms_norm(summed.data(), weight.data(), ref.data(), rows, dim, 1e-5f, pool_);

      DeviceBuffer dres = upload(residual);
      const DeviceBuffer ddelta = upload(to_bf16(delta));
      const DeviceBuffer dweight = upload(weight);
      DeviceBuffer dout = poisoned<uint16_t>(ref.size());
      ASSERT_EQ(add_rms_norm(dres.as<float>(), with_delta ? ddelta.as<bf16>() : nullptr, dweight.as<float>(),
                             dout.as<bf16>(), rows, dim, 1e-5f, stream_.get()),
                cudaSuccess);
      EXPECT_LE(relative_l2(from_bf16(download<uint16_t>(dout, ref.size())), ref), kBf16Bound);
      EXPECT_LE(relative_l2(download<float>(dres, summed.size()), summed), kF32Bound);
    }
  }
}

TEST_F(CudaOps, RopeMatchesCpuForBothPairings) {
  for (const auto& [tokens, heads, head_dim] : {std::tuple{1, 1, 6}, {3, 5, 64}, {17, 3, 128}}) {
    const int64_t row_stride = heads * head_dim + 10;  // rows wider than the rotated heads
    const int64_t half = head_dim / 2;
    std::vector<float> inv_freq(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j) inv_freq[j] = std::pow(10000.0f, -2.0f * j / head_dim);
    std::vector<int32_t> positions(static_cast<size_t>(tokens));
    std::vector<int64_t> positions64(static_cast<size_t>(tokens));
    for (int64_t t = 0; t < tokens; ++t) positions64[t] = positions[t] = static_cast<int32_t>(t * 37 + 5);
    std::vector<float> cos(static_cast<size_t>(tokens * half)), sin(cos.size());
    cpu::rope_tables(positions64.data(), tokens, inv_freq.data(), half, cos.data(), sin.data());
    for (const int interleaved : {0, 1}) {
      const auto x = bf16_rounded(random_values(static_cast<size_t>(tokens * row_stride), 6));
      auto ref = x;
      cpu::apply_rope(ref.data(), row_stride, tokens, heads, head_dim, cos.data(), sin.data(),
                      interleaved ? cpu::RopePairing::interleaved : cpu::RopePairing::half_split);
      DeviceBuffer dx = upload(to_bf16(x));
      const DeviceBuffer dpos = upload(positions);
      const DeviceBuffer dfreq = upload(inv_freq);
      ASSERT_EQ(apply_rope(dx.as<bf16>(), row_stride, tokens, heads, head_dim, dpos.as<int32_t>(),
                           dfreq.as<float>(), interleaved, stream_.get()),
                cudaSuccess);
      const auto out = from_bf16(download<uint16_t>(dx, x.size()));
      EXPECT_LE(relative_l2(out, ref), kBf16Bound) << tokens << "x" << heads << "x" << head_dim;
      // The columns past the heads are left alone.
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t c = heads * head_dim; c < row_stride; ++c) EXPECT_EQ(out[t * row_stride + c], x[t * row_stride + c]);
      }
    }
  }
}

TEST_F(CudaOps, SwigluMatchesCpu) {
  for (const auto& [rows, ffn] : {std::pair{1, 17}, {3, 1000}, {9, 1536}}) {
    const auto gate_up = bf16_rounded(random_values(static_cast<size_t>(rows * 2 * ffn), 7, 3.0f));
    std::vector<float> ref(static_cast<size_t>(rows * ffn));
    for (int r = 0; r < rows; ++r) {
      cpu::swiglu(&gate_up[r * 2 * ffn], &gate_up[r * 2 * ffn + ffn], &ref[r * ffn], ffn);
    }
    const DeviceBuffer din = upload(to_bf16(gate_up));
    DeviceBuffer dout = poisoned<uint16_t>(ref.size());
    ASSERT_EQ(swiglu(din.as<bf16>(), dout.as<bf16>(), rows, ffn, stream_.get()), cudaSuccess);
    EXPECT_LE(relative_l2(from_bf16(download<uint16_t>(dout, ref.size())), ref), kBf16Bound);
  }
}

TEST_F(CudaOps, EmbeddingLookupCopiesRowsExactly) {
  for (const auto& [vocab, hidden, rows] : {std::tuple{10, 8, 3}, {1000, 577, 9}, {49152, 576, 40}}) {
    const auto table = bf16_rounded(random_values(static_cast<size_t>(vocab * hidden), 8));
    std::vector<int32_t> ids(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) ids[r] = (r * 7919 + 3) % vocab;
    ids.back() = vocab - 1;
    const DeviceBuffer dtable = upload(to_bf16(table));
    const DeviceBuffer dids = upload(ids);
    DeviceBuffer dout = poisoned<float>(static_cast<size_t>(rows * hidden));
    ASSERT_EQ(embedding_lookup(dtable.as<bf16>(), dids.as<int32_t>(), dout.as<float>(), rows, hidden,
                               stream_.get()),
              cudaSuccess);
    const auto out = download<float>(dout, static_cast<size_t>(rows * hidden));
    for (int r = 0; r < rows; ++r) {
      EXPECT_EQ(0, std::memcmp(&out[r * hidden], &table[static_cast<size_t>(ids[r]) * hidden], hidden * sizeof(float)));
    }
  }
}

TEST_F(CudaOps, ArgmaxPicksTheLowestIndexOfTheLargest) {
  for (const auto& [rows, vocab] : {std::pair{1, 7}, {4, 1000}, {3, 49152}, {2, 5}}) {
    auto logits = random_values(static_cast<size_t>(rows * vocab), 9);
    // Row 0 gets a tie between two maxima.
    logits[vocab - 1] = 100.0f;
    logits[vocab / 2] = 100.0f;
    if (rows == 2) {
      // Row 0: one NaN marks the row; row 1: -0 ties with +0.
      logits[3] = std::nanf("");
      logits[vocab + 0] = -5.0f;
      logits[vocab + 1] = -1.0f;
      logits[vocab + 2] = -0.0f;
      logits[vocab + 3] = 0.0f;
      logits[vocab + 4] = -2.0f;
    }
    const DeviceBuffer din = upload(logits);
    DeviceBuffer dout = poisoned<uint64_t>(static_cast<size_t>(rows));
    ASSERT_EQ(argmax_rows(din.as<float>(), dout.as<uint64_t>(), rows, vocab, stream_.get()), cudaSuccess);
    const auto keys = download<uint64_t>(dout, static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      if (rows == 2 && r == 0) {
        EXPECT_EQ(keys[r], kNonFiniteArgmaxKey);
        continue;
      }
      const auto begin = logits.begin() + static_cast<int64_t>(r) * vocab;
      const int64_t expected = rows == 2 ? 2 : std::max_element(begin, begin + vocab) - begin;
      EXPECT_EQ(argmax_key_index(keys[r]), expected) << "row " << r << " of " << rows << "x" << vocab;
    }
  }
}

// The greedy LM head: the argmax epilogue picks, for every row, exactly the argmax of the
// products that kStore writes (the same sums in the same order), the lowest index among
// ties, from inputs normed from gathered residual rows as in the decoder.
TEST_F(CudaOps, GemvArgmaxEpiloguePicksTheArgmaxOfItsProducts) {
  for (const auto& [rows, total_rows, in, out] : {std::tuple{1, 1, 576, 49152}, {3, 5, 64, 1001}, {4, 6, 2048, 4099}}) {
    const auto residual = random_values(static_cast<size_t>(total_rows * in), 21);
    const auto norm_weight = random_values(static_cast<size_t>(in), 22);
    auto w = bf16_rounded(random_values(static_cast<size_t>(out) * in, 23, 0.05f));
    std::vector<int32_t> row_index(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) row_index[r] = (2 * r + 1) % total_rows;
    const DeviceBuffer dres = upload(residual);
    const DeviceBuffer dnorm = upload(norm_weight);
    const DeviceBuffer dindex = upload(row_index);
    LinearSource source;
    source.residual = dres.as<float>();
    source.norm_weight = dnorm.as<float>();
    source.row_index = dindex.as<int32_t>();
    source.eps = 1e-5f;
    // The products' argmax per row, lowest index among ties; then the epilogue's picks.
    const auto run = [&](std::vector<int64_t>& expected, std::vector<int64_t>& picked) {
      const DeviceBuffer dw = upload(to_bf16(w));
      DeviceBuffer dy = poisoned<float>(static_cast<size_t>(rows) * out);
      ASSERT_EQ(gemv(source, rows, dw.as<bf16>(), nullptr, in, out, GemvEpilogue::kStore, dy.data(), true,
                     stream_.get()),
                cudaSuccess);
      const auto y = download<float>(dy, static_cast<size_t>(rows) * out);
      DeviceBuffer dkeys = upload(std::vector<uint64_t>(static_cast<size_t>(rows), 0));
      ASSERT_EQ(gemv(source, rows, dw.as<bf16>(), nullptr, in, out, GemvEpilogue::kArgmax, dkeys.data(), false,
                     stream_.get()),
                cudaSuccess);
      const auto keys = download<uint64_t>(dkeys, static_cast<size_t>(rows));
      expected.clear();
      picked.clear();
      for (int r = 0; r < rows; ++r) {
        const auto begin = y.begin() + static_cast<int64_t>(r) * out;
        expected.push_back(std::max_element(begin, begin + out) - begin);
        picked.push_back(argmax_key_index(keys[r]));
      }
    };
    std::vector<int64_t> expected, picked;
    run(expected, picked);
    EXPECT_EQ(picked, expected) << rows << "x" << in << "x" << out;
    // Row 0's winner copied to a lower index: a tie, which the lower index must win.
    const int64_t winner = expected[0];
    const int64_t lower = winner / 2;
    ASSERT_LT(lower, winner);
    std::copy_n(&w[winner * in], in, &w[lower * in]);
    run(expected, picked);
    EXPECT_EQ(expected[0], lower);
    EXPECT_EQ(picked, expected) << rows << "x" << in << "x" << out << " with a tie";
  }
}

// Early exit's row moves: kept rows copied as they are, others summed from residual + delta
// exactly as a norm sums them; stored rows scattered to their targets.
TEST_F(CudaOps, ResidualRowsAreAssembledAndStoredExactly) {
  const int64_t dim = 80, rows = 5;
  const auto residual = random_values(static_cast<size_t>(rows * dim), 31);
  const auto delta = bf16_rounded(random_values(residual.size(), 32));
  const auto kept = random_values(static_cast<size_t>(2 * dim), 33);
  const DeviceBuffer dres = upload(residual);
  const DeviceBuffer ddelta = upload(to_bf16(delta));
  const DeviceBuffer dkept = upload(kept);
  std::vector<ResidualRowSource> sources(4);
  sources[0].pointer = dkept.as<float>() + dim;
  sources[1].row = 3;
  sources[2].pointer = dkept.as<float>();
  sources[3].row = 0;
  const DeviceBuffer dsources = upload(sources);
  for (const bool with_delta : {true, false}) {
    DeviceBuffer out = poisoned<float>(static_cast<size_t>(4 * dim));
    ASSERT_EQ(assemble_residual_rows(dres.as<float>(), with_delta ? ddelta.as<bf16>() : nullptr,
                                     dsources.as<ResidualRowSource>(), out.as<float>(), 4, dim, stream_.get()),
              cudaSuccess);
    const auto assembled = download<float>(out, static_cast<size_t>(4 * dim));
    for (int64_t c = 0; c < dim; ++c) {
      ASSERT_EQ(assembled[c], kept[dim + c]);
      ASSERT_EQ(assembled[dim + c], residual[3 * dim + c] + (with_delta ? delta[3 * dim + c] : 0.0f));
      ASSERT_EQ(assembled[2 * dim + c], kept[c]);
      ASSERT_EQ(assembled[3 * dim + c], residual[c] + (with_delta ? delta[c] : 0.0f));
    }
  }
  DeviceBuffer targets = poisoned<float>(static_cast<size_t>(rows * dim));
  std::vector<float*> pointers;
  for (int64_t r = 0; r < rows; ++r) pointers.push_back(targets.as<float>() + (rows - 1 - r) * dim);
  const DeviceBuffer dpointers = upload(pointers);
  ASSERT_EQ(store_residual_rows(dres.as<float>(), ddelta.as<bf16>(), dpointers.as<float* const>(), rows, dim,
                                stream_.get()),
            cudaSuccess);
  const auto stored = download<float>(targets, static_cast<size_t>(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < dim; ++c) {
      ASSERT_EQ(stored[(rows - 1 - r) * dim + c], residual[r * dim + c] + delta[r * dim + c]);
    }
  }
}

TEST_F(CudaOps, AddBiasAndConversionsMatchTheHost) {
  const int rows = 5, out = 333;
  const auto y = bf16_rounded(random_values(static_cast<size_t>(rows * out), 10));
  const auto bias = bf16_rounded(random_values(static_cast<size_t>(out), 11));
  DeviceBuffer dy = upload(to_bf16(y));
  const DeviceBuffer dbias = upload(to_bf16(bias));
  ASSERT_EQ(add_bias(dy.as<bf16>(), dbias.as<bf16>(), rows, out, stream_.get()), cudaSuccess);
  const auto sum = from_bf16(download<uint16_t>(dy, y.size()));
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      EXPECT_EQ(sum[r * out + o], bf16_to_f32(f32_to_bf16(y[r * out + o] + bias[o])));
    }
  }
  const auto values = random_values(1001, 12);
  const DeviceBuffer dvalues = upload(values);
  DeviceBuffer dbf16 = poisoned<uint16_t>(values.size());
  ASSERT_EQ(convert_f32_to_bf16(dvalues.as<float>(), dbf16.as<bf16>(), 1001, stream_.get()), cudaSuccess);
  EXPECT_EQ(download<uint16_t>(dbf16, values.size()), to_bf16(values));
  DeviceBuffer dback = poisoned<float>(values.size());
  ASSERT_EQ(convert_bf16_to_f32(dbf16.as<bf16>(), dback.as<float>(), 1001, stream_.get()), cudaSuccess);
  EXPECT_EQ(download<float>(dback, values.size()), bf16_rounded(values));
}

TEST_F(CudaOps, DequantizationOfEveryStoredTypeMatchesTheCpu) {
  std::mt19937_64 rng(13);
  for (const TensorType type : {TensorType::f32, TensorType::f16, TensorType::bf16, TensorType::f64,
                                TensorType::q4_0, TensorType::q4_1, TensorType::q5_0, TensorType::q5_1,
                                TensorType::q8_0, TensorType::q4_k, TensorType::q5_k, TensorType::q6_k}) {
    const TensorTypeTraits& traits = tensor_type_traits(type);
    for (const int64_t blocks : {int64_t{1}, int64_t{7}, int64_t{1001}}) {
      // Random bytes: every bit pattern is a valid block (fp16 scales may be inf or NaN).
      std::vector<std::byte> stored(static_cast<size_t>(blocks * traits.block_bytes));
      for (std::byte& b : stored) b = static_cast<std::byte>(rng() & 0xFF);
      const int64_t count = blocks * traits.block_elements;
      std::vector<float> cpu(static_cast<size_t>(count));
      ASSERT_TRUE(dequantize_to_f32(type, stored.data(), count, cpu.data()).ok());
      DeviceBuffer out = poisoned<uint16_t>(static_cast<size_t>(count));
      const Status status = dequantize_to_device_bf16(type, stored.data(), count, out.as<bf16>(), stream_.get());
      ASSERT_TRUE(status.ok()) << status.error().message;
      const auto gpu = download<uint16_t>(out, static_cast<size_t>(count));
      int64_t mismatches = 0;
      for (int64_t i = 0; i < count; ++i) {
        const uint16_t expected = f32_to_bf16(cpu[i]);
        const bool both_nan = std::isnan(cpu[i]) && std::isnan(bf16_to_f32(gpu[i]));
        // One bf16 step of slack: the GPU may fuse d·q − m into one FMA before rounding.
        const int distance = std::abs(static_cast<int>(gpu[i]) - static_cast<int>(expected));
        mismatches += !(both_nan || distance <= 1);
      }
      EXPECT_EQ(mismatches, 0) << traits.name << " x" << blocks;
    }
  }
}

TEST_F(CudaOps, OutOfMemoryNamesTheRequestAndTheFreeMemory) {
  auto huge = DeviceBuffer::allocate(size_t{1} << 50, "a test buffer");
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message.find("out of GPU memory allocating a test buffer"), std::string::npos)
      << huge.error().message;
  EXPECT_NE(huge.error().message.find("MiB free"), std::string::npos);
  // The failed allocation leaves the device usable.
  EXPECT_TRUE(DeviceBuffer::allocate(1024, "a small buffer").ok());
}

}  // namespace
}  // namespace draftwise::cuda
