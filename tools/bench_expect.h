// The benchmark's regression mode, in the style of vLLM's acceptance-length test: a file of
// expected τ and acceptance per draft position per mode, each with a relative tolerance; a
// run outside them fails. The file (JSON):
//
//   {"tolerance": 0.05,            relative, for every value (default 0.05)
//    "absolute_tolerance": 0.005,  a floor for values near 0 (default 0.005)
//    "modes": {"ngram:3@4": {"tau": 3.24, "acceptance_per_position": [0.81, 0.62, 0.47, 0.31]},
//              ...}}
//
// A value passes when |actual − expected| ≤ max(tolerance · |expected|, absolute_tolerance).
// A mode may set its own "tolerance". `--write-expect` writes this run's values as such a file.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/status.h"

namespace draftwise {

struct ExpectationCheck {
  std::string mode;
  std::string quantity;  // "tau", "acceptance at position 2"
  double expected = 0, actual = 0, allowed = 0;
  bool passed() const;
};

// Every check of `expectations` against `overall` (results.json's {mode: summary}). Errors
// name what is malformed in the file, or a mode it names that the run did not have.
Expected<std::vector<ExpectationCheck>> check_expectations(const nlohmann::json& expectations,
                                                           const nlohmann::json& overall);

// An expectations file holding `overall`'s values for every drafting mode.
nlohmann::json expectations_of(const nlohmann::json& overall, double tolerance);

}  // namespace draftwise
