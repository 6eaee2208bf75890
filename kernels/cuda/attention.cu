// Paged attention (prefill, decode, verification) with online softmax, on two kernels.
//
// attention_mma_kernel (head_dim a multiple of 8, at most 128): grid (work item, kv head),
// 4 warps. The block's rows are the (query token, query head) pairs of one kv head's group,
// at most 64; warp w owns rows 16w..16w+15, and its Q fragments stay in registers. Keys and
// values come in tiles of 64 positions, gathered from the paged cache by 16-byte cp.async
// into one of two shared-memory stages while the other is computed on. S = Q·Kᵀ and O += P·V
// are mma.sync m16n8k16 (bf16 in, fp32 accumulate), fed by ldmatrix (.trans for V); the
// online softmax runs on the S fragments in the exp2 domain, each row's max and sum shared
// by the 4 lanes that hold it. Positions past a query's own (causal), outside its window or
// outside the slice are masked to -inf.
//
// attention_kernel (any head_dim up to 256): grid (work item, query head). Block: kAttentionQueryTile warps, one query token each.
// The block walks its key range in tiles of 32 positions: the tile's keys and values are
// gathered from the paged cache into shared memory once and shared by the block's queries
// (the "tiled" part); each warp scores the 32 keys (one per lane), updates its running max
// and sum (Milakov & Gimelshein 2018, online softmax) and accumulates the weighted values,
// each lane owning head_dim / 32 output dimensions. Scores and sums are fp32.
//
// With splits > 1 (flash-decoding) a work item covers one slice of the keys. On the
// tensor-core kernel the slices of one (query tile, kv head) run, where the device allows it
// (up to 16 slices), as one thread-block cluster: each slice leaves its unnormalised output
// and (max, sum) in its own shared memory, and after a cluster barrier every block merges a
// share of the outputs by reading all slices' shared memory (distributed shared memory): no
// global workspace, no fence, no atomics. Otherwise each slice leaves its partial result in a
// global workspace, merged by the last slice to finish (a counter per tile) or by
// attention_combine.
#include "kernels/cuda/attention.h"

#include <algorithm>
#include <atomic>

#include <cooperative_groups.h>

#include "kernels/cuda/launch.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kKeyTile = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxPerLane = kMaxHeadDim / 32;
constexpr int kKeyStride = kMaxHeadDim + 2;  // padding keeps lanes on different banks

struct KeyRange {
  int64_t begin;
  int64_t end;  // exclusive
};

// Keys the work item's slice covers, for queries at [first_position, last_position].
__device__ KeyRange slice_range(int64_t last_position, int split, int splits) {
  const int64_t length = last_position + 1;
  const int64_t chunk = (length + splits - 1) / splits;
  const int64_t begin = static_cast<int64_t>(split) * chunk;
  return {begin, begin + chunk < length ? begin + chunk : length};
}

__global__ void write_kv_kernel(const bf16* qkv, int64_t row_stride, int64_t k_offset,
                                int64_t v_offset, const int32_t* slots, int64_t tokens,
                                int64_t kv_dim, bf16* k_cache, bf16* v_cache) {
  wait_for_prior_grid();
  release_next_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < tokens * kv_dim;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / kv_dim;
    const int64_t c = i % kv_dim;
    const int64_t slot = slots[t];
    k_cache[slot * kv_dim + c] = qkv[t * row_stride + k_offset + c];
    v_cache[slot * kv_dim + c] = qkv[t * row_stride + v_offset + c];
  }
}

