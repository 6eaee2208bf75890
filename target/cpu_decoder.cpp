#include "target/cpu_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/host_memory.h"
#include "target/rope_frequencies.h"

namespace draftwise {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Appends `part` to `stacked` and frees it.
void stack(std::vector<float>& stacked, std::vector<float>& part) {
  stacked.insert(stacked.end(), part.begin(), part.end());
  std::vector<float>().swap(part);
}

}  // namespace

CpuDecoder::CpuDecoder(const ModelConfig& config, const CpuDecoderOptions& options)
    : config_(config),
      context_length_(options.context_length > 0 ? options.context_length
                                                 : config.max_position_embeddings),
      max_cache_blocks_(std::max<int64_t>(0, options.max_cache_blocks)),
      pool_(options.num_threads),
      inv_freq_(rope_inverse_frequencies(config)) {}

Expected<std::unique_ptr<CpuDecoder>> CpuDecoder::create(const ModelConfig& config,
                                                         const WeightLoader& loader,
                                                         const CpuDecoderOptions& options) {
  const double weight_bytes = decoder_parameter_count(config) * sizeof(float);
  if (const std::optional<int64_t> available = available_host_memory_bytes()) {
    // Leave a tenth for activations, caches and the rest of the process.
    if (weight_bytes > 0.9 * static_cast<double>(*available)) {
      return make_error(
          "the model's fp32 weights need {:.2f} GiB but only {:.2f} GiB of memory is "
          "available; the CPU reference cannot hold this model",
          weight_bytes / kGiB, static_cast<double>(*available) / kGiB);
    }
  }
  if (options.context_length < 0) {
    return make_error("context length must be positive, got {}", options.context_length);
  }
  std::unique_ptr<CpuDecoder> decoder(new CpuDecoder(config, options));
  DW_TRY(decoder->load_weights(loader));
  return decoder;
}

Expected<std::unique_ptr<CpuDecoder>> CpuDecoder::load(const Checkpoint& checkpoint,
                                                       const CpuDecoderOptions& options) {
  DW_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(checkpoint));
  DW_ASSIGN_OR_RETURN(ModelWeights weights, ModelWeights::bind(checkpoint, config));
  return create(config, checkpoint_weight_loader(weights), options);
}

Status CpuDecoder::load_weights(const WeightLoader& loader) {
  layers_.resize(static_cast<size_t>(config_.num_layers));
  for (const DecoderTensorSpec& spec : decoder_tensor_specs(config_)) {
    DW_ASSIGN_OR_RETURN(std::vector<float> values, loader(spec));
    int64_t count = 1;
    for (const int64_t extent : spec.shape) count *= extent;
    if (static_cast<int64_t>(values.size()) != count) {
      return make_error("tensor '{}': loaded {} values, expected {}", spec.name, values.size(), count);
    }
    if (spec.name == "model.embed_tokens.weight") {
      embedding_ = std::move(values);
    } else if (spec.name == "model.norm.weight") {
      final_norm_ = std::move(values);
    } else if (spec.name == "lm_head.weight") {
      lm_head_ = std::move(values);
    } else {
      // model.layers.{i}.{part}
      const std::string& part = spec.part;
      Layer& layer = layers_[static_cast<size_t>(spec.layer)];
      if (part == "input_layernorm.weight") {
        layer.input_norm = std::move(values);
      } else if (part == "post_attention_layernorm.weight") {
        layer.post_norm = std::move(values);
      } else if (part.starts_with("self_attn.q_proj.") || part.starts_with("self_attn.k_proj.") ||
                 part.starts_with("self_attn.v_proj.")) {
        // Specs come in q, k, v order, so stacking in arrival order gives [q; k; v].
        stack(part.ends_with(".bias") ? layer.qkv_bias : layer.qkv_weight, values);
      } else if (part == "self_attn.o_proj.weight") {
        layer.o_weight = std::move(values);
      } else if (part == "self_attn.o_proj.bias") {
        layer.o_bias = std::move(values);
      } else if (part == "mlp.gate_proj.weight" || part == "mlp.up_proj.weight") {
        stack(layer.gate_up, values);
      } else if (part == "mlp.down_proj.weight") {
        layer.down = std::move(values);
      } else {
        return make_error("tensor '{}' has no place in the decoder", spec.name);
      }
    }
  }
  return {};
}

