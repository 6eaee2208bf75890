// The CPU reference decoder: fp32 weights (dequantized at load), fp32 activations, one
// contiguous key/value cache per sequence. Every faster path is checked against it.
//
// Decoder-only transformer as in transformers' LlamaForCausalLM / Qwen2ForCausalLM /
// MistralForCausalLM: embedding, then per layer x += o(attn(rope(q), rope(k), v)) over
// RMSNorm(x) and x += down(silu(gate) · up) over RMSNorm(x), final RMSNorm, LM head.
// All matrix work goes through cpu::matmul, so results are batch-invariant (see matmul.h):
// a token's logits do not depend on how it was batched or chunked.
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "target/checkpoint.h"
#include "target/decoder.h"
#include "target/model_weights.h"

namespace draftwise {

struct CpuDecoderOptions {
  int num_threads = 0;         // 0: one per hardware thread
  int64_t context_length = 0;  // 0: the config's max_position_embeddings
};

class CpuDecoder final : public Decoder {
 public:
  // Refuses, before loading anything, a config whose fp32 weights do not fit in the
  // memory available.
  static Expected<std::unique_ptr<CpuDecoder>> create(const ModelConfig& config,
                                                      const WeightLoader& loader,
                                                      const CpuDecoderOptions& options);
  static Expected<std::unique_ptr<CpuDecoder>> load(const Checkpoint& checkpoint,
                                                    const CpuDecoderOptions& options);

  const ModelConfig& config() const override { return config_; }
  int64_t context_length() const override { return context_length_; }
  std::string device_name() const override { return "cpu"; }
  int num_threads() const { return pool_.size(); }

  SequenceId create_sequence() override;
  void release_sequence(SequenceId sequence) override;
  int64_t sequence_length(SequenceId sequence) const override;
  Status truncate_sequence(SequenceId sequence, int64_t length) override;
  Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) override;

 private:
  struct Layer {
    std::vector<float> input_norm;   // [hidden]
    std::vector<float> qkv_weight;   // [q_dim + 2·kv_dim, hidden]: q, k, v projections stacked
    std::vector<float> qkv_bias;     // [q_dim + 2·kv_dim] or empty
    std::vector<float> o_weight;     // [hidden, q_dim]
    std::vector<float> o_bias;       // [hidden] or empty
    std::vector<float> post_norm;    // [hidden]
    std::vector<float> gate_up;      // [2·ffn, hidden]: gate and up projections stacked
    std::vector<float> down;         // [hidden, ffn]
  };
  struct Sequence {
    int64_t length = 0;
    int64_t capacity = 0;
    std::vector<std::vector<float>> keys;    // per layer [capacity, kv_dim], after RoPE
    std::vector<std::vector<float>> values;  // per layer [capacity, kv_dim]
  };

  CpuDecoder(const ModelConfig& config, const CpuDecoderOptions& options);
  Status load_weights(const WeightLoader& loader);
  // The forward pass of a checked batch; throws std::bad_alloc when memory runs out.
  void run_batch(std::span<const ForwardRequest> batch, std::vector<float>& logits);
  void reserve(Sequence& sequence, int64_t length);

  ModelConfig config_;
  int64_t context_length_;
  cpu::ThreadPool pool_;
  std::vector<float> inv_freq_;    // [head_dim / 2]
  std::vector<float> embedding_;   // [vocab, hidden]
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden]; empty when tied to the embedding
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_sequence_ = 1;
};

}  // namespace draftwise
