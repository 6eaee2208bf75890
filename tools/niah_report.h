// The needle-in-a-haystack benchmark's human-readable output, made from its niah.json
// (tools/niah_bench.h) alone, so that `draftwise report DIR/niah.json` remakes it:
//   niah.md           configuration and command line; accuracy without → with qTTT per prompt
//                     length and depth; the answer's log-probability and the context loss
//                     without and with qTTT; the cost per request; every case
//   niah.svg          accuracy against prompt length, without and with qTTT
//   niah_logprob.svg  the answer's mean log-probability against prompt length, without and with
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/status.h"
#include "tools/bench_report.h"

namespace draftwise {

// Whether `results` is a niah.json (rather than a bench results.json).
bool is_niah_results(const nlohmann::json& results);

// niah.md and the plots. Errors name the missing or mistyped field of `results`.
Expected<std::vector<ReportFile>> niah_report_files(const nlohmann::json& results);

// The accuracy, log-probability and cost tables of niah.md, for the terminal.
Expected<std::string> niah_summary_tables(const nlohmann::json& results);

}  // namespace draftwise