__global__ void attention_kernel(const bf16* q, int64_t q_row_stride, const bf16* k_cache,
                                 const bf16* v_cache, const int32_t* block_tables,
                                 const AttentionWorkItem* items, int splits, int64_t query_rows,
                                 AttentionGeometry g, float* partial_out, float* partial_stats,
                                 bf16* out) {
  __shared__ float query_tile[kAttentionQueryTile][kMaxHeadDim];
  __shared__ bf16 key_tile[kKeyTile][kKeyStride];
  __shared__ bf16 value_tile[kKeyTile][kMaxHeadDim];
  wait_for_prior_grid();
  release_next_grid();

  const AttentionWorkItem item = items[blockIdx.x];
  const int64_t head = blockIdx.y;
  const int64_t kv_head = head / (g.num_heads / g.num_kv_heads);
  const int64_t head_dim = g.head_dim;
  const int64_t kv_dim = g.num_kv_heads * head_dim;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const bool active = warp < item.query_count;
  const int64_t row = item.first_query + warp;
  const int64_t position = item.first_position + warp;
  const int64_t last_position = item.first_position + item.query_count - 1;
  const int64_t first_allowed = g.window > 0 && position - g.window + 1 > 0 ? position - g.window + 1 : 0;

  for (int64_t d = lane; d < head_dim; d += 32) {
    query_tile[warp][d] = active ? __bfloat162float(q[row * q_row_stride + head * head_dim + d]) : 0.0f;
  }

  const KeyRange range = slice_range(last_position, item.split, splits);
  const int64_t block_first_allowed =
      g.window > 0 && item.first_position - g.window + 1 > 0 ? item.first_position - g.window + 1 : 0;
  const int64_t begin = range.begin > block_first_allowed ? range.begin : block_first_allowed;
  const int32_t* table = block_tables + static_cast<int64_t>(item.sequence) * g.max_blocks_per_sequence;

  float running_max = -INFINITY;
  float running_sum = 0.0f;
  float acc[kMaxPerLane];
  for (int i = 0; i < kMaxPerLane; ++i) acc[i] = 0.0f;

  for (int64_t tile_start = begin; tile_start < range.end; tile_start += kKeyTile) {
    __syncthreads();  // the previous tile is no longer read
    for (int64_t index = threadIdx.x; index < kKeyTile * head_dim; index += blockDim.x) {
      const int64_t j = index / head_dim;
      const int64_t d = index % head_dim;
      const int64_t key_position = tile_start + j;
      bf16 key = __float2bfloat16(0.0f);
      bf16 value = key;
      if (key_position < range.end) {
        const int64_t slot = static_cast<int64_t>(table[key_position / g.block_size]) * g.block_size +
                             key_position % g.block_size;
        key = k_cache[slot * kv_dim + kv_head * head_dim + d];
        value = v_cache[slot * kv_dim + kv_head * head_dim + d];
      }
      key_tile[j][d] = key;
      value_tile[j][d] = value;
    }
    __syncthreads();
    if (!active) continue;

    const int64_t key_position = tile_start + lane;
    const bool visible = key_position < range.end && key_position <= position && key_position >= first_allowed;
    float score = -INFINITY;
    if (visible) {
      float sum = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) sum += query_tile[warp][d] * __bfloat162float(key_tile[lane][d]);
      score = sum * g.scale;
    }
    float tile_max = score;
    for (int offset = 16; offset > 0; offset /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
    const float new_max = fmaxf(running_max, tile_max);
    if (new_max == -INFINITY) continue;  // nothing visible yet
    const float correction = __expf(running_max - new_max);
    const float weight = visible ? __expf(score - new_max) : 0.0f;
    float weight_sum = weight;
    for (int offset = 16; offset > 0; offset /= 2) weight_sum += __shfl_xor_sync(0xffffffffu, weight_sum, offset);
    running_sum = running_sum * correction + weight_sum;
    running_max = new_max;
    for (int i = 0; i < kMaxPerLane; ++i) acc[i] *= correction;
    for (int j = 0; j < kKeyTile; ++j) {
      const float w = __shfl_sync(0xffffffffu, weight, j);
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int64_t d = lane + 32 * i;
        if (d < head_dim) acc[i] += w * __bfloat162float(value_tile[j][d]);
      }
    }
  }
  if (!active) return;

  if (splits == 1) {
    const float inverse = running_sum > 0.0f ? 1.0f / running_sum : 0.0f;
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < head_dim) out[(row * g.num_heads + head) * head_dim + d] = __float2bfloat16(acc[i] * inverse);
    }
    return;
  }
  const int64_t partial = (static_cast<int64_t>(item.split) * query_rows + row) * g.num_heads + head;
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < head_dim) partial_out[partial * head_dim + d] = acc[i];
  }
  if (lane == 0) {
    partial_stats[partial * 2] = running_max;
    partial_stats[partial * 2 + 1] = running_sum;
  }
}

