// The interface every implementation of the target model offers (the CPU reference here;
// CUDA and tensor-parallel backends later): sequences with a key/value cache, a batched
// forward pass over any number of new tokens per sequence, and rollback.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kernels/status.h"
#include "target/model_config.h"
#include "target/qttt.h"

namespace draftwise {

using SequenceId = int64_t;

struct ForwardRequest {
  SequenceId sequence = 0;
  // New tokens, appended at the sequence's current length: the whole prompt (prefill), one
  // token (decode) or the k+1 tokens of a verification pass.
  std::span<const int32_t> tokens;
  // Indices into `tokens` whose next-token logits the caller wants, in the order wanted.
  std::span<const int32_t> logit_rows;
};

// The low-rank adapter of a draft head (DVI.md): B A is added to the frozen LM head, scaled.
struct LowRankAdapter {
  int64_t rank = 0;          // ≥ 1
  float scale = 0.0f;        // γ = α / rank
  std::span<const float> a;  // [rank, hidden]
  std::span<const float> b;  // [vocab, rank]
  // M, [hidden, hidden]: the exit hidden state h becomes h + M h before the norm; empty: none.
  std::span<const float> lens;
  // Unique to these values (a GPU keeps its copy while the version stays); 0: unversioned.
  uint64_t version = 0;
};

// The draft head of early-exit drafting (DVI.md): logits = (W_lm + γ B A) · rms_norm(h_exit +
// M h_exit, gain), the LM head being the target's own, frozen and shared.
struct DraftHead {
  // In [1, num_layers − 1] for early exit; num_layers: every layer (a draft model's own pass
  // through a trainable head), the tokens appended to the sequence as forward() appends them.
  int exit_layer = 0;
  std::span<const float> norm_gain;          // [hidden]; empty: the target's final norm gain
  const LowRankAdapter* adapter = nullptr;   // none: W_lm alone
  // When set, resized to [Σ logit_rows, hidden]: each requested row's h_exit before the norm
  // (what the learner trains the head on).
  std::vector<float>* exit_hidden = nullptr;
};

// The key/value cache in blocks of positions. A backend with a fixed pool (the GPU) has
// total_blocks > 0 and used_blocks of it taken; one whose cache grows in host memory (the CPU)
// has total_blocks 0 and counts the blocks its sequences' positions fill.
struct CacheUsage {
  int64_t block_size = 16;
  int64_t total_blocks = 0;
  int64_t used_blocks = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;

  virtual const ModelConfig& config() const = 0;
  // The most positions one sequence may hold.
  virtual int64_t context_length() const = 0;
  // "cpu", "cuda:0", ...
  virtual std::string device_name() const = 0;

  virtual SequenceId create_sequence() = 0;
  virtual void release_sequence(SequenceId sequence) = 0;
  // Tokens held in the sequence's cache; -1 for an unknown sequence.
  virtual int64_t sequence_length(SequenceId sequence) const = 0;
  // Rollback: forgets every position from `length` on (0 ≤ length ≤ current length).
  virtual Status truncate_sequence(SequenceId sequence, int64_t length) = 0;
  virtual CacheUsage cache_usage() const = 0;

  // Runs every request's new tokens through the model and appends them to its sequence's
  // cache. `logits` is resized to [Σ logit_rows, vocab_size], rows in request order. The
  // batch is checked first (known, distinct sequences; token ids below the vocabulary size;
  // room in the context; valid logit rows): on error nothing changes.
  virtual Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) = 0;

  // forward(), keeping only the index of the largest logit of each requested row (the lowest
  // index among ties): greedy decoding. `tokens` is resized to [Σ logit_rows]. A non-finite
  // logit in a requested row is an error (a broken model), after which every sequence is as
  // before the call. Backends that can pick the tokens where the logits are (the GPU)
  // override this.
  virtual Status forward_greedy(std::span<const ForwardRequest> batch, std::vector<int32_t>& tokens);

