#include "tools/bench_report.h"

#include <fstream>

#include <fmt/format.h>

#include "tools/svg_chart.h"

namespace draftwise {

namespace {

using nlohmann::json;

// Prompts in the trailing window of the τ curve.
constexpr size_t kCurveWindow = 16;

std::string text_of(const json& value) {
  if (value.is_string()) return value.get<std::string>().empty() ? "—" : value.get<std::string>();
  if (value.is_null()) return "—";
  if (value.is_number_float()) return fmt::format("{:.6g}", value.get<double>());
  return value.dump();
}

bool sampled(const json& config) { return config.value("temperature", 0.0) > 0.0; }

std::string lossless_cell(const json& summary, bool sampling) {
  if (sampling) return "not checked (sampling)";
  const int64_t prompts = summary.at("prompts").get<int64_t>();
  const int64_t equal = summary.at("lossless_prompts").get<int64_t>();
  const int64_t near_ties = summary.value("near_tie_prompts", int64_t{0});
  if (equal == prompts) return fmt::format("yes ({}/{})", equal, prompts);
  if (equal + near_ties == prompts) return fmt::format("up to near-ties ({}/{} equal)", equal, prompts);
  return fmt::format("**no** ({}/{} equal, {} after a near-tie)", equal, prompts, near_ties);
}

std::string positions_cell(const json& speculation) {
  std::string out;
  for (const json& rate : speculation.at("acceptance_per_position")) {
    out += fmt::format("{}{:.3f}", out.empty() ? "" : " ", rate.get<double>());
  }
  return out.empty() ? "—" : out;
}

// The modes of `section` ({mode: summary}) in the run's order.
std::vector<std::string> modes_of(const json& results) {
  std::vector<std::string> modes;
  for (const json& mode : results.at("config").at("modes")) modes.push_back(mode.get<std::string>());
  return modes;
}

std::string summary_table(const json& section, const std::vector<std::string>& modes, bool sampling) {
  std::string out =
      "| mode | tokens/s | speed-up | τ | acceptance rate | acceptance per position | lossless |\n"
      "|---|---:|---:|---:|---:|---|---|\n";
  for (const std::string& mode : modes) {
    if (!section.contains(mode)) continue;
    const json& summary = section.at(mode);
    const json& speculation = summary.at("speculation");
    const bool plain = mode == "ar";
    out += fmt::format("| {} | {:.1f} | {:.2f}× | {} | {} | {} | {} |\n", markdown_cell(mode),
                       summary.at("tokens_per_second").get<double>(), summary.at("speedup").get<double>(),
                       plain ? "1.00" : fmt::format("{:.3f}", speculation.at("mean_acceptance_length").get<double>()),
                       plain ? "—" : fmt::format("{:.3f}", speculation.at("acceptance_rate").get<double>()),
                       plain ? "—" : positions_cell(speculation), plain ? "reference" : lossless_cell(summary, sampling));
  }
  return out;
}

std::string configuration(const json& results) {
  const json& config = results.at("config");
  std::string out = "| | |\n|---|---|\n";
  const auto row = [&](const std::string& name, const std::string& value) {
    out += fmt::format("| {} | {} |\n", name, markdown_cell(value));
  };
  row("model", fmt::format("{} (SHA-256 {})", text_of(config.at("model")), text_of(config.at("model_sha256"))));
  row("device", text_of(config.at("backend")));
  row("date", text_of(config.at("date")));
  if (config.contains("commit")) row("commit", text_of(config.at("commit")));
  std::string categories;
  for (const json& category : config.at("categories")) {
    categories += (categories.empty() ? "" : ", ") + category.get<std::string>();
  }
  row("prompts", fmt::format("{} from {} ({})", config.at("prompts").get<int64_t>(), text_of(config.at("prompts_file")),
                             categories));
  const int64_t limit = config.value("limit_per_category", int64_t{0});
  if (limit > 0) row("limit", fmt::format("the first {} prompts of each category", limit));
  row("new tokens a turn", fmt::format("at most {}", config.at("max_tokens").get<int64_t>()));
  row("sampling", sampled(config) ? fmt::format("temperature {}, seed {}", config.at("temperature").get<double>(),
                                                text_of(config.value("seed", json(nullptr))))
                                  : "greedy");
  std::string modes;
  for (const std::string& mode : modes_of(results)) modes += (modes.empty() ? "" : ", ") + mode;
  row("modes", modes);
  if (config.contains("qttt") && !config.at("qttt").is_null()) {
    row("qTTT", fmt::format("every request adapts its queries on its prompt ({})", text_of(config.at("qttt"))));
  }
  const int64_t holdout = config.value("holdout_every", int64_t{0});
  if (holdout > 0) {
    row("hold-out", fmt::format("every {}th prompt of each category, run before and after learning on the rest", holdout));
  }
  if (config.contains("learner")) {
    std::string learner;
    for (const auto& [name, value] : config.at("learner").items()) {
      learner += fmt::format("{}{} {}", learner.empty() ? "" : "; ", name, text_of(value));
    }
    row("learner", learner);
  }
  return out;
}

std::string learners_table(const json& overall, const std::vector<std::string>& modes) {
  std::string out;
  for (const std::string& mode : modes) {
    if (!overall.contains(mode) || !overall.at(mode).contains("learner")) continue;
    const json& learner = overall.at(mode).at("learner");
    if (out.empty()) {
      out = "| mode | records | updates | skipped | reverted | seconds in updates | share of wall time |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n";
    }
    out += fmt::format("| {} | {} | {} | {} | {} | {:.2f} | {:.1f}% |\n", markdown_cell(mode), learner.at("records").get<int64_t>(),
                       learner.at("updates").get<int64_t>(), learner.at("skipped").get<int64_t>(),
                       learner.at("reverted").get<int64_t>(), learner.at("seconds").get<double>(),
                       100.0 * overall.at(mode).value("learner_time_share", 0.0));
  }
  return out;
}

std::string holdout_table(const json& holdout, const std::vector<std::string>& modes, bool sampling) {
  const json& before = holdout.at("before").at("overall");
  const json& after = holdout.at("after").at("overall");
  std::string out =
      "| mode | τ before | τ after | ratio | acceptance per position after | speed-up before | speed-up after | "
      "lossless after |\n|---|---:|---:|---:|---|---:|---:|---|\n";
  for (const std::string& mode : modes) {
    if (mode == "ar" || !before.contains(mode) || !after.contains(mode)) continue;
    const double tau_before = before.at(mode).at("speculation").at("mean_acceptance_length").get<double>();
    const double tau_after = after.at(mode).at("speculation").at("mean_acceptance_length").get<double>();
    out += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {} | {:.2f}× | {:.2f}× | {} |\n", markdown_cell(mode), tau_before,
                       tau_after, tau_before > 0 ? tau_after / tau_before : 0.0,
                       positions_cell(after.at(mode).at("speculation")), before.at(mode).at("speedup").get<double>(),
                       after.at(mode).at("speedup").get<double>(), lossless_cell(after.at(mode), sampling));
  }
  return out;
}

std::string categories_table(const json& categories, const std::vector<std::string>& modes, bool sampling) {
  std::string out =
      "| category | mode | tokens/s | speed-up | τ | acceptance rate | lossless |\n"
      "|---|---|---:|---:|---:|---:|---|\n";
  for (const auto& [category, by_mode] : categories.items()) {
    for (const std::string& mode : modes) {
      if (!by_mode.contains(mode)) continue;
      const json& summary = by_mode.at(mode);
      const bool plain = mode == "ar";
      out += fmt::format(
          "| {} | {} | {:.1f} | {:.2f}× | {} | {} | {} |\n", markdown_cell(category), markdown_cell(mode),
          summary.at("tokens_per_second").get<double>(), summary.at("speedup").get<double>(),
          plain ? "1.00" : fmt::format("{:.3f}", summary.at("speculation").at("mean_acceptance_length").get<double>()),
          plain ? "—" : fmt::format("{:.3f}", summary.at("speculation").at("acceptance_rate").get<double>()),
          plain ? "reference" : lossless_cell(summary, sampling));
    }
  }
  return out;
}

// Every prompt and mode whose output differs from ar's.
std::string mismatches(const json& results, const std::vector<std::string>& modes) {
  std::string rows;
  size_t count = 0;
  size_t outputs = 0;
  for (const json& prompt : results.at("prompts")) {
    for (const std::string& mode : modes) {
      if (mode == "ar" || !prompt.at("modes").contains(mode)) continue;
      ++outputs;
      const json& difference = prompt.at("modes").at(mode).at("first_difference");
      if (difference.is_null()) continue;
      ++count;
      rows += fmt::format(
          "| {} | {} | {} | {} | {} | {} | {:.4f} | {} | {} | {} |\n", markdown_cell(text_of(prompt.value("phase", json("all")))),
          markdown_cell(text_of(prompt.at("id"))), markdown_cell(text_of(prompt.at("category"))), markdown_cell(mode),
          difference.at("turn").get<int64_t>() + 1, difference.at("position").get<int64_t>(),
          difference.at("reference_margin").get<double>(), difference.at("after_near_tie").get<bool>() ? "yes" : "**no**",
          markdown_cell(text_of(difference.value("reference_text", json(nullptr)))),
          markdown_cell(text_of(difference.value("mode_text", json(nullptr)))));
    }
  }
  std::string out = fmt::format("{} of {} outputs differ from ar's.\n", count, outputs);
  if (count == 0) return out;
  out += "\nEach row: where the mode's output first differs (turn from 1; position: generated tokens before the "
         "difference), ar's smallest relative top-1/top-2 logit margin up to there, whether that is a near-tie (under "
         "2%), and how each continues from the first differing token.\n\n"
         "| phase | prompt | category | mode | turn | position | ar margin | near-tie | ar continues | mode continues |\n"
         "|---|---|---|---|---:|---:|---:|---|---|---|\n" +
         rows;
  return out;
}

// τ over the last kCurveWindow prompts (1 + accepted / drafts, pooled; the mean of their τ
// for results written before drafts were recorded), over processed tokens.
LineChart tau_curve(const json& curves, const std::vector<std::string>& modes) {
  LineChart chart;
  chart.title = "τ while learning";
  chart.x_label = "processed tokens (learning prompts, in file order)";
  chart.y_label = fmt::format("τ over the last {} prompts", kCurveWindow);
  int drafting = -1;  // the mode's index among the drafting modes: its colour in every plot
  for (const std::string& mode : modes) {
    if (mode == "ar") continue;
    ++drafting;
    if (!curves.contains(mode)) continue;
    const json& points = curves.at(mode);
    LineSeries series;
    series.colour = drafting;
    series.name = mode;
    for (size_t end = 1; end <= points.size(); ++end) {
      const size_t begin = end > kCurveWindow ? end - kCurveWindow : 0;
      double drafts = 0, accepted = 0, tau_sum = 0;
      bool pooled = true;
      for (size_t i = begin; i < end; ++i) {
        const json& point = points[i];
        pooled = pooled && point.contains("drafts") && point.contains("accepted_tokens");
        if (pooled) {
          drafts += point.at("drafts").get<double>();
          accepted += point.at("accepted_tokens").get<double>();
        }
        tau_sum += point.at("tau").get<double>();
      }
      series.x.push_back(points[end - 1].at("tokens").get<double>());
      series.y.push_back(pooled ? (drafts > 0 ? 1.0 + accepted / drafts : 1.0)
                                : tau_sum / static_cast<double>(end - begin));
    }
    chart.series.push_back(std::move(series));
  }
  return chart;
}

BarChart acceptance_chart(const json& section, const std::vector<std::string>& modes, const std::string& where) {
  BarChart chart;
  chart.title = "Acceptance per draft position" + where;
  chart.x_label = "draft position";
  chart.y_label = "acceptance rate (accepted / drafted)";
  size_t positions = 0;
  for (const std::string& mode : modes) {
    if (mode == "ar" || !section.contains(mode)) continue;
    const json& rates = section.at(mode).at("speculation").at("acceptance_per_position");
    chart.series_names.push_back(mode);
    std::vector<double> values;
    for (const json& rate : rates) values.push_back(rate.get<double>());
    positions = std::max(positions, values.size());
    chart.values.push_back(std::move(values));
  }
  for (size_t p = 0; p < positions; ++p) chart.groups.push_back(std::to_string(p + 1));
  return chart;
}

BarChart speedup_chart(const json& categories, const std::vector<std::string>& modes) {
  BarChart chart;
  chart.title = "Speed-up against ar, per category";
  chart.x_label = "category";
  chart.y_label = "speed-up (× tokens/s of ar)";
  chart.reference = 1.0;
  for (const auto& [category, by_mode] : categories.items()) chart.groups.push_back(category);
  for (const std::string& mode : modes) {
    if (mode == "ar") continue;
    std::vector<double> values;
    for (const auto& [category, by_mode] : categories.items()) {
      values.push_back(by_mode.contains(mode) ? by_mode.at(mode).at("speedup").get<double>() : NAN);
    }
    chart.series_names.push_back(mode);
    chart.values.push_back(std::move(values));
  }
  return chart;
}

}  // namespace