// One block of 32·k threads per (query row, head): merges the slices.
__global__ void combine_kernel(const float* partial_out, const float* partial_stats, int splits,
                               int64_t query_rows, int64_t num_heads, int64_t head_dim, bf16* out) {
  wait_for_prior_grid();
  release_next_grid();
  const int64_t row_head = blockIdx.x;
  float overall_max = -INFINITY;
  for (int s = 0; s < splits; ++s) {
    overall_max = fmaxf(overall_max, partial_stats[(s * query_rows * num_heads + row_head) * 2]);
  }
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float m = partial_stats[(s * query_rows * num_heads + row_head) * 2];
    if (m != -INFINITY) total += partial_stats[(s * query_rows * num_heads + row_head) * 2 + 1] * __expf(m - overall_max);
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = partial_stats[(s * query_rows * num_heads + row_head) * 2];
      if (m != -INFINITY) value += partial_out[(s * query_rows * num_heads + row_head) * head_dim + d] * __expf(m - overall_max);
    }
    out[row_head * head_dim + d] = __float2bfloat16(total > 0.0f ? value / total : 0.0f);
  }
}


// ---- tensor-core kernel ----

constexpr int kMmaKeys = 64;   // keys per tile
constexpr int kMmaRows = 64;   // (token, head) rows per block
constexpr int kMmaThreads = 128;
constexpr int kMaxSplits = 32;  // the in-kernel merge stages [rows][splits] weights in shared memory
constexpr int kMaxClusterSplits = 16;  // the largest thread-block cluster of Hopper (non-portable above 8)

std::atomic<bool> cluster_merge{true};

template <int D>
__host__ __device__ constexpr size_t mma_shared_bytes() {
  return 2 * 2 * static_cast<size_t>(kMmaKeys) * (D + 8) * sizeof(bf16);  // 2 stages × (K, V)
}

__device__ __forceinline__ void cp_async_16(void* shared, const void* global, bool valid) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  const int source_bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(global), "r"(source_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* shared) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* shared) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// c += a · b for a 16×16 A (row-major fragments) and a 16×8 B (column-major fragments).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float low, float high) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

// The slices of one (query tile, kv head), one block each in a cluster, merged through
// distributed shared memory. Each block stages its unnormalised rows and (max, sum), max in
// the exp2 domain, in its own (now idle) tile buffers; after the barrier, block k of the
// cluster computes outputs k·128 + thread, k·128 + thread + 128·size, … from every slice, in
// slice order. The second barrier keeps each block's shared memory alive until all have read.
template <int D>
__device__ __forceinline__ void merge_in_cluster(const AttentionWorkItem& item, int kv_head, int group, int head_dim,
                                                 int64_t num_heads, int warp, int quad_row, int quad_col,
                                                 const bool (&row_valid)[2], const float (&o)[D / 8][4],
                                                 const float (&running_max)[2], const float (&running_sum)[2],
                                                 float* staging, bf16* out) {
  namespace cg = cooperative_groups;
  float* slice_out = staging;                       // [kMmaRows][D]
  float* slice_stats = staging + kMmaRows * D;      // [kMmaRows][2]: max, sum
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (!row_valid[i]) continue;
    const int r = 16 * warp + quad_row + 8 * i;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int col = 8 * n + 2 * quad_col;
      if (col < head_dim) *reinterpret_cast<float2*>(slice_out + r * D + col) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
    }
    if (quad_col == 0) {
      slice_stats[2 * r] = running_max[i];
      slice_stats[2 * r + 1] = running_sum[i];
    }
  }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int slices = static_cast<int>(cluster.num_blocks());
  const int rows = item.query_count * group;
  for (int index = static_cast<int>(cluster.block_rank()) * kMmaThreads + static_cast<int>(threadIdx.x);
       index < rows * head_dim; index += slices * kMmaThreads) {
    const int r = index / head_dim;
    const int d = index % head_dim;
    float m[kMaxClusterSplits];
    float l[kMaxClusterSplits];
    float v[kMaxClusterSplits];
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) {
      m[s] = -INFINITY;
      l[s] = v[s] = 0.0f;
      if (s < slices) {
        const float* stats = cluster.map_shared_rank(slice_stats, s);
        m[s] = stats[2 * r];
        l[s] = stats[2 * r + 1];
        v[s] = cluster.map_shared_rank(slice_out, s)[r * D + d];
      }
    }
    float overall = -INFINITY;
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) overall = fmaxf(overall, m[s]);
    float total = 0.0f;
    float value = 0.0f;
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) {
      const float weight = m[s] == -INFINITY ? 0.0f : exp2f(m[s] - overall);
      total += l[s] * weight;
      value += v[s] * weight;
    }
    const int64_t query = item.first_query + r / group;
    const int64_t head = static_cast<int64_t>(kv_head) * group + r % group;
    out[(query * num_heads + head) * head_dim + d] = __float2bfloat16(total > 0.0f ? value / total : 0.0f);
  }
  cluster.sync();
}

