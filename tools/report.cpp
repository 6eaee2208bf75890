// draftwise report: remakes report.md and the SVG plots of a saved bench run from its
// results.json (tools/bench_report.h), or niah.md and its plots from a bench --niah run's
// niah.json (tools/niah_report.h), into the run's folder or --out DIR.
#include <fstream>

#include "tools/bench_report.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/niah_report.h"

namespace draftwise {

int run_report(const std::vector<std::string>& cli) {
  std::string results_path, out;
  ArgParser parser("report",
                   "Remakes report.md and the plots of a bench run from its results.json, or "
                   "niah.md and its plots "
                   "from a bench --niah run's niah.json.");
  parser.add_positional("results", &results_path,
                        "the results.json (or niah.json) that draftwise bench wrote");
  parser.add_option("out", &out, "DIR", "where the report goes (default: the folder of results.json)");
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  const auto fail = [](const std::string& message) {
    print_error("draftwise report: " + message);
    return 1;
  };
  std::ifstream file(results_path);
  if (!file) return fail(results_path + ": cannot be read");
  const nlohmann::json results = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
  if (results.is_discarded()) return fail(results_path + ": not valid JSON");
  if (!results.is_object()) return fail(results_path + ": not a bench results.json (not an object)");
  Expected<std::vector<ReportFile>> files =
      is_niah_results(results) ? niah_report_files(results) : bench_report_files(results);
  if (!files.ok()) return fail(files.error().message);
  const std::filesystem::path directory =
      out.empty() ? std::filesystem::path(results_path).parent_path() : std::filesystem::path(out);
  std::error_code error;
  if (!directory.empty()) std::filesystem::create_directories(directory, error);
  if (error) return fail(directory.string() + ": " + error.message());
  if (const Status written = write_report_files(*files, directory.empty() ? "." : directory); !written.ok()) {
    return fail(written.error().message);
  }
  for (const ReportFile& written : *files) fmt::print("{}\n", (directory / written.name).string());
  return 0;
}

}  // namespace draftwise
