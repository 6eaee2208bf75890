#include "target/cuda_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_dequantize.h"
#include "kernels/cuda/ops.h"
#include "kernels/half.h"
#include "target/random_weights.h"
#include "target/rope_frequencies.h"

namespace draftwise {

namespace {

using cuda::bf16;
using cuda::DeviceBuffer;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr size_t kMaxCachedGraphs = 64;

// Appends `values` to the step's host-side plan at a 16-byte boundary; returns the offset in
// int32 units.
template <typename T>
size_t append_section(std::vector<int32_t>& plan, const std::vector<T>& values) {
  static_assert(sizeof(T) % sizeof(int32_t) == 0);
  plan.resize((plan.size() + 3) / 4 * 4);
  const size_t offset = plan.size();
  plan.resize(offset + values.size() * sizeof(T) / sizeof(int32_t));
  if (!values.empty()) std::memcpy(plan.data() + offset, values.data(), values.size() * sizeof(T));
  return offset;
}

TensorParallelRank rank_of(const CudaDecoderOptions& options) {
  if (options.tensor_parallel == nullptr) return {};
  return {options.tensor_parallel->rank(), options.tensor_parallel->size()};
}

// Writes a shard's tensors through a writer of the full model's: the full tensor to a staging
// buffer on the GPU, then the shard's rows and columns out of it (TensorSlice).
class ShardWriter {
 public:
  using Writer = std::function<Status(const DecoderTensorSpec&, bf16*, cudaStream_t)>;
  ShardWriter(const Writer& full, const ModelConfig& config, const TensorParallelRank& rank)
      : full_(full), config_(config), rank_(rank), specs_(tensor_specs_by_name(config)) {}
  Status operator()(const DecoderTensorSpec& shard, bf16* dst, cudaStream_t stream) {
    const auto it = specs_.find(shard.name);
    if (it == specs_.end()) return make_error("tensor '{}' is not part of the model", shard.name);
    const DecoderTensorSpec& spec = it->second;
    const TensorSlice slice = tensor_slice(spec, config_, rank_);
    const size_t shard_bytes = static_cast<size_t>(slice.row_count * slice.col_count) * sizeof(bf16);
    if (slice.zero) return cuda_status(cudaMemsetAsync(dst, 0, shard_bytes, stream), "cudaMemsetAsync");
    if (slice.row_count == slice.rows && slice.col_count == slice.cols) return full_(spec, dst, stream);
    const size_t full_bytes = static_cast<size_t>(slice.rows * slice.cols) * sizeof(bf16);
    if (staging_.bytes() < full_bytes) {
      DW_CUDA_TRY(cudaStreamSynchronize(stream));  // the old buffer may still be read
      staging_ = DeviceBuffer();
      DW_ASSIGN_OR_RETURN(staging_, DeviceBuffer::allocate(full_bytes, "a weight being split over ranks"));
    }
    DW_TRY(full_(spec, staging_.as<bf16>(), stream));
    const bf16* first = staging_.as<bf16>() + slice.row_first * slice.cols + slice.col_first;
    return cuda_status(cudaMemcpy2DAsync(dst, static_cast<size_t>(slice.col_count) * sizeof(bf16), first,
                                         static_cast<size_t>(slice.cols) * sizeof(bf16),
                                         static_cast<size_t>(slice.col_count) * sizeof(bf16),
                                         static_cast<size_t>(slice.row_count), cudaMemcpyDeviceToDevice, stream),
                       "cudaMemcpy2DAsync");
  }

 private:
  const Writer& full_;
  const ModelConfig& config_;
  TensorParallelRank rank_;
  std::unordered_map<std::string, DecoderTensorSpec> specs_;
  DeviceBuffer staging_;
};

}  // namespace

CudaDecoder::CudaDecoder(const ModelConfig& config, const CudaDecoderOptions& options)
    : config_(options.tensor_parallel != nullptr ? shard_config(config, rank_of(options)) : config),
      full_config_(config),
      vocab_(vocab_shard(config.vocab_size, rank_of(options))),
      options_(options),
      context_length_(options.context_length > 0 ? options.context_length
                                                 : config.max_position_embeddings) {}

std::string CudaDecoder::device_name() const { return fmt::format("cuda:{}", options_.device); }

Status CudaDecoder::all_reduce(void* data, int64_t count, cuda::CollectiveType type) {
  if (options_.tensor_parallel == nullptr || count == 0) return {};
  return options_.tensor_parallel->all_reduce(data, static_cast<size_t>(count), type, cuda::ReduceOp::kSum,
                                              stream_.get());
}

Expected<double> CudaDecoder::time_all_reduce(int64_t elements, int64_t repeats) {
  if (options_.tensor_parallel == nullptr) return Decoder::time_all_reduce(elements, repeats);
  if (elements < 1 || repeats < 1) return make_error("time_all_reduce needs elements and repeats ≥ 1");
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  const cudaStream_t stream = stream_.get();
  DW_ASSIGN_OR_RETURN(DeviceBuffer data, DeviceBuffer::allocate(static_cast<size_t>(elements) * sizeof(bf16),
                                                                "the all-reduce probe"));
  DW_CUDA_TRY(cudaMemsetAsync(data.data(), 0, data.bytes(), stream));
  cudaEvent_t events[2] = {nullptr, nullptr};
  for (cudaEvent_t& event : events) DW_CUDA_TRY(cudaEventCreate(&event));
  const auto timed = [&]() -> Expected<double> {
    DW_TRY(all_reduce(data.data(), elements, cuda::CollectiveType::kBfloat16));  // warm-up
    DW_CUDA_TRY(cudaEventRecord(events[0], stream));
    for (int64_t i = 0; i < repeats; ++i) DW_TRY(all_reduce(data.data(), elements, cuda::CollectiveType::kBfloat16));
    DW_CUDA_TRY(cudaEventRecord(events[1], stream));
    DW_TRY(options_.tensor_parallel->wait(stream));
    float ms = 0.0f;
    DW_CUDA_TRY(cudaEventElapsedTime(&ms, events[0], events[1]));
    return static_cast<double>(ms) / 1000.0 / static_cast<double>(repeats);
  };
  Expected<double> seconds = timed();
  for (cudaEvent_t event : events) cudaEventDestroy(event);
  return seconds;
}

Status CudaDecoder::refuse_on_shard(const char* what) const {
  if (options_.tensor_parallel == nullptr) return {};
  return make_error("{} is not available with tensor parallelism (--tp {}) yet: the ranks would have to share it", what,
                    options_.tensor_parallel->size());
}

Expected<std::unique_ptr<CudaDecoder>> CudaDecoder::create(const ModelConfig& config,
                                                           const WeightLoader& loader,
                                                           const CudaDecoderOptions& options) {
  // Weights from the host in fp32, rounded to bf16 there.
  const DeviceWeightWriter write = [&loader](const DecoderTensorSpec& spec, bf16* dst,
                                             cudaStream_t stream) -> Status {
    DW_ASSIGN_OR_RETURN(const std::vector<float> values, loader(spec));
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
    return cuda::copy_to_device(dst, bits.data(), bits.size() * sizeof(uint16_t), stream);
  };
  return create_with(config, loader, write, options);
}

Expected<std::unique_ptr<CudaDecoder>> CudaDecoder::create_random(const ModelConfig& config, uint64_t seed,
                                                                  const CudaDecoderOptions& options) {
  const DeviceWeightWriter write = [seed](const DecoderTensorSpec& spec, bf16* dst, cudaStream_t stream) -> Status {
    int64_t count = 1;
    for (const int64_t extent : spec.shape) count *= extent;
    return cuda_status(cuda::fill_uniform_bf16(dst, count, random_weight_stream(seed, spec.name),
                                               static_cast<float>(kRandomWeightHalfWidth), stream),
                       "fill_uniform_bf16");
  };
  return create_with(config, random_weight_loader(seed), write, options);
}

Expected<std::unique_ptr<CudaDecoder>> CudaDecoder::load(const Checkpoint& checkpoint,
                                                         const CudaDecoderOptions& options) {
  DW_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(checkpoint));
  DW_ASSIGN_OR_RETURN(ModelWeights weights, ModelWeights::bind(checkpoint, config));
  // Stored bytes go to the GPU as they are and are dequantized there; GGUF's permuted
  // Q/K rows are put back in Hugging Face order by a row gather.
  const DeviceWeightWriter write = [&weights](const DecoderTensorSpec& spec, bf16* dst,
                                              cudaStream_t stream) -> Status {
    const WeightTensor* tensor = weights.find(spec.name);
    if (tensor == nullptr) return make_error("tensor '{}' is not bound", spec.name);
    const CheckpointTensor& source = *tensor->source;
    int64_t count = 1;
    for (const int64_t extent : spec.shape) count *= extent;
    if (tensor->rope_interleaved_heads == 0) {
      return cuda::dequantize_to_device_bf16(source.type, source.data.data(), count, dst, stream);
    }
    const int64_t rows = spec.shape[0];
    const int64_t cols = spec.shape.size() == 2 ? spec.shape[1] : 1;
    const int64_t heads = tensor->rope_interleaved_heads;
    const int64_t head_dim = rows / heads;
    DW_ASSIGN_OR_RETURN(DeviceBuffer stored, DeviceBuffer::allocate(static_cast<size_t>(count) * sizeof(bf16),
                                                                    "a weight being un-permuted"));
    DW_TRY(cuda::dequantize_to_device_bf16(source.type, source.data.data(), count, stored.as<bf16>(), stream));
    // Hugging Face row i·half + j of a head is stored row 2j + i (unpermute_rope_rows).
    std::vector<int32_t> source_rows(static_cast<size_t>(rows));
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < 2; ++i) {
        for (int64_t j = 0; j < half; ++j) {
          source_rows[static_cast<size_t>(h * head_dim + i * half + j)] = static_cast<int32_t>(h * head_dim + 2 * j + i);
        }
      }
    }
    DW_ASSIGN_OR_RETURN(DeviceBuffer index, cuda::upload(source_rows, "a row index", stream));
    DW_TRY(cuda_status(cuda::gather_rows(stored.as<bf16>(), index.as<int32_t>(), dst, rows, cols, stream),
                       "gather_rows"));
    DW_CUDA_TRY(cudaStreamSynchronize(stream));
    return {};
  };
  return create_with(config, checkpoint_weight_loader(weights), write, options);
}

