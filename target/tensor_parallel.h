// Tensor parallelism (Megatron-LM, Shoeybi et al. 2019, §3): how a decoder is split over N
// ranks, one GPU each. Column-parallel Q/K/V and gate/up projections (each rank owns whole
// heads, whole KV heads and a slice of the MLP's intermediate rows), row-parallel output and
// down projections (the matching columns, partial sums added by one all-reduce after
// attention and one after the MLP), and the embedding and LM head split by vocabulary rows
// (the embedding's partial rows added by an all-reduce, the logits gathered). Norms are
// replicated. Biases of column-parallel layers are split with their rows; a row-parallel
// bias is added by rank 0 alone.
//
// This file is the plan: which slice of every checkpoint tensor a rank holds, and the
// shape of its shard. It runs on the CPU and is tested there; the CUDA shard and the
// collectives are in target/cuda_tensor_parallel.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/status.h"
#include "target/model_config.h"
#include "target/model_weights.h"

namespace draftwise {

struct TensorParallelRank {
  int rank = 0;
  int size = 1;
};

// The vocabulary rows [first, first + count) of a rank: ⌈vocab / size⌉ rows each (`stride`),
// the last rank fewer when the vocabulary does not divide.
struct VocabShard {
  int64_t first = 0;
  int64_t count = 0;
  int64_t stride = 0;
};
VocabShard vocab_shard(int64_t vocab_size, const TensorParallelRank& rank);

// A config can be split over `size` ranks when its attention heads, KV heads and MLP rows
// divide by it, and each rank keeps at least one vocabulary row. The error names what does
// not divide and the sizes that would.
Status check_tensor_parallel(const ModelConfig& config, int size);

// The shape of one rank's shard as a decoder of its own: heads, KV heads and intermediate
// rows divided, the vocabulary its VocabShard's count; everything else as the full model.
ModelConfig shard_config(const ModelConfig& config, const TensorParallelRank& rank);

// Where a rank's shard of one tensor lies in the full tensor ([rows, cols] row-major, 1-D
// tensors as [rows, 1]): rows [row_first, row_first + row_count) × cols [col_first,
// col_first + col_count). A Q/K/V projection's rows are whole heads; a row-parallel bias
// belongs to rank 0 (the others hold zeros: `zero`).
struct TensorSlice {
  int64_t rows = 0, cols = 1;  // the full tensor
  int64_t row_first = 0, row_count = 0;
  int64_t col_first = 0, col_count = 1;
  bool zero = false;
};
TensorSlice tensor_slice(const DecoderTensorSpec& spec, const ModelConfig& config, const TensorParallelRank& rank);

// The full model's tensor specs by name: what a shard's tensor (same name) is cut from.
std::unordered_map<std::string, DecoderTensorSpec> tensor_specs_by_name(const ModelConfig& config);

// The spec of the shard (its name, its shard shape) and the copy of the shard out of the
// full fp32 tensor ([rows, cols], HF row order).
DecoderTensorSpec shard_spec(const DecoderTensorSpec& spec, const ModelConfig& config, const TensorParallelRank& rank);
std::vector<float> slice_tensor(std::span<const float> full, const TensorSlice& slice);

// A loader of the shard's tensors (asked for by shard_spec's names and shapes, as
// decoder_tensor_specs(shard_config) lists them) from a loader of the full model's.
WeightLoader sharded_weight_loader(WeightLoader full, const ModelConfig& config, const TensorParallelRank& rank);

}  // namespace draftwise