SequenceId CpuDecoder::create_sequence() {
  const SequenceId id = next_sequence_++;
  Sequence& sequence = sequences_[id];
  sequence.keys.resize(static_cast<size_t>(config_.num_layers));
  sequence.values.resize(static_cast<size_t>(config_.num_layers));
  return id;
}

void CpuDecoder::release_sequence(SequenceId sequence) { sequences_.erase(sequence); }

int64_t CpuDecoder::sequence_length(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : it->second.length;
}

Status CpuDecoder::truncate_sequence(SequenceId sequence, int64_t length) {
  const auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return make_error("unknown sequence {}", sequence);
  if (length < 0 || length > it->second.length) {
    return make_error("cannot truncate sequence {} of length {} to {}", sequence,
                      it->second.length, length);
  }
  Sequence& state = it->second;
  state.length = length;
  state.pending.clear();
  state.pending_hidden.clear();
  state.pending_exit_layer = 0;
  return {};
}

int64_t CpuDecoder::pending_tokens(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : static_cast<int64_t>(it->second.pending.size());
}

CacheUsage CpuDecoder::cache_usage() const {
  CacheUsage usage;
  usage.block_size = kCacheBlock;
  usage.total_blocks = max_cache_blocks_;
  usage.used_blocks = blocks_after({}, false);
  return usage;
}

int64_t CpuDecoder::blocks_after(std::span<const ForwardRequest> batch, bool draft) const {
  std::unordered_map<SequenceId, int64_t> added;
  for (const ForwardRequest& request : batch) added[request.sequence] += static_cast<int64_t>(request.tokens.size());
  int64_t blocks = 0;
  for (const auto& [id, sequence] : sequences_) {
    const int64_t pending = static_cast<int64_t>(sequence.pending.size());
    const auto it = added.find(id);
    // A full pass begins with the pending tokens (they become the sequence's); a draft pass
    // appends to them.
    const int64_t positions = it == added.end() ? sequence.length + pending
                              : draft           ? sequence.length + pending + it->second
                                                : sequence.length + it->second;
    blocks += (positions + kCacheBlock - 1) / kCacheBlock;
  }
  return blocks;
}

void CpuDecoder::reserve(Sequence& sequence, int64_t length) {
  if (length <= sequence.capacity) return;
  const int64_t capacity = std::min(context_length_, std::max(length, 2 * sequence.capacity));
  const size_t size = static_cast<size_t>(capacity * config_.num_kv_heads * config_.head_dim);
  for (size_t layer = 0; layer < sequence.keys.size(); ++layer) {
    sequence.keys[layer].resize(size);
    sequence.values[layer].resize(size);
  }
  sequence.capacity = capacity;
}

Status CpuDecoder::forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  return checked_pass(batch, nullptr, logits);
}

Status CpuDecoder::forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                                 std::vector<float>& logits) {
  return checked_pass(batch, &head, logits);
}

Status CpuDecoder::checked_pass(std::span<const ForwardRequest> batch, const DraftHead* draft,
                                std::vector<float>& logits) {
  DW_TRY(check_early_exit_batch(
      batch, draft, config_, context_length_, [this](SequenceId id) { return sequence_length(id); },
      [this](SequenceId id) {
        const Sequence& sequence = sequences_.at(id);
        return PendingTokens{sequence.pending, sequence.pending_exit_layer};
      }));
  if (max_cache_blocks_ > 0) {
    const int64_t needed = blocks_after(batch, draft != nullptr && draft->exit_layer < config_.num_layers);
    if (needed > max_cache_blocks_) {
      return make_error("the key/value cache is full: the batch needs {} blocks of {} positions, the pool holds {}",
                        needed, kCacheBlock, max_cache_blocks_);
    }
  }
  try {
    run_pass(batch, draft, logits);
  } catch (const std::bad_alloc&) {
    // Sequence lengths change only at the end of run_pass: the caches are as before.
    int64_t tokens = 0;
    for (const ForwardRequest& request : batch) tokens += static_cast<int64_t>(request.tokens.size());
    return make_error("out of memory running {} tokens through the model (activations and key/value cache)",
                      tokens);
  }
  return {};
}

