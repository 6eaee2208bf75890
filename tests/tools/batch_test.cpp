// `draftwise batch` as a user runs it: one output record per input line with the line's id,
// errors per line, the exit code, and --resume after a kill that neither duplicates nor loses
// a line; and its line parser.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"
#include "tests/support/test_paths.h"
#include "tools/batch_lines.h"

namespace draftwise {
namespace {

using nlohmann::json;
using testing::run_draftwise;

std::vector<json> read_records(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<json> records;
  std::string line;
  while (std::getline(in, line)) records.push_back(json::parse(line));
  return records;
}

std::vector<std::string> batch_args(const std::filesystem::path& input, const std::filesystem::path& output,
                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"batch", "--model", testing::default_model_path().string(), "--input",
                                   input.string(), "--output", output.string(), "--temperature", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(Batch, OutputIdsMatchInputIdsAndErrorsArePerLine) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const auto input = dir.write("in.jsonl",
                               "{\"id\": \"capital\", \"prompt\": \"The capital of France is\", \"max_tokens\": 6}\n"
                               "{\"id\": \"broken\", \"prompt\": 5}\n"
                               "this is not json\n"
                               "\n"
                               "{\"messages\": [{\"role\": \"user\", \"content\": \"Say hi.\"}], \"max_tokens\": 5}\n"
                               "{\"id\": 9, \"prompt\": \"One, two, three,\", \"max_tokens\": 8, \"stop\": \" six\"}\n");
  const auto output = dir.path() / "out.jsonl";
  const testing::CommandResult result = run_draftwise(batch_args(input, output, {"--draft", "ngram:2"}));
  EXPECT_EQ(result.exit_code, 1) << result.err;  // two lines failed
  std::map<std::string, json> by_id;
  for (const json& record : read_records(output)) {
    EXPECT_TRUE(by_id.emplace(record["id"].dump(), record).second) << "twice: " << record.dump();
  }
  ASSERT_EQ(by_id.size(), 5u) << result.err;
  // A good line: text, finish reason, usage and speculation statistics.
  const json& capital = by_id["\"capital\""];
  EXPECT_FALSE(capital["text"].get<std::string>().empty());
  EXPECT_EQ(capital["finish_reason"], "length");
  EXPECT_EQ(capital["usage"]["completion_tokens"], 6);
  EXPECT_EQ(capital["usage"]["total_tokens"].get<int64_t>(),
            capital["usage"]["prompt_tokens"].get<int64_t>() + 6);
  EXPECT_EQ(capital["speculation"]["drafter"], "ngram:2");
  EXPECT_EQ(capital["speculation"]["generated_tokens"], 6);
  // Errors keep the id, or get the line number.
  EXPECT_EQ(by_id["\"broken\""]["error"]["type"], "invalid_request_error");
  EXPECT_NE(by_id["\"broken\""]["error"]["message"].get<std::string>().find("\"prompt\" must be a non-empty string"),
            std::string::npos);
  EXPECT_NE(by_id["3"]["error"]["message"].get<std::string>().find("line 3: not valid JSON"), std::string::npos);
  EXPECT_TRUE(by_id["5"].contains("text"));  // messages, id from its line number
  EXPECT_TRUE(by_id["9"].contains("text"));
  // The same run without the bad lines succeeds.
  const auto clean = dir.write("clean.jsonl", "{\"id\": 1, \"prompt\": \"Hello\", \"max_tokens\": 3}\n");
  const testing::CommandResult ok = run_draftwise(batch_args(clean, dir.path() / "clean_out.jsonl"));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// A kill leaves the lines written so far, maybe a torn last one; --resume cuts the torn line,
// skips the finished ids and completes the rest: every id once, each as a full run gives it.
TEST(Batch, ResumeAfterAKillNeitherDuplicatesNorLosesALine) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  std::string lines;
  for (int i = 0; i < 6; ++i) {
    lines += "{\"id\": \"q" + std::to_string(i) + "\", \"prompt\": \"Count to " + std::to_string(i + 2) +
             ":\", \"max_tokens\": 5}\n";
  }
  const auto input = dir.write("in.jsonl", lines);
  const auto full = dir.path() / "full.jsonl";
  ASSERT_EQ(run_draftwise(batch_args(input, full, {"--parallel", "2"})).exit_code, 0);
  const std::vector<json> complete = read_records(full);
  ASSERT_EQ(complete.size(), 6u);
  // The state after a kill during the third batch: four lines, and half of a fifth.
  std::ifstream in(full);
  std::string kept, line;
  for (int i = 0; i < 4 && std::getline(in, line); ++i) kept += line + "\n";
  std::getline(in, line);
  kept += line.substr(0, line.size() / 2);
  const auto partial = dir.write("partial.jsonl", kept);
  const testing::CommandResult refused = run_draftwise(batch_args(input, partial));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("give --resume"), std::string::npos) << refused.err;
  const testing::CommandResult resumed = run_draftwise(batch_args(input, partial, {"--parallel", "2", "--resume"}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("2 done, 0 failed, 4 already in"), std::string::npos) << resumed.err;
  std::map<std::string, json> by_id;
  for (const json& record : read_records(partial)) {
    EXPECT_TRUE(by_id.emplace(record["id"].get<std::string>(), record).second) << record.dump();
  }
  ASSERT_EQ(by_id.size(), 6u);
  for (const json& record : complete) EXPECT_EQ(by_id[record["id"].get<std::string>()]["text"], record["text"]);
}

// --qttt adapts every request on its own prompt, and each record reports its adaptation.
TEST(Batch, QtttAdaptsEveryRequestAndReportsIt) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const auto input = dir.write("in.jsonl",
                               "{\"id\": \"long\", \"prompt\": \"The quick brown fox jumps over the lazy dog, and "
                               "then the dog\", \"max_tokens\": 3}\n"
                               "{\"id\": \"short\", \"prompt\": \"Paris is\", \"max_tokens\": 3}\n");
  const auto output = dir.path() / "out.jsonl";
  const testing::CommandResult result = run_draftwise(batch_args(input, output, {"--qttt", "steps=2,span=8"}));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::vector<json> records = read_records(output);
  ASSERT_EQ(records.size(), 2u);
  for (const json& record : records) {
    SCOPED_TRACE(record.dump());
    ASSERT_TRUE(record.contains("qttt"));
    const json& qttt = record["qttt"];
    const int64_t prompt = record["usage"]["prompt_tokens"];
    EXPECT_EQ(qttt["steps"], 2);
    EXPECT_EQ(qttt["losses"].size(), 2u);
    EXPECT_EQ(qttt["context"], prompt - 1);  // positions with a next token in the prompt
    EXPECT_EQ(qttt["span"], std::min<int64_t>(8, prompt - 1));
  }
}

TEST(Batch, BadFlagsAreRefusedWithAClearError) {
  testing::ScratchDir dir;
  const auto input = dir.write("in.jsonl", "{\"prompt\": \"x\"}\n");
  const std::string tiny = (testing::fixtures_dir() / "models/llama_tied").string();
  const std::string out = (dir.path() / "out.jsonl").string();
  const std::vector<std::string> base = {"--model", tiny, "--input", input.string(), "--output", out};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  testing::expect_command_refused("batch", {"--input", input.string(), "--output", out}, "--model is required");
  testing::expect_command_refused("batch", {"--model", tiny, "--output", out}, "--input is required");
  testing::expect_command_refused("batch", {"--model", tiny, "--input", input.string()}, "--output is required");
  testing::expect_command_refused("batch", with({"--parallel", "0"}), "--parallel must be positive");
  testing::expect_command_refused("batch", with({"--max-tokens", "-3"}), "--max-tokens must be positive");
  testing::expect_command_refused("batch", with({"--draft-len", "3"}), "--draft-len needs --draft");
  testing::expect_command_refused("batch", with({"--qttt", "steps=0"}), "--qttt: 'steps' must be an integer ≥ 1");
  testing::expect_command_refused("batch", with({"--qttt", "span"}), "--qttt: 'span' is not key=value");
  testing::expect_command_refused("batch", {"--model", tiny, "--input", "/nonexistent/in.jsonl", "--output", out},
                                  "/nonexistent/in.jsonl: cannot be read");
  testing::expect_command_refused("batch", with({}), "batch needs a model with a tokenizer");
}

TEST(BatchLines, FieldsAreReadAndBadLinesNameTheProblem) {
  json id;
  const Expected<BatchLine> line = parse_batch_line(
      R"({"id": "x1", "prompt": "hi", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["a", "b"]})",
      4, id);
  ASSERT_TRUE(line.ok()) << line.error().message;
  EXPECT_EQ(line->id, "x1");
  EXPECT_EQ(*line->prompt, "hi");
  EXPECT_EQ(*line->max_tokens, 7);
  EXPECT_EQ(*line->temperature, 0.5);
  EXPECT_EQ(*line->top_p, 0.9);
  EXPECT_EQ(*line->seed, 3u);
  EXPECT_EQ(line->stop, (std::vector<std::string>{"a", "b"}));
  const Expected<BatchLine> chat = parse_batch_line(R"({"messages": [{"role": "system", "content": "s"}]})", 2, id);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->id, 2);
  EXPECT_EQ(chat->messages.size(), 1u);
  const struct {
    const char* text;
    const char* problem;
  } bad[] = {
      {"[1]", "not a JSON object"},
      {"{\"id\": 1.5, \"prompt\": \"x\"}", "\"id\" must be a string or an integer"},
      {"{\"id\": \"k\"}", "exactly one of \"prompt\" and \"messages\""},
      {"{\"prompt\": \"x\", \"messages\": []}", "exactly one of"},
      {"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "unknown role 'robot'"},
      {"{\"prompt\": \"x\", \"max_tokens\": 0}", "\"max_tokens\" must be a positive integer"},
      {"{\"prompt\": \"x\", \"temperature\": \"hot\"}", "\"temperature\" must be a number"},
      {"{\"prompt\": \"x\", \"seed\": -1}", "\"seed\" must be an integer ≥ 0"},
      {"{\"prompt\": \"x\", \"stop\": [1]}", "\"stop\" must be a string or a list of strings"},
      {"{\"prompt\": \"x\", \"stop\": \"\"}", "a stop string is empty"},
      {"{\"prompt\": \"x\", \"n\": 2}", "unknown field \"n\""},
  };
  for (const auto& each : bad) {
    json kept;
    const Expected<BatchLine> parsed = parse_batch_line(each.text, 6, kept);
    ASSERT_FALSE(parsed.ok()) << each.text;
    EXPECT_NE(parsed.error().message.find(each.problem), std::string::npos) << parsed.error().message;
    EXPECT_EQ(parsed.error().message.rfind("line 6: ", 0), 0u) << parsed.error().message;
  }
  json kept;
  EXPECT_FALSE(parse_batch_line("{\"id\": \"keep\", \"prompt\": 3}", 8, kept).ok());
  EXPECT_EQ(kept, "keep");  // the error record keeps the id
  EXPECT_TRUE(batch_output_id("{\"id\": \"a\", \"text\": \"t\"}") == "a");
  EXPECT_TRUE(batch_output_id("{\"id\": \"a\", \"te").is_null());  // torn
}

}  // namespace
}  // namespace draftwise
