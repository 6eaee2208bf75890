// Attention over a paged key/value cache on the GPU, for prefill, decode and verification
// alike: every new query token of every sequence attends causally to its sequence's cache.
//
// Paged cache layout (per layer): keys and values are pools of blocks,
//   [num_blocks, block_size, num_kv_heads, head_dim] bf16,
// and sequence s's position p lives in block block_tables[s][p / block_size], slot
// p % block_size. Planning (which sequence and which query tokens each thread block takes,
// how the context is split) happens on the host, so a run is a fixed set of launches that a
// CUDA graph can capture.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

struct AttentionGeometry {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;     // even, at most 256
  int64_t block_size = 0;   // cache positions per block
  int64_t max_blocks_per_sequence = 0;  // row length of the block table
  float scale = 0.0f;
  int64_t window = 0;       // sliding window; 0 = whole prefix
};

// One unit of work: a tile of up to attention_query_tile(geometry) consecutive query tokens
// of one sequence, over one slice of its keys. kAttentionQueryTile bounds the tile of every
// kernel for steps that count as small (decode, verification).
inline constexpr int kAttentionQueryTile = 8;
struct AttentionWorkItem {
  int32_t sequence;       // row of the block table
  int32_t first_query;    // row of the query/output arrays
  int32_t query_count;    // ≤ kAttentionQueryTile
  int32_t first_position; // position of the first query token
  int32_t split;          // which slice of the keys [0, splits)
  int32_t cached;         // the sequence's positions cached before this call (earlier calls wrote them)
};

// Two kernels share the work items. Head dimensions that are multiples of 8 up to 128 run on
// the tensor cores (mma.sync, bf16 in, fp32 accumulation): a thread block takes the query
// heads of one key/value head for a tile of query tokens, 64 rows of (token, head) in all,
// and streams the keys and values in tiles of 64 positions through a double-buffered
// shared-memory pipeline (cp.async). Other head dimensions (up to 256) run on a CUDA-core
// kernel with tiles of kAttentionQueryTile tokens.
bool attention_uses_tensor_cores(const AttentionGeometry& geometry);
// Whether the tensor-core kernel merges the slices of a split context inside a thread-block
// cluster where the device allows it (on by default). Process-wide; for comparing the merges.
bool attention_cluster_merge_enabled();
void set_attention_cluster_merge(bool enabled);
// Query tokens per work item for `geometry`.
int attention_query_tile(const AttentionGeometry& geometry);

// The work items for sequences with `new_tokens[s]` new tokens at positions starting at
// `start_positions[s]`, query rows laid out sequence after sequence, `query_tile` tokens per
// item at most. `splits` > 1 divides every query's keys into that many slices
// (flash-decoding), merged in attention_paged by a combine kernel.
std::vector<AttentionWorkItem> plan_attention(const std::vector<int32_t>& new_tokens,
                                              const std::vector<int32_t>& start_positions,
                                              int splits, int query_tile);

// Writes new keys and values into their cache slots.
//   qkv:       [tokens, row_stride] bf16; k at column k_offset, v at v_offset, [kv_heads, head_dim] each
//   slots:     [tokens] flat slot index: block · block_size + offset
//   k_cache, v_cache: the pools
cudaError_t write_kv_cache(const bf16* qkv, int64_t row_stride, int64_t k_offset, int64_t v_offset,
                           const int32_t* slots, int64_t tokens, int64_t kv_dim, bf16* k_cache,
                           bf16* v_cache, cudaStream_t stream);

// Runs the work items. With splits == 1 it writes `out` directly; otherwise the slices are
// merged: on the tensor-core kernel inside a thread-block cluster per (query tile, kv head)
// where the device allows one of `splits` blocks (at most 16; attention_cluster_merge_enabled),
// else through the workspace, by the last slice to finish when `split_counters` is given or
// by a combine kernel.
//   q:            [query rows, q_row_stride] bf16, heads·head_dim at the row start
//   block_tables: [sequences, max_blocks_per_sequence]
//   items:        [item_count] (device copy of plan_attention's result)
//   partial_out:  [splits, query rows, heads, head_dim] fp32, partial_stats: [splits, query rows, heads, 2] fp32
//   split_counters: [item_count / splits · num_kv_heads] int32, zero before the first call;
//                 every call leaves them zero. Or nullptr.
//   out:          [query rows, heads, head_dim] bf16
cudaError_t attention_paged(const bf16* q, int64_t q_row_stride, const bf16* k_cache,
                            const bf16* v_cache, const int32_t* block_tables,
                            const AttentionWorkItem* items, int64_t item_count, int splits,
                            int64_t query_rows, const AttentionGeometry& geometry,
                            float* partial_out, float* partial_stats, int32_t* split_counters,
                            bf16* out, cudaStream_t stream);

}  // namespace draftwise::cuda
