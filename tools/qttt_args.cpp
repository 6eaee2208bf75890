#include "tools/qttt_args.h"

#include <fmt/format.h>

namespace draftwise {

void add_qttt_option(ArgParser& parser, std::string& spec, std::string_view prompts) {
  parser.add_option("qttt", &spec, "SPEC",
                    fmt::format("query-only test-time training: adapt the query projections on {} before "
                                "decoding. SPEC: on ({}), off, or any of those key=value pairs, the others as on "
                                "has them (rank=R or full, optimizer=adam or sgd; docs/qttt.md; default off)",
                                prompts, qtt_spec(QttOptions{})));
}

Expected<std::optional<QttOptions>> parse_qttt_option(std::string_view spec) {
  if (spec == "off") return std::optional<QttOptions>();
  Expected<QttOptions> options = parse_qtt_spec(spec);
  // parse_qtt_spec's errors start "qttt: ", so that "--" makes them name the flag.
  if (!options.ok()) return make_error("--{}", options.error().message);
  return std::optional<QttOptions>(*options);
}

Status check_qttt_option(const std::optional<QttOptions>& options, const ModelConfig& config) {
  if (!options) return {};
  if (const Status checked = check_qtt_options(*options, config); !checked.ok()) {
    return make_error("--{}", checked.error().message);
  }
  return {};
}

nlohmann::json qttt_json(const QttReport& report) {
  const auto loss = [&](bool first) {
    if (report.losses.empty()) return nlohmann::json(nullptr);
    return nlohmann::json(first ? report.losses.front() : report.losses.back());
  };
  return {{"spec", qtt_spec(report.options)},
          {"steps", report.losses.size()},
          {"span", report.span},
          {"context", report.context},
          {"losses", report.losses},
          {"first_loss", loss(true)},
          {"last_loss", loss(false)},
          {"seconds", report.seconds},
          {"flops", report.flops},
          {"parameter_bytes", report.parameter_bytes}};
}

std::string qttt_summary(const QttReport& report) {
  const std::string losses =
      report.losses.empty() ? std::string()
                            : fmt::format(", loss {:.2f} → {:.2f}", report.losses.front(), report.losses.back());
  return fmt::format("qttt: {} steps of {} tokens{} in {:.2f} s", report.losses.size(), report.span, losses,
                     report.seconds);
}

}  // namespace draftwise
