// draftwise bench --niah: the needle-in-a-haystack benchmark of qTTT (QTTT.md, "What to
// measure"). For every prompt length, needle depth and trial (tools/niah_haystack.h), one flow
// on one prefill of all of the prompt but its last token:
//   1. the qTTT loss of the context's last positions and the answer's log-probability, then
//      the greedy answer, all without an adaptation (the sequence cut back after each);
//   2. Decoder::adapt_queries on the prompt, as a request with GenerationOptions::qttt does;
//   3. the same loss, log-probability and greedy answer with the adaptation.
// An answer is right when its text holds the needle's number. The cost per request: prefill,
// adaptation and decode seconds and FLOPs (target/qttt.h). Writes DIR/niah.json (configuration,
// every case, summaries per length and per length and depth), DIR/niah.md and SVG plots
// (tools/niah_report.h); the summary tables go to stdout, a line per case to stderr.
#pragma once

#include <string>
#include <vector>

namespace draftwise {

// The arguments after `draftwise bench --niah`; returns the exit code.
int run_niah_bench(const std::vector<std::string>& args);

}  // namespace draftwise