template <int D>
__global__ void __launch_bounds__(kMmaThreads) attention_mma_kernel(
    const bf16* q, int64_t q_row_stride, const bf16* k_cache, const bf16* v_cache, const int32_t* block_tables,
    const AttentionWorkItem* items, int splits, int64_t query_rows, AttentionGeometry g, float* partial_out,
    float* partial_stats, int32_t* split_counters, int in_cluster, bf16* out) {
  constexpr int kStride = D + 8;  // padded rows: ldmatrix reads 8 rows on distinct banks
  extern __shared__ __align__(16) unsigned char shared_raw[];
  bf16* shared = reinterpret_cast<bf16*>(shared_raw);
  static_assert(mma_shared_bytes<D>() >= 2 * kMmaRows * kMaxSplits * sizeof(float));
  static_assert(mma_shared_bytes<D>() >= (kMmaRows * D + 2 * kMmaRows) * sizeof(float));

  // The work item and the block table come from the step's upload, which precedes every
  // kernel of the step: they may be read before waiting for the previous kernel.
  const AttentionWorkItem item = items[blockIdx.x];
  const int kv_head = blockIdx.y;
  const int group = static_cast<int>(g.num_heads / g.num_kv_heads);
  const int head_dim = static_cast<int>(g.head_dim);
  const int64_t kv_dim = g.num_kv_heads * g.head_dim;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int quad_row = lane / 4;  // the fragment row (and +8) this lane holds
  const int quad_col = lane % 4;

  // This lane's two rows: (token, head) pairs of the group, or padding.
  int64_t row_query[2];
  int row_head[2];
  bool row_valid[2];
  int64_t row_position[2];
  int64_t row_lowest[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = 16 * warp + quad_row + 8 * i;
    const int token = r / group;
    row_valid[i] = token < item.query_count;
    row_query[i] = item.first_query + token;
    row_head[i] = kv_head * group + r % group;
    row_position[i] = row_valid[i] ? item.first_position + token : -1;  // -1 masks every key
    row_lowest[i] = g.window > 0 && row_position[i] - g.window + 1 > 0 ? row_position[i] - g.window + 1 : 0;
  }
  const bool warp_active = 16 * warp < item.query_count * group;

  // This item's slice of the keys, in whole tiles.
  const int64_t length = item.first_position + item.query_count;
  int64_t chunk = (length + splits - 1) / splits;
  chunk = (chunk + kMmaKeys - 1) / kMmaKeys * kMmaKeys;
  int64_t begin = static_cast<int64_t>(item.split) * chunk;
  const int64_t end = begin + chunk < length ? begin + chunk : length;
  if (g.window > 0 && item.first_position - g.window + 1 > begin) begin = item.first_position - g.window + 1;
  const int tiles = begin < end ? static_cast<int>((end - begin + kMmaKeys - 1) / kMmaKeys) : 0;

  // Columns past head_dim are never loaded: zero them once in both stages.
  if (head_dim < D) {
    const int pad = D - head_dim;
    for (int index = threadIdx.x; index < 4 * kMmaKeys * pad; index += kMmaThreads) {
      shared[(index / pad) * kStride + head_dim + index % pad] = __float2bfloat16(0.0f);
    }
  }

  const int32_t* table = block_tables + static_cast<int64_t>(item.sequence) * g.max_blocks_per_sequence;
  const int chunks_per_key = head_dim / 8;
  const auto load_tile = [&](int tile, int stage) {
    bf16* keys = shared + stage * 2 * kMmaKeys * kStride;
    bf16* values = keys + kMmaKeys * kStride;
    const int64_t start = begin + static_cast<int64_t>(tile) * kMmaKeys;
    for (int index = threadIdx.x; index < kMmaKeys * chunks_per_key; index += kMmaThreads) {
      const int j = index / chunks_per_key;
      const int c = index % chunks_per_key;
      const int64_t position = start + j;
      const bool valid = position < end;
      const int64_t slot =
          valid ? static_cast<int64_t>(table[position / g.block_size]) * g.block_size + position % g.block_size : 0;
      const int64_t offset = slot * kv_dim + static_cast<int64_t>(kv_head) * head_dim + 8 * c;
      cp_async_16(keys + j * kStride + 8 * c, k_cache + offset, valid);
      cp_async_16(values + j * kStride + 8 * c, v_cache + offset, valid);
    }
  };

  const float scale = g.scale * 1.4426950408889634f;  // scores in the exp2 domain
  float running_max[2] = {-INFINITY, -INFINITY};
  float running_sum[2] = {0.0f, 0.0f};  // this lane's share; summed over the quad at the end
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  // Keys cached by earlier calls do not depend on the previous kernel (the projection that
  // writes this call's keys): the first tile starts loading before the wait when it holds
  // only those.
  const bool early = tiles > 0 && begin + kMmaKeys <= item.cached;
  if (early) load_tile(0, 0);
  release_next_grid();
  wait_for_prior_grid();
  if (tiles > 0 && !early) load_tile(0, 0);
  cp_async_commit();

  // Q fragments (A operand, 16 rows × D), zero past head_dim and on padding rows.
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int col = 16 * kk + 8 * h + 2 * quad_col;
        uint32_t value = 0;
        if (row_valid[i] && col < head_dim) {
          value = *reinterpret_cast<const uint32_t*>(q + row_query[i] * q_row_stride + row_head[i] * head_dim + col);
        }
        qf[kk][i + 2 * h] = value;
      }
    }
  }


  for (int tile = 0; tile < tiles; ++tile) {
    if (tile + 1 < tiles) load_tile(tile + 1, (tile + 1) & 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (warp_active) {
      const bf16* keys = shared + (tile & 1) * 2 * kMmaKeys * kStride;
      const bf16* values = keys + kMmaKeys * kStride;
      const int matrix = lane / 8;  // which of ldmatrix's four 8×8 matrices this lane addresses
      float s[kMmaKeys / 8][4];
#pragma unroll
      for (int j = 0; j < kMmaKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        if (16 * kk >= head_dim) continue;
#pragma unroll
        for (int jp = 0; jp < kMmaKeys / 16; ++jp) {
          uint32_t b[4];
          ldmatrix_x4(b, keys + (16 * jp + (matrix >> 1) * 8 + lane % 8) * kStride + 16 * kk + (matrix & 1) * 8);
          mma_bf16(s[2 * jp], qf[kk], b[0], b[1]);
          mma_bf16(s[2 * jp + 1], qf[kk], b[2], b[3]);
        }
      }
      const int64_t start = begin + static_cast<int64_t>(tile) * kMmaKeys;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kMmaKeys / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t key = start + 8 * j + 2 * quad_col + e;
            const bool allowed = key < end && key <= row_position[i] && key >= row_lowest[i];
            const float value = allowed ? s[j][2 * i + e] * scale : -INFINITY;
            s[j][2 * i + e] = value;
            tile_max = fmaxf(tile_max, value);
          }
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float new_max = fmaxf(running_max[i], tile_max);
        const float base = new_max == -INFINITY ? 0.0f : new_max;  // nothing visible yet: all weights 0
        const float correction = exp2f(running_max[i] - base);
        running_max[i] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kMmaKeys / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(s[j][2 * i + e] - base);
            s[j][2 * i + e] = p;
            sum += p;
          }
        }
        running_sum[i] = running_sum[i] * correction + sum;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
          o[n][2 * i] *= correction;
          o[n][2 * i + 1] *= correction;
        }
      }
