#include "target/tensor_parallel.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <unordered_map>
#include <utility>

namespace draftwise {
namespace {

// The sizes in [1, 8] that divide every one of `extents`, for the error message.
std::string dividing_sizes(std::initializer_list<int64_t> extents) {
  std::string sizes;
  for (int64_t size = 1; size <= 8; ++size) {
    if (std::all_of(extents.begin(), extents.end(), [&](int64_t extent) { return extent % size == 0; })) {
      sizes += (sizes.empty() ? "" : ", ") + std::to_string(size);
    }
  }
  return sizes;
}

int64_t element_count(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

}  // namespace

VocabShard vocab_shard(int64_t vocab_size, const TensorParallelRank& rank) {
  VocabShard shard;
  shard.stride = (vocab_size + rank.size - 1) / rank.size;
  shard.first = std::min<int64_t>(vocab_size, shard.stride * rank.rank);
  shard.count = std::min<int64_t>(vocab_size, shard.first + shard.stride) - shard.first;
  return shard;
}

Status check_tensor_parallel(const ModelConfig& config, int size) {
  if (size < 1) return make_error("the tensor-parallel size must be at least 1, got {}", size);
  if (config.architecture == Architecture::ttt) {
    return make_error("tensor parallelism splits attention decoders; a TTT model runs on one GPU");
  }
  const auto refuse = [&](const char* what, int64_t count) {
    return make_error(
        "tensor parallelism {} needs the {} ({}) to divide by {}: this model ({} heads, {} KV heads, {} MLP rows) "
        "splits over {}",
        size, what, count, size, config.num_heads, config.num_kv_heads, config.intermediate_size,
        dividing_sizes({config.num_heads, config.num_kv_heads, config.intermediate_size}));
  };
  if (config.num_heads % size != 0) return refuse("attention heads", config.num_heads);
  if (config.num_kv_heads % size != 0) return refuse("key/value heads", config.num_kv_heads);
  if (config.intermediate_size % size != 0) return refuse("MLP intermediate rows", config.intermediate_size);
  if (vocab_shard(config.vocab_size, {size - 1, size}).count < 1) {
    return make_error("tensor parallelism {} leaves the last rank no row of the {}-token vocabulary", size,
                      config.vocab_size);
  }
  return {};
}

ModelConfig shard_config(const ModelConfig& config, const TensorParallelRank& rank) {
  ModelConfig shard = config;
  shard.num_heads = config.num_heads / rank.size;
  shard.num_kv_heads = config.num_kv_heads / rank.size;
  shard.intermediate_size = config.intermediate_size / rank.size;
  shard.vocab_size = vocab_shard(config.vocab_size, rank).count;
  return shard;
}

TensorSlice tensor_slice(const DecoderTensorSpec& spec, const ModelConfig& config, const TensorParallelRank& rank) {
  TensorSlice slice;
  slice.rows = spec.shape.at(0);
  slice.cols = spec.shape.size() > 1 ? spec.shape[1] : 1;
  slice.row_count = slice.rows;
  slice.col_count = slice.cols;
  const auto rows_of = [&](int64_t per_rank) {
    slice.row_first = per_rank * rank.rank;
    slice.row_count = per_rank;
  };
  const auto cols_of = [&](int64_t per_rank) {
    slice.col_first = per_rank * rank.rank;
    slice.col_count = per_rank;
  };
  const int64_t q_rows = config.num_heads / rank.size * config.head_dim;
  const int64_t kv_rows = config.num_kv_heads / rank.size * config.head_dim;
  const int64_t ffn_rows = config.intermediate_size / rank.size;
  const std::string& part = spec.part;
  if (spec.name == "model.embed_tokens.weight" || spec.name == "lm_head.weight") {
    const VocabShard vocab = vocab_shard(config.vocab_size, rank);
    slice.row_first = vocab.first;
    slice.row_count = vocab.count;
  } else if (part == "self_attn.q_proj.weight" || part == "self_attn.q_proj.bias") {
    rows_of(q_rows);
  } else if (part == "self_attn.k_proj.weight" || part == "self_attn.k_proj.bias" ||
             part == "self_attn.v_proj.weight" || part == "self_attn.v_proj.bias") {
    rows_of(kv_rows);
  } else if (part == "mlp.gate_proj.weight" || part == "mlp.up_proj.weight") {
    rows_of(ffn_rows);
  } else if (part == "self_attn.o_proj.weight") {
    cols_of(q_rows);
  } else if (part == "mlp.down_proj.weight") {
    cols_of(ffn_rows);
  } else if (part == "self_attn.o_proj.bias") {
    slice.zero = rank.rank != 0;
  }
  return slice;
}

DecoderTensorSpec shard_spec(const DecoderTensorSpec& spec, const ModelConfig& config, const TensorParallelRank& rank) {
  const TensorSlice slice = tensor_slice(spec, config, rank);
  DecoderTensorSpec shard = spec;
  shard.shape = spec.shape.size() > 1 ? std::vector<int64_t>{slice.row_count, slice.col_count}
                                      : std::vector<int64_t>{slice.row_count};
  if (shard.rope_heads > 0) shard.rope_heads = spec.rope_heads / rank.size;
  return shard;
}

std::vector<float> slice_tensor(std::span<const float> full, const TensorSlice& slice) {
  std::vector<float> shard(static_cast<size_t>(slice.row_count * slice.col_count), 0.0f);
  if (slice.zero) return shard;
  for (int64_t r = 0; r < slice.row_count; ++r) {
    const float* source = full.data() + (slice.row_first + r) * slice.cols + slice.col_first;
    std::copy(source, source + slice.col_count, shard.begin() + r * slice.col_count);
  }
  return shard;
}

std::unordered_map<std::string, DecoderTensorSpec> tensor_specs_by_name(const ModelConfig& config) {
  std::unordered_map<std::string, DecoderTensorSpec> specs;
  for (DecoderTensorSpec& spec : decoder_tensor_specs(config)) {
    std::string name = spec.name;
    specs.emplace(std::move(name), std::move(spec));
  }
  return specs;
}

WeightLoader sharded_weight_loader(WeightLoader full, const ModelConfig& config, const TensorParallelRank& rank) {
  return [full = std::move(full), specs = tensor_specs_by_name(config), config,
          rank](const DecoderTensorSpec& shard) -> Expected<std::vector<float>> {
    const auto it = specs.find(shard.name);
    if (it == specs.end()) return make_error("tensor '{}' is not part of the model", shard.name);
    const DecoderTensorSpec& spec = it->second;
    DW_ASSIGN_OR_RETURN(const std::vector<float> values, full(spec));
    if (static_cast<int64_t>(values.size()) != element_count(spec.shape)) {
      return make_error("tensor '{}': the loader gave {} values for shape [{}]", spec.name, values.size(),
                        fmt::join(spec.shape, ", "));
    }
    return slice_tensor(values, tensor_slice(spec, config, rank));
  };
}

}  // namespace draftwise
