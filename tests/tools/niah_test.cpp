// The needle-in-a-haystack benchmark of qTTT (draftwise bench --niah): the haystack builder
// on a real tokenizer without a model (the needle where it was asked for, at a sentence start;
// prompts of the requested length; the answer as its own tokens), the filler taken from the
// dev prompts, a run on the default model whose niah.json has every field and summaries that
// agree with its cases, and one-line errors naming the bad flag.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/benchmark.h"
#include "engine/chat_template.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "tests/support/run_command.h"
#include "tests/support/test_paths.h"
#include "tools/niah_haystack.h"

namespace draftwise {
namespace {

const std::string kDevPrompts = (testing::source_dir() / "data/spec_bench/question_dev.jsonl").string();

// A byte-level BPE tokenizer with SmolLM2's pre-tokenizer and chat tokens, and no model.
const Tokenizer& small_tokenizer() {
  static const Tokenizer tokenizer =
      load_tokenizer_from((testing::fixtures_dir() / "tokenizer/bytelevel_small/tokenizer.json").string()).value();
  return tokenizer;
}

NiahFormat chatml_format() {
  NiahFormat format;
  format.encode = [](std::string_view text) {
    return small_tokenizer().encode(text, EncodeOptions{.add_special = false, .parse_special = true});
  };
  format.render = [](const std::string& message) -> Expected<std::string> {
    static const ChatTemplate chat = ChatTemplate::of_family(ChatFamily::chatml, "", "<|im_end|>");
    const std::vector<ChatMessage> messages = {{"user", message}};
    return chat.render(messages, /*add_generation_prompt=*/true);
  };
  return format;
}

const std::string& dev_filler() {
  static const std::string filler = read_niah_filler(kDevPrompts).value();
  return filler;
}

// Where `part` first occurs in `tokens`, or -1.
int64_t find_tokens(const std::vector<int32_t>& tokens, const std::vector<int32_t>& part) {
  const auto found = std::search(tokens.begin(), tokens.end(), part.begin(), part.end());
  return found == tokens.end() ? -1 : found - tokens.begin();
}

TEST(NiahHaystack, FillerIsTheArticlesAndPassagesOfTheDevPrompts) {
  const std::string& filler = dev_filler();
  const std::vector<BenchPrompt> prompts = read_bench_prompts(kDevPrompts).value();
  size_t articles = 0, passages = 0, last = 0;
  for (const BenchPrompt& prompt : prompts) {
    const std::string& text = prompt.turns.front();
    if (prompt.category == "summarization") {
      ASSERT_TRUE(text.starts_with("Summarize: "));
      const size_t at = filler.find(text.substr(11, 200));
      ASSERT_NE(at, std::string::npos) << prompt.id;
      EXPECT_GE(at, last) << "in file order";
      last = at;
      ++articles;
    } else if (prompt.category == "rag") {
      const std::string question = text.substr(text.rfind('\n') + 1);
      ASSERT_TRUE(question.ends_with("?"));
      EXPECT_EQ(filler.find(question), std::string::npos) << question;
      const size_t at = filler.find(text.substr(0, 200));
      ASSERT_NE(at, std::string::npos) << prompt.id;
      EXPECT_GE(at, last) << "in file order";
      last = at;
      ++passages;
    } else {
      EXPECT_EQ(filler.find(text.substr(0, 200)), std::string::npos) << prompt.category;
    }
  }
  EXPECT_EQ(articles, 40u);
  EXPECT_EQ(passages, 40u);
  EXPECT_EQ(filler.find("Summarize: "), std::string::npos);
  EXPECT_NE(filler.find("\n\n"), std::string::npos);
}

TEST(NiahHaystack, NeedlesDifferByTrialAndRepeatBySeed) {
  std::set<std::string> numbers;
  for (int64_t trial = 0; trial < 8; ++trial) {
    const Needle needle = make_needle(3, trial);
    const Needle again = make_needle(3, trial);
    EXPECT_EQ(needle.fact, again.fact);
    EXPECT_TRUE(needle.number.size() == 5 || needle.number.size() == 6) << needle.number;
    EXPECT_TRUE(std::all_of(needle.number.begin(), needle.number.end(), [](char c) { return c >= '0' && c <= '9'; }));
    EXPECT_EQ(needle.fact, needle.answer_prefix + " " + needle.number + ".");
    EXPECT_NE(needle.fact.find(needle.name), std::string::npos);
    EXPECT_NE(needle.question.find(needle.name), std::string::npos);
    EXPECT_EQ(needle.question.find(needle.number), std::string::npos);
    numbers.insert(needle.number);
  }
  EXPECT_EQ(numbers.size(), 8u);
  EXPECT_NE(make_needle(3, 0).number, make_needle(4, 0).number);
}

TEST(NiahHaystack, NeedleSitsAtTheSentenceStartNearestTheRequestedDepth) {
  const NiahFormat format = chatml_format();
  const NiahFiller filler(dev_filler(), format.encode);
  const Needle needle = make_needle(0, 0);
  for (const int64_t length : {512, 2048}) {
    double previous_depth = -1;
    for (const double depth : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      SCOPED_TRACE(fmt::format("length {}, depth {}", length, depth));
      const Expected<NiahPrompt> prompt = build_niah_prompt(filler, needle, length, depth, format);
      ASSERT_TRUE(prompt.ok()) << prompt.error().message;
      // The needle's tokens, found in the prompt, where the builder says they are.
      const std::vector<int32_t> fact = format.encode((depth == 0 ? "" : " ") + needle.fact);
      EXPECT_EQ(find_tokens(prompt->tokens, fact), prompt->needle_position);
      EXPECT_EQ(static_cast<int64_t>(fact.size()), prompt->needle_tokens);
      // At a sentence start: the haystack's start, or after a sentence's end.
      const size_t fact_at = prompt->text.find(needle.fact);
      ASSERT_NE(fact_at, std::string::npos);
      const std::string before = prompt->text.substr(0, fact_at);
      if (depth == 0) {
        EXPECT_TRUE(before.ends_with("user\n")) << before.substr(before.size() - 40);
      } else if (depth == 1) {
        EXPECT_EQ(prompt->text.substr(fact_at + needle.fact.size(), 2 + needle.question.size()),
                  "\n\n" + needle.question);
      } else {
        std::string_view end = std::string_view(before).substr(0, before.size() - 1);
        while (end.ends_with("\"") || end.ends_with("'") || end.ends_with(")")) end.remove_suffix(1);
        EXPECT_TRUE(end.ends_with(".") || end.ends_with("!") || end.ends_with("?") || end.ends_with("\u201d") ||
                    end.ends_with("\u2019"))
            << end.substr(end.size() - 40);
      }
      // The placed depth, from the tokens before the needle, off the requested one by at most
      // half the sentence around it (and a few tokens that words encoded alone may differ by).
      const double filler_tokens = static_cast<double>(prompt->filler_tokens);
      const int64_t filler_before = prompt->needle_position - prompt->haystack_position;
      EXPECT_NEAR(static_cast<double>(filler_before) / filler_tokens, prompt->depth, 1e-12);
      const double target = depth * filler_tokens;
      int64_t below = 0, above = filler.words();
      for (int64_t k = 0; k <= filler.words(); ++k) {
        if (!filler.sentence_start(k)) continue;
        if (static_cast<double>(filler.tokens_before(k)) > target) {
          above = k;
          break;
        }
        below = k;
      }
      const double sentence = static_cast<double>(filler.tokens_before(above) - filler.tokens_before(below));
      EXPECT_LE(std::fabs(prompt->depth - depth) * filler_tokens, sentence / 2 + 4) << "sentence of " << sentence;
      EXPECT_GT(prompt->depth, previous_depth);
      previous_depth = prompt->depth;
      // The question and the answer prefix close the prompt; the answer is its own tokens.
      EXPECT_GT(prompt->text.find(needle.question), fact_at);
      EXPECT_TRUE(prompt->text.ends_with("<|im_start|>assistant\n" + needle.answer_prefix));
      EXPECT_EQ(small_tokenizer().decode(prompt->answer), " " + needle.number);
      EXPECT_EQ(prompt->tokens, format.encode(prompt->text));
    }
  }
}

TEST(NiahHaystack, PromptHasTheRequestedLengthWithinOneWord) {
  const NiahFormat format = chatml_format();
  const NiahFiller filler(dev_filler(), format.encode);
  int64_t longest_word = 0;
  for (int64_t k = 0; k < filler.words(); ++k) {
    longest_word = std::max(longest_word, filler.tokens_before(k + 1) - filler.tokens_before(k));
  }
  for (const int64_t length : {300, 1000, 1024, 4096, 8000}) {
    const Expected<NiahPrompt> prompt = build_niah_prompt(filler, make_needle(1, 1), length, 0.5, format);
    ASSERT_TRUE(prompt.ok()) << prompt.error().message;
    const int64_t size = static_cast<int64_t>(prompt->tokens.size());
    EXPECT_LE(size, length);
    EXPECT_GT(size, length - longest_word) << "longest word: " << longest_word << " tokens";
  }
}

TEST(NiahHaystack, LengthsTheFillerCannotMakeAreRefused) {
  const NiahFormat format = chatml_format();
  const Needle needle = make_needle(0, 0);
  const NiahFiller filler(dev_filler(), format.encode);
  const Expected<NiahPrompt> tiny = build_niah_prompt(filler, needle, 20, 0.5, format);
  ASSERT_FALSE(tiny.ok());
  EXPECT_NE(tiny.error().message.find("a prompt of 20 tokens is too short"), std::string::npos) << tiny.error().message;
  const NiahFiller short_filler("One sentence. Another one.", format.encode);
  const Expected<NiahPrompt> long_prompt = build_niah_prompt(short_filler, needle, 1000, 0.5, format);
  ASSERT_FALSE(long_prompt.ok());
  EXPECT_NE(long_prompt.error().message.find("the filler gives prompts of at most"), std::string::npos)
      << long_prompt.error().message;
  EXPECT_FALSE(build_niah_prompt(filler, needle, 1000, 1.5, format).ok());
}

// The summary's counts and means, recomputed from the cases.
void expect_summary_of(const nlohmann::json& summary, const std::vector<nlohmann::json>& cases) {
  ASSERT_FALSE(cases.empty());
  EXPECT_EQ(summary["cases"].get<size_t>(), cases.size());
  int64_t without = 0, with = 0;
  double logprob_without = 0, logprob_with = 0, adaptation_seconds = 0;
  for (const nlohmann::json& run : cases) {
    without += run["without_qttt"]["correct"].get<bool>() ? 1 : 0;
    with += run["with_qttt"]["correct"].get<bool>() ? 1 : 0;
    logprob_without += run["without_qttt"]["answer_logprob"].get<double>();
    logprob_with += run["with_qttt"]["answer_logprob"].get<double>();
    adaptation_seconds += run["cost"]["adaptation_seconds"].get<double>();
  }
  const double count = static_cast<double>(cases.size());
  EXPECT_EQ(summary["correct_without_qttt"].get<int64_t>(), without);
  EXPECT_EQ(summary["correct_with_qttt"].get<int64_t>(), with);
  EXPECT_DOUBLE_EQ(summary["accuracy_without_qttt"].get<double>(), static_cast<double>(without) / count);
  EXPECT_DOUBLE_EQ(summary["accuracy_with_qttt"].get<double>(), static_cast<double>(with) / count);
  EXPECT_NEAR(summary["mean_answer_logprob_without_qttt"].get<double>(), logprob_without / count, 1e-9);
  EXPECT_NEAR(summary["mean_answer_logprob_with_qttt"].get<double>(), logprob_with / count, 1e-9);
  EXPECT_NEAR(summary["cost"]["adaptation_seconds"].get<double>(), adaptation_seconds / count, 1e-9);
}

TEST(NiahBench, DefaultModelRunWritesEveryFieldAndConsistentSummaries) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const std::string out = (dir.path() / "niah").string();
  const testing::CommandResult result = testing::run_draftwise(
      {"bench", "--niah", "--model", testing::default_model_path().string(), "--lengths", "256", "--depths",
       "0.25,0.75", "--trials", "1", "--qttt", "steps=2,span=32", "--max-tokens", "8", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("[2/2] "), std::string::npos) << result.err;
  EXPECT_NE(result.out.find("## Accuracy"), std::string::npos) << result.out;
  std::ifstream file(out + "/niah.json");
  const nlohmann::json results = nlohmann::json::parse(file);

  const nlohmann::json& config = results["config"];
  for (const char* field : {"model", "model_sha256", "device", "backend", "date", "command", "context_length",
                            "prompt_format", "qttt", "lengths", "depths", "trials", "seed", "max_tokens", "filler",
                            "filler_tokens", "prefill_chunk", "context_loss_positions"}) {
    EXPECT_TRUE(config.contains(field)) << field;
  }
  EXPECT_EQ(config["model_sha256"], "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
  EXPECT_EQ(config["device"], "cpu");
  EXPECT_EQ(config["qttt"], qtt_spec(parse_qtt_spec("steps=2,span=32").value()));
  EXPECT_EQ(config["lengths"], nlohmann::json({256}));
  EXPECT_EQ(config["depths"], nlohmann::json({0.25, 0.75}));
  EXPECT_EQ(config["prompt_format"], "chatml chat template");

  ASSERT_EQ(results["cases"].size(), 2u);
  std::vector<nlohmann::json> cases;
  for (const nlohmann::json& run : results["cases"]) {
    for (const char* field : {"length", "depth", "trial", "prompt_tokens", "needle", "haystack_position",
                              "filler_tokens", "expected_answer", "expected_answer_token_ids", "context_loss_positions",
                              "without_qttt", "with_qttt", "qttt", "cost"}) {
      EXPECT_TRUE(run.contains(field)) << field;
    }
    EXPECT_LE(run["prompt_tokens"].get<int64_t>(), 256);
    EXPECT_GE(run["prompt_tokens"].get<int64_t>(), 250);
    EXPECT_EQ(run["expected_answer"], " " + run["needle"]["number"].get<std::string>());
    // The default model's tokenizer splits every digit: a space, then one token per digit.
    EXPECT_EQ(run["expected_answer_token_ids"].size(), run["needle"]["number"].get<std::string>().size() + 1);
    EXPECT_NEAR(run["needle"]["depth"].get<double>(), run["depth"].get<double>(), 0.2);
    for (const char* side : {"without_qttt", "with_qttt"}) {
      const nlohmann::json& answer = run[side];
      for (const char* field : {"answer", "answer_token_ids", "correct", "answer_logprob", "context_loss",
                                "decode_tokens", "decode_seconds", "decode_seconds_per_token"}) {
        EXPECT_TRUE(answer.contains(field)) << side << " " << field;
      }
      EXPECT_LT(answer["answer_logprob"].get<double>(), 0.0);
      EXPECT_GT(answer["context_loss"].get<double>(), 0.0);
      EXPECT_GE(answer["decode_tokens"].get<int64_t>(), 1);
      EXPECT_LE(answer["decode_tokens"].get<int64_t>(), 8);
      // Right: the number in the answer's text, not as part of a longer one.
      const std::regex number("(^|[^0-9])" + run["needle"]["number"].get<std::string>() + "([^0-9]|$)");
      EXPECT_EQ(answer["correct"].get<bool>(), std::regex_search(answer["answer"].get<std::string>(), number));
    }
    EXPECT_EQ(run["qttt"]["steps"], 2);
    EXPECT_EQ(run["qttt"]["span"], 32);
    EXPECT_EQ(run["qttt"]["losses"].size(), 2u);
    const int64_t context = run["prompt_tokens"].get<int64_t>() - 1;
    EXPECT_EQ(run["context_loss_positions"], nlohmann::json({std::max<int64_t>(0, context - 256), context}));
    const nlohmann::json& cost = run["cost"];
    for (const char* field :
         {"prefill_tokens", "prefill_seconds", "prefill_flops", "adaptation_seconds", "adaptation_flops",
          "decode_seconds_per_token", "decode_seconds_per_token_with_qttt", "decode_token_flops",
          "adaptation_over_prefill_seconds", "adaptation_over_prefill_flops", "adaptation_in_decode_tokens"}) {
      ASSERT_TRUE(cost.contains(field)) << field;
      EXPECT_GT(cost[field].get<double>(), 0.0) << field;
    }
    EXPECT_EQ(cost["prefill_tokens"], run["prompt_tokens"].get<int64_t>() - 1);
    EXPECT_DOUBLE_EQ(cost["adaptation_over_prefill_flops"].get<double>(),
                     cost["adaptation_flops"].get<double>() / cost["prefill_flops"].get<double>());
    cases.push_back(run);
  }
  EXPECT_NE(cases[0]["needle"]["position"], cases[1]["needle"]["position"]);
  EXPECT_EQ(cases[0]["needle"]["number"], cases[1]["needle"]["number"]) << "one needle per trial";

  const nlohmann::json& summary = results["summary"];
  expect_summary_of(summary["overall"], cases);
  ASSERT_EQ(summary["lengths"].size(), 1u);
  EXPECT_EQ(summary["lengths"][0]["length"], 256);
  expect_summary_of(summary["lengths"][0], cases);
  ASSERT_EQ(summary["cells"].size(), 2u);
  for (size_t c = 0; c < 2; ++c) {
    EXPECT_EQ(summary["cells"][c]["depth"], cases[c]["depth"]);
    expect_summary_of(summary["cells"][c], {cases[c]});
  }

  const std::string report = testing::read_file(out + "/niah.md");
  const nlohmann::json& overall = summary["lengths"][0];
  EXPECT_NE(report.find(fmt::format("| 256 | {}/1 → {}/1 | {}/1 → {}/1 |",
                                    summary["cells"][0]["correct_without_qttt"].get<int64_t>(),
                                    summary["cells"][0]["correct_with_qttt"].get<int64_t>(),
                                    summary["cells"][1]["correct_without_qttt"].get<int64_t>(),
                                    summary["cells"][1]["correct_with_qttt"].get<int64_t>())),
            std::string::npos)
      << report;
  EXPECT_NE(
      report.find(fmt::format("| 256 | {:.3f} | {:.3f} |", overall["mean_answer_logprob_without_qttt"].get<double>(),
                              overall["mean_answer_logprob_with_qttt"].get<double>())),
      std::string::npos)
      << report;
  EXPECT_NE(report.find(config["command"].get<std::string>()), std::string::npos);
  const std::string plot = testing::read_file(out + "/niah.svg");
  EXPECT_NE(plot.find("<title>with qTTT</title>"), std::string::npos);
  EXPECT_NE(plot.find("<title>without qTTT</title>"), std::string::npos);
  EXPECT_NE(
      plot.find(fmt::format("<title>with qTTT 256: {:.4g}</title>", 100 * overall["accuracy_with_qttt"].get<double>())),
      std::string::npos)
      << plot;
  EXPECT_NE(plot.find(">100</text>"), std::string::npos) << "a 0 to 100% axis";
  EXPECT_NE(testing::read_file(out + "/niah_logprob.svg").find("log p(answer)"), std::string::npos);
  // draftwise report remakes the same niah.md from niah.json.
  const testing::CommandResult remade =
      testing::run_draftwise({"report", out + "/niah.json", "--out", (dir.path() / "again").string()});
  ASSERT_EQ(remade.exit_code, 0) << remade.err;
  EXPECT_EQ(testing::read_file(dir.path() / "again/niah.md"), report);
}

// Random weights with a tokenizer from elsewhere and no chat template: plain-text prompts, and
// without --lengths, powers of two from 1024 up to the longest prompt the context takes.
TEST(NiahBench, RandomWeightsWithATokenizerRunOnPlainTextAtTheDefaultLengths) {
  testing::ScratchDir dir;
  std::ifstream in(testing::fixtures_dir() / "models/llama_tied/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["vocab_size"] = small_tokenizer().vocab_size();
  config["max_position_embeddings"] = 2048;
  const auto config_path = dir.write("config.json", config.dump());
  const std::string out = (dir.path() / "niah").string();
  const testing::CommandResult result =
      testing::run_draftwise({"bench", "--niah", "--random-weights", config_path.string(), "--tokenizer",
                              (testing::fixtures_dir() / "tokenizer/bytelevel_small/tokenizer.json").string(),
                              "--depths", "0.5", "--trials", "1", "--qttt", "steps=2,span=16", "--out", out});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json results = nlohmann::json::parse(testing::read_file(out + "/niah.json"));
  EXPECT_EQ(results["config"]["prompt_format"], "plain text");
  EXPECT_EQ(results["config"]["context_length"], 2048);
  EXPECT_EQ(results["config"]["lengths"], nlohmann::json({1024, 2048 - 8}));
  ASSERT_EQ(results["cases"].size(), 2u);
  for (const nlohmann::json& run : results["cases"]) {
    EXPECT_LE(run["prompt_tokens"].get<int64_t>(), run["length"].get<int64_t>());
    EXPECT_GT(run["prompt_tokens"].get<int64_t>(), run["length"].get<int64_t>() - 16);
    EXPECT_EQ(run["qttt"]["losses"].size(), 2u);
  }
  expect_summary_of(results["summary"]["overall"], {results["cases"][0], results["cases"][1]});
}

void expect_refused(const std::vector<std::string>& args, const std::string& problem, int exit_code = 1) {
  std::vector<std::string> full = {"--niah"};
  full.insert(full.end(), args.begin(), args.end());
  testing::expect_command_refused("bench", full, problem, exit_code);
}

TEST(NiahBench, BadFlagsAreRefusedNamingTheFlag) {
  testing::ScratchDir dir;
  const std::string tiny = (testing::fixtures_dir() / "models/llama_tied").string();
  const std::string out = (dir.path() / "out").string();
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--model", tiny, "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--lengths", "abc"}), "--lengths must be an integer, got 'abc'");
  expect_refused(with({"--lengths", "1024,,2048"}), "--lengths must be an integer, got ''");
  expect_refused(with({"--lengths", "1"}), "--lengths: every length must be at least 2 tokens");
  expect_refused(with({"--lengths", "512,512"}), "--lengths: 512 is given twice");
  expect_refused(with({"--depths", "1.5"}), "--depths: 1.5 is outside [0, 1]");
  expect_refused(with({"--depths", "middle"}), "--depths must be a finite number, got 'middle'");
  expect_refused(with({"--depths", "0.5,0.5"}), "--depths: 0.5 is given twice");
  expect_refused(with({"--trials", "0"}), "--trials must be at least 1");
  expect_refused(with({"--qttt", "off"}), "--qttt off");
  expect_refused(with({"--qttt", "steps=0"}), "--qttt: 'steps' must be an integer ≥ 1");
  expect_refused(with({"--qttt", "speed=3"}), "--qttt: unknown key 'speed'");
  expect_refused(with({"--seed", "-1"}), "--seed must be ≥ 0");
  expect_refused(with({"--max-tokens", "0"}), "--max-tokens must be positive");
  expect_refused(with({"--filler", "/nonexistent/q.jsonl"}), "--filler /nonexistent/q.jsonl: cannot be read");
  expect_refused(with({"--device", "tpu"}), "--device must be cpu, cuda or cuda:N");
  expect_refused({"--model", tiny}, "--out is required");
  expect_refused({"--out", out}, "give one of --model PATH and --random-weights CONFIG.json");
  expect_refused(with({}), "the model has no tokenizer");
  expect_refused(
      {"--random-weights", (testing::fixtures_dir() / "models/llama_tied/config.json").string(), "--out", out},
      "the model has no tokenizer");
  expect_refused(with({"--modes", "ar"}), "unknown option '--modes'", 2);
  expect_refused({"--bogus"}, "unknown option '--bogus'", 2);
}

TEST(NiahBench, FlagsTheModelCannotTakeAreRefused) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const std::vector<std::string> base = {"--model", testing::default_model_path().string(), "--out",
                                         (dir.path() / "out").string()};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--lengths", "100000"}),
                 "--lengths 100000: the prompt and an answer of --max-tokens 8 need 100008 positions");
  expect_refused(with({"--lengths", "20"}), "--lengths 20: a prompt of 20 tokens is too short");
  expect_refused(with({"--qttt", "rank=100000"}), "--qttt: 'rank' must be 'full' or in [1, ");
  // The default model spells a number digit by digit: a 5- or 6-digit answer takes 6 or 7 tokens.
  expect_refused(with({"--lengths", "256", "--max-tokens", "4"}), "--max-tokens 4 cannot hold the answer");
}

}  // namespace
}  // namespace draftwise
