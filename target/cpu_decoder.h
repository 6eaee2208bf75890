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

class CpuQueryAdaptation;

struct CpuDecoderOptions {
  int num_threads = 0;         // 0: one per hardware thread
  int64_t context_length = 0;  // 0: the config's max_position_embeddings
  // A fixed pool of key/value blocks of kCacheBlock positions, as a GPU has: a batch that would
  // need more is refused, changing nothing. 0: the cache grows in host memory.
  int64_t max_cache_blocks = 0;
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
  Status forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                       std::vector<float>& logits) override;
  int64_t pending_tokens(SequenceId sequence) const override;
  CacheUsage cache_usage() const override;
  Expected<std::vector<float>> final_norm_weight() const override { return final_norm_; }

  // qTTT (target/cpu_decoder_qttt.cpp): fp32 ΔW_Q and Adam state in host memory.
  Expected<QttReport> adapt_queries(SequenceId sequence, std::span<const int32_t> context,
                                    const QttOptions& options) override;
  Expected<double> query_loss(SequenceId sequence, std::span<const int32_t> context, int64_t first, int64_t count,
                              std::vector<float>* gradient) override;
  Expected<std::vector<float>> query_parameters(SequenceId sequence) const override;
  Status set_query_parameters(SequenceId sequence, int64_t rank, std::span<const float> parameters) override;
  std::shared_ptr<QueryAdaptation> query_adaptation(SequenceId sequence) const override;
  Status attach_query_adaptation(SequenceId sequence, std::shared_ptr<QueryAdaptation> adaptation) override;

  // SHA-256 of every weight's bytes, and of a sequence's cached keys and values (positions
  // [0, length) of every layer): what qTTT must leave unchanged.
  std::string weights_digest() const;
  Expected<std::string> cache_digest(SequenceId sequence) const;

  // The frozen output head, for the draft-head learner: W_lm [vocab, hidden] (the embedding
  // when tied) and the final norm's gain [hidden]; and the pool the passes run on (not
  // reentrant: use it between passes only).
  std::span<const float> lm_head() const { return lm_head_.empty() ? embedding_ : lm_head_; }
  std::span<const float> final_norm_gain() const { return final_norm_; }
  cpu::ThreadPool& thread_pool() { return pool_; }

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
    // Early-exit drafting: tokens after `length` cached in layers [0, pending_exit_layer) only,
    // and their residual stream after those layers.
    int pending_exit_layer = 0;
    std::vector<int32_t> pending;
    std::vector<float> pending_hidden;  // [pending, hidden]
    // qTTT: the sequence's ΔW_Q, or null.
    std::shared_ptr<CpuQueryAdaptation> adaptation;
  };
  // The tokens of one request that a layer runs: count of them from position `position`,
  // rows `row` onwards of the layer's input.
  struct Segment {
    Sequence* sequence;
    int64_t position;
    int64_t count;
    int64_t row;
  };

  CpuDecoder(const ModelConfig& config, const CpuDecoderOptions& options);
  Status load_weights(const WeightLoader& loader);
  // Checks, then runs a pass; an out-of-memory error leaves the sequences as they were.
  Status checked_pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits);
  // The forward pass of a checked batch: every layer, resuming pending tokens at their exit
  // layer, or (draft) layers [0, exit_layer) and the draft head. Throws std::bad_alloc when
  // memory runs out, before any sequence changes.
  void run_pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits);
  // A pass's per-layer buffers, sized for the rows of each layer run, reused across layers.
  struct LayerScratch {
    std::vector<float> normed, qkv, queries, attended, projected, gate_up, activated;
  };
  // Layer l on `rows` rows of x ([rows, hidden], updated), the segments' tokens.
  void run_layer(size_t l, std::span<const Segment> segments, float* x, int64_t rows, const float* rope_cos,
                 const float* rope_sin, LayerScratch& scratch);
  void reserve(Sequence& sequence, int64_t length);
  // qTTT: q += normed · ΔW_Qᵀ for `rows` rows of one sequence (before RoPE).
  //   normed: [rows, hidden]   q: [rows] rows q_stride floats apart, starting with [q_dim]
  void add_query_delta(const CpuQueryAdaptation& adaptation, size_t layer, const float* normed, int64_t rows,
                       float* q, int64_t q_stride);
  // qTTT's loss over positions [first, first + count) of a sequence with `adaptation` (or
  // none), and its gradient with respect to the adaptation's parameters.
  Expected<double> span_loss(const Sequence& sequence, const CpuQueryAdaptation* adaptation,
                             std::span<const int32_t> context, int64_t first, int64_t count,
                             std::vector<float>* gradient);
  // The checks of every qTTT call: a known sequence, a context of its length (+ 1), tokens in
  // the vocabulary; `trainable` gets the positions with a next token.
  Expected<Sequence*> qtt_sequence(SequenceId sequence, std::span<const int32_t> context, int64_t& trainable);

  static constexpr int64_t kCacheBlock = 16;
  // The blocks every sequence would hold after `batch` (a draft pass when `draft`).
  int64_t blocks_after(std::span<const ForwardRequest> batch, bool draft) const;

  ModelConfig config_;
  int64_t context_length_;
  int64_t max_cache_blocks_;
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
