#include "draft/dvi_learner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace draftwise {

namespace {

constexpr double kAdamBeta1 = 0.9;
constexpr double kAdamBeta2 = 0.999;
constexpr double kAdamEpsilon = 1e-8;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Status validate_learner_options(const LearnerOptions& o) {
  const auto positive = [](double value) { return std::isfinite(value) && value > 0.0; };
  const auto non_negative = [](double value) { return std::isfinite(value) && value >= 0.0; };
  if (o.rank < 1 || o.rank > DraftAdapterShape::kMaxRank) {
    return make_error("--learn-rank must be in [1, {}], got {}", DraftAdapterShape::kMaxRank,
                      o.rank);
  }
  if (!positive(o.alpha)) return make_error("--learn-alpha must be positive, got {}", o.alpha);
  if (!positive(o.learning_rate))
    return make_error("--learn-lr must be positive, got {}", o.learning_rate);
  if (!non_negative(o.weight_decay))
    return make_error("--learn-weight-decay must be ≥ 0, got {}", o.weight_decay);
  if (!positive(o.clip_norm))
    return make_error("the gradient clipping norm must be positive, got {}", o.clip_norm);
  if (o.batch_size < 1 || o.batch_size > 4096) {
    return make_error("--learn-batch must be in [1, 4096], got {}", o.batch_size);
  }
  if (o.update_interval < 1)
    return make_error("--learn-interval must be at least 1, got {}", o.update_interval);
  if (o.buffer_size < o.batch_size || o.buffer_size > (int64_t{1} << 20)) {
    return make_error("--learn-buffer must be in [the batch size {}, 1048576], got {}",
                      o.batch_size, o.buffer_size);
  }
  if (o.top_k < 1 || o.top_k > 4096)
    return make_error("--learn-top-k must be in [1, 4096], got {}", o.top_k);
  if (!positive(o.temperature))
    return make_error("--learn-temperature must be positive, got {}", o.temperature);
  if (!non_negative(o.cross_entropy_weight) || !non_negative(o.policy_gradient_weight)) {
    return make_error("the loss weights must be ≥ 0");
  }
  if (!(o.distillation_floor >= 0.0f && o.distillation_floor <= 1.0f)) {
    return make_error("the distillation floor must be in [0, 1], got {}", o.distillation_floor);
  }
  if (o.warmup_updates < 0 || o.ramp_updates < 0)
    return make_error("the warm-up and ramp lengths must be ≥ 0");
  if (!(o.baseline_decay >= 0.0f && o.baseline_decay < 1.0f)) {
    return make_error("the baseline decay must be in [0, 1), got {}", o.baseline_decay);
  }
  if (o.policy_gradient_recent < 0)
    return make_error("--learn-pg-recent must be ≥ 0, got {}", o.policy_gradient_recent);
  if (!non_negative(o.importance_clip))
    return make_error("the importance clip must be ≥ 0, got {}", o.importance_clip);
  if (!(o.time_share > 0.0f && o.time_share <= 1.0f)) {
    return make_error("--learn-time-share must be in (0, 1], got {}", o.time_share);
  }
  if (o.revert_window < 1 || o.revert_patience < 1)
    return make_error("the revert window and patience must be ≥ 1");
  return {};
}

void LearnerStats::add(const LearnerStats& other) {
  records += other.records;
  updates += other.updates;
  skipped += other.skipped;
  reverted += other.reverted;
  seconds += other.seconds;
  if (other.updates > 0) last_loss = other.last_loss;
}

OnlineLearner::OnlineLearner(DraftHeadTrainer& trainer, DraftAdapter initial,
                             const LearnerOptions& options)
    : trainer_(trainer), options_(options), ring_(options.buffer_size), rng_(options.seed) {
  const size_t parameters = initial.gain.size() + initial.a.size() + initial.b.size() + initial.lens.size();
  state_.adapter = std::move(initial);
  state_.first_moment.assign(parameters, 0.0f);
  state_.second_moment.assign(parameters, 0.0f);
  last_good_ = state_;
  publish();
}

void OnlineLearner::add_record(DraftRecord record) {
  if (!enabled_) return;
  const float reward = record.reward;
  record.serial = stats_.records;
  ring_.push(std::move(record));
  ++stats_.records;
  baseline_ = baseline_set_
                  ? options_.baseline_decay * baseline_ + (1.0f - options_.baseline_decay) * reward
                  : reward;
  baseline_set_ = true;
}

void OnlineLearner::observe_verification(int drafted, int accepted) {
  if (!enabled_) return;
  ++since_update_;
  window_drafted_ += drafted;
  window_accepted_ += accepted;
  if (window_drafted_ >= options_.revert_window) check_acceptance_window();
}

void OnlineLearner::check_acceptance_window() {
  const double rate = static_cast<double>(window_accepted_) / static_cast<double>(window_drafted_);
  window_drafted_ = 0;
  window_accepted_ = 0;
  if (last_good_level_ >= 0.0 &&
      rate < last_good_level_ - std::max(0.05, 0.25 * last_good_level_)) {
    if (++low_windows_ >= options_.revert_patience) {
      state_ = last_good_;
      publish();
      ++stats_.reverted;
      low_windows_ = 0;
    }
    return;
  }
  low_windows_ = 0;
  last_good_ = state_;
  last_good_level_ = rate;
}

void OnlineLearner::publish() {
  auto adapter = std::make_shared<DraftAdapter>(state_.adapter);
  adapter->version = DraftAdapter::new_version();
  published_ = std::move(adapter);
}

DviLossWeights OnlineLearner::weights_at(int64_t t) const {
  DviLossWeights weights;
  weights.temperature = options_.temperature;
  weights.cross_entropy = options_.cross_entropy_weight;
  weights.baseline = baseline_;
  weights.importance_clip = options_.importance_clip;
  weights.distillation = 1.0f;
  if (!options_.policy_gradient || t < options_.warmup_updates) return weights;
  const float progress = options_.ramp_updates == 0
                             ? 1.0f
                             : std::min(1.0f, static_cast<float>(t - options_.warmup_updates) /
                                                  static_cast<float>(options_.ramp_updates));
  weights.policy_gradient = options_.policy_gradient_weight * progress;
  if (options_.policy_gradient_recent > 0) {
    weights.policy_gradient_from = stats_.records - options_.policy_gradient_recent;
  }
  weights.distillation = 1.0f - (1.0f - options_.distillation_floor) * progress;
  return weights;
}

Expected<bool> OnlineLearner::maybe_update() {
  if (!enabled_ || since_update_ < options_.update_interval || ring_.size() < options_.batch_size)
    return false;
  // The update about to run counts as long as the last one took: the share holds after it.
  if (stats_.seconds + last_update_seconds_ > options_.time_share * (serving_seconds_ + last_update_seconds_)) {
    return false;
  }
  const auto start = std::chrono::steady_clock::now();
  DW_TRY(update());
  last_update_seconds_ = seconds_since(start);
  serving_seconds_ += last_update_seconds_;  // the update is part of the serving time
  return true;
}

Status OnlineLearner::update() {
  if (ring_.size() == 0) return {};
  const auto start = std::chrono::steady_clock::now();
  since_update_ = 0;
  const std::vector<const DraftRecord*> batch = ring_.sample(options_.batch_size, rng_);
  DviGradients gradients;
  const Expected<DviLossTerms> loss = trainer_.loss_and_gradients(
      batch, state_.adapter, weights_at(stats_.updates + stats_.skipped), gradients);
  if (!loss.ok()) return loss.error();
  // The whole gradient, gain | A | B | M, its norm clipped.
  if (gradients.lens.size() != state_.adapter.lens.size()) {
    return make_error("the trainer's lens gradient has {} values, the lens {}", gradients.lens.size(),
                      state_.adapter.lens.size());
  }
  const std::vector<float>* parts[] = {&gradients.gain, &gradients.a, &gradients.b, &gradients.lens};
  double squares = 0.0;
  for (const std::vector<float>* part : parts) {
    for (const float g : *part) squares += static_cast<double>(g) * g;
  }
  if (!std::isfinite(loss->total) || !std::isfinite(squares)) {
    ++stats_.skipped;
    stats_.seconds += seconds_since(start);
    return {};
  }
  const double norm = std::sqrt(squares);
  const double clip = norm > options_.clip_norm ? options_.clip_norm / norm : 1.0;
  // AdamW (Loshchilov & Hutter 2019), bias-corrected, decay decoupled and off for the gain.
  // A step that would leave a non-finite parameter is skipped like a non-finite gradient.
  // Only the parameters need keeping: the moments stay finite with a finite gradient.
  const std::vector<float> before[] = {state_.adapter.gain, state_.adapter.a, state_.adapter.b,
                                       state_.adapter.lens};
  ++state_.steps;
  const double correction1 = 1.0 - std::pow(kAdamBeta1, static_cast<double>(state_.steps));
  const double correction2 = 1.0 - std::pow(kAdamBeta2, static_cast<double>(state_.steps));
  std::vector<float>* values[] = {&state_.adapter.gain, &state_.adapter.a, &state_.adapter.b,
                                  &state_.adapter.lens};
  size_t offset = 0;
  for (size_t p = 0; p < std::size(values); ++p) {
    std::vector<float>& parameter = *values[p];
    const std::vector<float>& gradient = *parts[p];
    const double decay = p == 0 ? 0.0 : options_.weight_decay;
    for (size_t i = 0; i < parameter.size(); ++i) {
      const double g = gradient[i] * clip;
      float& m = state_.first_moment[offset + i];
      float& v = state_.second_moment[offset + i];
      m = static_cast<float>(kAdamBeta1 * m + (1.0 - kAdamBeta1) * g);
      v = static_cast<float>(kAdamBeta2 * v + (1.0 - kAdamBeta2) * g * g);
      const double step = (m / correction1) / (std::sqrt(v / correction2) + kAdamEpsilon);
      parameter[i] =
          static_cast<float>(parameter[i] - options_.learning_rate * (step + decay * parameter[i]));
    }
    offset += parameter.size();
  }
  for (const std::vector<float>* parameter : values) {
    if (std::all_of(parameter->begin(), parameter->end(), [](float x) { return std::isfinite(x); }))
      continue;
    for (size_t p = 0; p < std::size(values); ++p) *values[p] = before[p];
    --state_.steps;
    ++stats_.skipped;
    stats_.seconds += seconds_since(start);
    return {};
  }
  publish();
  ++stats_.updates;
  stats_.last_loss = *loss;
  stats_.seconds += seconds_since(start);
  return {};
}

}  // namespace draftwise
