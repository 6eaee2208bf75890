// Query-only test-time training (qTTT, QTTT.md; Bansal et al., arXiv 2512.13898): after a
// request's context is prefilled, N gradient steps on random spans of s context tokens train a
// ΔW_Q for every layer — the span's queries, computed with W_Q + ΔW_Q, attend to the frozen
// cached keys and values — and the request's later tokens are decoded with W_Q + ΔW_Q.
//
// What the backends share: the options and their `--qttt` spec, the report of one
// adaptation, the parameter layout and the FLOP counts that the benchmark compares.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"
#include "target/model_config.h"

namespace draftwise {

class QueryAdaptation;

enum class QttOptimizer { adam, sgd };
std::string_view qtt_optimizer_name(QttOptimizer optimizer);  // "adam", "sgd"

struct QttOptions {
  int steps = 16;                 // gradient steps N, ≥ 1
  int64_t span = 128;             // tokens per step s, ≥ 1 (fewer when the context is shorter)
  float learning_rate = 1e-3f;    // > 0
  int64_t rank = 0;               // 0: full-rank ΔW_Q; r ≥ 1: ΔW_Q = B A of rank r
  QttOptimizer optimizer = QttOptimizer::adam;
  uint64_t seed = 0;              // picks the spans and the low-rank A's initial values
};

// "steps=N,span=S,lr=X,rank=R,optimizer=adam|sgd,seed=K" (any subset, in any order; the rest
// keep their defaults; rank=full for 0) or "on" for the defaults. Errors name the key.
Expected<QttOptions> parse_qtt_spec(std::string_view spec);
// The spec that parse_qtt_spec reads back into the same options.
std::string qtt_spec(const QttOptions& options);

// Adam's constants (Kingma & Ba 2015, Algorithm 1) for qTTT.
inline constexpr float kQttAdamBeta1 = 0.9f;
inline constexpr float kQttAdamBeta2 = 0.999f;
inline constexpr float kQttAdamEpsilon = 1e-8f;

// The parameters of one adaptation, flat, layer after layer: full rank, ΔW_Q [q_dim, hidden]
// per layer; rank r, A [r, hidden] then B [q_dim, r] per layer (ΔW_Q = B A).
int64_t qtt_layer_parameters(const ModelConfig& config, int64_t rank);
int64_t qtt_parameter_count(const ModelConfig& config, int64_t rank);

// Options this model can take (rank at most the hidden size), with errors that name the field.
Status check_qtt_options(const QttOptions& options, const ModelConfig& config);

// The positions of a sequence of `length` tokens that qTTT can train on, given its `context`
// ([length] or [length + 1] tokens, ids below `vocab`): those with a next token, at least one.
Expected<int64_t> qtt_trainable_positions(int64_t length, std::span<const int32_t> context, int64_t vocab);

// The checks every backend makes, with the same messages. query_loss: positions
// [first, first + count) among the trainable ones. adapt_queries: a position to train on, and
// an adaptation the sequence already holds (or none) of the options' rank. set_query_parameters:
// a rank in [0, max_rank] and its parameter count.
Status check_qtt_positions(int64_t first, int64_t count, int64_t trainable);
Status check_qtt_start(int64_t sequence, int64_t length, size_t context_size, int64_t trainable,
                       const QueryAdaptation* held, int64_t rank);
Status check_qtt_parameters(const ModelConfig& config, int64_t rank, int64_t max_rank, size_t count);

// Where an adaptation starts: ΔW_Q = 0 at full rank; at rank r, B = 0 and A uniform in
// ±1/sqrt(hidden) from `seed` (as LoRA starts), so that B A = 0 and B's gradient is not.
std::vector<float> qtt_initial_parameters(const ModelConfig& config, int64_t rank, uint64_t seed);

// The first position of each step's span: uniform over [0, trainable − span], from `seed`.
std::vector<int64_t> qtt_span_starts(const QttOptions& options, int64_t trainable, int64_t span);

// One optimizer step on the host (the CPU backend's; GPUs run the same arithmetic in a
// kernel): SGD, p −= lr g; Adam with bias correction at step `step` (1, 2, …).
//   parameters, gradient, first_moment, second_moment: [count]
void qtt_optimizer_step(const QttOptions& options, int64_t step, float* parameters, const float* gradient,
                        float* first_moment, float* second_moment, int64_t count);

// One sequence's ΔW_Q and its optimizer state, as a backend holds it (Decoder::
// query_adaptation): host memory on the CPU, device memory on a GPU.
class QueryAdaptation {
 public:
  virtual ~QueryAdaptation() = default;
  virtual int64_t rank() const = 0;  // 0: full rank
  virtual int64_t bytes() const = 0;  // parameters and optimizer state
};

// The outcome of one adapt_queries call.
struct QttReport {
  QttOptions options;
  int64_t span = 0;             // tokens per step actually used (the context may be shorter)
  int64_t context = 0;          // positions whose queries could be trained
  std::vector<double> losses;   // each step's mean next-token loss (nats), before its update
  double seconds = 0;
  double flops = 0;             // forward and backward of every step (qtt_step_flops)
  int64_t parameter_bytes = 0;  // ΔW_Q and the optimizer's state
};

// Floating-point operations (multiply and add counted apart) of the matrix products and the
// attention of: one qTTT step over `span` rows at positions [first, first + span) (forward,
// then the backward into the queries: every product's input gradient, ΔW_Q's gradient, the
// attention's scores recomputed), a prefill of `tokens` tokens, and one decoded token after
// `context` positions.
double qtt_step_flops(const ModelConfig& config, int64_t span, int64_t first, int64_t rank);
double prefill_flops(const ModelConfig& config, int64_t tokens);
double decode_token_flops(const ModelConfig& config, int64_t context);

}  // namespace draftwise
