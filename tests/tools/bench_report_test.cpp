// The bench report and its plots hold the numbers of results.json; a mismatching output is
// listed with where it differs and how both continue; axes get round ticks; bad results are
// refused naming the field.
#include <gtest/gtest.h>

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tools/bench_expect.h"
#include "tools/bench_report.h"
#include "tools/bench_results.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/test_paths.h"
#include "engine/generation.h"
#include "tools/svg_chart.h"

namespace draftwise {
namespace {

using nlohmann::json;

json summary(int64_t prompts, double tokens_per_second, double speedup, double tau, double rate,
             std::vector<double> per_position, int64_t lossless, int64_t near_ties) {
  return {{"prompts", prompts},
          {"tokens", 100},
          {"seconds", 1.0},
          {"tokens_per_second", tokens_per_second},
          {"speedup", speedup},
          {"lossless_prompts", lossless},
          {"near_tie_prompts", near_ties},
          {"lossless", lossless == prompts},
          {"lossless_up_to_near_ties", lossless + near_ties == prompts},
          {"speculation",
           {{"mean_acceptance_length", tau},
            {"acceptance_rate", rate},
            {"acceptance_per_position", per_position}}}};
}

// Two prompts, ar and two drafting modes, one learning; the second prompt's self:8 output
// differs from ar's after a near-tie.
json sample_results() {
  json results;
  results["config"] = {{"model", "models/m.gguf"},   {"model_sha256", "abc123"},
                       {"device", "cuda:0"},         {"backend", "cuda:0 (NVIDIA H200, 139.8 GiB)"},
                       {"date", "2026-12-02T00:00:00Z"},
                       {"prompts_file", "q.jsonl"},  {"prompts", 2},
                       {"categories", {"qa", "writing"}},
                       {"limit_per_category", 0},    {"max_tokens", 64},
                       {"temperature", 0.0},         {"holdout_every", 0},
                       {"modes", {"ar", "ngram:3@4", "self:8+learn@4"}},
                       {"learner", {{"rank", 16}, {"learning_rate", 0.001}}}};
  results["overall"] = {{"ar", summary(2, 1689.25, 1.0, 1.0, 0.0, {}, 2, 0)},
                        {"ngram:3@4", summary(2, 2077.5, 1.2345, 3.2417, 0.5604, {0.81, 0.62, 0.47, 0.31}, 2, 0)},
                        {"self:8+learn@4", summary(2, 640.0, 0.3789, 1.2521, 0.0632, {0.1734, 0.0251}, 1, 1)}};
  results["overall"]["self:8+learn@4"]["learner"] = {{"records", 900}, {"updates", 42}, {"skipped", 1},
                                                     {"reverted", 0}, {"seconds", 0.75}};
  results["overall"]["self:8+learn@4"]["learner_time_share"] = 0.1466;
  results["categories"]["qa"] = {{"ar", summary(1, 1700.0, 1.0, 1.0, 0.0, {}, 1, 0)},
                                 {"ngram:3@4", summary(1, 2100.0, 1.3111, 3.0, 0.5, {0.7}, 1, 0)},
                                 {"self:8+learn@4", summary(1, 650.0, 0.4222, 1.3, 0.07, {0.2}, 1, 0)}};
  results["categories"]["writing"] = {{"ar", summary(1, 1680.0, 1.0, 1.0, 0.0, {}, 1, 0)},
                                      {"ngram:3@4", summary(1, 2050.0, 1.1577, 3.5, 0.6, {0.9}, 1, 0)},
                                      {"self:8+learn@4", summary(1, 630.0, 0.3356, 1.2, 0.05, {0.1}, 0, 1)}};
  const json equal = {{"first_difference", nullptr}};
  results["prompts"] = json::array();
  results["prompts"].push_back({{"id", "81"}, {"category", "qa"},
                                {"modes", {{"ar", equal}, {"ngram:3@4", equal}, {"self:8+learn@4", equal}}}});
  const json differing = {{"first_difference",
                           {{"turn", 1},
                            {"position", 17},
                            {"reference_margin", 0.0042},
                            {"after_near_tie", true},
                            {"reference_token", 314},
                            {"mode_token", 2718},
                            {"reference_text", " the river | bank"},
                            {"mode_text", " a bank\nof the river"}}}};
  results["prompts"].push_back({{"id", "95"}, {"category", "writing"},
                                {"modes", {{"ar", equal}, {"ngram:3@4", equal}, {"self:8+learn@4", differing}}}});
  results["learning_curves"]["self:8+learn@4"] = json::array();
  for (int i = 1; i <= 3; ++i) {
    results["learning_curves"]["self:8+learn@4"].push_back(
        {{"tokens", 128 * i}, {"tau", 1.0 + 0.1 * i}, {"prompt_number", i}});
  }
  return results;
}

const ReportFile& file_named(const std::vector<ReportFile>& files, const std::string& name) {
  for (const ReportFile& file : files) {
    if (file.name == name) return file;
  }
  ADD_FAILURE() << name << " was not made";
  static const ReportFile none;
  return none;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(BenchReport, TablesHoldTheNumbersOfTheResults) {
  const json results = sample_results();
  const Expected<std::vector<ReportFile>> files = bench_report_files(results);
  ASSERT_TRUE(files.ok()) << files.error().message;
  const std::string& report = file_named(*files, "report.md").content;
  // Every mode's overall row, formatted from results.json.
  for (const auto& [mode, entry] : results["overall"].items()) {
    EXPECT_TRUE(contains(report, fmt::format("| {} | {:.1f} | {:.2f}× |", mode, entry["tokens_per_second"].get<double>(),
                                             entry["speedup"].get<double>())))
        << mode << "\n" << report;
  }
  EXPECT_TRUE(contains(report, "| 3.242 | 0.560 | 0.810 0.620 0.470 0.310 | yes (2/2) |")) << report;
  EXPECT_TRUE(contains(report, "| 1.252 | 0.063 | 0.173 0.025 | up to near-ties (1/2 equal) |")) << report;
  EXPECT_TRUE(contains(report, "| writing | ngram:3@4 | 2050.0 | 1.16× | 3.500 | 0.600 | yes (1/1) |")) << report;
  EXPECT_TRUE(contains(report, "| self:8+learn@4 | 900 | 42 | 1 | 0 | 0.75 | 14.7% |")) << report;
  EXPECT_TRUE(contains(report, "NVIDIA H200")) << report;
  EXPECT_TRUE(contains(report, "SHA-256 abc123")) << report;
  EXPECT_TRUE(contains(report, "greedy")) << report;
}

TEST(BenchReport, MismatchingOutputsAreListedWithBothContinuations) {
  const Expected<std::vector<ReportFile>> files = bench_report_files(sample_results());
  ASSERT_TRUE(files.ok()) << files.error().message;
  const std::string& report = file_named(*files, "report.md").content;
  EXPECT_TRUE(contains(report, "1 of 4 outputs differ from ar's.")) << report;
  // Turn 2 (shown from 1), position 17, both continuations on one table line.
  EXPECT_TRUE(contains(report, "| all | 95 | writing | self:8+learn@4 | 2 | 17 | 0.0042 | yes |  the river \\| bank "
                               "|  a bank⏎of the river |"))
      << report;
}

TEST(BenchReport, PlotsHoldTheValuesAndEveryLearningMode) {
  const json results = sample_results();
  const Expected<std::vector<ReportFile>> files = bench_report_files(results);
  ASSERT_TRUE(files.ok()) << files.error().message;
  const std::string& positions = file_named(*files, "acceptance_per_position.svg").content;
  EXPECT_TRUE(contains(positions, "<svg")) << positions;
  EXPECT_TRUE(contains(positions, "<title>ngram:3@4 1: 0.81</title>")) << positions;
  EXPECT_TRUE(contains(positions, "<title>self:8+learn@4 2: 0.0251</title>")) << positions;
  EXPECT_TRUE(contains(positions, "acceptance rate (accepted / drafted)"));
  const std::string& speedups = file_named(*files, "speedup_per_category.svg").content;
  EXPECT_TRUE(contains(speedups, "<title>ngram:3@4 qa: 1.311</title>")) << speedups;
  EXPECT_TRUE(contains(speedups, "<title>self:8+learn@4 writing: 0.3356</title>")) << speedups;
  EXPECT_TRUE(contains(speedups, "stroke-dasharray"));  // the line at 1×
  const std::string& curve = file_named(*files, "tau_curve.svg").content;
  EXPECT_TRUE(contains(curve, "<polyline")) << curve;
  EXPECT_TRUE(contains(curve, "self:8+learn@4"));
  EXPECT_TRUE(contains(curve, "processed tokens"));
  // Without learning there is no curve.
  json plain = results;
  plain.erase("learning_curves");
  const Expected<std::vector<ReportFile>> without = bench_report_files(plain);
  ASSERT_TRUE(without.ok());
  for (const ReportFile& file : *without) EXPECT_NE(file.name, "tau_curve.svg");
}

TEST(BenchReport, ResultsMissingAFieldAreRefusedNamingIt) {
  json results = sample_results();
  results["overall"]["ngram:3@4"].erase("speedup");
  const Expected<std::vector<ReportFile>> files = bench_report_files(results);
  ASSERT_FALSE(files.ok());
  EXPECT_TRUE(contains(files.error().message, "speedup")) << files.error().message;
  json mistyped = sample_results();
  mistyped["config"]["modes"] = "ar";
  EXPECT_FALSE(bench_report_files(mistyped).ok());
}

TEST(SvgChart, TicksAreRoundAndCoverTheRange) {
  const struct {
    double low, high;
  } ranges[] = {{0, 1}, {0, 0.37}, {1.2, 1.62}, {0, 12403}, {-0.3, 2.1}, {5, 5}};
  // Ranges no round step divides still give two ticks that cover them.
  for (const auto& [low, high] : {std::pair{-1e308, 1e308}, std::pair{1.0, 1.0 + 4e-16}}) {
    const std::vector<double> ticks = nice_ticks(low, high);
    ASSERT_GE(ticks.size(), 2u);
    EXPECT_LE(ticks.front(), low);
    EXPECT_GE(ticks.back(), high);
  }
  for (const auto& range : ranges) {
    const std::vector<double> ticks = nice_ticks(range.low, range.high);
    ASSERT_GE(ticks.size(), 2u) << range.low << " " << range.high;
    EXPECT_LE(ticks.front(), range.low);
    EXPECT_GE(ticks.back(), range.high);
    EXPECT_LE(ticks.size(), 12u);
    const double step = ticks[1] - ticks[0];
    const double mantissa = step / std::pow(10.0, std::floor(std::log10(step)));
    EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-6 || std::fabs(mantissa - 2) < 1e-6 || std::fabs(mantissa - 5) < 1e-6)
        << step;
  }
}

TEST(SvgChart, TextIsEscaped) {
  BarChart chart;
  chart.title = "a < b & \"c\"";
  chart.groups = {"<g>"};
  chart.series_names = {"s&t"};
  chart.values = {{1.5}};
  const std::string svg = render_bar_chart(chart);
  EXPECT_TRUE(contains(svg, "a &lt; b &amp; &quot;c&quot;"));
  EXPECT_TRUE(contains(svg, "&lt;g&gt;"));
  EXPECT_FALSE(contains(svg, "<g>"));
}

TEST(BenchExpect, ARunPassesItsOwnExpectationsAndFailsShiftedOnes) {
  const json overall = sample_results()["overall"];
  const json own = expectations_of(overall, 0.05);
  EXPECT_FALSE(own["modes"].contains("ar"));
  const Expected<std::vector<ExpectationCheck>> checks = check_expectations(own, overall);
  ASSERT_TRUE(checks.ok()) << checks.error().message;
  EXPECT_EQ(checks->size(), 2u + 4u + 2u);  // τ and every position of both drafting modes
  for (const ExpectationCheck& check : *checks) EXPECT_TRUE(check.passed()) << check.mode << " " << check.quantity;
  // τ 6% above the run fails at 5%; 4% above passes.
  json shifted = own;
  shifted["modes"]["ngram:3@4"]["tau"] = 3.2417 * 1.06;
  shifted["modes"]["self:8+learn@4"]["acceptance_per_position"][0] = 0.1734 * 1.04;
  const Expected<std::vector<ExpectationCheck>> after = check_expectations(shifted, overall);
  ASSERT_TRUE(after.ok());
  std::vector<std::string> failed;
  for (const ExpectationCheck& check : *after) {
    if (!check.passed()) failed.push_back(check.mode + " " + check.quantity);
  }
  EXPECT_EQ(failed, std::vector<std::string>{"ngram:3@4 tau"});
  // A value near 0 is held to the absolute floor, not to 5% of itself.
  json small = own;
  small["modes"]["self:8+learn@4"]["acceptance_per_position"][1] = 0.0251 + 0.004;
  const Expected<std::vector<ExpectationCheck>> within = check_expectations(small, overall);
  ASSERT_TRUE(within.ok());
  for (const ExpectationCheck& check : *within) EXPECT_TRUE(check.passed());
  small["modes"]["self:8+learn@4"]["acceptance_per_position"][1] = 0.0251 + 0.006;
  const Expected<std::vector<ExpectationCheck>> beyond = check_expectations(small, overall);
  ASSERT_TRUE(beyond.ok());
  size_t outside = 0;
  for (const ExpectationCheck& check : *beyond) outside += check.passed() ? 0 : 1;
  EXPECT_EQ(outside, 1u);
}

TEST(BenchExpect, MalformedExpectationsAreRefusedNamingTheProblem) {
  const json overall = sample_results()["overall"];
  const auto refused = [&](const json& expectations, const std::string& problem) {
    const Expected<std::vector<ExpectationCheck>> checks = check_expectations(expectations, overall);
    ASSERT_FALSE(checks.ok()) << expectations.dump();
    EXPECT_TRUE(contains(checks.error().message, problem)) << checks.error().message;
  };
  refused(json::array(), "JSON object");
  refused(json::object(), "\"modes\"");
  refused({{"modes", {{"eagle:3@4", {{"tau", 2.0}}}}}}, "mode 'eagle:3@4': is not one of this run's modes");
  refused({{"modes", {{"ngram:3@4", {{"tau", "high"}}}}}}, "tau must be a number");
  refused({{"modes", {{"ngram:3@4", {{"acceptance_per_position", {0.1, 0.1, 0.1, 0.1, 0.1}}}}}}},
          "5 positions expected, the run drafted 4");
  refused({{"modes", {{"ngram:3@4", {{"taus", 2.0}}}}}}, "unknown field \"taus\"");
  refused({{"modes", {{"ngram:3@4", json::object()}}}}, "expects nothing");
  refused({{"tolerance", -1}, {"modes", {{"ngram:3@4", {{"tau", 2.0}}}}}}, "\"tolerance\" must be a number ≥ 0");
}

TEST(BenchReport, SampledRunsSayLosslessnessIsNotChecked) {
  json results = sample_results();
  results["config"]["temperature"] = 0.8;
  results["config"]["seed"] = 7;
  for (auto& [mode, summary] : results["overall"].items()) {
    for (const char* field : {"lossless_prompts", "near_tie_prompts", "lossless", "lossless_up_to_near_ties"}) {
      summary[field] = nullptr;
    }
  }
  const Expected<std::vector<ReportFile>> files = bench_report_files(results);
  ASSERT_TRUE(files.ok()) << files.error().message;
  const std::string& report = file_named(*files, "report.md").content;
  EXPECT_TRUE(contains(report, "temperature 0.8, seed 7")) << report;
  EXPECT_TRUE(contains(report, "not checked (sampling)")) << report;
  EXPECT_FALSE(contains(report, "outputs differ from ar's")) << report;
}

// A real run with a deliberately broken mode (plain decoding with the third token of every
// turn replaced): the report lists every one of its prompts, at turn 1, position 2, with ar's
// token and the broken one as their continuations begin.
TEST(BenchReport, ABrokenModesFirstDifferingTokenIsListed) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  ASSERT_TRUE(checkpoint.ok());
  auto decoder = CpuDecoder::load(*checkpoint, CpuDecoderOptions{2, 0});
  ASSERT_TRUE(decoder.ok());
  const std::vector<BenchPrompt> prompts = {{"p1", "qa", {"abc abc"}, {}}, {"p2", "qa", {"why?"}, {}}};
  std::vector<BenchMode> modes(2);
  modes[0].name = "ar";
  modes[1].name = "broken";
  modes[1].generate = [](Decoder& target, std::span<const int32_t> prompt, const GenerationOptions& options) {
    Expected<GenerationResult> result = generate(target, nullptr, prompt, options);
    if (result.ok() && result->token_ids.size() > 2) result->token_ids[2] = 'A' + (result->token_ids[2] + 1) % 26;
    return result;
  };
  BenchFormat format;
  format.render = [](std::span<const ChatMessage> messages) -> Expected<std::vector<int32_t>> {
    std::vector<int32_t> tokens;
    for (const ChatMessage& message : messages) {
      for (const char c : message.content) tokens.push_back(static_cast<uint8_t>(c));
    }
    return tokens;
  };
  const auto bytes = [](std::span<const int32_t> tokens) {
    std::string text;
    for (const int32_t token : tokens) text.push_back(static_cast<char>(token));
    return text;
  };
  format.answer_text = bytes;
  BenchConfig config;
  config.max_tokens = 8;
  config.sampling.temperature = 0.0;
  const Expected<std::vector<PromptOutcome>> outcomes = run_bench(**decoder, prompts, modes, config, format);
  ASSERT_TRUE(outcomes.ok()) << outcomes.error().message;

