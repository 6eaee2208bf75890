// A TTT model (target/ttt_model.h; TTT-Linear or TTT-MLP) on one NVIDIA GPU: bf16 projection and MLP weights
// (cuBLASLt, fp32 accumulation), an fp32 residual stream, and the TTT layers in fp32
// (kernels/cuda/ttt.h): the dual form over each stretch of a mini-batch, heads in parallel,
// the decode step being its one-row case. Each sequence's state (per layer and head the inner
// weights and gradient sums, the convolution windows) is one device buffer of fixed size, so
// a token costs the same at any context length. Rollback: a device copy of the state before every
// forward, restored and the kept tokens replayed on truncation. In a hybrid model the attention
// layers run as in the attention decoder (bf16 key/value cache, kernels/cuda/attention.h) on a
// cache of their own per sequence that grows with it (a rollback only cuts its length); such
// models decode without CUDA graphs (the attention plan changes with every position). Tested
// against the CPU reference op by op and on whole-model logits. Early-exit draft passes (DVI's
// self-drafting) as on the CPU decoder: the drafted tokens wait, pending, after layer E with their
// hidden rows on the device, and the verification pass resumes them there.
#pragma once

#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "target/cuda_draft_head.h"
#include "target/decoder.h"
#include "target/ttt_model.h"

namespace draftwise {

struct CudaTttDecoderOptions {
  int device = 0;
  int64_t context_length = 0;  // 0: the config's max_position_embeddings
  bool cuda_graphs = true;     // replay one-token decode steps as CUDA graphs
};

class CudaTttDecoder final : public Decoder {
 public:
  // The weights of `model` copied to the GPU.
  static Expected<std::unique_ptr<CudaTttDecoder>> create(const TttModel& model, const CudaTttDecoderOptions& options);
  ~CudaTttDecoder() override;

  const ModelConfig& config() const override { return config_; }
  int64_t context_length() const override { return context_length_; }
  std::string device_name() const override;