std::string markdown_cell(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += "⏎";
    } else if (c != '\r') {
      out += c;
    }
  }
  return out;
}

Expected<std::vector<ReportFile>> bench_report_files(const json& results) {
  try {
    if (!results.contains("config") || !results.at("config").contains("modes") ||
        !results.at("config").at("modes").is_array()) {
      return make_error("results.json: config.modes must be a list of mode names");
    }
    const std::vector<std::string> modes = modes_of(results);
    const bool sampling = sampled(results.at("config"));
    const bool held_out = results.contains("holdout");
    const json curves = results.value("learning_curves", json::object());
    std::vector<ReportFile> files;
    std::string plots;
    if (!curves.empty()) {
      files.push_back({"tau_curve.svg", render_line_chart(tau_curve(curves, modes))});
      plots += "![τ over processed tokens](tau_curve.svg)\n\n";
    }
    const json& overall = results.at("overall");
    files.push_back({"acceptance_per_position.svg",
                     render_bar_chart(acceptance_chart(held_out ? results.at("holdout").at("after").at("overall")
                                                                : overall,
                                                       modes, held_out ? ", held-back prompts after learning" : ""))});
    files.push_back({"speedup_per_category.svg", render_bar_chart(speedup_chart(results.at("categories"), modes))});
    plots += "![acceptance per draft position](acceptance_per_position.svg)\n\n"
             "![speed-up per category](speedup_per_category.svg)\n";

    std::string report = "# draftwise bench\n\n" + configuration(results) + "\n";
    if (held_out) {
      report += fmt::format("## Held-back prompts, before and after learning\n\n{} prompts held back.\n\n",
                            results.at("holdout").at("before").at("prompts").get<int64_t>()) +
                holdout_table(results.at("holdout"), modes, sampling) + "\n";
    }
    report += std::string(held_out ? "## The learning part\n\n" : "## Overall\n\n") +
              "Speed-up: the mean over prompts of each prompt's tokens/s against ar's. τ: the mean acceptance "
              "length, 1 + accepted / drafts (tokens per verification, the bonus token counted), pooled over "
              "prompts.\n\n" +
              summary_table(overall, modes, sampling) + "\n";
    if (const std::string learners = learners_table(overall, modes); !learners.empty()) {
      report += "## Learners\n\n" + learners + "\n";
    }
    report += (held_out ? "## Per category, the learning part\n\n" : "## Per category\n\n") +
              categories_table(results.at("categories"), modes, sampling) + "\n";
    report += "## Losslessness\n\n" +
              (sampling ? std::string("Not checked: a sampled run's text may differ from ar's, as drafts consume "
                                      "random numbers differently; its acceptance is what it measures.\n")
                        : mismatches(results, modes)) +
              "\n";
    report += "## Plots\n\n" + plots;
    files.insert(files.begin(), ReportFile{"report.md", std::move(report)});
    return files;
  } catch (const json::exception& error) {
    return make_error("results.json: {}", error.what());
  }
}

Status write_file_atomically(const std::filesystem::path& path, const std::string& content) {
  const std::filesystem::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary);
    if (!out) return make_error("{}: cannot be written", temporary.string());
    out << content;
    if (!out) return make_error("{}: write error", temporary.string());
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) return make_error("{}: {}", path.string(), error.message());
  return {};
}

Status write_report_files(const std::vector<ReportFile>& files, const std::filesystem::path& directory) {
  for (const ReportFile& file : files) DW_TRY(write_file_atomically(directory / file.name, file.content));
  return {};
}

Status write_results_json(const nlohmann::json& results, const std::filesystem::path& directory,
                          const std::string& name) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) return make_error("{}: {}", directory.string(), error.message());
  return write_file_atomically(directory / name,
                               results.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace draftwise
