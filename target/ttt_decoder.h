// A TTT model (target/ttt_model.h) behind the Decoder interface, on the CPU: sequences whose
// decode state is the TTT state (per layer and head the inner model's weights and gradient
// sum, the convolutions' windows) instead of a key/value cache, so it costs the same at any
// length; early-exit drafting; and exact rollback for speculative decoding. In a hybrid model
// the attention layers keep their key/value caches in the same state, next to the TTT layers'.
//
// Rollback: before a pass that may be undone (a forward, or the first draft pass of a round)
// the sequence's state is copied, less the attention caches (their rows before a length stay
// valid, so a restored state takes them over). truncate_sequence restores the latest copy at or before the
// new length and runs the tokens from there to the new length again (at most the tokens that
// were accepted); a length before every copy is recomputed from the start. The state at any
// length is then exactly the one plain decoding has there, mini-batch boundaries included.
#pragma once

#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "target/decoder.h"
#include "target/ttt_model.h"

namespace draftwise {

struct TttDecoderOptions {
  int num_threads = 0;         // the draft head's products; 0: one per hardware thread
  int64_t context_length = 0;  // 0: the config's max_position_embeddings
};

// The ModelConfig a TTT model presents to the engine (architecture ttt; heads of the TTT
// layers as the attention heads).
ModelConfig model_config_of(const TttConfig& config);

// Whether `path` is a Hugging Face folder, or a config JSON file, of model_type "ttt".
bool is_ttt_model_folder(const std::string& path);

class TttDecoder final : public Decoder {
 public:
  static Expected<std::unique_ptr<TttDecoder>> create(std::unique_ptr<TttModel> model,
                                                      const TttDecoderOptions& options);

  const ModelConfig& config() const override { return config_; }
  int64_t context_length() const override { return context_length_; }
  std::string device_name() const override { return "cpu"; }
  const TttModel& model() const { return *model_; }

  SequenceId create_sequence() override;
  void release_sequence(SequenceId sequence) override;
  int64_t sequence_length(SequenceId sequence) const override;
  Status truncate_sequence(SequenceId sequence, int64_t length) override;
  // The state is the same size at every length: blocks of 16 positions are counted for the
  // scheduler's bookkeeping only.
  CacheUsage cache_usage() const override;
  Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) override;
  Status forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                       std::vector<float>& logits) override;
  int64_t pending_tokens(SequenceId sequence) const override;
  Expected<std::vector<float>> final_norm_weight() const override;

  // Copies of the state restored by rollback (tests count replays against them).
  int64_t restores() const { return restores_; }
  int64_t recomputes() const { return recomputes_; }

 private:
  struct Sequence {
    TttState state;               // after `tokens` (and in layers [0, pending_exit) the pending tokens)
    std::vector<int32_t> tokens;  // the sequence's tokens
    // The state after tokens[0, saved_length), copied before a pass that may be undone.
    std::optional<TttState> saved;
    int64_t saved_length = 0;
    int pending_exit = 0;
    std::vector<int32_t> pending;
    std::vector<float> pending_hidden;  // [pending, C] after layer pending_exit − 1
  };

  TttDecoder(std::unique_ptr<TttModel> model, const TttDecoderOptions& options);
  Status pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits);
  // One request of a checked pass; `rows` gets its requested rows' hidden states.
  void run_request(Sequence& sequence, const ForwardRequest& request, const DraftHead* draft,
                   std::vector<float>& rows);
  // The draft head (DraftHead) or the final norm and LM head on `rows` [n, C].
  void head_logits(std::vector<float>& rows, const DraftHead* draft, std::vector<float>& logits);

  std::unique_ptr<TttModel> model_;
  ModelConfig config_;
  int64_t context_length_;
  cpu::ThreadPool pool_;
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_sequence_ = 1;
  int64_t restores_ = 0;
  int64_t recomputes_ = 0;
};

}  // namespace draftwise
