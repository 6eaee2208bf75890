// Paged attention on the GPU against cpu::attention on the same keys and values laid out
// contiguously: prefill, decode and verification-sized query counts in one batch, block
// tables in shuffled order, GQA, a sliding window, and the context split in slices.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/half.h"
#include "tests/support/numeric.h"

namespace draftwise::cuda {
namespace {

using ::draftwise::bf16_to_f32;
using ::draftwise::f32_to_bf16;

std::vector<float> random_bf16_values(size_t count, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) value = bf16_to_f32(f32_to_bf16(normal(rng)));
  return values;
}

template <typename T>
DeviceBuffer to_device(const std::vector<T>& host) {
  auto buffer = upload(host, "test input", nullptr);
  EXPECT_TRUE(buffer.ok()) << buffer.error().message;
  return std::move(buffer).value();
}

std::vector<uint16_t> to_bits(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
  return bits;
}

struct Case {
  int64_t num_heads, num_kv_heads, head_dim, block_size, window;
  std::vector<int32_t> start_positions;  // cached tokens before this call
  std::vector<int32_t> new_tokens;
};

void run_case(const Case& c, int splits) {
  std::mt19937_64 rng(42);
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const size_t sequences = c.new_tokens.size();
  int64_t max_blocks = 0;
  for (size_t s = 0; s < sequences; ++s) {
    max_blocks = std::max<int64_t>(max_blocks, (c.start_positions[s] + c.new_tokens[s] + c.block_size - 1) / c.block_size);
  }
  const int64_t num_blocks = max_blocks * static_cast<int64_t>(sequences) + 3;
  // Hand out blocks in a shuffled order so that no sequence's blocks are contiguous.
  std::vector<int32_t> free_blocks(static_cast<size_t>(num_blocks));
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  std::vector<int32_t> tables(sequences * static_cast<size_t>(max_blocks), -1);
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = free_blocks[i];

  std::vector<float> k_pool(static_cast<size_t>(num_blocks * c.block_size * kv_dim), 0.0f);
  std::vector<float> v_pool(k_pool.size(), 0.0f);
  std::vector<std::vector<float>> k_seq(sequences), v_seq(sequences);  // contiguous, all positions
  const int64_t query_rows = std::accumulate(c.new_tokens.begin(), c.new_tokens.end(), int64_t{0});
  const int64_t qkv_stride = q_dim + 2 * kv_dim;
  std::vector<float> qkv(static_cast<size_t>(query_rows * qkv_stride));
  std::vector<int32_t> slots;
  int64_t row = 0;
  for (size_t s = 0; s < sequences; ++s) {
    const int64_t total = c.start_positions[s] + c.new_tokens[s];
    k_seq[s] = random_bf16_values(static_cast<size_t>(total * kv_dim), rng);
    v_seq[s] = random_bf16_values(static_cast<size_t>(total * kv_dim), rng);
    for (int64_t p = 0; p < total; ++p) {
      const int64_t slot = static_cast<int64_t>(tables[s * max_blocks + p / c.block_size]) * c.block_size + p % c.block_size;
      if (p < c.start_positions[s]) {  // already cached
        std::copy_n(&k_seq[s][p * kv_dim], kv_dim, &k_pool[slot * kv_dim]);
        std::copy_n(&v_seq[s][p * kv_dim], kv_dim, &v_pool[slot * kv_dim]);
      } else {  // arrives through write_kv_cache
        const auto q = random_bf16_values(static_cast<size_t>(q_dim), rng);
        std::copy(q.begin(), q.end(), &qkv[row * qkv_stride]);
        std::copy_n(&k_seq[s][p * kv_dim], kv_dim, &qkv[row * qkv_stride + q_dim]);
        std::copy_n(&v_seq[s][p * kv_dim], kv_dim, &qkv[row * qkv_stride + q_dim + kv_dim]);
        slots.push_back(static_cast<int32_t>(slot));
        ++row;
      }
    }
  }

  // CPU reference, sequence by sequence.
  cpu::ThreadPool pool(2);
  const cpu::AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim,
                                  1.0f / std::sqrt(static_cast<float>(c.head_dim)), c.window};
  std::vector<float> expected(static_cast<size_t>(query_rows * q_dim));
  row = 0;
  for (size_t s = 0; s < sequences; ++s) {
    std::vector<float> q(static_cast<size_t>(c.new_tokens[s] * q_dim));
    for (int64_t t = 0; t < c.new_tokens[s]; ++t) std::copy_n(&qkv[(row + t) * qkv_stride], q_dim, &q[t * q_dim]);
    cpu::attention(q.data(), k_seq[s].data(), v_seq[s].data(), &expected[row * q_dim], c.new_tokens[s],
                   c.start_positions[s], shape, pool);
    row += c.new_tokens[s];
  }