  // Early-exit drafting (self-speculative decoding, DESIGN.md). Runs each request's tokens
  // through layers [0, head.exit_layer) only and the draft head on its requested rows:
  // `logits` is resized to [Σ logit_rows, vocab]. The tokens' keys and values enter those
  // layers' caches *pending*, after the sequence and its earlier pending tokens;
  // sequence_length() does not change. The next forward() of a sequence with pending tokens
  // must begin with them, in order: they then run through layers [exit_layer, L) only, from
  // the hidden states kept from drafting (verification reuses what drafting computed), and
  // the request's further tokens through every layer. A sequence's pending tokens share one
  // exit layer; truncate_sequence drops them. With head.exit_layer = num_layers nothing is
  // pending: this is forward() with the head in place of the final norm and LM head (the
  // sequence must hold no pending tokens). Backends without early exit return an error.
  virtual Status forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                               std::vector<float>& logits);
  // forward_draft keeping each requested row's argmax (the lowest index among ties).
  virtual Status forward_draft_greedy(std::span<const ForwardRequest> batch, const DraftHead& head,
                                      std::vector<int32_t>& tokens);
  // Tokens a sequence holds pending in its first layers; -1 for an unknown sequence.
  virtual int64_t pending_tokens(SequenceId sequence) const;
  // The final norm's gain ([hidden]): where a draft head's own gain starts.
  virtual Expected<std::vector<float>> final_norm_weight() const = 0;

  // qTTT (QTTT.md, target/qttt.h). A sequence may hold a query adaptation ΔW_Q (one per
  // layer, full rank or B A): every later pass of its tokens, draft passes included, computes
  // their queries with W_Q + ΔW_Q; other sequences are untouched. It goes with the sequence
  // (release_sequence frees it; truncate_sequence keeps it). Backends without attention layers
  // or without qTTT return errors.
  //
  // `context` is what the sequence holds, [length] tokens, and may add the token after them,
  // [length + 1]: the next-token target of the last position. Position i is trained on when
  // i < length and context[i + 1] exists.
  //
  // Trains the sequence's ΔW_Q for options.steps steps, each on a random span of options.span
  // positions (the whole trainable context when it is shorter): the mean next-token loss, the
  // span's queries attending to the cached keys and values (which do not change), one
  // optimizer step on ΔW_Q only. Starts from ΔW_Q = 0 (B = 0, A drawn from options.seed), or
  // goes on with the adaptation the sequence holds (same rank; a fresh optimizer state).
  virtual Expected<QttReport> adapt_queries(SequenceId sequence, std::span<const int32_t> context,
                                            const QttOptions& options);
  // qTTT's loss: the mean next-token loss of positions [first, first + count) of `context`
  // with the sequence's ΔW_Q (none: W_Q alone), queries attending to the cached keys and
  // values. With `gradient`, also its gradient with respect to the adaptation's parameters
  // (qtt_parameter_count of its rank, in that layout); that needs an adaptation.
  virtual Expected<double> query_loss(SequenceId sequence, std::span<const int32_t> context, int64_t first,
                                      int64_t count, std::vector<float>* gradient);
  // The sequence's adaptation parameters (empty: none), and setting them (rank 0 for full
  // rank; qtt_parameter_count values; empty values: remove the adaptation).
  virtual Expected<std::vector<float>> query_parameters(SequenceId sequence) const;
  virtual Status set_query_parameters(SequenceId sequence, int64_t rank, std::span<const float> parameters);
  // The adaptation itself, shared: a preempted request keeps it while its sequence is freed,
  // and gives it to its next sequence (null: none; attaching null removes it).
  virtual std::shared_ptr<QueryAdaptation> query_adaptation(SequenceId sequence) const;
  virtual Status attach_query_adaptation(SequenceId sequence, std::shared_ptr<QueryAdaptation> adaptation);

  // Whether the backend can still run passes: ok, or why not (a tensor-parallel group that lost
  // a rank). A server stops serving a target that is not healthy.
  virtual Status health() const { return {}; }

  // Tensor parallelism: the mean seconds of one all-reduce of `elements` bf16 values over the
  // group (every rank takes part), timed over `repeats`; what a step spends in its 2·L
  // all-reduces. Backends on one device return an error.
  virtual Expected<double> time_all_reduce(int64_t elements, int64_t repeats);
};

// The index of the largest value of each `vocab`-long row of `logits`, the lowest among ties.
std::vector<int32_t> argmax_rows(std::span<const float> logits, int64_t vocab);

// A sequence's pending tokens (Decoder::forward_draft) as a backend keeps them.
struct PendingTokens {
  std::span<const int32_t> tokens;
  int exit_layer = 0;
};

// check_forward_batch for a pass that may involve early exit: a draft pass (`draft` set; its
// tokens go after the pending ones, which count towards the context) needs a head with an
// exit layer in [1, L] (L: a full-depth head), a gain of the hidden size or none, an adapter of matching shapes
// or none, and the sequences' pending
// tokens at that exit layer; a full pass must begin each sequence with its pending tokens.
Status check_early_exit_batch(std::span<const ForwardRequest> batch, const DraftHead* draft,
                              const ModelConfig& config, int64_t context_length,
                              const std::function<int64_t(SequenceId)>& length_of,
                              const std::function<PendingTokens(SequenceId)>& pending_of);

// The checks every Decoder::forward makes before touching state: known, distinct
// sequences (length_of returns -1 for unknown ones), at least one token each, token ids in
// [0, vocab_size), room in the context, logit rows inside each request's tokens.
Status check_forward_batch(std::span<const ForwardRequest> batch, int64_t context_length,
                           int64_t vocab_size, const std::function<int64_t(SequenceId)>& length_of);

}  // namespace draftwise
