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
  it->second.length = length;
  return {};
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
  DW_TRY(check_forward_batch(batch, context_length_, config_.vocab_size,
                             [this](SequenceId id) { return sequence_length(id); }));
  try {
    run_batch(batch, logits);
  } catch (const std::bad_alloc&) {
    // Sequence lengths change only at the end of run_batch: the caches are as before.
    int64_t tokens = 0;
    for (const ForwardRequest& request : batch) tokens += static_cast<int64_t>(request.tokens.size());
    return make_error("out of memory running {} tokens through the model (activations and key/value cache)",
                      tokens);
  }
  return {};
}

void CpuDecoder::run_batch(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  const int64_t q_dim = config_.num_heads * head_dim;
  const int64_t kv_dim = config_.num_kv_heads * head_dim;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t ffn = config_.intermediate_size;
  const int64_t half = head_dim / 2;

  // Every new token of the batch is one row; requests occupy consecutive rows.
  int64_t rows = 0;
  std::vector<int64_t> first_row;
  for (const ForwardRequest& request : batch) {
    first_row.push_back(rows);
    rows += static_cast<int64_t>(request.tokens.size());
  }
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  std::vector<float> x(static_cast<size_t>(rows * hidden));          // [rows, hidden]
  for (size_t r = 0; r < batch.size(); ++r) {
    Sequence& sequence = sequences_.at(batch[r].sequence);
    reserve(sequence, sequence.length + static_cast<int64_t>(batch[r].tokens.size()));
    for (size_t t = 0; t < batch[r].tokens.size(); ++t) {
      const int64_t row = first_row[r] + static_cast<int64_t>(t);
      positions[row] = sequence.length + static_cast<int64_t>(t);
      std::memcpy(&x[row * hidden], &embedding_[batch[r].tokens[t] * hidden], hidden * sizeof(float));
    }
  }
  std::vector<float> rope_cos(static_cast<size_t>(rows * half));    // [rows, half]
  std::vector<float> rope_sin(static_cast<size_t>(rows * half));
  cpu::rope_tables(positions.data(), rows, inv_freq_.data(), half, rope_cos.data(), rope_sin.data());

  std::vector<float> normed(static_cast<size_t>(rows * hidden));    // [rows, hidden]
  std::vector<float> qkv(static_cast<size_t>(rows * qkv_dim));      // [rows, q | k | v]
  std::vector<float> queries(static_cast<size_t>(rows * q_dim));    // [rows, heads, head_dim]
  std::vector<float> attended(static_cast<size_t>(rows * q_dim));   // [rows, heads, head_dim]
  std::vector<float> projected(static_cast<size_t>(rows * hidden)); // [rows, hidden]
  std::vector<float> gate_up(static_cast<size_t>(rows * 2 * ffn));  // [rows, gate | up]
  std::vector<float> activated(static_cast<size_t>(rows * ffn));    // [rows, ffn]
  const cpu::AttentionShape shape{config_.num_heads, config_.num_kv_heads, head_dim,
                                  1.0f / std::sqrt(static_cast<float>(head_dim)),
                                  config_.sliding_window.value_or(0)};
  const float eps = static_cast<float>(config_.rms_norm_eps);

  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    cpu::rms_norm(x.data(), layer.input_norm.data(), normed.data(), rows, hidden, eps, pool_);
    cpu::matmul(normed.data(), layer.qkv_weight.data(),
                layer.qkv_bias.empty() ? nullptr : layer.qkv_bias.data(), qkv.data(), rows, hidden,
                qkv_dim, pool_);
    cpu::apply_rope(qkv.data(), qkv_dim, rows, config_.num_heads, head_dim, rope_cos.data(),
                    rope_sin.data(), cpu::RopePairing::half_split);
    cpu::apply_rope(qkv.data() + q_dim, qkv_dim, rows, config_.num_kv_heads, head_dim,
                    rope_cos.data(), rope_sin.data(), cpu::RopePairing::half_split);
    for (int64_t row = 0; row < rows; ++row) {
      std::memcpy(&queries[row * q_dim], &qkv[row * qkv_dim], q_dim * sizeof(float));
    }
    for (size_t r = 0; r < batch.size(); ++r) {
      Sequence& sequence = sequences_.at(batch[r].sequence);
      const int64_t new_tokens = static_cast<int64_t>(batch[r].tokens.size());
      float* keys = sequence.keys[l].data();
      float* values = sequence.values[l].data();
      for (int64_t t = 0; t < new_tokens; ++t) {
        const float* source = &qkv[(first_row[r] + t) * qkv_dim + q_dim];
        std::memcpy(keys + (sequence.length + t) * kv_dim, source, kv_dim * sizeof(float));
        std::memcpy(values + (sequence.length + t) * kv_dim, source + kv_dim, kv_dim * sizeof(float));
      }
      cpu::attention(&queries[first_row[r] * q_dim], keys, values, &attended[first_row[r] * q_dim],
                     new_tokens, sequence.length, shape, pool_);
    }
    cpu::matmul(attended.data(), layer.o_weight.data(),
                layer.o_bias.empty() ? nullptr : layer.o_bias.data(), projected.data(), rows, q_dim,
                hidden, pool_);
    for (int64_t i = 0; i < rows * hidden; ++i) x[i] += projected[i];

    cpu::rms_norm(x.data(), layer.post_norm.data(), normed.data(), rows, hidden, eps, pool_);
    cpu::matmul(normed.data(), layer.gate_up.data(), nullptr, gate_up.data(), rows, hidden, 2 * ffn,
                pool_);
    for (int64_t row = 0; row < rows; ++row) {
      cpu::swiglu(&gate_up[row * 2 * ffn], &gate_up[row * 2 * ffn + ffn], &activated[row * ffn], ffn);
    }
    cpu::matmul(activated.data(), layer.down.data(), nullptr, projected.data(), rows, ffn, hidden,
                pool_);
    for (int64_t i = 0; i < rows * hidden; ++i) x[i] += projected[i];
  }

  for (const ForwardRequest& request : batch) {
    sequences_.at(request.sequence).length += static_cast<int64_t>(request.tokens.size());
  }

  // Final norm and LM head for the rows asked for only.
  std::vector<float> selected;  // [logit rows, hidden]
  for (size_t r = 0; r < batch.size(); ++r) {
    for (const int32_t row : batch[r].logit_rows) {
      const float* source = &x[(first_row[r] + row) * hidden];
      selected.insert(selected.end(), source, source + hidden);
    }
  }
  const int64_t logit_rows = static_cast<int64_t>(selected.size()) / hidden;
  cpu::rms_norm(selected.data(), final_norm_.data(), selected.data(), logit_rows, hidden, eps, pool_);
  logits.resize(static_cast<size_t>(logit_rows * config_.vocab_size));
  const std::vector<float>& head = lm_head_.empty() ? embedding_ : lm_head_;
  cpu::matmul(selected.data(), head.data(), nullptr, logits.data(), logit_rows, hidden,
              config_.vocab_size, pool_);
}

}  // namespace draftwise
