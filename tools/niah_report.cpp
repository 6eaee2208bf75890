#include "tools/niah_report.h"

#include <fmt/format.h>

#include "tools/svg_chart.h"

namespace draftwise {

namespace {

using nlohmann::json;

// "3/4", right answers of the cases.
std::string right_of(const json& summary, const char* side) {
  return fmt::format("{}/{}", summary.at(fmt::format("correct_{}", side)).get<int64_t>(),
                     summary.at("cases").get<int64_t>());
}

std::string percent(double share) {
  return fmt::format("{:.0f}%", 100 * share);
}

std::string configuration(const json& config) {
  std::string out = "| | |\n|---|---|\n";
  const auto row = [&](const std::string& name, const std::string& value) {
    out += fmt::format("| {} | {} |\n", name, markdown_cell(value));
  };
  const auto list = [](const json& values) {
    std::string text;
    for (const json& value : values) text += (text.empty() ? "" : ", ") + value.dump();
    return text;
  };
  row("model", fmt::format("{} (SHA-256 {})", config.at("model").get<std::string>(),
                           config.at("model_sha256").get<std::string>()));
  row("device", config.at("backend").get<std::string>());
  row("date", config.at("date").get<std::string>());
  row("qTTT", config.at("qttt").get<std::string>());
  row("prompt lengths", list(config.at("lengths")) + " tokens");
  row("needle depths", list(config.at("depths")));
  row("trials", fmt::format("{} per length and depth (needles from seed {})", config.at("trials").get<int64_t>(),
                            config.at("seed").get<uint64_t>()));
  row("answer", fmt::format("greedy, at most {} tokens; right when its text holds the needle's number",
                            config.at("max_tokens").get<int64_t>()));
  row("prompt", fmt::format("{}; filler from {}", config.at("prompt_format").get<std::string>(),
                            config.at("filler").get<std::string>()));
  row("command", "`" + config.at("command").get<std::string>() + "`");
  return out;
}

std::string accuracy_table(const json& results) {
  const json& summary = results.at("summary");
  const json& depths = results.at("config").at("depths");
  std::string out = "| prompt length |";
  std::string rule = "|---:|";
  for (const json& depth : depths) {
    out += fmt::format(" depth {} |", depth.dump());
    rule += ":---:|";
  }
  out += " all depths |\n" + rule + ":---:|\n";
  for (const json& length : summary.at("lengths")) {
    out += fmt::format("| {} |", length.at("length").get<int64_t>());
    for (const json& cell : summary.at("cells")) {
      if (cell.at("length") != length.at("length")) continue;
      out += fmt::format(" {} → {} |", right_of(cell, "without_qttt"), right_of(cell, "with_qttt"));
    }
    out += fmt::format(" {} → {} |\n", percent(length.at("accuracy_without_qttt").get<double>()),
                       percent(length.at("accuracy_with_qttt").get<double>()));
  }
  const json& overall = summary.at("overall");
  return out + fmt::format("\nOverall: {} → {} ({} → {}).\n", right_of(overall, "without_qttt"),
                           right_of(overall, "with_qttt"), percent(overall.at("accuracy_without_qttt").get<double>()),
                           percent(overall.at("accuracy_with_qttt").get<double>()));
}

std::string logprob_table(const json& results) {
  std::string out =
      "| prompt length | log p(answer) without qTTT | with qTTT | change | context loss without "
      "qTTT | with qTTT |\n"
      "|---:|---:|---:|---:|---:|---:|\n";
  for (const json& length : results.at("summary").at("lengths")) {
    const double before = length.at("mean_answer_logprob_without_qttt").get<double>();
    const double after = length.at("mean_answer_logprob_with_qttt").get<double>();
    out += fmt::format("| {} | {:.3f} | {:.3f} | {:+.3f} | {:.4f} | {:.4f} |\n", length.at("length").get<int64_t>(),
                       before, after, after - before, length.at("mean_context_loss_without_qttt").get<double>(),
                       length.at("mean_context_loss_with_qttt").get<double>());
  }
  return out;
}

std::string cost_table(const json& results) {
  std::string out =
      "| prompt length | prefill s | qTTT s | qTTT ÷ prefill | prefill GFLOP | qTTT GFLOP | qTTT ÷ "
      "prefill FLOPs | "
      "decode ms/token | with qTTT | decode GFLOP/token | qTTT in decode tokens |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const json& length : results.at("summary").at("lengths")) {
    const json& cost = length.at("cost");
    const auto value = [&](const char* name) { return cost.at(name).get<double>(); };
    out += fmt::format(
        "| {} | {:.3f} | {:.3f} | {:.2f}× | {:.2f} | {:.2f} | {:.2f}× | {:.2f} | {:.2f} | {:.4f} | "
        "{:.0f} |\n",
        length.at("length").get<int64_t>(), value("prefill_seconds"), value("adaptation_seconds"),
        value("adaptation_over_prefill_seconds"), value("prefill_flops") / 1e9, value("adaptation_flops") / 1e9,
        value("adaptation_over_prefill_flops"), value("decode_seconds_per_token") * 1e3,
        value("decode_seconds_per_token_with_qttt") * 1e3, value("decode_token_flops") / 1e9,
        value("adaptation_in_decode_tokens"));
  }
  return out;
}

std::string cases_table(const json& results) {
  std::string out =
      "| prompt tokens | depth | placed at | needle | answer without qTTT | with qTTT | log p "
      "without | with | "
      "qTTT loss first → last step |\n"
      "|---:|---:|---:|---|---|---|---:|---:|---|\n";
  const auto answer = [](const json& side) {
    return fmt::format("{} `{}`", side.at("correct").get<bool>() ? "right" : "wrong",
                       markdown_cell(side.at("answer").get<std::string>()));
  };
  for (const json& run : results.at("cases")) {
    const json& losses = run.at("qttt").at("losses");
    const std::string loss =
        losses.empty() ? std::string("—")
                       : fmt::format("{:.3f} → {:.3f}", losses.front().get<double>(), losses.back().get<double>());
    out += fmt::format("| {} | {} | {:.3f} | {} | {} | {} | {:.3f} | {:.3f} | {} |\n",
                       run.at("prompt_tokens").get<int64_t>(), run.at("depth").dump(),
                       run.at("needle").at("depth").get<double>(),
                       markdown_cell(run.at("needle").at("name").get<std::string>() + " " +
                                     run.at("needle").at("number").get<std::string>()),
                       answer(run.at("without_qttt")), answer(run.at("with_qttt")),
                       run.at("without_qttt").at("answer_logprob").get<double>(),
                       run.at("with_qttt").at("answer_logprob").get<double>(), loss);
  }
  return out;
}

std::string tables(const json& results) {
  return "## Accuracy\n\nRight answers without → with qTTT, per prompt length and needle "
         "depth.\n\n" +
         accuracy_table(results) +
         "\n## The answer's log-probability and the context loss\n\n"
         "log p(answer): the sum over the expected answer's tokens of their log-probabilities "
         "after the prompt "
         "(teacher-forced), the mean over cases. Context loss: the mean next-token loss (nats) of "
         "the prompt's "
         "last positions, the loss that qTTT trains on.\n\n" +
         logprob_table(results) +
         "\n## Cost per request\n\n"
         "Means over the cases of each length. Prefill: all of the prompt but its last token. qTTT "
         "in decode "
         "tokens: the adaptation's FLOPs over one decoded token's at this context.\n\n" +
         cost_table(results);
}

LineChart length_chart(const json& results, const std::string& title, const std::string& y_label, const char* without,
                       const char* with, double scale) {
  LineChart chart{title, "prompt length (tokens)", y_label, {}, std::nullopt, /*markers=*/true};
  LineSeries before{"without qTTT", {}, {}, 0};
  LineSeries after{"with qTTT", {}, {}, 1};
  for (const json& length : results.at("summary").at("lengths")) {
    const double x = length.at("length").get<double>();
    before.x.push_back(x);
    after.x.push_back(x);
    before.y.push_back(scale * length.at(without).get<double>());
    after.y.push_back(scale * length.at(with).get<double>());
  }
  chart.series = {before, after};
  return chart;
}

}  // namespace

