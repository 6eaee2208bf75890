#include "tools/bench_results.h"

#include <algorithm>
#include <vector>

#include "tools/speculation_json.h"

namespace draftwise {

nlohmann::json summary_json(const ModeSummary& summary, const std::string& mode, bool checked) {
  const auto when_checked = [&](nlohmann::json value) { return checked ? value : nlohmann::json(nullptr); };
  return {{"prompts", summary.prompts},
          {"tokens", summary.tokens},
          {"seconds", summary.seconds},
          {"tokens_per_second", summary.mean_tokens_per_second},
          {"speedup", summary.speedup},
          {"lossless_prompts", when_checked(summary.lossless_prompts)},
          {"near_tie_prompts", when_checked(summary.near_tie_prompts)},
          {"lossless", when_checked(summary.lossless_prompts == summary.prompts)},
          {"lossless_up_to_near_ties",
           when_checked(summary.lossless_prompts + summary.near_tie_prompts == summary.prompts)},
          {"speculation", speculation_json(summary.speculation, mode == "ar" ? std::string() : mode)}};
}

nlohmann::json mode_outcome_json(const PromptOutcome& outcome, size_t m, const std::string& drafter, bool checked,
                                 const std::function<std::string(std::span<const int32_t>)>& decode) {
  const ModeOutcome& result = outcome.modes[m];
  const double reference = outcome.modes.front().tokens_per_second();
  nlohmann::json difference = nullptr;
  if (result.difference) {
    // From the first differing token on, in the turn where it is.
    const auto continuation = [&](const ModeOutcome& of) {
      const auto turn_index = static_cast<size_t>(result.difference->turn);
      std::vector<int32_t> shown;
      if (turn_index < of.turns.size()) {
        const std::vector<int32_t>& turn = of.turns[turn_index];
        const size_t from = std::min(turn.size(), static_cast<size_t>(result.difference->position));
        const size_t to = std::min(turn.size(), from + kShownContinuationTokens);
        shown.assign(turn.begin() + static_cast<std::ptrdiff_t>(from), turn.begin() + static_cast<std::ptrdiff_t>(to));
      }
      return std::pair{shown.empty() ? nlohmann::json(nullptr) : nlohmann::json(shown.front()), decode(shown)};
    };
    const auto [reference_token, reference_text] = continuation(outcome.modes.front());
    const auto [mode_token, mode_text] = continuation(result);
    difference = {{"turn", result.difference->turn},
                  {"position", result.difference->position},
                  {"reference_margin", result.difference->reference_margin},
                  {"after_near_tie", result.difference->after_near_tie},
                  {"reference_token", reference_token},
                  {"mode_token", mode_token},
                  {"reference_text", reference_text},
                  {"mode_text", mode_text}};
  }
  nlohmann::json out = {{"tokens", result.tokens},
                        {"turn_tokens", result.turns},
                        {"seconds", result.seconds},
                        {"tokens_per_second", result.tokens_per_second()},
                        {"speedup", reference > 0 ? result.tokens_per_second() / reference : 0.0},
                        {"lossless", checked ? nlohmann::json(!result.difference.has_value())
                                             : nlohmann::json(nullptr)},
                        {"first_difference", difference},
                        {"speculation", speculation_json(result.speculation, drafter)}};
  if (result.adaptations > 0) {
    out["qttt"] = {{"adaptations", result.adaptations}, {"seconds", result.adaptation_seconds}};
  }
  return out;
}

}  // namespace draftwise