Expected<std::unique_ptr<CudaDecoder>> CudaDecoder::create_with(const ModelConfig& config,
                                                                const WeightLoader& host_f32,
                                                                const DeviceWeightWriter& write_bf16,
                                                                const CudaDecoderOptions& options) {
  if (!(options.kv_cache_memory_share > 0 && options.kv_cache_memory_share <= 1)) {
    return make_error("the key/value cache's memory share must be in (0, 1], got {}",
                      options.kv_cache_memory_share);
  }
  if (options.kv_block_size <= 0) return make_error("the cache block size must be positive");
  if (config.head_dim > 256) {
    return make_error("head dimension {} is larger than the CUDA attention supports (256)", config.head_dim);
  }
  if (options.tensor_parallel != nullptr) DW_TRY(check_tensor_parallel(config, options.tensor_parallel->size()));
  int count = 0;
  if (const cudaError_t result = cudaGetDeviceCount(&count); result != cudaSuccess || count == 0) {
    cudaGetLastError();
    return make_error("cuda:{}: no CUDA device is visible ({})", options.device,
                      result == cudaSuccess ? "none found" : cudaGetErrorString(result));
  }
  if (options.device < 0 || options.device >= count) {
    return make_error("cuda:{} does not exist: {} CUDA device(s) are visible", options.device, count);
  }
  DW_CUDA_TRY(cudaSetDevice(options.device));
  std::unique_ptr<CudaDecoder> decoder(new CudaDecoder(config, options));
  DW_CUDA_TRY(cudaDeviceGetAttribute(&decoder->multiprocessors_, cudaDevAttrMultiProcessorCount, options.device));
  DW_ASSIGN_OR_RETURN(decoder->stream_, cuda::Stream::create());
  DW_ASSIGN_OR_RETURN(decoder->gemm_, cuda::Gemm::create());
  if (options.tensor_parallel != nullptr) {
    // A shard's tensors are cut out of the full ones as they load.
    ShardWriter shard_writer(write_bf16, config, rank_of(options));
    const DeviceWeightWriter write_shard = [&shard_writer](const DecoderTensorSpec& spec, bf16* dst,
                                                           cudaStream_t stream) { return shard_writer(spec, dst, stream); };
    DW_TRY(decoder->load_weights(sharded_weight_loader(host_f32, config, rank_of(options)), write_shard));
  } else {
    DW_TRY(decoder->load_weights(host_f32, write_bf16));
  }
  DW_TRY(decoder->allocate_cache());
  return decoder;
}