void CpuDecoder::run_layer(size_t l, std::span<const Segment> segments, float* x, int64_t rows,
                           const float* rope_cos, const float* rope_sin, LayerScratch& scratch) {
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  const int64_t q_dim = config_.num_heads * head_dim;
  const int64_t kv_dim = config_.num_kv_heads * head_dim;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t ffn = config_.intermediate_size;
  std::vector<float>& normed = scratch.normed;        // [rows, hidden]
  std::vector<float>& qkv = scratch.qkv;              // [rows, q | k | v]
  std::vector<float>& queries = scratch.queries;      // [rows, heads, head_dim]
  std::vector<float>& attended = scratch.attended;    // [rows, heads, head_dim]
  std::vector<float>& projected = scratch.projected;  // [rows, hidden]
  std::vector<float>& gate_up = scratch.gate_up;      // [rows, gate | up]
  std::vector<float>& activated = scratch.activated;  // [rows, ffn]
  normed.resize(static_cast<size_t>(rows * hidden));
  qkv.resize(static_cast<size_t>(rows * qkv_dim));
  queries.resize(static_cast<size_t>(rows * q_dim));
  attended.resize(static_cast<size_t>(rows * q_dim));
  projected.resize(static_cast<size_t>(rows * hidden));
  gate_up.resize(static_cast<size_t>(rows * 2 * ffn));
  activated.resize(static_cast<size_t>(rows * ffn));
  const cpu::AttentionShape shape{config_.num_heads, config_.num_kv_heads, head_dim,
                                  1.0f / std::sqrt(static_cast<float>(head_dim)),
                                  config_.sliding_window.value_or(0)};
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const Layer& layer = layers_[l];

  cpu::rms_norm(x, layer.input_norm.data(), normed.data(), rows, hidden, eps, pool_);
  cpu::matmul(normed.data(), layer.qkv_weight.data(), layer.qkv_bias.empty() ? nullptr : layer.qkv_bias.data(),
              qkv.data(), rows, hidden, qkv_dim, pool_);
  for (const Segment& segment : segments) {
    if (segment.sequence->adaptation != nullptr && segment.count > 0) {
      add_query_delta(*segment.sequence->adaptation, l, &normed[segment.row * hidden], segment.count,
                      &qkv[segment.row * qkv_dim], qkv_dim);
    }
  }
  cpu::apply_rope(qkv.data(), qkv_dim, rows, config_.num_heads, head_dim, rope_cos, rope_sin,
                  cpu::RopePairing::half_split);
  cpu::apply_rope(qkv.data() + q_dim, qkv_dim, rows, config_.num_kv_heads, head_dim, rope_cos, rope_sin,
                  cpu::RopePairing::half_split);
  for (int64_t row = 0; row < rows; ++row) {
    std::memcpy(&queries[row * q_dim], &qkv[row * qkv_dim], q_dim * sizeof(float));
  }
  for (const Segment& segment : segments) {
    float* keys = segment.sequence->keys[l].data();
    float* values = segment.sequence->values[l].data();
    for (int64_t t = 0; t < segment.count; ++t) {
      const float* source = &qkv[(segment.row + t) * qkv_dim + q_dim];
      std::memcpy(keys + (segment.position + t) * kv_dim, source, kv_dim * sizeof(float));
      std::memcpy(values + (segment.position + t) * kv_dim, source + kv_dim, kv_dim * sizeof(float));
    }
    cpu::attention(&queries[segment.row * q_dim], keys, values, &attended[segment.row * q_dim], segment.count,
                   segment.position, shape, pool_);
  }
  cpu::matmul(attended.data(), layer.o_weight.data(), layer.o_bias.empty() ? nullptr : layer.o_bias.data(),
              projected.data(), rows, q_dim, hidden, pool_);
  for (int64_t i = 0; i < rows * hidden; ++i) x[i] += projected[i];

  cpu::rms_norm(x, layer.post_norm.data(), normed.data(), rows, hidden, eps, pool_);
  cpu::matmul(normed.data(), layer.gate_up.data(), nullptr, gate_up.data(), rows, hidden, 2 * ffn, pool_);
  for (int64_t row = 0; row < rows; ++row) {
    cpu::swiglu(&gate_up[row * 2 * ffn], &gate_up[row * 2 * ffn + ffn], &activated[row * ffn], ffn);
  }
  cpu::matmul(activated.data(), layer.down.data(), nullptr, projected.data(), rows, ffn, hidden, pool_);
  for (int64_t i = 0; i < rows * hidden; ++i) x[i] += projected[i];
}