  SequenceId create_sequence() override;
  void release_sequence(SequenceId sequence) override;
  int64_t sequence_length(SequenceId sequence) const override;
  Status truncate_sequence(SequenceId sequence, int64_t length) override;
  CacheUsage cache_usage() const override;
  Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) override;
  Status forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                       std::vector<float>& logits) override;
  int64_t pending_tokens(SequenceId sequence) const override;
  Expected<std::vector<float>> final_norm_weight() const override { return final_norm_host_; }

  // Bytes of one sequence's state (the same at every length).
  size_t state_bytes() const { return state_floats_ * sizeof(float); }

 private:
  struct Layer {
    cuda::DeviceBuffer seq_norm, ffn_norm, conv_norm, conv_weight, conv_bias;        // fp32
    cuda::DeviceBuffer conv_q_weight, conv_q_bias, conv_k_weight, conv_k_bias;       // fp32
    cuda::DeviceBuffer projections;  // bf16 [P, C]: q, k (without share_qk), v, g (use_gate), lr logits
    cuda::DeviceBuffer o_proj, gate_up, down;                                         // bf16
    cuda::DeviceBuffer lr_bias, token_idx, ttt_norm_weight, ttt_norm_bias, post_norm_weight, post_norm_bias;
    // An attention layer (hybrid models): projections holds q, k, v rows [C + 2·kv, C]; o_proj,
    // the norms and the MLP as above; nothing else.
    bool attention = false;
    size_t cache = 0;  // which of a sequence's attention caches (attention layers)
  };
  struct Sequence {
    cuda::DeviceBuffer state;
    cuda::DeviceBuffer saved;  // the state after tokens[0, saved_length), when has_saved
    bool has_saved = false;
    int64_t saved_length = 0;
    std::vector<int32_t> tokens;
    // Hybrid models: per attention layer the keys and values [kv_capacity, kv] bf16 of the
    // positions seen (rows past the length are stale).
    std::vector<cuda::DeviceBuffer> keys, values;
    int64_t kv_capacity = 0;
    // Early exit: tokens after `tokens` seen by layers [0, pending_exit) only, with their
    // residual rows after layer pending_exit − 1 (fp32 [pending_capacity, C]).
    std::vector<int32_t> pending;
    int pending_exit = 0;
    cuda::DeviceBuffer pending_hidden;
    int64_t pending_capacity = 0;
  };
  // A layer's part of a sequence state: the inner weights at the mini-batch's start (W2 and b2
  // empty for TTT-Linear), their gradient sums, the convolution windows.
  struct LayerState {
    float *W1, *b1, *W2, *b2, *GW1, *Gb1, *GW2, *Gb2, *pre_window, *qk_window;
  };

  CudaTttDecoder(const TttConfig& config, const CudaTttDecoderOptions& options);
  Status upload(const TttModel& model);
  LayerState layer_state(float* state, size_t l) const;
  // Runs tokens (from `position`) through every layer on the sequence's state (and its
  // attention caches); leaves the final-normed rows in normed_ (bf16 [rows, C]). The ids are
  // copied from `host_ids` (tokens.data() unless a graph captures the pass, which copies them
  // from pinned memory).
  Status run_tokens(Sequence& sequence, std::span<const int32_t> tokens, int64_t position,
                    const int32_t* host_ids = nullptr);
  // Layers [first, end) on the n rows of the residual stream x_ from `position`; after the last
  // layer normed_ holds the rows normed for the next one (the final norm after the last).
  Status run_layers(Sequence& sequence, size_t first, size_t end, int64_t n, int64_t position);
  // An attention layer (its cache: `cache`) on the n rows of normed_, with run_tokens' plan
  // of `item_count` work items: the output projection's input into post_.
  Status attention_mixer(const Layer& layer, Sequence& sequence, size_t cache, int64_t n, int64_t item_count);
  // TTT layer l (its state part in `state`) on the n rows of the residual stream from
  // `position`: the output projection's input into post_.
  Status ttt_mixer(size_t l, float* state, int64_t n, int64_t position);
  // Room in the sequence's attention caches for `positions` positions.
  Status ensure_kv(Sequence& sequence, int64_t positions);
  // One token through every layer, as a graph replayed per (state, index in the mini-batch).
  Status run_decode_step(Sequence& sequence, int32_t token, int64_t position);
  void drop_graphs(const float* state);
  Status ensure_scratch(int64_t rows);
  // y = x · wᵀ: the gemv kernels for a few rows (decode), cuBLASLt otherwise.
  Status linear(const cuda::bf16* x, const cuda::bf16* w, void* y, bool y_fp32, int64_t rows, int64_t in,
                int64_t out);
  Status replay(Sequence& sequence, int64_t from, int64_t to);
  // forward() and forward_draft() (`draft` set).
  Status pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits);
  // pass() after its checks and allocations; `reached` gets the sequences it began to change.
  Status run_pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits,
                  std::vector<Sequence*>& reached);
  // One request of run_pass: its requested rows go to row `row` on of rows_ (final-normed,
  // bf16) or, for a draft pass, of exit_rows_ (the exit hidden rows, fp32).
  Status run_request(Sequence& sequence, const ForwardRequest& request, const DraftHead* draft, int64_t row);

  TttConfig ttt_;
  ModelConfig config_;
  CudaTttDecoderOptions options_;
  int64_t context_length_;
  int64_t proj_width_ = 0;  // P
  int64_t k_offset_ = -1, v_offset_ = 0, g_offset_ = -1, lr_offset_ = 0;
  size_t state_floats_ = 0;
  std::vector<size_t> state_offset_;  // per layer, into a sequence state (TTT layers)
  // Hybrid models: the attention layers' shape, the RoPE frequencies, the block table every
  // sequence shares (its cache is one run of blocks: block i at rows i·block_size), and the
  // plan of a run (positions, which are the cache slots too, and the work items).
  int64_t attention_layers_ = 0, kv_dim_ = 0;
  cuda::AttentionGeometry geometry_;
  cuda::DeviceBuffer inv_freq_, block_table_, plan_positions_, plan_items_, qkv_;
  // The keys split into plan_splits_ slices for few queries (the slices' workspace).
  int plan_splits_ = 1;
  int64_t multiprocessors_ = 0;
  cuda::DeviceBuffer partial_out_, partial_stats_;
  cudaStream_t stream_ = nullptr;
  cuda::Gemm gemm_;
  cuda::DeviceBuffer embedding_, lm_head_, final_norm_, initial_state_;
  std::vector<float> final_norm_host_;
  std::vector<Layer> layers_;
  // Scratch sized for scratch_rows_ rows.
  int64_t scratch_rows_ = 0;
  cuda::DeviceBuffer ids_, x_, normed_f32_, normed_, proj_, qc_, kc_, q_, k_, v_, lr_, heads_, post_, delta_,
      gate_up_, act_, rows_, logits_;
  // Draft passes: the exit rows, the head's gain, the adapter.
  cuda::DeviceBuffer exit_rows_, exit_normed_, draft_gain_;
  CudaDraftAdapter adapter_;
  int64_t logit_capacity_ = 0;
  cuda::PinnedBuffer pinned_token_;
  // Decode graphs by (sequence state, position mod mini-batch): they bake in the state's and
  // the scratch buffers' addresses, so they go when either does.
  std::map<std::pair<const float*, int64_t>, cudaGraphExec_t> graphs_;
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_sequence_ = 1;
};

}  // namespace draftwise