  json results = sample_results();
  results["config"]["modes"] = {"ar", "broken"};
  results["overall"] = json::object();
  results["categories"] = json::object();
  results.erase("learning_curves");
  const std::vector<ModeSummary> overall = summarize_bench(*outcomes, prompts, modes.size());
  for (size_t m = 0; m < modes.size(); ++m) {
    results["overall"][modes[m].name] = summary_json(overall[m], modes[m].name, true);
    results["categories"]["qa"][modes[m].name] = summary_json(overall[m], modes[m].name, true);
  }
  results["prompts"] = json::array();
  for (const PromptOutcome& outcome : *outcomes) {
    json entry = {{"id", prompts[outcome.prompt].id}, {"category", "qa"}, {"modes", json::object()}};
    for (size_t m = 0; m < modes.size(); ++m) {
      entry["modes"][modes[m].name] = mode_outcome_json(outcome, m, m == 0 ? "" : modes[m].name, true, bytes);
    }
    results["prompts"].push_back(entry);
  }
  const Expected<std::vector<ReportFile>> files = bench_report_files(results);
  ASSERT_TRUE(files.ok()) << files.error().message;
  const std::string& report = file_named(*files, "report.md").content;
  EXPECT_TRUE(contains(report, "2 of 2 outputs differ from ar's.")) << report;
  EXPECT_TRUE(contains(report, "**no** (0/2 equal")) << report;
  for (const PromptOutcome& outcome : *outcomes) {
    const std::vector<int32_t>& reference = outcome.modes[0].turns[0];
    const std::vector<int32_t>& broken = outcome.modes[1].turns[0];
    ASSERT_GT(reference.size(), 2u);
    const json& difference = results["prompts"][outcome.prompt]["modes"]["broken"]["first_difference"];
    EXPECT_EQ(difference["position"], 2);
    EXPECT_EQ(difference["reference_token"], reference[2]);
    EXPECT_EQ(difference["mode_token"], broken[2]);
    EXPECT_EQ(difference["mode_text"].get<std::string>().front(), static_cast<char>(broken[2]));
    EXPECT_TRUE(contains(report, fmt::format("| all | {} | qa | broken | 1 | 2 |", prompts[outcome.prompt].id)))
        << report;
  }
}

}  // namespace
}  // namespace draftwise
