// The DVI learner's loss on a batch of records and its gradient, written by hand for exactly
// the draft head's trainable parameters (DVI.md, "The loss and its schedule"). For a record
// (h, a, verifier top-K logits t over tokens S, reward r), with x = h + M h (x = h without a
// lens), n = rms_norm(x, gain) and z = (W_lm + γ B A) n the draft logits:
//
//   distillation    T² · KL(q ‖ softmax(z / T) restricted to S),  q = softmax(t / T) over S
//                   (the verifier's top-K renormalised; the draft's full-softmax log-probs)
//   cross-entropy   r · (−log softmax(z)[a])            (accepted records only)
//   policy gradient (r − b) · w · (−log softmax(z)[a])   (b: the baseline; w: the clipped
//                   importance ratio p_S(a) / p_logged(a), held constant, or 1; records that
//                   arrived before `policy_gradient_from` have no such term: w = 0)
//
//   L = mean over records of (w_kd · distillation + w_ce · cross-entropy + w_pg · policy gradient)
//
// ∂L/∂z = (w_kd · T · (softmax(z/T) − q) + (w_ce r + w_pg (r − b) w) · (softmax(z) − e_a)) / N;
// then ∂B = γ Σ ∂z uᵀ with u = A n, ∂A = Σ (γ Bᵀ ∂z) nᵀ, ∂n = W_lmᵀ ∂z + Aᵀ γ Bᵀ ∂z,
// ∂gain = Σ ∂n ⊙ x / rms(x), and through the norm (ρ = 1 / rms(x), d = hidden)
// ∂x = ρ (gain ⊙ ∂n) − (ρ³ / d) (Σ_k gain_k ∂n_k x_k) x, ∂M = Σ ∂x hᵀ.
#pragma once

#include <span>
#include <vector>

#include "draft/dvi_adapter.h"
#include "draft/dvi_records.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/status.h"

namespace draftwise {

struct DviLossWeights {
  float distillation = 1.0f;     // w_kd
  float cross_entropy = 0.0f;    // w_ce
  float policy_gradient = 0.0f;  // w_pg
  float temperature = 1.0f;      // T > 0
  float baseline = 0.0f;         // b
  float importance_clip = 0.0f;  // > 0: w = min(clip, p_S(a) / p_logged(a)); 0: w = 1
  int64_t policy_gradient_from = 0;  // the oldest record serial with a policy-gradient term
};

// Each term's mean over the batch (unweighted) and the weighted total.
struct DviLossTerms {
  double distillation = 0.0;
  double cross_entropy = 0.0;
  double policy_gradient = 0.0;
  double total = 0.0;
};

// ∂L with respect to the adapter's parameters, each of its tensor's shape.
struct DviGradients {
  std::vector<float> gain;  // [hidden]
  std::vector<float> a;     // [rank, hidden]
  std::vector<float> b;     // [vocab, rank]
  std::vector<float> lens;  // [hidden, hidden]; empty without a lens
};

// Where the loss and its gradient are computed: on the CPU, or next to a GPU's weights.
class DraftHeadTrainer {
 public:
  virtual ~DraftHeadTrainer() = default;
  // L over `records` (at least one, each with a hidden state of the adapter's size) and its
  // gradient; a non-finite value is returned as it is, for the caller to refuse.
  virtual Expected<DviLossTerms> loss_and_gradients(std::span<const DraftRecord* const> records,
                                                    const DraftAdapter& adapter,
                                                    const DviLossWeights& weights,
                                                    DviGradients& gradients) = 0;
};

// The steps every trainer shares, on the host (small: records × hidden).
namespace dvi {
// Checks that every record fits a model of `hidden` and `vocab`.
Status check_records(std::span<const DraftRecord* const> records, const DraftAdapter& adapter, int64_t hidden,
                     const DviLossWeights& weights);
// x = h + M h (h without a lens), n = rms_norm(x, gain) and 1 / rms(x) of every record.
// Results do not depend on the pool's thread count.
struct NormedRecords {
  std::vector<float> exit;         // [N, hidden]: h, kept with a lens only
  std::vector<float> hidden;       // [N, hidden]: x
  std::vector<float> normed;       // [N, hidden]
  std::vector<float> inverse_rms;  // [N]
};
NormedRecords normalize(std::span<const DraftRecord* const> records, const DraftAdapter& adapter, float eps,
                        cpu::ThreadPool& pool);
// From Σ_v ∂z[i, v] W_lm[v, :] (head_product, [N, hidden]) and Σ_v ∂z[i, v] B[v, :]
// (b_product, [N, rank]) to ∂A, ∂gain and ∂M (∂B is the trainer's own); fills gradients.a,
// .gain and .lens.
void finish_gradients(const DraftAdapter& adapter, const NormedRecords& normed, std::vector<float> head_product,
                      std::vector<float> b_product, DviGradients& gradients, cpu::ThreadPool& pool);
// The batch means of per-record terms ([N, 3]: distillation, cross-entropy, policy gradient)
// and their weighted total.
DviLossTerms mean_terms(std::span<const double> terms, const DviLossWeights& weights);
}  // namespace dvi

// The CPU trainer: W_lm in fp32 host memory, fp32 arithmetic with double sums for the loss.
// Results do not depend on the thread count.
class CpuDraftHeadTrainer final : public DraftHeadTrainer {
 public:
  //   lm_head: [vocab, hidden], outliving the trainer
  CpuDraftHeadTrainer(std::span<const float> lm_head, int64_t hidden, float rms_norm_eps,
                      cpu::ThreadPool& pool)
      : lm_head_(lm_head), hidden_(hidden), eps_(rms_norm_eps), pool_(pool) {}

  Expected<DviLossTerms> loss_and_gradients(std::span<const DraftRecord* const> records,
                                            const DraftAdapter& adapter,
                                            const DviLossWeights& weights,
                                            DviGradients& gradients) override;

 private:
  std::span<const float> lm_head_;
  int64_t hidden_;
  float eps_;
  cpu::ThreadPool& pool_;
};

}  // namespace draftwise
