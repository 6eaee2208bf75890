#include "tools/speculation_json.h"

namespace draftwise {

nlohmann::json speculation_json(const SpeculationStats& stats, const std::string& drafter) {
  return {{"drafter", drafter.empty() ? nlohmann::json(nullptr) : nlohmann::json(drafter)},
          {"drafts", stats.drafts},
          {"draft_tokens", stats.draft_tokens},
          {"accepted_tokens", stats.accepted_tokens},
          {"acceptance_rate", stats.acceptance_rate()},
          {"mean_acceptance_length", stats.mean_acceptance_length()},
          {"accepted_per_position", stats.accepted_per_position},
          {"drafted_per_position", stats.drafted_per_position},
          {"acceptance_per_position", stats.acceptance_per_position()},
          {"target_steps", stats.target_steps},
          {"generated_tokens", stats.generated_tokens},
          {"tokens_per_target_step", stats.tokens_per_target_step()}};
}

}  // namespace draftwise
