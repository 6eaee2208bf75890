// The decoder on one NVIDIA GPU: bf16 weights (checkpoint tensors are copied as stored and
// dequantized to bf16 on the GPU at load), bf16 activations with fp32 accumulation, an fp32
// residual stream, fp32 norms and logits, and a paged key/value cache allocated once. Same interface and semantics as the
// CPU reference (target/decoder.h), against which every op and the whole model are tested.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/nccl_group.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/qttt.h"
#include "target/checkpoint.h"
#include "target/cuda_draft_head.h"
#include "target/decoder.h"
#include "target/model_weights.h"
#include "target/tensor_parallel.h"

namespace draftwise {

class CudaQueryAdaptation;
// The row of a forward pass's qTTT table for a sequence with this adaptation.
cuda::QueryDeltaRow query_delta_row(const CudaQueryAdaptation& adaptation);

struct CudaDecoderOptions {
  int device = 0;
  int64_t context_length = 0;         // 0: the config's max_position_embeddings
  double kv_cache_memory_share = 0.5; // of the GPU memory free after the weights
  int64_t kv_block_size = 16;         // positions per cache block
  bool cuda_graphs = true;            // replay decode/verification steps as CUDA graphs
  // Steps of up to 8 rows through the gemv kernels (norms fused into their input, SwiGLU
  // into their output) instead of separate norm kernels and cuBLASLt.
  bool fused_small_steps = true;
  // Tensor parallelism (target/tensor_parallel.h): this decoder is the shard of rank
  // group.rank() of group.size(), its collectives going through the group; every rank must
  // make the same calls in the same order (target/tensor_parallel_decoder.h). Null: the
  // whole model. Early-exit drafting and qTTT are refused on a shard.
  std::shared_ptr<cuda::NcclGroup> tensor_parallel;
};

class CudaDecoder final : public Decoder {
 public:
  static Expected<std::unique_ptr<CudaDecoder>> create(const ModelConfig& config,
                                                       const WeightLoader& loader,
                                                       const CudaDecoderOptions& options);
  static Expected<std::unique_ptr<CudaDecoder>> load(const Checkpoint& checkpoint,
                                                     const CudaDecoderOptions& options);
  // Random weights in the shape of `config`, drawn on the GPU (fast at any size): norm weights
  // 1, every other value uniform with standard deviation 0.02, from a counter-based generator
  // keyed by `seed` and the tensor's name. Same distribution as random_weight_loader, other
  // values.
  static Expected<std::unique_ptr<CudaDecoder>> create_random(const ModelConfig& config, uint64_t seed,
                                                              const CudaDecoderOptions& options);

  // The whole model's config, also on a tensor-parallel shard.
  const ModelConfig& config() const override { return full_config_; }
  int64_t context_length() const override { return context_length_; }
  std::string device_name() const override;

