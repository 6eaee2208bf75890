// Speculative decoding's engine side (DESIGN.md, Speculative decoding): the verification
// rules, the draft-length policy, the acceptance statistics, and the token picker through
// which drafters sample by the request's own rule. The loop that uses them is in
// generation.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "draft/drafter.h"
#include "engine/sampling.h"
#include "kernels/random.h"

namespace draftwise {

// What verification kept: the first `accepted` drafted tokens, then `next` from the target
// (the correction at the first rejection, or the bonus token when every draft was kept).
struct Verdict {
  int accepted = 0;
  int32_t next = 0;
};

// Greedy: accept while the draft equals the target's argmax.
//   target_argmax: [drafts + 1], the argmax after the last kept token and after each draft
Verdict verify_greedy(std::span<const DraftToken> drafts, std::span<const int32_t> target_argmax);

// Sampling (Leviathan et al. 2023, Chen et al. 2023): draft x with distribution q is kept
// with probability min(1, p(x) / q(x)), p the target's sampling distribution under `params`;
// at the first rejection `next` is drawn from norm(max(0, p − q)); when all are kept, from
// the target's next distribution. The output has exactly the target's distribution.
//   logits: [drafts + 1, vocab], all finite
Verdict verify_sampled(std::span<const DraftToken> drafts, std::span<const float> logits, int64_t vocab,
                       const SamplingParams& params, Rng& rng);

// The draft length k: fixed, or adaptive ("auto"):
//   - k starts at kInitial; after a verification that kept every drafted token it grows by
//     one, after one that kept fewer than half of them it shrinks by one, within
//     [1, kMaxDraftLength];
//   - drafters with a distribution stop early after a token whose draft probability is
//     below kMinProbability (the confidence cut-off), so that k is an upper bound.
class DraftLength {
 public:
  static constexpr int kMaxDraftLength = 16;
  static constexpr int kInitial = 4;
  static constexpr double kMinProbability = 0.3;

  static DraftLength fixed(int k) { return DraftLength(k, false); }
  static DraftLength adaptive() { return DraftLength(kInitial, true); }

  int current() const { return k_; }
  bool is_adaptive() const { return adaptive_; }
  double min_probability() const { return adaptive_ ? kMinProbability : 0.0; }
  // After a verification that checked `proposed` drafted tokens and kept `accepted`.
  void update(int proposed, int accepted);

 private:
  DraftLength(int k, bool adaptive) : k_(k), adaptive_(adaptive) {}
  int k_;
  bool adaptive_;
};

// Acceptance, counted as vLLM does (DESIGN.md): a draft is a verification step that checked
// at least one drafted token. Sums, so that requests, categories and runs pool by adding.
struct SpeculationStats {
  int64_t drafts = 0;
  int64_t draft_tokens = 0;
  int64_t accepted_tokens = 0;
  int64_t target_steps = 0;      // target forward passes that produced tokens (the prefill's included)
  int64_t generated_tokens = 0;  // tokens generated (kept, up to the end of the request)
  std::vector<int64_t> drafted_per_position;   // [position]: drafts that proposed a token there
  std::vector<int64_t> accepted_per_position;  // [position]: drafts whose token there was kept

  // One target step that checked `proposed` drafted tokens (0: a plain step) and kept `accepted`.
  void add_step(int proposed, int accepted);
  void add(const SpeculationStats& other);
  double acceptance_rate() const;          // accepted / drafted tokens
  double mean_acceptance_length() const;   // τ = 1 + accepted / drafts
  double tokens_per_target_step() const;   // generated tokens / target steps
  std::vector<double> acceptance_per_position() const;  // accepted / drafted, per position
};

// Picks draft tokens by a request's sampling rule: the argmax when greedy, else a draw from
// sampling_distribution with its own random numbers.
class SamplingPicker final : public TokenPicker {
 public:
  SamplingPicker(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {}
  bool greedy() const override { return params_.greedy(); }
  Expected<DraftToken> pick(std::span<const float> logits) override;

 private:
  SamplingParams params_;
  Rng rng_;
};

}  // namespace draftwise
