#include "tools/bench_expect.h"

#include <cmath>

#include <fmt/format.h>

namespace draftwise {

namespace {

using nlohmann::json;

constexpr double kTolerance = 0.05, kAbsoluteTolerance = 0.005;

Expected<double> number_in(const json& object, const char* key, double fallback, const std::string& where) {
  if (!object.contains(key)) return fallback;
  const json& value = object.at(key);
  if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0) {
    return make_error("{}\"{}\" must be a number ≥ 0, got {}", where, key, value.dump());
  }
  return value.get<double>();
}

}  // namespace

bool ExpectationCheck::passed() const { return std::fabs(actual - expected) <= allowed; }

namespace {

// The checks; a mistyped field of `overall` throws.
Expected<std::vector<ExpectationCheck>> check_expectations_or_throw(const json& expectations, const json& overall) {
  if (!expectations.is_object()) return make_error("the expectations must be a JSON object");
  DW_ASSIGN_OR_RETURN(const double tolerance, number_in(expectations, "tolerance", kTolerance, ""));
  DW_ASSIGN_OR_RETURN(const double floor, number_in(expectations, "absolute_tolerance", kAbsoluteTolerance, ""));
  if (!expectations.contains("modes") || !expectations.at("modes").is_object() || expectations.at("modes").empty()) {
    return make_error("\"modes\" must be an object of at least one mode: {{\"MODE\": {{\"tau\": ...}}}}");
  }
  std::vector<ExpectationCheck> checks;
  for (const auto& item : expectations.at("modes").items()) {
    const std::string mode = item.key();
    const json& expected = item.value();
    const std::string where = fmt::format("mode '{}': ", mode);
    if (!expected.is_object()) return make_error("{}must be an object", where);
    if (!overall.contains(mode)) return make_error("{}is not one of this run's modes", where);
    for (const auto& [key, value] : expected.items()) {
      if (key != "tau" && key != "acceptance_per_position" && key != "tolerance") {
        return make_error("{}unknown field \"{}\" (tau, acceptance_per_position, tolerance)", where, key);
      }
    }
    DW_ASSIGN_OR_RETURN(const double own, number_in(expected, "tolerance", tolerance, where));
    const json& speculation = overall.at(mode).at("speculation");
    const auto check = [&](std::string quantity, const json& value, double actual) -> Status {
      if (!value.is_number() || !std::isfinite(value.get<double>())) {
        return make_error("{}{} must be a number, got {}", where, quantity, value.dump());
      }
      const double wanted = value.get<double>();
      checks.push_back({mode, std::move(quantity), wanted, actual, std::max(own * std::fabs(wanted), floor)});
      return {};
    };
    if (expected.contains("tau")) {
      DW_TRY(check("tau", expected.at("tau"), speculation.at("mean_acceptance_length").get<double>()));
    }
    if (expected.contains("acceptance_per_position")) {
      const json& rates = expected.at("acceptance_per_position");
      const json& measured = speculation.at("acceptance_per_position");
      if (!rates.is_array()) return make_error("{}acceptance_per_position must be a list", where);
      if (rates.size() > measured.size()) {
        return make_error("{}{} positions expected, the run drafted {}", where, rates.size(), measured.size());
      }
      for (size_t i = 0; i < rates.size(); ++i) {
        DW_TRY(check(fmt::format("acceptance at position {}", i + 1), rates[i], measured[i].get<double>()));
      }
    }
    if (!expected.contains("tau") && !expected.contains("acceptance_per_position")) {
      return make_error("{}expects nothing (give tau or acceptance_per_position)", where);
    }
  }
  return checks;
}

}  // namespace

Expected<std::vector<ExpectationCheck>> check_expectations(const json& expectations, const json& overall) {
  try {
    return check_expectations_or_throw(expectations, overall);
  } catch (const json::exception& error) {
    return make_error("the run's results do not hold what the expectations name: {}", error.what());
  }
}

json expectations_of(const json& overall, double tolerance) {
  json modes = json::object();
  for (const auto& [mode, summary] : overall.items()) {
    if (mode == "ar") continue;
    const json& speculation = summary.at("speculation");
    modes[mode] = {{"tau", speculation.at("mean_acceptance_length")},
                   {"acceptance_per_position", speculation.at("acceptance_per_position")}};
  }
  return {{"tolerance", tolerance}, {"absolute_tolerance", kAbsoluteTolerance}, {"modes", modes}};
}

}  // namespace draftwise
