// `draftwise bench` as a user runs it: results.json with every section, and one-line errors
// for bad modes, prompts and models.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

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
  expect_refused({"--bogus"}, "unknown option '--bogus'", 2);
}

}  // namespace
}  // namespace draftwise
