// The online learner of DVI (DVI.md): records from every verification go into a ring
// buffer; between engine steps, an update draws a batch, computes the loss of the KL → RL
// schedule and its gradient (a DraftHeadTrainer), clips it, and takes one AdamW step on a
// private copy of the adapter, which is then published whole. Drafting reads the published
// adapter only, so it never sees a half-written one.
//
// Schedule (update t, counted from 0): the first `warmup_updates` distil only; over the next
// `ramp_updates` the policy-gradient weight rises linearly to `policy_gradient_weight` and
// the distillation weight falls to `distillation_floor`; the cross-entropy weight is fixed.
// The policy-gradient term is taken over the `policy_gradient_recent` newest records only
// (those drafted by the last few adapters: near on-policy), each weighted by its clipped
// importance ratio; with 0, over every record in the buffer.
// With `policy_gradient = false` (KL only) the distillation weight stays 1 and there is no
// policy-gradient term.
//
// Safety rails: an update whose loss or gradient is not finite is skipped and counted. The
// acceptance rate is measured over windows of `revert_window` drafted tokens; a window at
// or above the last good level makes the current adapter the last good one; after
// `revert_patience` windows in a row clearly below it (rate < level − max(0.05, 0.25 ·
// level)) the adapter and optimizer state return to the last good ones, counted as a revert.
//
// Time: updates run only while the learner's own seconds stay within `time_share` of the
// serving time it has seen (the wall time of the engine steps its requests took part in,
// updates included: add_serving_time); `update_interval` verifications must pass between
// updates.
#pragma once

#include <cstdint>
#include <memory>

#include "draft/dvi_adapter.h"
#include "draft/dvi_loss.h"
#include "draft/dvi_records.h"
#include "kernels/random.h"
#include "kernels/status.h"

namespace draftwise {

struct LearnerOptions {
  int64_t rank = 16;
  float alpha = 32.0f;
  bool lens = true;  // the head's trainable lens M besides gain, A and B (dvi_adapter.h)
  float learning_rate = 1e-3f;
  float weight_decay = 0.0f;  // AdamW's decoupled decay, on A, B and M (never on the gain)
  float clip_norm = 1.0f;     // of the whole gradient
  int64_t batch_size = 64;
  int64_t update_interval = 8;  // verifications between updates
  int64_t buffer_size = 4096;   // records
  int64_t top_k = 64;           // verifier logits kept per record
  float temperature = 1.0f;     // of distillation
  float cross_entropy_weight = 0.5f;
  bool policy_gradient = true;  // false: KL only
  float policy_gradient_weight = 1.0f;
  float distillation_floor = 0.2f;
  int64_t warmup_updates = 50;
  int64_t ramp_updates = 200;
  float baseline_decay = 0.99f;  // EMA of rewards
  float importance_clip = 2.0f;
  int64_t policy_gradient_recent = 256;  // records; 0: all
  float time_share = 0.15f;  // of wall time, at most
  int64_t revert_window = 1024;  // drafted tokens
  int64_t revert_patience = 2;
  uint64_t seed = 0x5EED;
};

// Checks every option against its documented range.
Status validate_learner_options(const LearnerOptions& options);

struct LearnerStats {
  int64_t records = 0;  // logged
  int64_t updates = 0;
  int64_t skipped = 0;  // non-finite loss or gradient
  int64_t reverted = 0;
  DviLossTerms last_loss;  // of the last update taken
  double seconds = 0.0;    // spent in updates
  void add(const LearnerStats& other);
};

class OnlineLearner {
 public:
  OnlineLearner(DraftHeadTrainer& trainer, DraftAdapter initial, const LearnerOptions& options);

  // The adapter drafting uses now; replaced (never modified) by updates and reverts.
  std::shared_ptr<const DraftAdapter> adapter() const { return published_; }
  const LearnerOptions& options() const { return options_; }
  const LearnerStats& stats() const { return stats_; }

  // Learning on or off (off: records and updates stop; the adapter stays).
  void set_enabled(bool enabled) { enabled_ = enabled; }
  bool enabled() const { return enabled_; }

  void add_record(DraftRecord record);
  // Wall time of an engine step this learner's requests took part in, while it learns.
  void add_serving_time(double seconds) {
    if (enabled_) serving_seconds_ += seconds;
  }
  // One verification: `drafted` tokens checked, `accepted` kept.
  void observe_verification(int drafted, int accepted);
  // Takes one update when one is due and the time share allows; returns whether it did.
  Expected<bool> maybe_update();
  // One update now, whatever the schedule of interval and time share.
  Status update();

  // The loss weights of update number `t` (DVI.md's KL → RL schedule).
  DviLossWeights weights_at(int64_t t) const;

 private:
  struct State {
    DraftAdapter adapter;
    std::vector<float> first_moment, second_moment;  // AdamW, one value per parameter: gain | A | B
    int64_t steps = 0;
  };
  void check_acceptance_window();
  // Makes the current adapter the one drafting reads, under a new version.
  void publish();

  DraftHeadTrainer& trainer_;
  LearnerOptions options_;
  State state_;
  State last_good_;
  double last_good_level_ = -1.0;  // acceptance rate; < 0: not measured yet
  int64_t low_windows_ = 0;
  std::shared_ptr<const DraftAdapter> published_;
  DraftRecordRing ring_;
  Rng rng_;
  bool enabled_ = true;
  float baseline_ = 0.0f;
  bool baseline_set_ = false;
  int64_t since_update_ = 0;
  int64_t window_drafted_ = 0;
  int64_t window_accepted_ = 0;
  LearnerStats stats_;
  double serving_seconds_ = 0.0;
  double last_update_seconds_ = 0.0;
};

}  // namespace draftwise
