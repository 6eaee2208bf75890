#include "engine/speculation.h"

#include <algorithm>

namespace draftwise {

Verdict verify_greedy(std::span<const DraftToken> drafts, std::span<const int32_t> target_argmax) {
  int accepted = 0;
  while (accepted < static_cast<int>(drafts.size()) && drafts[accepted].token == target_argmax[accepted]) ++accepted;
  return {accepted, target_argmax[static_cast<size_t>(accepted)]};
}

Verdict verify_sampled(std::span<const DraftToken> drafts, std::span<const float> logits, int64_t vocab,
                       const SamplingParams& params, Rng& rng) {
  const auto row = [&](size_t i) { return logits.subspan(i * static_cast<size_t>(vocab), static_cast<size_t>(vocab)); };
  for (size_t i = 0; i < drafts.size(); ++i) {
    const TokenDistribution p = sampling_distribution(row(i), params);
    const TokenDistribution& q = drafts[i].distribution;
    const int32_t x = drafts[i].token;
    const double px = p.probability(x);
    const double qx = q.probability(x);
    // Kept with probability min(1, p(x) / q(x)).
    if (rng.uniform() * qx < px) continue;
    // The residual norm(max(0, p − q)) lives on p's support; it has mass, since q(x) > p(x).
    TokenDistribution residual;
    double total = 0.0;
    for (size_t j = 0; j < p.tokens.size(); ++j) {
      const double mass = p.probabilities[j] - q.probability(p.tokens[j]);
      if (mass <= 0.0) continue;
      residual.tokens.push_back(p.tokens[j]);
      residual.probabilities.push_back(mass);
      total += mass;
    }
    if (total <= 0.0) return {static_cast<int>(i), draw(p, rng.uniform())};  // rounding left none
    for (double& mass : residual.probabilities) mass /= total;
    return {static_cast<int>(i), draw(residual, rng.uniform())};
  }
  const TokenDistribution bonus = sampling_distribution(row(drafts.size()), params);
  return {static_cast<int>(drafts.size()), draw(bonus, rng.uniform())};
}

void DraftLength::update(int proposed, int accepted) {
  if (!adaptive_ || proposed <= 0) return;
  if (accepted == proposed) {
    k_ = std::min(k_ + 1, kMaxDraftLength);
  } else if (2 * accepted < proposed) {
    k_ = std::max(k_ - 1, 1);
  }
}

void SpeculationStats::add_step(int proposed, int accepted) {
  ++target_steps;
  if (proposed <= 0) return;
  ++drafts;
  draft_tokens += proposed;
  accepted_tokens += accepted;
  if (drafted_per_position.size() < static_cast<size_t>(proposed)) {
    drafted_per_position.resize(static_cast<size_t>(proposed), 0);
    accepted_per_position.resize(static_cast<size_t>(proposed), 0);
  }
  for (int position = 0; position < proposed; ++position) ++drafted_per_position[static_cast<size_t>(position)];
  for (int position = 0; position < accepted; ++position) ++accepted_per_position[static_cast<size_t>(position)];
}

void SpeculationStats::add(const SpeculationStats& other) {
  drafts += other.drafts;
  draft_tokens += other.draft_tokens;
  accepted_tokens += other.accepted_tokens;
  target_steps += other.target_steps;
  generated_tokens += other.generated_tokens;
  const size_t positions = std::max(drafted_per_position.size(), other.drafted_per_position.size());
  drafted_per_position.resize(positions, 0);
  accepted_per_position.resize(positions, 0);
  for (size_t i = 0; i < other.drafted_per_position.size(); ++i) {
    drafted_per_position[i] += other.drafted_per_position[i];
    accepted_per_position[i] += other.accepted_per_position[i];
  }
}

double SpeculationStats::acceptance_rate() const {
  return draft_tokens > 0 ? static_cast<double>(accepted_tokens) / static_cast<double>(draft_tokens) : 0.0;
}

double SpeculationStats::mean_acceptance_length() const {
  return drafts > 0 ? 1.0 + static_cast<double>(accepted_tokens) / static_cast<double>(drafts) : 1.0;
}

double SpeculationStats::tokens_per_target_step() const {
  return target_steps > 0 ? static_cast<double>(generated_tokens) / static_cast<double>(target_steps) : 0.0;
}

std::vector<double> SpeculationStats::acceptance_per_position() const {
  std::vector<double> rates;
  for (size_t i = 0; i < drafted_per_position.size(); ++i) {
    rates.push_back(drafted_per_position[i] > 0 ? static_cast<double>(accepted_per_position[i]) /
                                                      static_cast<double>(drafted_per_position[i])
                                                : 0.0);
  }
  return rates;
}

Expected<DraftToken> SamplingPicker::pick(std::span<const float> logits) {
  if (const Status finite = check_logits_finite(logits); !finite.ok()) {
    return make_error("the draft model: {}", finite.error().message);
  }
  if (params_.greedy()) {
    const int32_t token = argmax(logits);
    return DraftToken{token, TokenDistribution::one_hot(token)};
  }
  TokenDistribution distribution = sampling_distribution(logits, params_);
  const int32_t token = draw(distribution, rng_.uniform());
  return DraftToken{token, std::move(distribution)};
}

}  // namespace draftwise