#pragma unroll
      for (int ks = 0; ks < kMmaKeys / 16; ++ks) {
        const uint32_t a[4] = {pack_bf16(s[2 * ks][0], s[2 * ks][1]), pack_bf16(s[2 * ks][2], s[2 * ks][3]),
                               pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                               pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3])};
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          if (16 * np >= head_dim) continue;
          uint32_t b[4];
          ldmatrix_x4_trans(b, values + (16 * ks + (matrix & 1) * 8 + lane % 8) * kStride + 16 * np + (matrix >> 1) * 8);
          mma_bf16(o[2 * np], a, b[0], b[1]);
          mma_bf16(o[2 * np + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage is refilled two tiles on
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    running_sum[i] += __shfl_xor_sync(0xffffffffu, running_sum[i], 1);
    running_sum[i] += __shfl_xor_sync(0xffffffffu, running_sum[i], 2);
  }
  if (in_cluster) {
    merge_in_cluster<D>(item, kv_head, group, head_dim, g.num_heads, warp, quad_row, quad_col, row_valid, o,
                        running_max, running_sum, reinterpret_cast<float*>(shared), out);
    return;
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (!row_valid[i]) continue;
    if (splits == 1) {
      const float inverse = running_sum[i] > 0.0f ? 1.0f / running_sum[i] : 0.0f;
      bf16* destination = out + (row_query[i] * g.num_heads + row_head[i]) * head_dim;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const int col = 8 * n + 2 * quad_col;
        if (col < head_dim) {
          *reinterpret_cast<__nv_bfloat162*>(destination + col) =
              __floats2bfloat162_rn(o[n][2 * i] * inverse, o[n][2 * i + 1] * inverse);
        }
      }
      continue;
    }
    const int64_t partial = (static_cast<int64_t>(item.split) * query_rows + row_query[i]) * g.num_heads + row_head[i];
    float* destination = partial_out + partial * head_dim;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int col = 8 * n + 2 * quad_col;
      if (col < head_dim) *reinterpret_cast<float2*>(destination + col) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
    }
    if (quad_col == 0) {
      // The combine works in natural-log units.
      partial_stats[partial * 2] = running_max[i] == -INFINITY ? -INFINITY : running_max[i] * 0.6931471805599453f;
      partial_stats[partial * 2 + 1] = running_sum[i];
    }
  }
  if (splits == 1 || split_counters == nullptr || splits > kMaxSplits) return;

  // The last of the slices of this (query tile, kv head) to finish merges them all (the
  // "last block" reduction): no separate combine launch. Its counter goes back to zero.
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t& counter = split_counters[(blockIdx.x / splits) * gridDim.y + blockIdx.y];
    last = atomicAdd(&counter, 1) == splits - 1;
    if (last) counter = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // Merge weights exp(m_s − M) / Σ l_s·exp(m_s − M) of every (row, slice), staged in the
  // (now idle) tile buffers so that the loads run in parallel, not one slice after another.
  const int rows = item.query_count * group;
  float* slice_max = reinterpret_cast<float*>(shared);  // [rows][splits]
  float* slice_sum = slice_max + kMmaRows * kMaxSplits;
  for (int index = threadIdx.x; index < rows * splits; index += kMmaThreads) {
    const int r = index / splits;
    const int split = index % splits;
    const int64_t partial = (split * query_rows + item.first_query + r / group) * g.num_heads +
                            static_cast<int64_t>(kv_head) * group + r % group;
    slice_max[index] = __ldcg(&partial_stats[partial * 2]);
    slice_sum[index] = __ldcg(&partial_stats[partial * 2 + 1]);
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rows; r += kMmaThreads) {
    float overall_max = -INFINITY;
    for (int split = 0; split < splits; ++split) overall_max = fmaxf(overall_max, slice_max[r * splits + split]);
    float total = 0.0f;
    for (int split = 0; split < splits; ++split) {
      const float m = slice_max[r * splits + split];
      const float weight = m == -INFINITY ? 0.0f : __expf(m - overall_max);
      slice_max[r * splits + split] = weight;  // now the slice's weight
      total += slice_sum[r * splits + split] * weight;
    }
    const float inverse = total > 0.0f ? 1.0f / total : 0.0f;
    for (int split = 0; split < splits; ++split) slice_max[r * splits + split] *= inverse;
  }
  __syncthreads();
  for (int index = threadIdx.x; index < rows * head_dim; index += kMmaThreads) {
    const int r = index / head_dim;
    const int d = index % head_dim;
    const int64_t query = item.first_query + r / group;
    const int64_t head = static_cast<int64_t>(kv_head) * group + r % group;
    float value = 0.0f;
#pragma unroll 8
    for (int split = 0; split < splits; ++split) {
      const float weight = slice_max[r * splits + split];
      const float o = __ldcg(&partial_out[((split * query_rows + query) * g.num_heads + head) * head_dim + d]);
      value += weight == 0.0f ? 0.0f : weight * o;
    }
    out[(query * g.num_heads + head) * head_dim + d] = __float2bfloat16(value);
  }
}

