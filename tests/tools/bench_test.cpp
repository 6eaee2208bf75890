// `draftwise bench` as a user runs it: results.json with every section, and one-line errors
// for bad modes, prompts and models.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "target/qttt.h"
#include "tests/support/run_command.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::run_draftwise;

const std::string kDevPrompts = (testing::source_dir() / "data/spec_bench/question_dev.jsonl").string();

void expect_refused(const std::vector<std::string>& args, const std::string& problem, int exit_code = 1) {
  testing::expect_command_refused("bench", args, problem, exit_code);
}

TEST(Bench, DefaultModelWritesResults) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const testing::CommandResult result =
      run_draftwise({"bench", "--model", testing::default_model_path().string(), "--prompts", kDevPrompts, "--modes",
                     "ngram:3@2,self:24", "--categories", "qa,writing", "--limit", "1", "--max-tokens", "8",
                     "--out", (dir.path() / "run").string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("| ngram:3@2 |"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("differing after a near-tie"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("[2/2]"), std::string::npos) << result.err;
  std::ifstream file(dir.path() / "run/results.json");
  const nlohmann::json results = nlohmann::json::parse(file);
  EXPECT_EQ(results["config"]["model_sha256"], "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
  EXPECT_EQ(results["config"]["modes"], (nlohmann::json{"ar", "ngram:3@2", "self:24@4"}));
  EXPECT_EQ(results["config"]["prompts"], 2);
  EXPECT_TRUE(results["config"]["qttt"].is_null());
  EXPECT_FALSE(results["config"]["date"].get<std::string>().empty());
  EXPECT_EQ(results["overall"]["ar"]["speedup"], 1.0);
  EXPECT_EQ(results["overall"]["ar"]["speculation"]["mean_acceptance_length"], 1.0);
  for (const char* mode : {"ar", "ngram:3@2", "self:24@4"}) {
    const nlohmann::json& summary = results["overall"][mode];
    EXPECT_EQ(summary["prompts"], 2);
    EXPECT_TRUE(summary["lossless"].get<bool>()) << mode;
    for (const char* field : {"tokens", "seconds", "tokens_per_second", "speedup", "lossless_prompts",
                              "near_tie_prompts", "lossless_up_to_near_ties"}) {
      EXPECT_TRUE(summary.contains(field)) << mode << " " << field;
    }
    for (const char* field : {"drafts", "draft_tokens", "accepted_tokens", "acceptance_rate", "mean_acceptance_length",
                              "accepted_per_position", "tokens_per_target_step"}) {
      EXPECT_TRUE(summary["speculation"].contains(field)) << mode << " " << field;
    }
    EXPECT_EQ(results["categories"]["qa"][mode]["prompts"], 1);
  }
  ASSERT_EQ(results["prompts"].size(), 2u);
  EXPECT_EQ(results["prompts"][0]["category"], "writing");
  EXPECT_EQ(results["prompts"][0]["modes"]["ngram:3@2"]["turn_tokens"].size(), 2u);  // two turns
  EXPECT_TRUE(results["prompts"][0]["modes"]["ngram:3@2"]["first_difference"].is_null());
  // The report and the plots, made from these results.
  const auto read = [&](const char* name) {
    std::ifstream in(dir.path() / "run" / name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string report = read("report.md");
  const nlohmann::json& self = results["overall"]["self:24@4"];
  EXPECT_NE(report.find(fmt::format("| self:24@4 | {:.1f} | {:.2f}× | {:.3f} |", self["tokens_per_second"].get<double>(),
                                    self["speedup"].get<double>(),
                                    self["speculation"]["mean_acceptance_length"].get<double>())),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("0 of 4 outputs differ from ar's."), std::string::npos) << report;
  const std::string positions = read("acceptance_per_position.svg");
  EXPECT_NE(positions.find(fmt::format("<title>self:24@4 1: {:.4g}</title>",
                                       self["speculation"]["acceptance_per_position"][0].get<double>())),
            std::string::npos)
      << positions;
  EXPECT_NE(read("speedup_per_category.svg").find("<title>ngram:3@2 qa: "), std::string::npos);
  // draftwise report remakes the same report from results.json.
  const testing::CommandResult remade =
      run_draftwise({"report", (dir.path() / "run/results.json").string(), "--out", (dir.path() / "again").string()});
  ASSERT_EQ(remade.exit_code, 0) << remade.err;
  std::ifstream again(dir.path() / "again/report.md");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(again), {}), report);
}

TEST(Report, BadResultsAreRefusedWithAClearError) {
  testing::ScratchDir dir;
  testing::expect_command_refused("report", {"/nonexistent/results.json"}, "/nonexistent/results.json: cannot be read");
  testing::expect_command_refused("report", {dir.write("a.json", "{\"config\": ").string()}, "not valid JSON");
  testing::expect_command_refused("report", {dir.write("b.json", "[1, 2]").string()}, "not an object");
  testing::expect_command_refused("report", {dir.write("c.json", "{\"config\": {}}").string()}, "results.json");
}

// Regression mode: a run passes the expectations it wrote and fails a shifted copy (exit 3).
TEST(Bench, RegressionModeChecksTauAndAcceptancePerPosition) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const std::vector<std::string> base = {"bench", "--model", testing::default_model_path().string(), "--prompts",
                                         kDevPrompts, "--modes", "ngram:3@2", "--categories", "qa", "--limit", "1",
                                         "--max-tokens", "8"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::string expected = (dir.path() / "expected.json").string();
  const testing::CommandResult first = run_draftwise(with({"--out", (dir.path() / "a").string(), "--write-expect", expected}));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const testing::CommandResult again = run_draftwise(with({"--out", (dir.path() / "b").string(), "--expect", expected}));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("all within tolerance"), std::string::npos) << again.out;
  std::ifstream in(expected);
  nlohmann::json shifted = nlohmann::json::parse(in);
  shifted["modes"]["ngram:3@2"]["tau"] = shifted["modes"]["ngram:3@2"]["tau"].get<double>() * 1.5;
  const auto shifted_path = dir.write("shifted.json", shifted.dump());
  const testing::CommandResult failed =
      run_draftwise(with({"--out", (dir.path() / "c").string(), "--expect", shifted_path.string()}));
  EXPECT_EQ(failed.exit_code, 3) << failed.err;
  EXPECT_NE(failed.err.find("outside the expectation: ngram:3@2 tau"), std::string::npos) << failed.err;
}

// A sampled run measures acceptance only: no losslessness verdicts; the same seed gives the
// same run.
TEST(Bench, SampledRunsAreSeededAndSkipTheLosslessCheck) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  nlohmann::json runs[2];
  for (int i = 0; i < 2; ++i) {
    const std::string out = (dir.path() / fmt::format("run{}", i)).string();
    const testing::CommandResult result = run_draftwise(
        {"bench", "--model", testing::default_model_path().string(), "--prompts", kDevPrompts, "--modes", "self:24@3",
         "--categories", "qa", "--limit", "1", "--max-tokens", "8", "--temperature", "0.9", "--seed", "11",
         "--out", out});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_NE(result.out.find("temperature 0.9, seed 11"), std::string::npos) << result.out;
    std::ifstream file(out + "/results.json");
    runs[i] = nlohmann::json::parse(file);
  }
  const nlohmann::json& summary = runs[0]["overall"]["self:24@3"];
  EXPECT_TRUE(summary["lossless"].is_null());
  EXPECT_GT(summary["speculation"]["draft_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(runs[0]["config"]["seed"], 11);
  EXPECT_EQ(runs[0]["prompts"][0]["modes"]["self:24@3"]["turn_tokens"],
            runs[1]["prompts"][0]["modes"]["self:24@3"]["turn_tokens"]);
  EXPECT_EQ(summary["speculation"]["accepted_tokens"], runs[1]["overall"]["self:24@3"]["speculation"]["accepted_tokens"]);
}

// With --qttt every turn of every mode adapts its queries on its prompt first; the outputs stay
// lossless, and the configuration and the report say so.
TEST(Bench, QtttAdaptsEveryRequestAndTheRunSaysSo) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const std::string out = (dir.path() / "run").string();
  const testing::CommandResult result = run_draftwise(
      {"bench", "--model", testing::default_model_path().string(), "--prompts", kDevPrompts, "--modes", "ngram:3@2",
       "--categories", "qa", "--limit", "1", "--max-tokens", "4", "--qttt", "steps=2,span=32", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string spec = qtt_spec(parse_qtt_spec("steps=2,span=32").value());
  EXPECT_NE(result.out.find("qTTT " + spec), std::string::npos) << result.out;
  std::ifstream file(out + "/results.json");
  const nlohmann::json results = nlohmann::json::parse(file);
  EXPECT_EQ(results["config"]["qttt"], spec);
  ASSERT_EQ(results["prompts"].size(), 1u);
  for (const char* mode : {"ar", "ngram:3@2"}) {
    const nlohmann::json& outcome = results["prompts"][0]["modes"][mode];
    ASSERT_TRUE(outcome.contains("qttt")) << mode;
    EXPECT_EQ(outcome["qttt"]["adaptations"], outcome["turn_tokens"].size()) << mode;
    EXPECT_GT(outcome["qttt"]["seconds"].get<double>(), 0.0);
    EXPECT_LT(outcome["qttt"]["seconds"].get<double>(), outcome["seconds"].get<double>());
  }
  EXPECT_TRUE(results["overall"]["ngram:3@2"]["lossless"].get<bool>());
  EXPECT_NE(testing::read_file(out + "/report.md")
                .find("| qTTT | every request adapts its queries on its prompt (" + spec + ") |"),
            std::string::npos);
}

TEST(Bench, BadInputIsRefusedWithAClearError) {
  testing::ScratchDir dir;
  const std::string tiny = (testing::fixtures_dir() / "models/llama_tied").string();
  const std::string out = (dir.path() / "out").string();
  const std::vector<std::string> base = {"--model", tiny, "--prompts", kDevPrompts, "--out", out};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--modes", "ar,eagle:2"}), "unknown drafting kind 'eagle'");
  expect_refused(with({"--modes", "ngram:3@0"}), "draft length '0'");
  expect_refused(with({"--modes", "ngram:3@17"}), "draft length '17'");
  expect_refused(with({"--modes", "ngram:3@4,ngram:3@4"}), "'ngram:3@4' is given twice");
  expect_refused(with({"--modes", "ar,,ngram:2"}), "an empty mode");
  expect_refused(with({"--max-tokens", "0"}), "--max-tokens must be positive");
  expect_refused(with({"--limit", "-1"}), "--limit must be ≥ 0");
  expect_refused(with({"--categories", "poetry"}), "unknown category 'poetry'");
  expect_refused(with({}), "bench needs a model with a tokenizer and a chat template");
  expect_refused({"--model", tiny, "--prompts", "/nonexistent/q.jsonl", "--out", out}, "/nonexistent/q.jsonl");
  const auto broken = dir.write("broken.jsonl", "{\"prompt\": \"ok\"}\n{\"turns\": 5}\n");
  expect_refused({"--model", tiny, "--prompts", broken.string(), "--out", out}, "line 2");
  expect_refused({"--prompts", kDevPrompts, "--out", out}, "--model is required");
  expect_refused({"--model", tiny, "--out", out}, "--prompts is required");
  expect_refused({"--model", tiny, "--prompts", kDevPrompts}, "--out is required");
  expect_refused(with({"--temperature", "-1"}), "--temperature");
  expect_refused(with({"--seed", "-2"}), "--seed must be ≥ 0");
  expect_refused(with({"--qttt", "steps=x"}), "--qttt: 'steps' must be an integer ≥ 1, got 'x'");
  expect_refused(with({"--qttt", "speed=3"}), "--qttt: unknown key 'speed'");
  expect_refused(with({"--expect", "/nonexistent/e.json"}), "--expect /nonexistent/e.json: cannot be read");
  expect_refused(with({"--expect", dir.write("bad.json", "{").string()}), "not valid JSON");
  expect_refused({"--bogus"}, "unknown option '--bogus'", 2);
}

}  // namespace
}  // namespace draftwise
