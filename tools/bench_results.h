// The pieces of the benchmark's results.json made from the engine's outcomes
// (engine/benchmark.h): a mode's summary over prompts, and one prompt's outcome in one mode,
// with where it first differs from ar's and how both continue.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/benchmark.h"

namespace draftwise {

// Tokens of each continuation shown for a mismatch.
inline constexpr size_t kShownContinuationTokens = 12;

// `checked`: whether outputs were compared with ar's (greedy runs only); if not, the
// losslessness fields are null. `mode` "ar" has no drafter.
nlohmann::json summary_json(const ModeSummary& summary, const std::string& mode, bool checked);

// outcome.modes[m] ("drafter": its name, empty for ar); `decode` turns tokens into text for
// the continuations of a mismatch. With qTTT, "qttt": the turns adapted and their seconds.
nlohmann::json mode_outcome_json(const PromptOutcome& outcome, size_t m, const std::string& drafter, bool checked,
                                 const std::function<std::string(std::span<const int32_t>)>& decode);

}  // namespace draftwise