void CpuDecoder::run_pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits) {
  const int64_t hidden = config_.hidden_size;
  const int64_t half = config_.head_dim / 2;
  const size_t end_layer = draft != nullptr ? static_cast<size_t>(draft->exit_layer) : layers_.size();
  // A draft pass leaves its tokens pending, unless its head is at full depth.
  const bool pending_pass = end_layer < layers_.size();

  // Every new token of the batch is one row; requests occupy consecutive rows. A full pass
  // resumes a sequence's pending tokens (its first `resumed` tokens) at their exit layer;
  // a draft pass appends after them.
  struct Part {
    Sequence* sequence;
    int64_t position;  // of the request's first token
    int64_t count;
    int64_t resumed;
    size_t resume_layer;
    int64_t first_row;
  };
  std::vector<Part> parts;
  int64_t rows = 0;
  for (const ForwardRequest& request : batch) {
    Sequence& sequence = sequences_.at(request.sequence);
    const int64_t pending = static_cast<int64_t>(sequence.pending.size());
    Part part{&sequence,
              sequence.length + (pending_pass ? pending : 0),
              static_cast<int64_t>(request.tokens.size()),
              pending_pass ? 0 : pending,
              static_cast<size_t>(sequence.pending_exit_layer),
              rows};
    reserve(sequence, part.position + part.count);
    parts.push_back(part);
    rows += part.count;
  }
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  std::vector<float> x(static_cast<size_t>(rows * hidden));  // [rows, hidden]: the residual stream
  for (size_t r = 0; r < batch.size(); ++r) {
    const Part& part = parts[r];
    for (int64_t t = 0; t < part.count; ++t) {
      const int64_t row = part.first_row + t;
      positions[row] = part.position + t;
      const float* source = t < part.resumed ? &part.sequence->pending_hidden[t * hidden]
                                             : &embedding_[batch[r].tokens[t] * hidden];
      std::memcpy(&x[row * hidden], source, hidden * sizeof(float));
    }
  }
  std::vector<float> rope_cos(static_cast<size_t>(rows * half));  // [rows, half]
  std::vector<float> rope_sin(static_cast<size_t>(rows * half));
  cpu::rope_tables(positions.data(), rows, inv_freq_.data(), half, rope_cos.data(), rope_sin.data());

  // Layers before a resumed token's exit layer run only the request's other tokens: their
  // rows are gathered, run and put back (matmul rows are independent, so nothing changes).
  std::vector<Segment> segments;
  std::vector<int64_t> active;
  LayerScratch scratch;
  std::vector<float> gathered, gathered_cos, gathered_sin;
  for (size_t l = 0; l < end_layer; ++l) {
    segments.clear();
    active.clear();
    for (const Part& part : parts) {
      const int64_t skip = l < part.resume_layer ? part.resumed : 0;
      segments.push_back({part.sequence, part.position + skip, part.count - skip, static_cast<int64_t>(active.size())});
      for (int64_t t = skip; t < part.count; ++t) active.push_back(part.first_row + t);
    }
    const int64_t count = static_cast<int64_t>(active.size());
    if (count == 0) continue;  // every token resumes past this layer
    if (count == rows) {
      run_layer(l, segments, x.data(), rows, rope_cos.data(), rope_sin.data(), scratch);
      continue;
    }
    gathered.resize(static_cast<size_t>(count * hidden));
    gathered_cos.resize(static_cast<size_t>(count * half));
    gathered_sin.resize(static_cast<size_t>(count * half));
    for (int64_t i = 0; i < count; ++i) {
      std::memcpy(&gathered[i * hidden], &x[active[i] * hidden], hidden * sizeof(float));
      std::memcpy(&gathered_cos[i * half], &rope_cos[active[i] * half], half * sizeof(float));
      std::memcpy(&gathered_sin[i * half], &rope_sin[active[i] * half], half * sizeof(float));
    }
    run_layer(l, segments, gathered.data(), count, gathered_cos.data(), gathered_sin.data(), scratch);
    for (int64_t i = 0; i < count; ++i) {
      std::memcpy(&x[active[i] * hidden], &gathered[i * hidden], hidden * sizeof(float));
    }
  }

  // Final norm (the draft head's own gain for a draft pass) and LM head for the rows asked
  // for only.
  std::vector<float> selected;  // [logit rows, hidden]
  for (size_t r = 0; r < batch.size(); ++r) {
    for (const int32_t row : batch[r].logit_rows) {
      const float* source = &x[(parts[r].first_row + row) * hidden];
      selected.insert(selected.end(), source, source + hidden);
    }
  }
  const int64_t logit_rows = static_cast<int64_t>(selected.size()) / hidden;
  const int64_t vocab = config_.vocab_size;
  std::vector<float> exit_hidden;
  if (draft != nullptr && draft->exit_hidden != nullptr) exit_hidden = selected;
  if (const LowRankAdapter* adapter = draft != nullptr ? draft->adapter : nullptr;
      adapter != nullptr && !adapter->lens.empty()) {
    // The lens: h + M h.
    std::vector<float> mapped(selected.size());
    cpu::matmul(selected.data(), adapter->lens.data(), nullptr, mapped.data(), logit_rows, hidden, hidden, pool_);
    for (size_t i = 0; i < selected.size(); ++i) selected[i] += mapped[i];
  }
  const float* gain = draft != nullptr && !draft->norm_gain.empty() ? draft->norm_gain.data() : final_norm_.data();
  cpu::rms_norm(selected.data(), gain, selected.data(), logit_rows, hidden, static_cast<float>(config_.rms_norm_eps),
                pool_);
  std::vector<float> out(static_cast<size_t>(logit_rows * vocab));
  cpu::matmul(selected.data(), lm_head().data(), nullptr, out.data(), logit_rows, hidden, vocab, pool_);
  if (const LowRankAdapter* adapter = draft != nullptr ? draft->adapter : nullptr; adapter != nullptr) {
    // logits += γ · B (A n), row by row: u = A n, then B u.
    std::vector<float> down(static_cast<size_t>(logit_rows * adapter->rank));  // [rows, rank]
    std::vector<float> up(out.size());                                          // [rows, vocab]
    cpu::matmul(selected.data(), adapter->a.data(), nullptr, down.data(), logit_rows, hidden, adapter->rank, pool_);
    cpu::matmul(down.data(), adapter->b.data(), nullptr, up.data(), logit_rows, adapter->rank, vocab, pool_);
    for (size_t i = 0; i < out.size(); ++i) out[i] += adapter->scale * up[i];
  }

  // Nothing can throw past this point: the sequences change.
  for (size_t r = 0; r < batch.size(); ++r) {
    Sequence& sequence = *parts[r].sequence;
    if (pending_pass) {
      sequence.pending.reserve(sequence.pending.size() + batch[r].tokens.size());
      sequence.pending_hidden.reserve(sequence.pending_hidden.size() + batch[r].tokens.size() * hidden);
    }
  }
  for (size_t r = 0; r < batch.size(); ++r) {
    Sequence& sequence = *parts[r].sequence;
    if (pending_pass) {
      sequence.pending_exit_layer = draft->exit_layer;
      sequence.pending.insert(sequence.pending.end(), batch[r].tokens.begin(), batch[r].tokens.end());
      const float* first = &x[parts[r].first_row * hidden];
      sequence.pending_hidden.insert(sequence.pending_hidden.end(), first, first + parts[r].count * hidden);
    } else {
      sequence.length += parts[r].count;
      sequence.pending.clear();
      sequence.pending_hidden.clear();
      sequence.pending_exit_layer = 0;
    }
  }
  logits.swap(out);
  if (draft != nullptr && draft->exit_hidden != nullptr) draft->exit_hidden->swap(exit_hidden);
}

}  // namespace draftwise