  DeviceBuffer d_qkv = to_device(to_bits(qkv));
  DeviceBuffer d_k = to_device(to_bits(k_pool));
  DeviceBuffer d_v = to_device(to_bits(v_pool));
  const DeviceBuffer d_slots = to_device(slots);
  const DeviceBuffer d_tables = to_device(tables);
  ASSERT_EQ(write_kv_cache(d_qkv.as<bf16>(), qkv_stride, q_dim, q_dim + kv_dim, d_slots.as<int32_t>(), query_rows,
                           kv_dim, d_k.as<bf16>(), d_v.as<bf16>(), nullptr),
            cudaSuccess);
  const AttentionGeometry geometry{c.num_heads, c.num_kv_heads, c.head_dim, c.block_size, max_blocks, shape.scale, c.window};
  const auto items = plan_attention(c.new_tokens, c.start_positions, splits, attention_query_tile(geometry));
  const DeviceBuffer d_items = to_device(items);
  auto partial = DeviceBuffer::allocate(static_cast<size_t>(splits * query_rows * q_dim) * sizeof(float), "partials");
  auto stats = DeviceBuffer::allocate(static_cast<size_t>(splits * query_rows * c.num_heads * 2) * sizeof(float), "stats");
  auto out = DeviceBuffer::allocate(static_cast<size_t>(query_rows * q_dim) * sizeof(uint16_t), "out");
  const size_t counter_count = items.size() / static_cast<size_t>(splits) * static_cast<size_t>(c.num_kv_heads);
  auto counters = DeviceBuffer::allocate(counter_count * sizeof(int32_t), "split counters");
  ASSERT_TRUE(partial.ok() && stats.ok() && out.ok() && counters.ok());
  ASSERT_EQ(cudaMemset(counters->data(), 0, counters->bytes()), cudaSuccess);
  // The slices merged by a combine kernel, then twice by the last slice of each tile (the
  // second run finds the counters the first one left), then twice inside thread-block
  // clusters where the kernel and the device allow them.
  for (const int run : {0, 1, 2, 3, 4}) {
    set_attention_cluster_merge(run >= 3);
    ASSERT_EQ(cudaMemset(out->data(), 0xFF, out->bytes()), cudaSuccess);
    ASSERT_EQ(attention_paged(d_qkv.as<bf16>(), qkv_stride, d_k.as<bf16>(), d_v.as<bf16>(), d_tables.as<int32_t>(),
                              d_items.as<AttentionWorkItem>(), static_cast<int64_t>(items.size()), splits, query_rows,
                              geometry, partial->as<float>(), stats->as<float>(),
                              run == 0 ? nullptr : counters->as<int32_t>(), out->as<bf16>(), nullptr),
              cudaSuccess);
    std::vector<uint16_t> bits(expected.size());
    ASSERT_TRUE(copy_to_host(bits.data(), out->data(), out->bytes(), nullptr).ok());
    std::vector<float> actual(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) actual[i] = bf16_to_f32(bits[i]);
    EXPECT_LE(testing::relative_l2(actual, expected), 1e-2)
        << "heads " << c.num_heads << "/" << c.num_kv_heads << " head_dim " << c.head_dim << " splits " << splits
        << (attention_uses_tensor_cores(geometry) ? " (tensor cores)" : " (CUDA cores)") << " run " << run;
    std::vector<int32_t> left(counter_count);
    ASSERT_TRUE(copy_to_host(left.data(), counters->data(), counters->bytes(), nullptr).ok());
    EXPECT_EQ(std::count(left.begin(), left.end(), 0), static_cast<int64_t>(counter_count));
  }
  set_attention_cluster_merge(true);
}

bool have_gpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) cudaGetLastError();
  return count > 0;
}

TEST(CudaAttention, PagedMatchesCpuForPrefillDecodeAndVerifyInOneBatch) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible: the CUDA attention tests need a GPU";
  // decode (1 new token after 100), prefill (37 from 0), verification (5 after 20)
  const Case base{4, 2, 64, 16, 0, {100, 0, 20}, {1, 37, 5}};
  for (const int splits : {1, 3}) run_case(base, splits);
  Case odd = base;
  odd.num_heads = 9;
  odd.num_kv_heads = 3;
  odd.head_dim = 80;  // not a multiple of 32
  odd.block_size = 7;
  for (const int splits : {1, 4}) run_case(odd, splits);
  Case windowed = base;
  windowed.window = 13;
  for (const int splits : {1, 2}) run_case(windowed, splits);
  const Case long_context{8, 1, 128, 32, 0, {3000}, {3}};
  for (const int splits : {1, 16}) run_case(long_context, splits);
  const Case widest_heads{4, 2, 256, 16, 0, {300, 0}, {2, 19}};  // the shared-memory limit
  for (const int splits : {1, 3}) run_case(widest_heads, splits);
}

// The shapes of the models the engine is measured on, through the tensor-core kernel: query
// tiles of 64 (token, head) rows, several key tiles with a partial last one, causal masks
// that cut through a tile, padding of head dimensions below the tile width.
TEST(CudaAttention, TensorCoreKernelMatchesCpuOnModelShapes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible: the CUDA attention tests need a GPU";
  // SmolLM2-135M: 9 heads over 3, head_dim 64 (21 tokens per tile).
  const Case smol{9, 3, 64, 16, 0, {0, 513, 40, 7}, {150, 1, 8, 70}};
  for (const int splits : {1, 5}) run_case(smol, splits);
  // Llama-3.1-8B: 32 heads over 8, head_dim 128 (16 tokens per tile).
  const Case llama8b{32, 8, 128, 16, 0, {0, 1000, 70}, {200, 1, 5}};
  for (const int splits : {1, 7}) run_case(llama8b, splits);
  // Llama-3.2-1B: 32 over 8, head_dim 64; one long decode split many ways.
  const Case llama1b{32, 8, 64, 16, 0, {4095, 0}, {1, 64}};
  for (const int splits : {1, 32}) run_case(llama1b, splits);
  // Multi-head (64 tokens per tile), head_dim 32 padded to the 64-wide tile, a window.
  const Case mha{4, 4, 32, 16, 37, {0, 300}, {130, 3}};
  for (const int splits : {1, 2}) run_case(mha, splits);
}

}  // namespace
}  // namespace draftwise::cuda