  SequenceId create_sequence() override;
  void release_sequence(SequenceId sequence) override;
  int64_t sequence_length(SequenceId sequence) const override;
  // Frees the cache blocks past the new length.
  Status truncate_sequence(SequenceId sequence, int64_t length) override;
  // Also fails, changing nothing, when the cache has too few free blocks for the batch.
  Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) override;
  // The argmax runs on the GPU, in the step's graph; only the token ids come back.
  Status forward_greedy(std::span<const ForwardRequest> batch, std::vector<int32_t>& tokens) override;
  // Early exit: the drafted tokens' residual rows after the exit layer stay on the GPU, with
  // their sequence, until the verification pass resumes them. The sequences of one pass
  // that hold pending tokens must share their exit layer.
  Status forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                       std::vector<float>& logits) override;
  Status forward_draft_greedy(std::span<const ForwardRequest> batch, const DraftHead& head,
                              std::vector<int32_t>& tokens) override;
  int64_t pending_tokens(SequenceId sequence) const override;
  CacheUsage cache_usage() const override;
  Expected<std::vector<float>> final_norm_weight() const override;

  // The frozen LM head on the GPU ([vocab, hidden] bf16; the embedding when tied), for the
  // draft-head learner, and the device it is on.
  const cuda::bf16* lm_head_device() const {
    return (lm_head_.data() != nullptr ? lm_head_ : embedding_).as<cuda::bf16>();
  }
  int device() const { return options_.device; }

  // Tensor parallelism: CUDA events around `repeats` all-reduces of `elements` bf16 values.
  Expected<double> time_all_reduce(int64_t elements, int64_t repeats) override;
  // A shard is unhealthy once its tensor-parallel group has failed.
  Status health() const override {
    return options_.tensor_parallel != nullptr ? options_.tensor_parallel->health() : Status();
  }

  // The stream every step runs on (for timing with CUDA events).
  cudaStream_t stream() const { return stream_.get(); }

  int64_t total_cache_blocks() const { return num_blocks_; }
  int64_t free_cache_blocks() const { return static_cast<int64_t>(free_blocks_.size()); }

  // qTTT (target/cuda_decoder_qttt.cpp): ΔW_Q and Adam's state in fp32 device memory, the span
  // pass in bf16 with fp32 accumulation, norms and gradients; adapted sequences' passes add
  // their query delta in a kernel after the q projection. Ranks up to 256.
  Expected<QttReport> adapt_queries(SequenceId sequence, std::span<const int32_t> context,
                                    const QttOptions& options) override;
  Expected<double> query_loss(SequenceId sequence, std::span<const int32_t> context, int64_t first, int64_t count,
                              std::vector<float>* gradient) override;
  Expected<std::vector<float>> query_parameters(SequenceId sequence) const override;
  Status set_query_parameters(SequenceId sequence, int64_t rank, std::span<const float> parameters) override;
  std::shared_ptr<QueryAdaptation> query_adaptation(SequenceId sequence) const override;
  Status attach_query_adaptation(SequenceId sequence, std::shared_ptr<QueryAdaptation> adaptation) override;

  // SHA-256 of every weight's bytes on the GPU, and of a sequence's cached keys and values
  // (positions [0, length) of every layer): what qTTT must leave unchanged.
  Expected<std::string> weights_digest() const;
  Expected<std::string> cache_digest(SequenceId sequence) const;

 private:
  struct Layer {
    cuda::DeviceBuffer input_norm;  // [hidden] fp32
    cuda::DeviceBuffer qkv_weight;  // [q_dim + 2·kv_dim, hidden] bf16
    cuda::DeviceBuffer qkv_bias;    // [q_dim + 2·kv_dim] bf16 or empty
    cuda::DeviceBuffer o_weight;    // [hidden, q_dim] bf16
    cuda::DeviceBuffer o_bias;      // [hidden] bf16 or empty
    cuda::DeviceBuffer post_norm;   // [hidden] fp32
    cuda::DeviceBuffer gate_up;     // [2·ffn, hidden] bf16
    cuda::DeviceBuffer down;        // [hidden, ffn] bf16
    cuda::DeviceBuffer k_cache;     // [blocks, block_size, kv_dim] bf16
    cuda::DeviceBuffer v_cache;
  };
  struct Sequence {
    int64_t length = 0;
    std::vector<int32_t> blocks;
    // Early exit: tokens after `length` cached in layers [0, pending_exit_layer) only, and
    // their residual rows after those layers.
    int pending_exit_layer = 0;
    std::vector<int32_t> pending;
    cuda::DeviceBuffer pending_hidden;  // [capacity, hidden] fp32
    // qTTT: the sequence's ΔW_Q, or null.
    std::shared_ptr<CudaQueryAdaptation> adaptation;
  };

  // What a captured graph depends on besides buffer contents. A step runs layers [0, a_end)
  // on `rows` rows from the embedding (segment A); a verification that resumes pending tokens
  // then runs layers [a_end, L) on rows_b rows, the resumed ones and A's (segment B); a draft
  // step stores A's rows with their sequences and ends with the draft head.
  struct StepShape {
    int64_t rows = 0;
    int64_t selected_rows = 0;
    int64_t items = 0;
    int64_t sequences = 0;
    int splits = 1;
    bool greedy = false;  // ends with the argmax of the logits
    int a_end = 0;
    int64_t rows_b = 0;
    int64_t items_b = 0;
    int splits_b = 1;
    bool store_hidden = false;  // a draft step
    bool draft_gain = false;    // the draft head's own norm gain, in the plan
    bool adapted = false;       // some sequence has a qTTT adaptation: the query-delta kernel runs
    auto key() const {
      return std::tie(rows, selected_rows, items, sequences, splits, greedy, a_end, rows_b, items_b, splits_b,
                      store_hidden, draft_gain, adapted);
    }
    bool operator<(const StepShape& other) const { return key() < other.key(); }
  };
  // One segment's tables for the layer loop.
  struct LayerPlan {
    const int32_t* positions = nullptr;  // [rows]
    const int32_t* slots = nullptr;      // [rows]
    const cuda::AttentionWorkItem* items = nullptr;
    int64_t item_count = 0;
    int splits = 1;
    const cuda::QueryDeltaRow* deltas = nullptr;  // [rows] qTTT adaptations, or nullptr: none
  };
  // The residual stream between layers: buffers[current] + pending (not yet added).
  struct ResidualStream {
    float* buffers[2] = {};
    int current = 0;
    const cuda::bf16* pending = nullptr;
  };
  // Device pointers of one step (scratch buffers).
  struct StepBuffers {
    void* ids = nullptr;         // [rows] int32
    void* positions = nullptr;   // [rows] int32
    void* slots = nullptr;       // [rows] int32
    void* tables = nullptr;      // [sequences, table_stride] int32
    void* items = nullptr;       // [items] AttentionWorkItem
    void* positions_b = nullptr; // [rows_b] int32 (segment B)
    void* slots_b = nullptr;     // [rows_b] int32
    void* items_b = nullptr;     // [items_b] AttentionWorkItem
    void* deltas = nullptr;      // [rows] QueryDeltaRow (adapted steps)
    void* deltas_b = nullptr;    // [rows_b] QueryDeltaRow
    void* sources_b = nullptr;   // [rows_b] ResidualRowSource: B's input rows
    void* stored = nullptr;      // [rows] float*: where a draft step stores A's rows
    void* gain = nullptr;        // [hidden] fp32: the draft head's norm gain
    void* logit_rows = nullptr;  // [selected_rows] int32
    void* residual[2] = {};      // [rows, hidden] fp32 each: the stream moves between them
    void* normed = nullptr;      // [rows, hidden] bf16
    void* qkv = nullptr;         // [rows, q_dim + 2·kv_dim] bf16
    void* attended = nullptr;    // [rows, q_dim] bf16
    void* delta = nullptr;       // [rows, hidden] bf16
    void* gate_up = nullptr;     // [rows, 2·ffn] bf16
    void* activated = nullptr;   // [rows, ffn] bf16
    void* partial = nullptr;     // [splits, rows, heads, head_dim] fp32
    void* stats = nullptr;       // [splits, rows, heads, 2] fp32
    void* selected = nullptr;    // [selected_rows, hidden] bf16
    void* logits = nullptr;      // [selected_rows, vocab] fp32
    void* keys = nullptr;        // [selected_rows] uint64 argmax keys (greedy steps), in the plan
    // Tensor parallelism: every rank's logits [ranks, selected_rows, vocab stride] fp32, or
    // argmax keys [ranks, selected_rows] uint64.
    void* gathered = nullptr;
  };
  struct GraphExec {
    cudaGraphExec_t exec = nullptr;
    GraphExec() = default;
    GraphExec(GraphExec&& other) noexcept : exec(std::exchange(other.exec, nullptr)) {}
    GraphExec& operator=(GraphExec&&) = delete;
    ~GraphExec() {
      if (exec != nullptr) cudaGraphExecDestroy(exec);
    }
  };

  // Writes one tensor as bf16 to device memory at dst ([elements of spec]).
  using DeviceWeightWriter = std::function<Status(const DecoderTensorSpec& spec, cuda::bf16* dst, cudaStream_t stream)>;

  CudaDecoder(const ModelConfig& config, const CudaDecoderOptions& options);
  // Norm weights come through host_f32 (they stay fp32); every other tensor through write_bf16.
  static Expected<std::unique_ptr<CudaDecoder>> create_with(const ModelConfig& config,
                                                            const WeightLoader& host_f32,
                                                            const DeviceWeightWriter& write_bf16,
                                                            const CudaDecoderOptions& options);
  cuda::AttentionGeometry attention_geometry() const;
  // Every kernel of one forward step on the stream, nothing else (graph-capturable).
  Status enqueue_forward(const StepShape& shape);
  Status load_weights(const WeightLoader& host_f32, const DeviceWeightWriter& write_bf16);
  Status allocate_cache();
  // One step; exactly one of logits (all requested rows) and tokens (their argmax) is set.
  // With `draft`, an early-exit draft step.
  Status forward_step(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>* logits,
                      std::vector<int32_t>* tokens);
  Status run_batch(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>* logits,
                   std::vector<int32_t>* tokens);
  // Layers [first, end) of one segment on `rows` rows of the stream.
  Status enqueue_layers(int first, int end, int64_t rows, const LayerPlan& plan, ResidualStream& stream);
  // y = x · wᵀ (+ bias) for one linear layer of a step, x being `source` (given rows, or the
  // RMS-normed residual): gemv for small steps, else a norm kernel and cuBLASLt.
  // kRopeWriteKv also rotates q and k and writes k and v to the cache (`rope`).
  Status linear(const cuda::LinearSource& source, int64_t rows, const cuda::bf16* w, const cuda::bf16* bias,
                int64_t in, int64_t out, cuda::GemvEpilogue epilogue, cuda::bf16* y,
                const cuda::RopeCacheWrite* rope = nullptr);
  // A scratch buffer of at least `bytes`, grown when needed.
  Expected<void*> scratch(size_t index, size_t bytes, const char* what);

  // Sums a step's partial rows over the tensor-parallel ranks (nothing on one GPU).
  Status all_reduce(void* data, int64_t count, cuda::CollectiveType type);
  // A tensor-parallel step's logits (or tokens) from every rank's part of the vocabulary.
  Status gathered_outputs(int64_t selected_rows, std::vector<float>* logits, std::vector<int32_t>* tokens);
  // A shard refuses what the tensor-parallel protocol does not carry (`what` is refused).
  Status refuse_on_shard(const char* what) const;

  // The shard's own shape (the whole model on one GPU): every size inside the decoder.
  ModelConfig config_;
  ModelConfig full_config_;
  VocabShard vocab_;  // the LM head's and embedding's rows on this rank
  CudaDecoderOptions options_;
  int64_t context_length_;
  cuda::Stream stream_;
  cuda::Gemm gemm_;
  cuda::DeviceBuffer inv_freq_;     // [head_dim / 2] fp32
  cuda::DeviceBuffer embedding_;    // [vocab, hidden] bf16
  cuda::DeviceBuffer final_norm_;   // [hidden] fp32
  cuda::DeviceBuffer lm_head_;      // [vocab, hidden] bf16; empty when tied
  std::vector<Layer> layers_;
  int64_t num_blocks_ = 0;
  std::vector<int32_t> free_blocks_;
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_sequence_ = 1;
  std::vector<cuda::DeviceBuffer> scratch_;
  uint64_t scratch_generation_ = 0;
  int64_t table_stride_ = 0;  // block-table row length: the blocks of a full context
  int multiprocessors_ = 1;
  StepBuffers buffers_;
  std::vector<int32_t> plan_;          // a step's host-side plan, reused
  cuda::PinnedBuffer pinned_plan_;     // its page-locked copy
  cuda::PinnedBuffer pinned_keys_;     // a greedy step's argmax keys, back from the GPU
  cuda::DeviceBuffer split_counters_;  // attention_paged's, zero between steps
  // The last draft-head adapter a draft step used (LowRankAdapter::version), on the GPU.
  CudaDraftAdapter adapter_;
  // Adds a draft step's adapter term to its logits on the GPU and reads back the exit hidden
  // states; h_rows are the requested rows' h_exit, where the step stored them.
  Status apply_draft_head(const DraftHead& draft, std::span<float* const> h_rows, const float* gain, void* logits);
  std::map<StepShape, GraphExec> graphs_;
  uint64_t graphs_generation_ = 0;

  // qTTT's span pass: the mean next-token loss of positions [first, first + count) with
  // `adaptation` (or none), and with `gradient` (device, [parameter count] fp32) its gradient.
  struct QttBuffers;
  Expected<double> span_pass(const Sequence& sequence, const CudaQueryAdaptation* adaptation,
                             std::span<const int32_t> context, int64_t first, int64_t count, float* gradient);
  // The checks of every qTTT call: a known sequence, a context of its length (+ 1), tokens in
  // the vocabulary; `trainable` gets the positions with a next token.
  Expected<Sequence*> qtt_sequence(SequenceId sequence, std::span<const int32_t> context, int64_t& trainable);
  // The model's shapes within what the qTTT kernels take.
  Status check_qtt_shape() const;
  std::shared_ptr<QttBuffers> qtt_buffers_;  // shared_ptr: QttBuffers is complete only there
};

}  // namespace draftwise
