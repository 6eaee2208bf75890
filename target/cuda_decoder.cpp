#include "target/cuda_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_dequantize.h"
#include "kernels/cuda/ops.h"
#include "kernels/half.h"
#include "target/rope_frequencies.h"

namespace draftwise {

namespace {

using cuda::bf16;
using cuda::DeviceBuffer;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr size_t kMaxCachedGraphs = 64;

// Enqueues a copy of a step's host-side plan without waiting for it. CUDA stages pageable
// memory before returning, and the host vectors outlive the step anyway, which ends with a
// synchronising copy of the logits.
template <typename T>
Status enqueue_upload(void* device, const std::vector<T>& host, cudaStream_t stream) {
  if (host.empty()) return {};
  return cuda_status(cudaMemcpyAsync(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream),
                     "cudaMemcpyAsync");
}

}  // namespace

CudaDecoder::CudaDecoder(const ModelConfig& config, const CudaDecoderOptions& options)
    : config_(config),
      options_(options),
      context_length_(options.context_length > 0 ? options.context_length
                                                 : config.max_position_embeddings) {}

std::string CudaDecoder::device_name() const { return fmt::format("cuda:{}", options_.device); }

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
  DW_ASSIGN_OR_RETURN(decoder->stream_, cuda::Stream::create());
  DW_ASSIGN_OR_RETURN(decoder->gemm_, cuda::Gemm::create());
  DW_TRY(decoder->load_weights(host_f32, write_bf16));
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

Status CudaDecoder::truncate_sequence(SequenceId sequence, int64_t length) {
  const auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return make_error("unknown sequence {}", sequence);
  Sequence& state = it->second;
  if (length < 0 || length > state.length) {
    return make_error("cannot truncate sequence {} of length {} to {}", sequence, state.length, length);
  }
  state.length = length;
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
  // The calling thread may have used another device since: scratch and launches go here.
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  DW_TRY(check_forward_batch(batch, context_length_, config_.vocab_size,
                             [this](SequenceId id) { return sequence_length(id); }));
  const int64_t block_size = options_.kv_block_size;
  int64_t needed = 0;
  for (const ForwardRequest& request : batch) {
    const Sequence& state = sequences_.at(request.sequence);
    const int64_t blocks = (state.length + static_cast<int64_t>(request.tokens.size()) + block_size - 1) / block_size;
    needed += std::max<int64_t>(0, blocks - static_cast<int64_t>(state.blocks.size()));
  }
  if (needed > static_cast<int64_t>(free_blocks_.size())) {
    return make_error("the key/value cache is full: this batch needs {} more blocks of {} positions, {} of {} are free",
                      needed, block_size, free_blocks_.size(), num_blocks_);
  }
  std::vector<size_t> blocks_before;
  for (const ForwardRequest& request : batch) {
    Sequence& state = sequences_.at(request.sequence);
    blocks_before.push_back(state.blocks.size());
    const int64_t blocks = (state.length + static_cast<int64_t>(request.tokens.size()) + block_size - 1) / block_size;
    while (static_cast<int64_t>(state.blocks.size()) < blocks) {
      state.blocks.push_back(free_blocks_.back());
      free_blocks_.pop_back();
    }
  }
  if (Status ran = run_batch(batch, logits); !ran.ok()) {
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
  for (const ForwardRequest& request : batch) {
    sequences_.at(request.sequence).length += static_cast<int64_t>(request.tokens.size());
  }
  return {};
}

Status CudaDecoder::run_batch(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  const cudaStream_t stream = stream_.get();
  const int64_t hidden = config_.hidden_size;
  const int64_t q_dim = config_.num_heads * config_.head_dim;
  const int64_t qkv_dim = q_dim + 2 * config_.num_kv_heads * config_.head_dim;
  const int64_t ffn = config_.intermediate_size;
  const int64_t vocab = config_.vocab_size;
  const int64_t block_size = options_.kv_block_size;

  // Host-side plan: token rows, positions, cache slots, block tables (a fixed row length,
  // so that a captured graph stays valid as sequences grow), attention work.
  std::vector<int32_t> ids, positions, slots, new_tokens, start_positions, logit_rows;
  std::vector<int32_t> tables(batch.size() * static_cast<size_t>(table_stride_), 0);
  int64_t longest = 0;
  int32_t max_new = 0;
  for (size_t r = 0; r < batch.size(); ++r) {
    const Sequence& state = sequences_.at(batch[r].sequence);
    std::copy(state.blocks.begin(), state.blocks.end(), tables.begin() + static_cast<int64_t>(r) * table_stride_);
    const int32_t first_row = static_cast<int32_t>(ids.size());
    for (size_t t = 0; t < batch[r].tokens.size(); ++t) {
      const int64_t position = state.length + static_cast<int64_t>(t);
      ids.push_back(batch[r].tokens[t]);
      positions.push_back(static_cast<int32_t>(position));
      slots.push_back(static_cast<int32_t>(state.blocks[static_cast<size_t>(position / block_size)] * block_size +
                                           position % block_size));
    }
    for (const int32_t row : batch[r].logit_rows) logit_rows.push_back(first_row + row);
    new_tokens.push_back(static_cast<int32_t>(batch[r].tokens.size()));
    start_positions.push_back(static_cast<int32_t>(state.length));
    max_new = std::max(max_new, new_tokens.back());
    longest = std::max<int64_t>(longest, state.length + new_tokens.back());
  }
  StepShape shape;
  shape.rows = static_cast<int64_t>(ids.size());
  shape.selected_rows = static_cast<int64_t>(logit_rows.size());
  // Split long contexts when few queries per sequence leave the GPU idle (flash-decoding).
  shape.splits = max_new <= cuda::kAttentionQueryTile ? static_cast<int>(std::clamp<int64_t>(longest / 512, 1, 16)) : 1;
  const std::vector<cuda::AttentionWorkItem> items = cuda::plan_attention(new_tokens, start_positions, shape.splits);
  shape.items = static_cast<int64_t>(items.size());
  shape.sequences = static_cast<int64_t>(batch.size());

  const int64_t rows = shape.rows;
  const auto bytes = [](int64_t count, size_t size) { return static_cast<size_t>(std::max<int64_t>(count, 1)) * size; };
  StepBuffers& b = buffers_;
  DW_ASSIGN_OR_RETURN(b.ids, scratch(0, bytes(rows, 4), "token ids"));
  DW_ASSIGN_OR_RETURN(b.positions, scratch(1, bytes(rows, 4), "positions"));
  DW_ASSIGN_OR_RETURN(b.slots, scratch(2, bytes(rows, 4), "cache slots"));
  DW_ASSIGN_OR_RETURN(b.tables, scratch(3, bytes(static_cast<int64_t>(tables.size()), 4), "block tables"));
  DW_ASSIGN_OR_RETURN(b.items, scratch(4, bytes(shape.items, sizeof(cuda::AttentionWorkItem)), "attention plan"));
  DW_ASSIGN_OR_RETURN(b.logit_rows, scratch(5, bytes(shape.selected_rows, 4), "logit rows"));
  DW_ASSIGN_OR_RETURN(b.residual, scratch(6, bytes(rows * hidden, 4), "the residual stream"));
  DW_ASSIGN_OR_RETURN(b.normed, scratch(7, bytes(rows * hidden, 2), "normed activations"));
  DW_ASSIGN_OR_RETURN(b.qkv, scratch(8, bytes(rows * qkv_dim, 2), "q/k/v"));
  DW_ASSIGN_OR_RETURN(b.attended, scratch(9, bytes(rows * q_dim, 2), "attention output"));
  DW_ASSIGN_OR_RETURN(b.delta, scratch(10, bytes(rows * hidden, 2), "layer output"));
  DW_ASSIGN_OR_RETURN(b.gate_up, scratch(11, bytes(rows * 2 * ffn, 2), "gate/up"));
  DW_ASSIGN_OR_RETURN(b.activated, scratch(12, bytes(rows * ffn, 2), "MLP activations"));
  DW_ASSIGN_OR_RETURN(b.partial, scratch(13, bytes(shape.splits * rows * q_dim, 4), "attention partials"));
  DW_ASSIGN_OR_RETURN(b.stats, scratch(14, bytes(shape.splits * rows * config_.num_heads * 2, 4), "attention statistics"));
  DW_ASSIGN_OR_RETURN(b.selected, scratch(15, bytes(shape.selected_rows * hidden, 2), "selected rows"));
  DW_ASSIGN_OR_RETURN(b.logits, scratch(16, bytes(shape.selected_rows * vocab, 4), "logits"));

  DW_TRY(enqueue_upload(b.ids, ids, stream));
  DW_TRY(enqueue_upload(b.positions, positions, stream));
  DW_TRY(enqueue_upload(b.slots, slots, stream));
  DW_TRY(enqueue_upload(b.tables, tables, stream));
  DW_TRY(enqueue_upload(b.items, items, stream));
  DW_TRY(enqueue_upload(b.logit_rows, logit_rows, stream));

  // Decode and verification steps (few tokens per sequence) run as a CUDA graph, captured
  // once per shape and replayed while the shape repeats; prefill runs eagerly.
  if (options_.cuda_graphs && max_new <= cuda::kAttentionQueryTile) {
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
  logits.resize(static_cast<size_t>(shape.selected_rows * vocab));
  DW_TRY(cuda::copy_to_host(logits.data(), b.logits, logits.size() * sizeof(float), stream));
  return {};
}

Status CudaDecoder::enqueue_forward(const StepShape& shape) {
  const cudaStream_t stream = stream_.get();
  const StepBuffers& b = buffers_;
  const int64_t rows = shape.rows;
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  const int64_t q_dim = config_.num_heads * head_dim;
  const int64_t kv_dim = config_.num_kv_heads * head_dim;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t ffn = config_.intermediate_size;
  auto* residual = static_cast<float*>(b.residual);
  auto* normed = static_cast<bf16*>(b.normed);
  auto* qkv = static_cast<bf16*>(b.qkv);
  auto* attended = static_cast<bf16*>(b.attended);
  auto* delta = static_cast<bf16*>(b.delta);
  auto* gate_up = static_cast<bf16*>(b.gate_up);
  auto* activated = static_cast<bf16*>(b.activated);
  const auto* positions = static_cast<const int32_t*>(b.positions);
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const cuda::AttentionGeometry geometry{config_.num_heads, config_.num_kv_heads, head_dim, options_.kv_block_size,
                                         table_stride_, 1.0f / std::sqrt(static_cast<float>(head_dim)),
                                         config_.sliding_window.value_or(0)};

  DW_TRY(cuda_status(cuda::embedding_lookup(embedding_.as<bf16>(), static_cast<const int32_t*>(b.ids), residual,
                                            rows, hidden, stream),
                     "embedding_lookup"));
  const bf16* pending_delta = nullptr;  // the previous block's output, added by the next norm
  for (Layer& layer : layers_) {
    DW_TRY(cuda_status(cuda::add_rms_norm(residual, pending_delta, layer.input_norm.as<float>(), normed, rows, hidden,
                                          eps, stream),
                       "add_rms_norm"));
    DW_TRY(gemm_.matmul(normed, layer.qkv_weight.as<bf16>(), qkv, false, rows, hidden, qkv_dim, stream));
    if (layer.qkv_bias.data() != nullptr) {
      DW_TRY(cuda_status(cuda::add_bias(qkv, layer.qkv_bias.as<bf16>(), rows, qkv_dim, stream), "add_bias"));
    }
    DW_TRY(cuda_status(cuda::apply_rope(qkv, qkv_dim, rows, config_.num_heads, head_dim, positions,
                                        inv_freq_.as<float>(), 0, stream),
                       "apply_rope"));
    DW_TRY(cuda_status(cuda::apply_rope(qkv + q_dim, qkv_dim, rows, config_.num_kv_heads, head_dim, positions,
                                        inv_freq_.as<float>(), 0, stream),
                       "apply_rope"));
    DW_TRY(cuda_status(cuda::write_kv_cache(qkv, qkv_dim, q_dim, q_dim + kv_dim, static_cast<const int32_t*>(b.slots),
                                            rows, kv_dim, layer.k_cache.as<bf16>(), layer.v_cache.as<bf16>(), stream),
                       "write_kv_cache"));
    DW_TRY(cuda_status(cuda::attention_paged(qkv, qkv_dim, layer.k_cache.as<bf16>(), layer.v_cache.as<bf16>(),
                                             static_cast<const int32_t*>(b.tables),
                                             static_cast<const cuda::AttentionWorkItem*>(b.items), shape.items,
                                             shape.splits, rows, geometry, static_cast<float*>(b.partial),
                                             static_cast<float*>(b.stats), attended, stream),
                       "attention_paged"));
    DW_TRY(gemm_.matmul(attended, layer.o_weight.as<bf16>(), delta, false, rows, q_dim, hidden, stream));
    if (layer.o_bias.data() != nullptr) {
      DW_TRY(cuda_status(cuda::add_bias(delta, layer.o_bias.as<bf16>(), rows, hidden, stream), "add_bias"));
    }
    DW_TRY(cuda_status(cuda::add_rms_norm(residual, delta, layer.post_norm.as<float>(), normed, rows, hidden, eps,
                                          stream),
                       "add_rms_norm"));
    DW_TRY(gemm_.matmul(normed, layer.gate_up.as<bf16>(), gate_up, false, rows, hidden, 2 * ffn, stream));
    DW_TRY(cuda_status(cuda::swiglu(gate_up, activated, rows, ffn, stream), "swiglu"));
    DW_TRY(gemm_.matmul(activated, layer.down.as<bf16>(), delta, false, rows, ffn, hidden, stream));
    pending_delta = delta;
  }
  DW_TRY(cuda_status(cuda::add_rms_norm(residual, pending_delta, final_norm_.as<float>(), normed, rows, hidden, eps,
                                        stream),
                     "add_rms_norm"));
  auto* selected = static_cast<bf16*>(b.selected);
  DW_TRY(cuda_status(cuda::gather_rows(normed, static_cast<const int32_t*>(b.logit_rows), selected,
                                       shape.selected_rows, hidden, stream),
                     "gather_rows"));
  const DeviceBuffer& head = lm_head_.data() != nullptr ? lm_head_ : embedding_;
  return gemm_.matmul(selected, head.as<bf16>(), b.logits, true, shape.selected_rows, hidden, config_.vocab_size,
                      stream);
}

}  // namespace draftwise