Status CudaDecoder::load_weights(const WeightLoader& host_f32, const DeviceWeightWriter& write_bf16) {
  const cudaStream_t stream = stream_.get();
  DW_ASSIGN_OR_RETURN(inv_freq_, cuda::upload(rope_inverse_frequencies(config_), "RoPE frequencies", stream));
  layers_.resize(static_cast<size_t>(config_.num_layers));
  const int64_t hidden = config_.hidden_size;
  const int64_t q_rows = config_.num_heads * config_.head_dim;
  const int64_t kv_rows = config_.num_kv_heads * config_.head_dim;
  const int64_t ffn = config_.intermediate_size;
  const auto allocate_bf16 = [](int64_t count, const std::string& what) {
    return DeviceBuffer::allocate(static_cast<size_t>(count) * sizeof(bf16), what);
  };
  for (const DecoderTensorSpec& spec : decoder_tensor_specs(config_)) {
    const std::string what = "weight " + spec.name;
    int64_t count = 1;
    for (const int64_t extent : spec.shape) count *= extent;
    // A tensor of its own, as bf16.
    const auto own = [&](DeviceBuffer& target) -> Status {
      DW_ASSIGN_OR_RETURN(target, allocate_bf16(count, what));
      return write_bf16(spec, target.as<bf16>(), stream);
    };
    // A part of a stacked tensor, allocated whole when its first part arrives.
    const auto part_of = [&](DeviceBuffer& target, int64_t total, int64_t offset) -> Status {
      if (target.data() == nullptr) {
        DW_ASSIGN_OR_RETURN(target, allocate_bf16(total, what));
      }
      return write_bf16(spec, target.as<bf16>() + offset, stream);
    };
    const auto norm = [&](DeviceBuffer& target) -> Status {
      DW_ASSIGN_OR_RETURN(const std::vector<float> values, host_f32(spec));
      DW_ASSIGN_OR_RETURN(target, cuda::upload(values, what, stream));
      return {};
    };
    if (spec.name == "model.embed_tokens.weight") {
      DW_TRY(own(embedding_));
      continue;
    }
    if (spec.name == "model.norm.weight") {
      DW_TRY(norm(final_norm_));
      continue;
    }
    if (spec.name == "lm_head.weight") {
      DW_TRY(own(lm_head_));
      continue;
    }
    const std::string& part = spec.part;
    Layer& layer = layers_[static_cast<size_t>(spec.layer)];
    const int64_t qkv_rows = q_rows + 2 * kv_rows;
    if (part == "input_layernorm.weight") {
      DW_TRY(norm(layer.input_norm));
    } else if (part == "post_attention_layernorm.weight") {
      DW_TRY(norm(layer.post_norm));
    } else if (part == "self_attn.q_proj.weight") {
      DW_TRY(part_of(layer.qkv_weight, qkv_rows * hidden, 0));
    } else if (part == "self_attn.k_proj.weight") {
      DW_TRY(part_of(layer.qkv_weight, qkv_rows * hidden, q_rows * hidden));
    } else if (part == "self_attn.v_proj.weight") {
      DW_TRY(part_of(layer.qkv_weight, qkv_rows * hidden, (q_rows + kv_rows) * hidden));
    } else if (part == "self_attn.q_proj.bias") {
      DW_TRY(part_of(layer.qkv_bias, qkv_rows, 0));
    } else if (part == "self_attn.k_proj.bias") {
      DW_TRY(part_of(layer.qkv_bias, qkv_rows, q_rows));
    } else if (part == "self_attn.v_proj.bias") {
      DW_TRY(part_of(layer.qkv_bias, qkv_rows, q_rows + kv_rows));
    } else if (part == "self_attn.o_proj.weight") {
      DW_TRY(own(layer.o_weight));
    } else if (part == "self_attn.o_proj.bias") {
      DW_TRY(own(layer.o_bias));
    } else if (part == "mlp.gate_proj.weight") {
      DW_TRY(part_of(layer.gate_up, 2 * ffn * hidden, 0));
    } else if (part == "mlp.up_proj.weight") {
      DW_TRY(part_of(layer.gate_up, 2 * ffn * hidden, ffn * hidden));
    } else if (part == "mlp.down_proj.weight") {
      DW_TRY(own(layer.down));
    } else {
      return make_error("tensor '{}' has no place in the decoder", spec.name);
    }
  }
  return cuda_status(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

Status CudaDecoder::allocate_cache() {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  DW_CUDA_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t kv_dim = config_.num_kv_heads * config_.head_dim;
  const double block_bytes_per_layer = 2.0 * static_cast<double>(options_.kv_block_size * kv_dim) * sizeof(bf16);
  const double block_bytes = block_bytes_per_layer * static_cast<double>(config_.num_layers);
  // At most what 64 full-context sequences can use, so that small models leave the rest
  // of the GPU alone.
  const double wanted = std::floor(options_.kv_cache_memory_share * static_cast<double>(free_bytes) / block_bytes);
  const double cap = 64.0 * std::ceil(static_cast<double>(context_length_) / static_cast<double>(options_.kv_block_size));
  num_blocks_ = static_cast<int64_t>(std::min(wanted, cap));
  if (options_.tensor_parallel != nullptr) {
    // Every rank must take and refuse the same batches: the smallest cache of the group.
    DW_ASSIGN_OR_RETURN(DeviceBuffer count, cuda::upload(std::vector<int64_t>{num_blocks_}, "the cache size", stream_.get()));
    DW_TRY(options_.tensor_parallel->all_reduce(count.data(), 1, cuda::CollectiveType::kInt64, cuda::ReduceOp::kMin,
                                                stream_.get()));
    DW_TRY(options_.tensor_parallel->wait(stream_.get()));
    DW_TRY(cuda::copy_to_host(&num_blocks_, count.data(), sizeof(int64_t), stream_.get()));
  }
  if (num_blocks_ < 1) {
    return make_error("no room for a key/value cache: one block of {} positions needs {:.1f} MiB, {:.1f} MiB are free",
                      options_.kv_block_size, block_bytes / kMiB, static_cast<double>(free_bytes) / kMiB);
  }
  const size_t layer_bytes = static_cast<size_t>(num_blocks_ * options_.kv_block_size * kv_dim) * sizeof(bf16);
  for (Layer& layer : layers_) {
    DW_ASSIGN_OR_RETURN(layer.k_cache, DeviceBuffer::allocate(layer_bytes, "the key cache"));
    DW_ASSIGN_OR_RETURN(layer.v_cache, DeviceBuffer::allocate(layer_bytes, "the value cache"));
  }
  table_stride_ = (context_length_ + options_.kv_block_size - 1) / options_.kv_block_size;
  free_blocks_.resize(static_cast<size_t>(num_blocks_));
  // Handed out from the back: block 0 first.
  for (int64_t i = 0; i < num_blocks_; ++i) free_blocks_[static_cast<size_t>(i)] = static_cast<int32_t>(num_blocks_ - 1 - i);
  return {};
}

SequenceId CudaDecoder::create_sequence() {
  const SequenceId id = next_sequence_++;
  sequences_[id] = Sequence{};
  return id;
}

void CudaDecoder::release_sequence(SequenceId sequence) {
  const auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return;
  free_blocks_.insert(free_blocks_.end(), it->second.blocks.rbegin(), it->second.blocks.rend());
  sequences_.erase(it);
}

int64_t CudaDecoder::sequence_length(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : it->second.length;
}

int64_t CudaDecoder::pending_tokens(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : static_cast<int64_t>(it->second.pending.size());
}

CacheUsage CudaDecoder::cache_usage() const {
  return {options_.kv_block_size, num_blocks_, num_blocks_ - static_cast<int64_t>(free_blocks_.size())};
}

Status CudaDecoder::truncate_sequence(SequenceId sequence, int64_t length) {
  const auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return make_error("unknown sequence {}", sequence);
  Sequence& state = it->second;
  if (length < 0 || length > state.length) {
    return make_error("cannot truncate sequence {} of length {} to {}", sequence, state.length, length);
  }
  state.length = length;
  state.pending.clear();
  state.pending_exit_layer = 0;
  const size_t keep = static_cast<size_t>((length + options_.kv_block_size - 1) / options_.kv_block_size);
  while (state.blocks.size() > keep) {
    free_blocks_.push_back(state.blocks.back());
    state.blocks.pop_back();
  }
  return {};
}

Expected<void*> CudaDecoder::scratch(size_t index, size_t bytes, const char* what) {
  if (scratch_.size() <= index) scratch_.resize(index + 1);
  if (scratch_[index].bytes() < bytes) {
    // Free first, so that the old buffer's memory can serve the new one.
    const size_t grown = std::max(bytes, 2 * scratch_[index].bytes());
    scratch_[index] = DeviceBuffer();
    DW_ASSIGN_OR_RETURN(scratch_[index], DeviceBuffer::allocate(grown, what));
    ++scratch_generation_;
  }
  return scratch_[index].data();
}

Status CudaDecoder::forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  return forward_step(batch, nullptr, &logits, nullptr);
}

Status CudaDecoder::forward_greedy(std::span<const ForwardRequest> batch, std::vector<int32_t>& tokens) {
  return forward_step(batch, nullptr, nullptr, &tokens);
}

Status CudaDecoder::forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                                  std::vector<float>& logits) {
  return forward_step(batch, &head, &logits, nullptr);
}

Status CudaDecoder::forward_draft_greedy(std::span<const ForwardRequest> batch, const DraftHead& head,
                                         std::vector<int32_t>& tokens) {
  return forward_step(batch, &head, nullptr, &tokens);
}

