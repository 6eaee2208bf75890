// Paged attention (prefill, decode, verification) with online softmax.
//
// Grid: (work item, query head). Block: kAttentionQueryTile warps, one query token each.
// The block walks its key range in tiles of 32 positions: the tile's keys and values are
// gathered from the paged cache into shared memory once and shared by the block's queries
// (the "tiled" part); each warp scores the 32 keys (one per lane), updates its running max
// and sum (Milakov & Gimelshein 2018, online softmax) and accumulates the weighted values,
// each lane owning head_dim / 32 output dimensions. Scores and sums are fp32.
//
// With splits > 1 (flash-decoding) a work item covers one slice of the keys and leaves its
// unnormalised output and (max, sum) in a workspace; attention_combine rescales and adds
// the slices.
#include "kernels/cuda/attention.h"

#include <algorithm>

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

}  // namespace

std::vector<AttentionWorkItem> plan_attention(const std::vector<int32_t>& new_tokens,
                                              const std::vector<int32_t>& start_positions,
                                              int splits) {
  std::vector<AttentionWorkItem> items;
  int32_t first_query = 0;
  for (size_t s = 0; s < new_tokens.size(); ++s) {
    for (int32_t t = 0; t < new_tokens[s]; t += kAttentionQueryTile) {
      const int32_t count = std::min(kAttentionQueryTile, new_tokens[s] - t);
      for (int split = 0; split < splits; ++split) {
        items.push_back({static_cast<int32_t>(s), first_query + t, count, start_positions[s] + t, split});
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
  write_kv_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(qkv, row_stride, k_offset, v_offset,
                                                                     slots, tokens, kv_dim, k_cache, v_cache);
  return cudaGetLastError();
}

cudaError_t attention_paged(const bf16* q, int64_t q_row_stride, const bf16* k_cache,
                            const bf16* v_cache, const int32_t* block_tables,
                            const AttentionWorkItem* items, int64_t item_count, int splits,
                            int64_t query_rows, const AttentionGeometry& geometry,
                            float* partial_out, float* partial_stats, bf16* out,
                            cudaStream_t stream) {
  if (item_count == 0) return cudaSuccess;
  if (geometry.head_dim > kMaxHeadDim || geometry.head_dim <= 0) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(item_count), static_cast<unsigned>(geometry.num_heads));
  attention_kernel<<<grid, kAttentionQueryTile * 32, 0, stream>>>(
      q, q_row_stride, k_cache, v_cache, block_tables, items, splits, query_rows, geometry,
      partial_out, partial_stats, out);
  if (const cudaError_t launched = cudaGetLastError(); launched != cudaSuccess || splits == 1) {
    return launched;
  }
  combine_kernel<<<static_cast<unsigned>(query_rows * geometry.num_heads), 64, 0, stream>>>(
      partial_out, partial_stats, splits, query_rows, geometry.num_heads, geometry.head_dim, out);
  return cudaGetLastError();
}

}  // namespace draftwise::cuda
