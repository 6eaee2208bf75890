// The benchmark's human-readable output, made from its results.json (tools/bench.cpp) alone,
// so that a report can be remade from any saved run:
//   report.md                     configuration and device; overall, held-back and per-category
//                                 tables (τ, acceptance rate, acceptance per position, tokens/s,
//                                 speed-up against ar, lossless yes/no); the learners; every
//                                 prompt whose output differs from ar's, with where and how
//   tau_curve.svg                 τ over processed tokens, one line per +learn mode
//   acceptance_per_position.svg   acceptance per draft position, bars per mode
//   speedup_per_category.svg      speed-up against ar per category, bars per mode
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/status.h"

namespace draftwise {

struct ReportFile {
  std::string name;  // in the output directory
  std::string content;
};

// report.md and the plots (the τ curve only when a mode learned). Errors name the missing or
// mistyped field of `results`.
Expected<std::vector<ReportFile>> bench_report_files(const nlohmann::json& results);

// Text as one Markdown table cell: line breaks shown as ⏎, pipes escaped.
std::string markdown_cell(const std::string& text);

// `content` to `path` through a temporary file and a rename: a killed run never leaves a torn file.
Status write_file_atomically(const std::filesystem::path& path, const std::string& content);
// The files into `directory`, each written atomically.
Status write_report_files(const std::vector<ReportFile>& files, const std::filesystem::path& directory);
// A run's results as `directory`/`name` (indented JSON, invalid UTF-8 replaced), the folder
// made first when missing.
Status write_results_json(const nlohmann::json& results, const std::filesystem::path& directory,
                          const std::string& name);

}  // namespace draftwise