Status CudaDecoder::forward_step(std::span<const ForwardRequest> batch, const DraftHead* draft,
                                 std::vector<float>* logits, std::vector<int32_t>* tokens) {
  // The calling thread may have used another device since: scratch and launches go here.
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  if (draft != nullptr) DW_TRY(refuse_on_shard("early-exit drafting"));
  // A failed group runs nothing more: a cached graph would replay collectives on an aborted
  // communicator.
  DW_TRY(health());
  DW_TRY(check_early_exit_batch(
      batch, draft, full_config_, context_length_, [this](SequenceId id) { return sequence_length(id); },
      [this](SequenceId id) {
        const Sequence& state = sequences_.at(id);
        return PendingTokens{state.pending, state.pending_exit_layer};
      }));
  // One pass resumes pending tokens at one exit layer (the two segments of run_batch).
  int resume_layer = 0;
  for (const ForwardRequest& request : batch) {
    const Sequence& state = sequences_.at(request.sequence);
    if (draft != nullptr || state.pending.empty()) continue;
    if (resume_layer != 0 && resume_layer != state.pending_exit_layer) {
      return make_error("sequences with tokens pending at exit layers {} and {} cannot share a forward pass",
                        resume_layer, state.pending_exit_layer);
    }
    resume_layer = state.pending_exit_layer;
  }
  const int64_t block_size = options_.kv_block_size;
  const auto end_of = [&](const ForwardRequest& request) {
    const Sequence& state = sequences_.at(request.sequence);
    return state.length + (draft != nullptr ? static_cast<int64_t>(state.pending.size()) : 0) +
           static_cast<int64_t>(request.tokens.size());
  };
  int64_t needed = 0;
  for (const ForwardRequest& request : batch) {
    const Sequence& state = sequences_.at(request.sequence);
    const int64_t blocks = (end_of(request) + block_size - 1) / block_size;
    needed += std::max<int64_t>(0, blocks - static_cast<int64_t>(state.blocks.size()));
  }
  if (needed > static_cast<int64_t>(free_blocks_.size())) {
    return make_error("the key/value cache is full: this batch needs {} more blocks of {} positions, {} of {} are free",
                      needed, block_size, free_blocks_.size(), num_blocks_);
  }
  if (draft != nullptr) {
    // Room for every pending row after this step; rows kept so far move with a grown buffer.
    const cudaStream_t stream = stream_.get();
    const size_t row_bytes = static_cast<size_t>(config_.hidden_size) * sizeof(float);
    for (const ForwardRequest& request : batch) {
      Sequence& state = sequences_.at(request.sequence);
      const size_t rows = state.pending.size() + request.tokens.size();
      if (state.pending_hidden.bytes() >= rows * row_bytes) continue;
      DW_ASSIGN_OR_RETURN(DeviceBuffer grown, DeviceBuffer::allocate(std::max<size_t>(rows, 32) * row_bytes,
                                                                     "the pending rows of early-exit drafting"));
      if (!state.pending.empty()) {
        DW_CUDA_TRY(cudaMemcpyAsync(grown.data(), state.pending_hidden.data(), state.pending.size() * row_bytes,
                                    cudaMemcpyDeviceToDevice, stream));
      }
      state.pending_hidden = std::move(grown);
    }
  }
  std::vector<size_t> blocks_before;
  for (const ForwardRequest& request : batch) {
    Sequence& state = sequences_.at(request.sequence);
    blocks_before.push_back(state.blocks.size());
    const int64_t blocks = (end_of(request) + block_size - 1) / block_size;
    while (static_cast<int64_t>(state.blocks.size()) < blocks) {
      state.blocks.push_back(free_blocks_.back());
      free_blocks_.pop_back();
    }
  }
  if (Status ran = run_batch(batch, draft, logits, tokens); !ran.ok()) {
    // Give back the blocks this batch took: a failed forward changes nothing.
    for (size_t r = 0; r < batch.size(); ++r) {
      Sequence& state = sequences_.at(batch[r].sequence);
      while (state.blocks.size() > blocks_before[r]) {
        free_blocks_.push_back(state.blocks.back());
        state.blocks.pop_back();
      }
    }
    return ran;
  }
  // A full-depth head's rows were kept in the pending-row buffer, but nothing is pending.
  const bool pending_pass = draft != nullptr && draft->exit_layer < config_.num_layers;
  for (const ForwardRequest& request : batch) {
    Sequence& state = sequences_.at(request.sequence);
    if (pending_pass) {
      state.pending_exit_layer = draft->exit_layer;
      state.pending.insert(state.pending.end(), request.tokens.begin(), request.tokens.end());
    } else {
      state.length += static_cast<int64_t>(request.tokens.size());
      state.pending.clear();
      state.pending_exit_layer = 0;
    }
  }
  return {};
}