bool is_niah_results(const json& results) {
  return results.is_object() && results.contains("cases") && results.contains("summary");
}

Expected<std::vector<ReportFile>> niah_report_files(const json& results) {
  try {
    const json& config = results.at("config");
    std::string report = "# draftwise bench --niah\n\n" + configuration(config) + "\n" + tables(results) +
                         "\n## Cases\n\n" + cases_table(results) +
                         "\n## Plots\n\n![accuracy against prompt length](niah.svg)\n\n"
                         "![the answer's log-probability against prompt length](niah_logprob.svg)\n";
    const std::string device = config.at("backend").get<std::string>();
    LineChart accuracy = length_chart(results, "Needle in a haystack: accuracy, " + device, "right answers (%)",
                                      "accuracy_without_qttt", "accuracy_with_qttt", 100);
    accuracy.y_range = {0.0, 100.0};
    return std::vector<ReportFile>{
        {"niah.md", std::move(report)},
        {"niah.svg", render_line_chart(accuracy)},
        {"niah_logprob.svg", render_line_chart(length_chart(
                                 results, "Needle in a haystack: log p(answer), " + device, "mean log p(answer) (nats)",
                                 "mean_answer_logprob_without_qttt", "mean_answer_logprob_with_qttt", 1))}};
  } catch (const json::exception& error) {
    return make_error("niah.json: {}", error.what());
  }
}

Expected<std::string> niah_summary_tables(const json& results) {
  try {
    return tables(results);
  } catch (const json::exception& error) {
    return make_error("niah.json: {}", error.what());
  }
}

}  // namespace draftwise
