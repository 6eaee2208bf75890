// The speculation statistics as the commands report them (generate --json, bench
// results.json), named as DESIGN.md and vLLM name them.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/speculation.h"

namespace draftwise {

// `drafter`: its spec, or empty without one.
nlohmann::json speculation_json(const SpeculationStats& stats, const std::string& drafter);

}  // namespace draftwise