Status CudaDecoder::run_batch(std::span<const ForwardRequest> batch, const DraftHead* draft,
                              std::vector<float>* logits, std::vector<int32_t>* tokens) {
  const cudaStream_t stream = stream_.get();
  const int64_t hidden = config_.hidden_size;
  const int64_t q_dim = config_.num_heads * config_.head_dim;
  const int64_t qkv_dim = q_dim + 2 * config_.num_kv_heads * config_.head_dim;
  const int64_t ffn = config_.intermediate_size;
  const int64_t vocab = config_.vocab_size;
  const int64_t block_size = options_.kv_block_size;
  const int layers = static_cast<int>(config_.num_layers);

  // Which layers each segment runs (StepShape): a plain step is segment A over every layer;
  // a draft step is A up to the exit layer; a verification that resumes pending tokens is A
  // (the other tokens) up to their exit layer, then B (every token) from there.
  int resume_layer = 0;
  if (draft == nullptr) {
    for (const ForwardRequest& request : batch) {
      const Sequence& state = sequences_.at(request.sequence);
      if (!state.pending.empty()) resume_layer = state.pending_exit_layer;
    }
  }
  const bool resumes = resume_layer > 0;

  // Host-side plan: token rows, positions, cache slots, block tables (a fixed row length,
  // so that a captured graph stays valid as sequences grow), attention work.
  std::vector<int32_t> ids, positions, slots, new_tokens, start_positions, logit_rows;
  std::vector<int32_t> positions_b, slots_b, new_tokens_b, start_positions_b;
  std::vector<cuda::ResidualRowSource> sources_b;
  std::vector<float*> stored;
  std::vector<cuda::QueryDeltaRow> deltas, deltas_b;
  bool adapted = false;
  std::vector<int32_t> tables(batch.size() * static_cast<size_t>(table_stride_), 0);
  int64_t longest = 0;
  int32_t max_new = 0;
  int32_t max_new_b = 0;
  const auto slot_of = [&](const Sequence& state, int64_t position) {
    return static_cast<int32_t>(state.blocks[static_cast<size_t>(position / block_size)] * block_size +
                                position % block_size);
  };
  for (size_t r = 0; r < batch.size(); ++r) {
    Sequence& state = sequences_.at(batch[r].sequence);
    std::copy(state.blocks.begin(), state.blocks.end(), tables.begin() + static_cast<int64_t>(r) * table_stride_);
    const int64_t count = static_cast<int64_t>(batch[r].tokens.size());
    const int64_t pending = static_cast<int64_t>(state.pending.size());
    // Segment A: a draft step's tokens after the pending ones; else the tokens not pending.
    const int64_t skip = draft != nullptr ? 0 : pending;
    const int64_t start = state.length + (draft != nullptr ? pending : 0);
    const int32_t first_row_a = static_cast<int32_t>(ids.size());
    cuda::QueryDeltaRow delta;
    if (state.adaptation != nullptr) {
      delta = query_delta_row(*state.adaptation);
      adapted = true;
    }
    for (int64_t t = skip; t < count; ++t) {
      deltas.push_back(delta);
      ids.push_back(batch[r].tokens[static_cast<size_t>(t)]);
      positions.push_back(static_cast<int32_t>(start + t));
      slots.push_back(slot_of(state, start + t));
      if (draft != nullptr) {
        stored.push_back(state.pending_hidden.as<float>() + (pending + t) * hidden);
      }
    }
    new_tokens.push_back(static_cast<int32_t>(count - skip));
    start_positions.push_back(static_cast<int32_t>(start + skip));
    max_new = std::max(max_new, new_tokens.back());
    longest = std::max<int64_t>(longest, start + count);
    int32_t first_row = first_row_a;
    if (resumes) {
      // Segment B: every token, the pending ones from their kept rows.
      first_row = static_cast<int32_t>(positions_b.size());
      for (int64_t t = 0; t < count; ++t) {
        deltas_b.push_back(delta);
        positions_b.push_back(static_cast<int32_t>(state.length + t));
        slots_b.push_back(slot_of(state, state.length + t));
        cuda::ResidualRowSource source;
        if (t < pending) {
          source.pointer = state.pending_hidden.as<float>() + t * hidden;
        } else {
          source.row = first_row_a + static_cast<int32_t>(t - skip);
        }
        sources_b.push_back(source);
      }
      new_tokens_b.push_back(static_cast<int32_t>(count));
      start_positions_b.push_back(static_cast<int32_t>(state.length));
      max_new_b = std::max(max_new_b, new_tokens_b.back());
    }
    for (const int32_t row : batch[r].logit_rows) logit_rows.push_back(first_row + row);
  }
  StepShape shape;
  shape.rows = static_cast<int64_t>(ids.size());
  shape.rows_b = static_cast<int64_t>(positions_b.size());
  shape.selected_rows = static_cast<int64_t>(logit_rows.size());
  // A draft head with an adapter (or whose h_exit the learner reads) ends after the graph:
  // the step stores the LM head's logits, and the adapter term and argmax follow.
  const bool head_extras = draft != nullptr && (draft->adapter != nullptr || draft->exit_hidden != nullptr);
  shape.greedy = tokens != nullptr && !head_extras;
  shape.a_end = draft != nullptr ? draft->exit_layer : resumes ? resume_layer : layers;
  shape.store_hidden = draft != nullptr;
  shape.draft_gain = draft != nullptr && !draft->norm_gain.empty();
  shape.adapted = adapted;
  if (!adapted) {
    deltas.clear();
    deltas_b.clear();
  }
  const cuda::AttentionGeometry geometry = attention_geometry();
  const int query_tile = cuda::attention_query_tile(geometry);
  // Split long contexts when few queries per sequence leave the GPU idle (flash-decoding):
  // about two blocks per multiprocessor, each slice at least one tile of 64 positions.
  const auto splits_for = [&](const std::vector<int32_t>& counts, int32_t most) {
    if (most > cuda::kAttentionQueryTile) return 1;
    int64_t tiles = 0;  // work items before splitting
    for (const int32_t count : counts) tiles += (count + query_tile - 1) / query_tile;
    const int64_t blocks = std::max<int64_t>(tiles, 1) * config_.num_kv_heads;
    const int64_t for_occupancy = (2 * multiprocessors_ + blocks - 1) / blocks;
    return static_cast<int>(std::clamp<int64_t>(std::min(for_occupancy, (longest + 63) / 64), 1, 32));
  };
  shape.splits = splits_for(new_tokens, max_new);
  const std::vector<cuda::AttentionWorkItem> items =
      cuda::plan_attention(new_tokens, start_positions, shape.splits, query_tile);
  shape.items = static_cast<int64_t>(items.size());
  std::vector<cuda::AttentionWorkItem> items_b;
  if (resumes) {
    shape.splits_b = splits_for(new_tokens_b, max_new_b);
    items_b = cuda::plan_attention(new_tokens_b, start_positions_b, shape.splits_b, query_tile);
    shape.items_b = static_cast<int64_t>(items_b.size());
  }
  shape.sequences = static_cast<int64_t>(batch.size());

  const int64_t rows = std::max(shape.rows, shape.rows_b);
  const int splits = std::max(shape.splits, shape.splits_b);
  const auto bytes = [](int64_t count, size_t size) { return static_cast<size_t>(std::max<int64_t>(count, 1)) * size; };
  StepBuffers& b = buffers_;
  // Counters for merging attention slices inside the attention kernel: zero when allocated,
  // and every step leaves them zero.
  const int64_t tiles = std::max(shape.items / shape.splits, shape.items_b / shape.splits_b);
  const size_t counters = static_cast<size_t>(tiles * config_.num_kv_heads) * sizeof(int32_t);
  if (split_counters_.bytes() < counters) {
    const size_t grown = std::max(counters, 2 * split_counters_.bytes());
    split_counters_ = DeviceBuffer();
    DW_ASSIGN_OR_RETURN(split_counters_, DeviceBuffer::allocate(grown, "attention split counters"));
    DW_CUDA_TRY(cudaMemsetAsync(split_counters_.data(), 0, split_counters_.bytes(), stream));
    ++scratch_generation_;
  }

  // The plan goes up in one copy from page-locked memory: ids, positions, slots, tables,
  // attention items, segment B's tables and input rows, where drafted rows are stored, the
  // draft head's gain, logit rows, argmax keys. Its layout depends only on the step's shape.
  std::vector<int32_t>& plan = plan_;
  plan.clear();
  const size_t ids_at = append_section(plan, ids);
  const size_t positions_at = append_section(plan, positions);
  const size_t slots_at = append_section(plan, slots);
  const size_t tables_at = append_section(plan, tables);
  const size_t items_at = append_section(plan, items);
  const size_t positions_b_at = append_section(plan, positions_b);
  const size_t slots_b_at = append_section(plan, slots_b);
  const size_t items_b_at = append_section(plan, items_b);
  const size_t sources_b_at = append_section(plan, sources_b);
  const size_t deltas_at = append_section(plan, deltas);
  const size_t deltas_b_at = append_section(plan, deltas_b);
  const size_t stored_at = append_section(plan, stored);
  const size_t gain_at = append_section(
      plan, shape.draft_gain ? std::vector<float>(draft->norm_gain.begin(), draft->norm_gain.end()) : std::vector<float>());
  const size_t logit_rows_at = append_section(plan, logit_rows);
  // Greedy steps: the argmax keys, zero for the LM head's atomicMax.
  const size_t keys_at = append_section(plan, std::vector<uint64_t>(shape.greedy ? logit_rows.size() : 0, 0));
  const size_t plan_bytes = plan.size() * sizeof(int32_t);
  if (pinned_plan_.bytes() < plan_bytes) {
    DW_ASSIGN_OR_RETURN(pinned_plan_, cuda::PinnedBuffer::allocate(std::max(plan_bytes, 2 * pinned_plan_.bytes()),
                                                                   "the step plan"));
  }
  std::memcpy(pinned_plan_.data(), plan.data(), plan_bytes);
  DW_ASSIGN_OR_RETURN(void* plan_device, scratch(0, plan_bytes, "the step plan"));
  auto* plan_base = static_cast<int32_t*>(plan_device);
  b.ids = plan_base + ids_at;
  b.positions = plan_base + positions_at;
  b.slots = plan_base + slots_at;
  b.tables = plan_base + tables_at;
  b.items = plan_base + items_at;
  b.positions_b = plan_base + positions_b_at;
  b.slots_b = plan_base + slots_b_at;
  b.items_b = plan_base + items_b_at;
  b.sources_b = plan_base + sources_b_at;
  b.deltas = shape.adapted ? plan_base + deltas_at : nullptr;
  b.deltas_b = shape.adapted ? plan_base + deltas_b_at : nullptr;
  b.stored = plan_base + stored_at;
  b.gain = plan_base + gain_at;
  b.logit_rows = plan_base + logit_rows_at;
  b.keys = plan_base + keys_at;
  DW_ASSIGN_OR_RETURN(b.residual[0], scratch(6, bytes(rows * hidden, 4), "the residual stream"));
  DW_ASSIGN_OR_RETURN(b.residual[1], scratch(17, bytes(rows * hidden, 4), "the residual stream"));
  DW_ASSIGN_OR_RETURN(b.normed, scratch(7, bytes(rows * hidden, 2), "normed activations"));
  DW_ASSIGN_OR_RETURN(b.qkv, scratch(8, bytes(rows * qkv_dim, 2), "q/k/v"));
  DW_ASSIGN_OR_RETURN(b.attended, scratch(9, bytes(rows * q_dim, 2), "attention output"));
  DW_ASSIGN_OR_RETURN(b.delta, scratch(10, bytes(rows * hidden, 2), "layer output"));
  DW_ASSIGN_OR_RETURN(b.gate_up, scratch(11, bytes(rows * 2 * ffn, 2), "gate/up"));
  DW_ASSIGN_OR_RETURN(b.activated, scratch(12, bytes(rows * ffn, 2), "MLP activations"));
  DW_ASSIGN_OR_RETURN(b.partial, scratch(13, bytes(splits * rows * q_dim, 4), "attention partials"));
  DW_ASSIGN_OR_RETURN(b.stats, scratch(14, bytes(splits * rows * config_.num_heads * 2, 4), "attention statistics"));
  DW_ASSIGN_OR_RETURN(b.selected, scratch(15, bytes(shape.selected_rows * hidden, 2), "selected rows"));
  DW_ASSIGN_OR_RETURN(b.logits, scratch(16, bytes(shape.selected_rows * std::max(vocab, vocab_.stride), 4), "logits"));
  if (options_.tensor_parallel != nullptr) {
    const int64_t per_rank = shape.greedy ? shape.selected_rows * 2 : shape.selected_rows * vocab_.stride;
    DW_ASSIGN_OR_RETURN(b.gathered, scratch(20, bytes(per_rank * options_.tensor_parallel->size(), 4),
                                            "the ranks' logits"));
  }

  // The host waits for every step's end (the copy of its outputs), so the page-locked plan
  // is not rewritten while this copy may still read it.
  DW_CUDA_TRY(cudaMemcpyAsync(plan_device, pinned_plan_.data(), plan_bytes, cudaMemcpyHostToDevice, stream));

  // Decode and verification steps (few tokens per sequence) run as a CUDA graph, captured
  // once per shape and replayed while the shape repeats; prefill runs eagerly.
  if (options_.cuda_graphs && std::max(max_new, max_new_b) <= cuda::kAttentionQueryTile) {
    if (graphs_generation_ != scratch_generation_) {
      graphs_.clear();  // a scratch buffer moved: every captured graph points at old memory
      graphs_generation_ = scratch_generation_;
    }
    auto graph = graphs_.find(shape);
    if (graph == graphs_.end()) {
      // Each graph holds device memory; a server's changing batch shapes must not pile them up.
      if (graphs_.size() >= kMaxCachedGraphs) graphs_.clear();
      DW_CUDA_TRY(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      const Status captured = enqueue_forward(shape);
      cudaGraph_t recorded = nullptr;
      const cudaError_t ended = cudaStreamEndCapture(stream, &recorded);
      if (!captured.ok() || ended != cudaSuccess) {
        if (recorded != nullptr) cudaGraphDestroy(recorded);
        DW_TRY(captured);
        return cuda_status(ended, "cudaStreamEndCapture");
      }
      GraphExec exec;
      const cudaError_t instantiated = cudaGraphInstantiate(&exec.exec, recorded, 0);
      cudaGraphDestroy(recorded);
      DW_TRY(cuda_status(instantiated, "cudaGraphInstantiate"));
      graph = graphs_.emplace(shape, std::move(exec)).first;
    }
    DW_CUDA_TRY(cudaGraphLaunch(graph->second.exec, stream));
  } else {
    DW_TRY(enqueue_forward(shape));
  }
  if (head_extras && shape.selected_rows > 0) {
    std::vector<float*> h_rows;
    for (const int32_t row : logit_rows) h_rows.push_back(stored[static_cast<size_t>(row)]);
    DW_TRY(apply_draft_head(*draft, h_rows, shape.draft_gain ? static_cast<const float*>(b.gain) : final_norm_.as<float>(),
                            b.logits));
    if (tokens != nullptr) {
      DW_ASSIGN_OR_RETURN(b.keys, scratch(18, bytes(shape.selected_rows, sizeof(uint64_t)), "argmax keys"));
      DW_CUDA_TRY(cudaMemsetAsync(b.keys, 0, static_cast<size_t>(shape.selected_rows) * sizeof(uint64_t), stream));
      DW_TRY(cuda_status(cuda::argmax_rows(static_cast<const float*>(b.logits), static_cast<uint64_t*>(b.keys),
                                           shape.selected_rows, vocab, stream),
                         "argmax_rows"));
    }
  }
  // A tensor-parallel step waits with a deadline and an eye on the other ranks: a lost rank
  // fails the step instead of hanging it.
  if (options_.tensor_parallel != nullptr) DW_TRY(options_.tensor_parallel->wait(stream));
  if (shape.selected_rows == 0) {
    // Nothing comes back, but the step must end before the page-locked plan is rewritten.
    if (tokens != nullptr) tokens->clear();
    if (logits != nullptr) logits->clear();
    return cuda_status(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  }
  if (options_.tensor_parallel != nullptr) return gathered_outputs(shape.selected_rows, logits, tokens);
  if (tokens != nullptr) {
    const size_t key_bytes = static_cast<size_t>(shape.selected_rows) * sizeof(uint64_t);
    if (pinned_keys_.bytes() < key_bytes) {
      DW_ASSIGN_OR_RETURN(pinned_keys_, cuda::PinnedBuffer::allocate(std::max(key_bytes, 2 * pinned_keys_.bytes()),
                                                                     "the greedy tokens"));
    }
    DW_TRY(cuda::copy_to_host(pinned_keys_.data(), b.keys, key_bytes, stream));
    const auto* keys = static_cast<const uint64_t*>(pinned_keys_.data());
    tokens->resize(static_cast<size_t>(shape.selected_rows));
    for (size_t i = 0; i < tokens->size(); ++i) {
      if (keys[i] == cuda::kNonFiniteArgmaxKey) {
        return make_error("the model produced a non-finite logit in requested row {}", i);
      }
      (*tokens)[i] = cuda::argmax_key_index(keys[i]);
    }
    return {};
  }
  logits->resize(static_cast<size_t>(shape.selected_rows * vocab));
  return cuda::copy_to_host(logits->data(), b.logits, logits->size() * sizeof(float), stream);
}

Status CudaDecoder::gathered_outputs(int64_t selected_rows, std::vector<float>* logits, std::vector<int32_t>* tokens) {
  const int ranks = options_.tensor_parallel->size();
  const int64_t vocab = full_config_.vocab_size;
  const int64_t stride = vocab_.stride;
  if (tokens != nullptr) {
    // Each rank's key picks among its rows; the largest logit wins, the lower rank (so the
    // lower token id) among ties, as one argmax over the whole vocabulary would.
    std::vector<uint64_t> keys(static_cast<size_t>(ranks * selected_rows));
    DW_TRY(cuda::copy_to_host(keys.data(), buffers_.gathered, keys.size() * sizeof(uint64_t), stream_.get()));
    tokens->resize(static_cast<size_t>(selected_rows));
    for (int64_t i = 0; i < selected_rows; ++i) {
      uint64_t best_value = 0;
      int32_t best = -1;
      for (int r = 0; r < ranks; ++r) {
        const uint64_t key = keys[static_cast<size_t>(r * selected_rows + i)];
        if (key == cuda::kNonFiniteArgmaxKey) {
          return make_error("the model produced a non-finite logit in requested row {} (rank {})", i, r);
        }
        if (key == 0) continue;  // no candidate (an empty row)
        if (best < 0 || (key >> 32) > best_value) {
          best_value = key >> 32;
          best = static_cast<int32_t>(r * stride) + cuda::argmax_key_index(key);
        }
      }
      (*tokens)[static_cast<size_t>(i)] = std::max(best, 0);
    }
    return {};
  }
  std::vector<float> gathered(static_cast<size_t>(ranks * selected_rows * stride));
  DW_TRY(cuda::copy_to_host(gathered.data(), buffers_.gathered, gathered.size() * sizeof(float), stream_.get()));
  logits->resize(static_cast<size_t>(selected_rows * vocab));
  for (int r = 0; r < ranks; ++r) {
    const VocabShard shard = vocab_shard(vocab, {r, ranks});
    for (int64_t i = 0; i < selected_rows; ++i) {
      // Rank r's block holds its rows packed, [selected_rows, its count].
      const float* from = gathered.data() + r * selected_rows * stride + i * shard.count;
      std::copy(from, from + shard.count, logits->begin() + i * vocab + shard.first);
    }
  }
  return {};
}

Status CudaDecoder::apply_draft_head(const DraftHead& draft, std::span<float* const> h_rows, const float* gain,
                                     void* logits) {
  const cudaStream_t stream = stream_.get();
  const int64_t hidden = config_.hidden_size;
  const int64_t rows = static_cast<int64_t>(h_rows.size());
  DW_ASSIGN_OR_RETURN(void* gathered, scratch(19, static_cast<size_t>(rows * hidden) * sizeof(float), "exit hidden rows"));
  auto* h = static_cast<float*>(gathered);
  for (int64_t i = 0; i < rows; ++i) {
    DW_CUDA_TRY(cudaMemcpyAsync(h + i * hidden, h_rows[static_cast<size_t>(i)], static_cast<size_t>(hidden) * sizeof(float),
                                cudaMemcpyDeviceToDevice, stream));
  }
  const DeviceBuffer& lm = lm_head_.data() != nullptr ? lm_head_ : embedding_;
  return adapter_.apply(draft, h, rows, hidden, config_.vocab_size, gain, static_cast<float>(config_.rms_norm_eps),
                        lm.as<bf16>(), gemm_, static_cast<float*>(logits), stream);
}

Expected<std::vector<float>> CudaDecoder::final_norm_weight() const {
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  std::vector<float> gain(static_cast<size_t>(config_.hidden_size));
  DW_TRY(cuda::copy_to_host(gain.data(), final_norm_.data(), gain.size() * sizeof(float), stream_.get()));
  return gain;
}

cuda::AttentionGeometry CudaDecoder::attention_geometry() const {
  return cuda::AttentionGeometry{config_.num_heads,
                                 config_.num_kv_heads,
                                 config_.head_dim,
                                 options_.kv_block_size,
                                 table_stride_,
                                 1.0f / std::sqrt(static_cast<float>(config_.head_dim)),
                                 config_.sliding_window.value_or(0)};
}

Status CudaDecoder::linear(const cuda::LinearSource& source, int64_t rows, const bf16* w, const bf16* bias,
                           int64_t in, int64_t out, cuda::GemvEpilogue epilogue, bf16* y,
                           const cuda::RopeCacheWrite* rope) {
  const cudaStream_t stream = stream_.get();
  if (options_.fused_small_steps && cuda::gemv_supported(rows, in)) {
    return cuda_status(cuda::gemv(source, rows, w, bias, in, out, epilogue, y, false, stream, rope), "gemv");
  }
  const bf16* x = source.x;
  if (x == nullptr) {
    auto* normed = static_cast<bf16*>(buffers_.normed);
    DW_TRY(cuda_status(cuda::add_rms_norm_to(source.residual, source.delta, source.residual_out, source.norm_weight,
                                             normed, rows, in, source.eps, stream),
                       "add_rms_norm"));
    x = normed;
  }
  if (epilogue == cuda::GemvEpilogue::kSwiglu) {
    auto* gate_up = static_cast<bf16*>(buffers_.gate_up);
    DW_TRY(gemm_.matmul(x, w, gate_up, false, rows, in, out, stream));
    return cuda_status(cuda::swiglu(gate_up, y, rows, out / 2, stream), "swiglu");
  }
  DW_TRY(gemm_.matmul(x, w, y, false, rows, in, out, stream));
  if (bias != nullptr) DW_TRY(cuda_status(cuda::add_bias(y, bias, rows, out, stream), "add_bias"));
  if (epilogue == cuda::GemvEpilogue::kRopeWriteKv) {
    return cuda_status(cuda::rope_and_write_kv(y, out, rows, rope->heads, rope->kv_heads, rope->head_dim,
                                               rope->positions, rope->inv_freq, 0, rope->slots, rope->k_cache,
                                               rope->v_cache, stream),
                       "rope_and_write_kv");
  }
  return {};
}

Status CudaDecoder::enqueue_layers(int first, int end, int64_t rows, const LayerPlan& plan, ResidualStream& stream_state) {
  const cudaStream_t stream = stream_.get();
  const StepBuffers& b = buffers_;
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  const int64_t q_dim = config_.num_heads * head_dim;
  const int64_t kv_dim = config_.num_kv_heads * head_dim;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t ffn = config_.intermediate_size;
  auto* qkv = static_cast<bf16*>(b.qkv);
  auto* attended = static_cast<bf16*>(b.attended);
  auto* delta = static_cast<bf16*>(b.delta);
  auto* activated = static_cast<bf16*>(b.activated);
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const cuda::AttentionGeometry geometry = attention_geometry();

  // The residual stream moves between two buffers: a norm that adds a block's output reads
  // one and writes the sum to the other, so that a fused gemv's blocks all read the old sum.
  const auto normed = [&](const DeviceBuffer& weight) {
    cuda::LinearSource source;
    source.residual = stream_state.buffers[stream_state.current];
    source.delta = stream_state.pending;
    source.norm_weight = weight.as<float>();
    source.eps = eps;
    if (stream_state.pending != nullptr) {
      source.residual_out = stream_state.buffers[stream_state.current ^ 1];
      stream_state.current ^= 1;
      stream_state.pending = nullptr;
    }
    return source;
  };
  const auto given = [](const bf16* x) {
    cuda::LinearSource source;
    source.x = x;
    return source;
  };
  for (int l = first; l < end; ++l) {
    Layer& layer = layers_[static_cast<size_t>(l)];
    const cuda::RopeCacheWrite rope{plan.positions,        inv_freq_.as<float>(),   plan.slots,
                                    layer.k_cache.as<bf16>(), layer.v_cache.as<bf16>(), config_.num_heads,
                                    config_.num_kv_heads,  head_dim};
    DW_TRY(linear(normed(layer.input_norm), rows, layer.qkv_weight.as<bf16>(), layer.qkv_bias.as<bf16>(), hidden,
                  qkv_dim, cuda::GemvEpilogue::kRopeWriteKv, qkv, &rope));
    if (plan.deltas != nullptr) {
      // qTTT: adapted rows' q += rope(ΔW_Q n), n the input norm of the stream the projection read.
      DW_TRY(cuda_status(cuda::add_query_delta(stream_state.buffers[stream_state.current], layer.input_norm.as<float>(),
                                               eps, plan.deltas, plan.positions, inv_freq_.as<float>(), rows, l,
                                               hidden, config_.num_heads, head_dim, qkv, qkv_dim, stream),
                         "add_query_delta"));
    }
    DW_TRY(cuda_status(cuda::attention_paged(qkv, qkv_dim, layer.k_cache.as<bf16>(), layer.v_cache.as<bf16>(),
                                             static_cast<const int32_t*>(b.tables), plan.items, plan.item_count,
                                             plan.splits, rows, geometry, static_cast<float*>(b.partial),
                                             static_cast<float*>(b.stats), split_counters_.as<int32_t>(), attended,
                                             stream),
                       "attention_paged"));
    DW_TRY(linear(given(attended), rows, layer.o_weight.as<bf16>(), layer.o_bias.as<bf16>(), q_dim, hidden,
                  cuda::GemvEpilogue::kStore, delta));
    // Row-parallel: the ranks' partial sums of the output projection (Megatron's g).
    DW_TRY(all_reduce(delta, rows * hidden, cuda::CollectiveType::kBfloat16));
    stream_state.pending = delta;
    DW_TRY(linear(normed(layer.post_norm), rows, layer.gate_up.as<bf16>(), nullptr, hidden, 2 * ffn,
                  cuda::GemvEpilogue::kSwiglu, activated));
    DW_TRY(linear(given(activated), rows, layer.down.as<bf16>(), nullptr, ffn, hidden, cuda::GemvEpilogue::kStore,
                  delta));
    DW_TRY(all_reduce(delta, rows * hidden, cuda::CollectiveType::kBfloat16));
    stream_state.pending = delta;
  }
  return {};
}

Status CudaDecoder::enqueue_forward(const StepShape& shape) {
  const cudaStream_t stream = stream_.get();
  const StepBuffers& b = buffers_;
  const int64_t hidden = config_.hidden_size;
  const int64_t vocab = config_.vocab_size;
  auto* logits = static_cast<float*>(b.logits);
  const auto* logit_rows = static_cast<const int32_t*>(b.logit_rows);
  const float eps = static_cast<float>(config_.rms_norm_eps);

  ResidualStream residual;
  residual.buffers[0] = static_cast<float*>(b.residual[0]);
  residual.buffers[1] = static_cast<float*>(b.residual[1]);
  // Segment A: from the embedding, layers [0, a_end).
  if (shape.rows > 0) {
    // A tensor-parallel rank looks up the ids in its vocabulary rows; the ranks' rows add up.
    DW_TRY(cuda_status(cuda::embedding_lookup(embedding_.as<bf16>(), static_cast<const int32_t*>(b.ids),
                                              residual.buffers[0], shape.rows, hidden, stream, vocab_.first,
                                              vocab_.count),
                       "embedding_lookup"));
    DW_TRY(all_reduce(residual.buffers[0], shape.rows * hidden, cuda::CollectiveType::kFloat32));
    const LayerPlan plan{static_cast<const int32_t*>(b.positions), static_cast<const int32_t*>(b.slots),
                         static_cast<const cuda::AttentionWorkItem*>(b.items), shape.items, shape.splits,
                         static_cast<const cuda::QueryDeltaRow*>(b.deltas)};
    DW_TRY(enqueue_layers(0, shape.a_end, shape.rows, plan, residual));
  }
  // A draft step keeps its rows with their sequences, for the verification to resume.
  if (shape.store_hidden) {
    DW_TRY(cuda_status(cuda::store_residual_rows(residual.buffers[residual.current], residual.pending,
                                                 static_cast<float* const*>(b.stored), shape.rows, hidden, stream),
                       "store_residual_rows"));
  }
  // Segment B: the resumed rows and A's, layers [a_end, L).
  if (shape.rows_b > 0) {
    float* input = residual.buffers[residual.current ^ 1];
    DW_TRY(cuda_status(cuda::assemble_residual_rows(residual.buffers[residual.current], residual.pending,
                                                    static_cast<const cuda::ResidualRowSource*>(b.sources_b), input,
                                                    shape.rows_b, hidden, stream),
                       "assemble_residual_rows"));
    residual.current ^= 1;
    residual.pending = nullptr;
    const LayerPlan plan{static_cast<const int32_t*>(b.positions_b), static_cast<const int32_t*>(b.slots_b),
                         static_cast<const cuda::AttentionWorkItem*>(b.items_b), shape.items_b, shape.splits_b,
                         static_cast<const cuda::QueryDeltaRow*>(b.deltas_b)};
    DW_TRY(enqueue_layers(shape.a_end, static_cast<int>(config_.num_layers), shape.rows_b, plan, residual));
  }
  const int64_t rows = shape.rows_b > 0 ? shape.rows_b : shape.rows;

  // Final norm of the requested rows (the draft head's own gain in a draft step), LM head,
  // and for greedy steps the argmax (inside the LM head's gemv, whose logits are then never
  // stored).
  const DeviceBuffer& head = lm_head_.data() != nullptr ? lm_head_ : embedding_;
  const float* norm_weight = shape.draft_gain ? static_cast<const float*>(b.gain) : final_norm_.as<float>();
  auto* keys = static_cast<uint64_t*>(b.keys);
  if (options_.fused_small_steps && cuda::gemv_supported(shape.selected_rows, hidden)) {
    cuda::LinearSource source;
    source.residual = residual.buffers[residual.current];
    source.delta = residual.pending;
    source.norm_weight = norm_weight;
    source.eps = eps;
    source.row_index = logit_rows;  // nothing reads the stream after this: no residual_out
    if (shape.greedy) {
      DW_TRY(cuda_status(cuda::gemv(source, shape.selected_rows, head.as<bf16>(), nullptr, hidden, vocab,
                                    cuda::GemvEpilogue::kArgmax, keys, false, stream),
                         "gemv"));
    } else {
      DW_TRY(cuda_status(cuda::gemv(source, shape.selected_rows, head.as<bf16>(), nullptr, hidden, vocab,
                                    cuda::GemvEpilogue::kStore, logits, true, stream),
                         "gemv"));
    }
  } else {
    auto* normed_rows = static_cast<bf16*>(b.normed);
    auto* selected = static_cast<bf16*>(b.selected);
    DW_TRY(cuda_status(cuda::add_rms_norm_to(residual.buffers[residual.current], residual.pending, nullptr,
                                             norm_weight, normed_rows, rows, hidden, eps, stream),
                       "add_rms_norm"));
    DW_TRY(cuda_status(cuda::gather_rows(normed_rows, logit_rows, selected, shape.selected_rows, hidden, stream),
                       "gather_rows"));
    DW_TRY(gemm_.matmul(selected, head.as<bf16>(), logits, true, shape.selected_rows, hidden, vocab, stream));
    if (shape.greedy) {
      DW_TRY(cuda_status(cuda::argmax_rows(logits, keys, shape.selected_rows, vocab, stream), "argmax_rows"));
    }
  }
  // Tensor parallelism: each rank's picks (or logits, in rows of the vocabulary stride) to
  // every rank; the host combines them (run_batch).
  if (options_.tensor_parallel != nullptr && shape.selected_rows > 0) {
    const bool picks = shape.greedy;
    return options_.tensor_parallel->all_gather(
        picks ? static_cast<const void*>(keys) : static_cast<const void*>(logits), b.gathered,
        static_cast<size_t>(shape.selected_rows * (picks ? 1 : vocab_.stride)),
        picks ? cuda::CollectiveType::kUint64 : cuda::CollectiveType::kFloat32, stream);
  }
  return {};
}

}  // namespace draftwise