// The kernel's attributes: its shared memory, and clusters of more than 8 blocks.
template <int D>
cudaError_t set_mma_attributes() {
  constexpr size_t shared = mma_shared_bytes<D>();
  if (shared > 48 * 1024) {
    if (const cudaError_t set = cudaFuncSetAttribute(attention_mma_kernel<D>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
        set != cudaSuccess) {
      return set;
    }
  }
  return cudaFuncSetAttribute(attention_mma_kernel<D>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
}

// Whether clusters of `slices` blocks of attention_mma_kernel<D> fit on the current device
// (asked once per process and cluster size: the engine's GPUs are of one kind).
template <int D>
bool clusters_fit(int slices) {
  static std::atomic<int> known[kMaxClusterSplits + 1] = {};  // 0 not asked, 1 yes, -1 no
  if (slices < 2 || slices > kMaxClusterSplits) return false;
  int answer = known[slices].load(std::memory_order_relaxed);
  if (answer == 0) {
    if (set_mma_attributes<D>() != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = static_cast<unsigned>(slices);
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(slices));
    config.blockDim = dim3(kMmaThreads);
    config.dynamicSmemBytes = mma_shared_bytes<D>();
    config.attrs = &attribute;
    config.numAttrs = 1;
    int clusters = 0;
    const bool fits = cudaOccupancyMaxActiveClusters(&clusters, attention_mma_kernel<D>, &config) == cudaSuccess &&
                      clusters > 0;
    if (!fits) cudaGetLastError();  // an unsupported size is an answer, not an error
    answer = fits ? 1 : -1;
    known[slices].store(answer, std::memory_order_relaxed);
  }
  return answer > 0;
}

template <int D>
cudaError_t launch_mma(const bf16* q, int64_t q_row_stride, const bf16* k_cache, const bf16* v_cache,
                       const int32_t* block_tables, const AttentionWorkItem* items, int64_t item_count, int splits,
                       int64_t query_rows, const AttentionGeometry& geometry, float* partial_out,
                       float* partial_stats, int32_t* split_counters, bool& merged, bf16* out,
                       cudaStream_t stream) {
  constexpr size_t shared = mma_shared_bytes<D>();
  if (const cudaError_t set = set_mma_attributes<D>(); set != cudaSuccess) return set;
  const bool in_cluster = splits > 1 && cluster_merge.load(std::memory_order_relaxed) && clusters_fit<D>(splits);
  merged = in_cluster || (split_counters != nullptr && splits > 1 && splits <= kMaxSplits);
  const dim3 grid(static_cast<unsigned>(item_count), static_cast<unsigned>(geometry.num_kv_heads));
  return launch_in_clusters(attention_mma_kernel<D>, grid, dim3(kMmaThreads), shared, stream,
                            in_cluster ? static_cast<unsigned>(splits) : 1u, q, q_row_stride, k_cache, v_cache,
                            block_tables, items, splits, query_rows, geometry, partial_out, partial_stats,
                            in_cluster ? nullptr : split_counters, in_cluster ? 1 : 0, out);
}

}  // namespace

bool attention_cluster_merge_enabled() { return cluster_merge.load(std::memory_order_relaxed); }
void set_attention_cluster_merge(bool enabled) { cluster_merge.store(enabled, std::memory_order_relaxed); }

bool attention_uses_tensor_cores(const AttentionGeometry& geometry) {
  return geometry.head_dim > 0 && geometry.head_dim % 8 == 0 && geometry.head_dim <= 128 &&
         geometry.num_kv_heads > 0 && geometry.num_heads % geometry.num_kv_heads == 0 &&
         geometry.num_heads / geometry.num_kv_heads <= kMmaRows;
}

int attention_query_tile(const AttentionGeometry& geometry) {
  if (!attention_uses_tensor_cores(geometry)) return kAttentionQueryTile;
  return static_cast<int>(kMmaRows / (geometry.num_heads / geometry.num_kv_heads));
}

std::vector<AttentionWorkItem> plan_attention(const std::vector<int32_t>& new_tokens,
                                              const std::vector<int32_t>& start_positions,
                                              int splits, int query_tile) {
  std::vector<AttentionWorkItem> items;
  int32_t first_query = 0;
  for (size_t s = 0; s < new_tokens.size(); ++s) {
    for (int32_t t = 0; t < new_tokens[s]; t += query_tile) {
      const int32_t count = std::min(query_tile, new_tokens[s] - t);
      for (int split = 0; split < splits; ++split) {
        items.push_back({static_cast<int32_t>(s), first_query + t, count, start_positions[s] + t, split,
                         start_positions[s]});
      }
    }
    first_query += new_tokens[s];
  }
  return items;
}

cudaError_t write_kv_cache(const bf16* qkv, int64_t row_stride, int64_t k_offset, int64_t v_offset,
                           const int32_t* slots, int64_t tokens, int64_t kv_dim, bf16* k_cache,
                           bf16* v_cache, cudaStream_t stream) {
  if (tokens * kv_dim == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((tokens * kv_dim + 255) / 256, 65535);
  return launch(write_kv_kernel, dim3(static_cast<unsigned>(blocks)), dim3(256), 0, stream, qkv, row_stride,
                k_offset, v_offset, slots, tokens, kv_dim, k_cache, v_cache);
}

cudaError_t attention_paged(const bf16* q, int64_t q_row_stride, const bf16* k_cache,
                            const bf16* v_cache, const int32_t* block_tables,
                            const AttentionWorkItem* items, int64_t item_count, int splits,
                            int64_t query_rows, const AttentionGeometry& geometry,
                            float* partial_out, float* partial_stats, int32_t* split_counters,
                            bf16* out, cudaStream_t stream) {
  if (item_count == 0) return cudaSuccess;
  if (geometry.head_dim > kMaxHeadDim || geometry.head_dim <= 0) return cudaErrorInvalidValue;
  cudaError_t launched = cudaSuccess;
  if (attention_uses_tensor_cores(geometry)) {
    bool merged = false;
    launched = geometry.head_dim <= 64
                   ? launch_mma<64>(q, q_row_stride, k_cache, v_cache, block_tables, items, item_count, splits,
                                    query_rows, geometry, partial_out, partial_stats, split_counters, merged, out,
                                    stream)
                   : launch_mma<128>(q, q_row_stride, k_cache, v_cache, block_tables, items, item_count, splits,
                                     query_rows, geometry, partial_out, partial_stats, split_counters, merged, out,
                                     stream);
    if (launched != cudaSuccess || merged) return launched;
  } else {
    const dim3 grid(static_cast<unsigned>(item_count), static_cast<unsigned>(geometry.num_heads));
    launched = launch(attention_kernel, grid, dim3(kAttentionQueryTile * 32), 0, stream, q, q_row_stride, k_cache,
                      v_cache, block_tables, items, splits, query_rows, geometry, partial_out, partial_stats, out);
  }
  if (launched != cudaSuccess || splits == 1) return launched;
  return launch(combine_kernel, dim3(static_cast<unsigned>(query_rows * geometry.num_heads)), dim3(64), 0, stream,
                partial_out, partial_stats, splits, query_rows, geometry.num_heads, geometry.head_dim, out);
}

}  // namespace draftwise::cuda
