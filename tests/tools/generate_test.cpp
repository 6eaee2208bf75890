// `draftwise generate` run as a user would: streamed text or one JSON object, token ids
// for a model without tokenizer files, random-weight models, and one-line errors for bad
// input with a non-zero exit and no crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using testing::run_draftwise;

const std::string kTinyModel = (testing::fixtures_dir() / "models/llama_tied").string();

nlohmann::json run_json(const std::vector<std::string>& args) {
  const testing::CommandResult result = run_draftwise(args);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return nlohmann::json::parse(result.out);
}

TEST(Generate, ModelWithoutTokenizerTakesIdsAndReportsIds) {
  const auto report = run_json({"generate", "--model", kTinyModel, "--prompt-ids", "1, 2,3",
                                "--max-tokens", "5", "--temperature", "0", "--json"});
  EXPECT_TRUE(report["text"].is_null());
  EXPECT_EQ(report["token_ids"].size(), 5u);
  EXPECT_EQ(report["finish_reason"], "length");
  EXPECT_EQ(report["stats"]["prompt_tokens"], 3);
  EXPECT_EQ(report["stats"]["completion_tokens"], 5);
  EXPECT_GT(report["stats"]["prefill_tokens_per_second"].get<double>(), 0);
  EXPECT_GT(report["stats"]["decode_tokens_per_second"].get<double>(), 0);
  // The streamed form prints the same ids.
  const auto streamed = run_draftwise({"generate", "--model", kTinyModel, "--prompt-ids", "1,2,3",
                                       "--max-tokens", "5", "--temperature", "0"});
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  std::string ids;
  for (const auto& id : report["token_ids"]) ids += (ids.empty() ? "" : " ") + std::to_string(id.get<int>());
  EXPECT_EQ(streamed.out, ids + "\n");
  EXPECT_NE(streamed.err.find("completion tokens"), std::string::npos);

  const auto text_prompt = run_draftwise({"generate", "--model", kTinyModel, "--prompt", "hello"});
  EXPECT_EQ(text_prompt.exit_code, 1);
  EXPECT_NE(text_prompt.err.find("--prompt-ids"), std::string::npos) << text_prompt.err;
}

TEST(Generate, SeedReproducesSampling) {
  const std::vector<std::string> args = {"generate", "--model", kTinyModel, "--prompt-ids", "4,5",
                                         "--max-tokens", "16", "--temperature", "1.2",
                                         "--top-k", "50", "--top-p", "0.9", "--seed", "7", "--json"};
  const auto first = run_json(args);
  EXPECT_EQ(first["token_ids"], run_json(args)["token_ids"]);
  EXPECT_EQ(first["seed"], 7);
}

TEST(Generate, RandomWeightsBuildTheConfigsShape) {
  const auto report = run_json({"generate", "--random-weights", kTinyModel + "/config.json",
                                "--random-prompt", "6", "--max-tokens", "3", "--seed", "1", "--json"});
  EXPECT_EQ(report["stats"]["prompt_tokens"], 6);
  EXPECT_EQ(report["token_ids"].size(), 3u);
}

// --tp, --rank and --rendezvous are checked before anything loads or any rank starts; the CPU
// never splits a model.
TEST(Generate, TensorParallelOptionsAreCheckedByName) {
  const std::vector<std::string> base = {"--random-weights", kTinyModel + "/config.json", "--prompt-ids", "1,2"};
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  testing::expect_command_refused("generate", with({"--tp", "2"}), "--tp 2 splits the model over GPUs: add --device cuda");
  testing::expect_command_refused("generate", with({"--tp", "0"}), "--tp must be in [1, 64]");
  testing::expect_command_refused("generate", with({"--tp", "two"}), "--tp");
  testing::expect_command_refused("generate", with({"--tp", "2", "--rank", "1"}), "--rank 1 needs --rendezvous");
  testing::expect_command_refused("generate", with({"--tp", "2", "--rank", "2", "--rendezvous", "h:1"}),
                                  "--rank 2 is not in 0..1");
  testing::expect_command_refused("generate", with({"--tp", "2", "--rendezvous", "nowhere"}), "is not HOST:PORT");
  testing::expect_command_refused("generate", with({"--tp", "2", "--tp-timeout", "0"}), "--tp-timeout");
  // A follower (--rank above 0) of a rank 0 that never comes gives up after --tp-timeout, naming
  // the address, before it touches a GPU or loads anything.
  testing::expect_command_refused(
      "generate", with({"--tp", "2", "--rank", "1", "--rendezvous", "127.0.0.1:9", "--device", "cuda", "--tp-timeout", "1"}),
      "is rank 0 running?");
  testing::expect_command_refused("serve", {"--tp", "2", "--rank", "1", "--rendezvous", "127.0.0.1:9"},
                                  "add --device cuda");
}

// context-bench on the CPU: every batch size decoded after every context, as JSON; the
// all-reduce timing only where there are ranks.
TEST(ContextBench, DecodesEveryBatchSizeAfterEveryContext) {
  const testing::ScratchDir dir;
  const std::string json = (dir.path() / "bench.json").string();
  const testing::CommandResult result =
      run_draftwise({"context-bench", "--random-weights", kTinyModel + "/config.json", "--contexts", "8,16", "--batches",
                     "1,3", "--prefill", "12", "--steps", "2", "--repeats", "1", "--json", json});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json report = nlohmann::json::parse(testing::read_file(json));
  const nlohmann::json& decode = report["models"][0]["decode"];
  ASSERT_EQ(decode.size(), 4u);
  EXPECT_EQ(decode[1]["context"], 8);
  EXPECT_EQ(decode[1]["batch"], 3);
  EXPECT_GT(decode[1]["tokens_per_second"].get<double>(), 0.0);
  EXPECT_TRUE(report["models"][0]["all_reduce_ms_per_decode_step"].empty());
  EXPECT_NE(result.out.find("Decode throughput, tokens/s"), std::string::npos) << result.out;
  testing::expect_command_refused("context-bench", {"--random-weights", kTinyModel + "/config.json", "--batches", "0"},
                                  "--batches");
}

// A TTT model folder (model_type "ttt", no tokenizer) through the command line: the official
// fixture's greedy continuation, the same with speculation, random weights in a TTT config's
// shape, and a tokenizer from elsewhere (--tokenizer).
TEST(Generate, TttModelsTakeIdsRandomWeightsAndATokenizerFromElsewhere) {
  const auto folder = testing::fixtures_dir() / "ttt_official/linear_base";
  const std::string prompt = testing::read_file(folder / "input_ids.txt");
  const std::string greedy = testing::read_file(folder / "greedy_ids.txt");
  nlohmann::json want = nlohmann::json::array();
  for (size_t at = 0; at < greedy.size();) {
    const size_t comma = std::min(greedy.find(',', at), greedy.size());
    want.push_back(std::stoi(greedy.substr(at, comma - at)));
    at = comma + 1;
  }
  const std::vector<std::string> args = {"generate", "--model", folder.string(), "--prompt-ids", prompt,
                                         "--max-tokens", std::to_string(want.size()), "--temperature", "0", "--json"};
  EXPECT_EQ(run_json(args)["token_ids"], want);
  std::vector<std::string> speculated = args;
  speculated.insert(speculated.end(), {"--draft", "ngram:1", "--draft-len", "3"});
  EXPECT_EQ(run_json(speculated)["token_ids"], want);
  speculated.insert(speculated.end(), {"--draft", "self:1"});
  EXPECT_EQ(run_json(speculated)["token_ids"], want);

  // Random weights: a small TTT-MLP shape with the Llama-2 vocabulary size, and the Llama-2
  // SentencePiece tokenizer of the tokenizer fixtures.
  const auto dir = std::filesystem::temp_directory_path() / "draftwise_generate_ttt";
  std::filesystem::create_directories(dir);
  const auto config = dir / "config.json";
  std::ofstream(config) << R"({"model_type": "ttt", "vocab_size": 2048, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "ttt_layer_type": "mlp", "mini_batch_size": 8,
    "pre_conv": true, "share_qk": true, "use_gate": true})";
  const auto random = run_json({"generate", "--random-weights", config.string(), "--random-prompt", "19",
                                "--max-tokens", "5", "--seed", "1", "--json"});
  EXPECT_EQ(random["stats"]["prompt_tokens"], 19);
  EXPECT_EQ(random["token_ids"].size(), 5u);
  const std::string tokenizer = (testing::fixtures_dir() / "tokenizer/llama2_sp.gguf").string();
  const auto text = run_json({"generate", "--random-weights", config.string(), "--tokenizer", tokenizer, "--prompt",
                              "Hello world", "--max-tokens", "4", "--temperature", "0", "--json"});
  EXPECT_TRUE(text["text"].is_string());
  EXPECT_GT(text["stats"]["prompt_tokens"].get<int>(), 1);
  // A tokenizer with more tokens than the model has rows is refused.
  const auto too_big = run_draftwise({"generate", "--model", folder.string(), "--tokenizer", tokenizer, "--prompt", "hi"});
  EXPECT_EQ(too_big.exit_code, 1);
  EXPECT_NE(too_big.err.find("more than the model's 512 vocabulary rows"), std::string::npos) << too_big.err;
  const auto missing = run_draftwise({"generate", "--model", folder.string(), "--tokenizer", "/no/such", "--prompt", "hi"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no such tokenizer"), std::string::npos) << missing.err;
  std::filesystem::remove_all(dir);
}

TEST(Generate, DefaultModelChatCompletion) {
  DW_REQUIRE_DEFAULT_MODEL();
  const auto report = run_json({"generate", "--model", testing::default_model_path().string(),
                                "--prompt", "What is the capital of France?", "--chat",
                                "--temperature", "0", "--max-tokens", "32", "--json"});
  EXPECT_NE(report["text"].get<std::string>().find("Paris"), std::string::npos) << report.dump();
  EXPECT_EQ(report["finish_reason"], "stop");  // <|im_end|>
  EXPECT_EQ(report["stats"]["prompt_tokens"], 37);  // as transformers tokenizes it
}

// A one-line error naming `problem`, exit code 1 (2 for usage errors), no crash.
void expect_refused(const std::vector<std::string>& args, const std::string& problem, int exit_code = 1) {
  testing::expect_command_refused("generate", args, problem, exit_code);
}

TEST(Generate, BadInputIsRefusedWithAClearError) {
  const std::vector<std::string> model = {"--model", kTinyModel};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = model;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--prompt-ids", ""}), "--prompt-ids must be an integer");
  expect_refused(with({"--prompt-ids", "1,x"}), "got 'x'");
  expect_refused(with({"--prompt-ids", "1,999"}), "999");
  expect_refused(with({"--random-prompt", "300"}), "context");
  std::string long_prompt = "1";
  for (int i = 0; i < 300; ++i) long_prompt += ",1";
  expect_refused(with({"--prompt-ids", long_prompt}), "context");
  expect_refused(with({"--prompt-ids", "1", "--max-tokens", "0"}), "--max-tokens must be positive");
  expect_refused(with({"--prompt-ids", "1", "--max-tokens", "-3"}), "--max-tokens must be positive");
  expect_refused(with({"--prompt-ids", "1", "--temperature", "-0.5"}), "temperature");
  expect_refused(with({"--prompt-ids", "1", "--top-p", "0"}), "top-p must be in (0, 1]");
  expect_refused(with({"--prompt-ids", "1", "--top-p", "1.01"}), "top-p must be in (0, 1]");
  expect_refused(with({"--prompt-ids", "1", "--temperature", "warm"}), "--temperature must be a finite number");
  expect_refused(with({"--prompt-ids", "1", "--seed", "-1"}), "--seed must be ≥ 0");
  expect_refused(with({"--prompt-ids", "1", "--device", "tpu"}), "--device must be cpu, cuda or cuda:N");
  expect_refused(with({"--prompt-ids", "1", "--device", "cuda:999"}), "cuda:999");
  expect_refused(with({"--prompt-ids", "1", "--device", "cuda", "--kv-cache-share", "0"}),
                 "--kv-cache-share must be in (0, 1]");
  expect_refused(with({"--prompt-ids", "1", "--chat"}), "--chat needs --prompt");
  expect_refused(with({}), "exactly one of --prompt");
  expect_refused({"--prompt-ids", "1"}, "exactly one of --model");
  expect_refused({"--model", "/nonexistent/model.gguf", "--prompt-ids", "1"}, "/nonexistent/model.gguf");
  expect_refused({"--random-weights", "/nonexistent/config.json", "--random-prompt", "3"}, "config.json");
  expect_refused({"--bogus"}, "unknown option '--bogus'", 2);
}

// Speculative decoding from the command line: the same greedy tokens with a drafter, and the
// speculation statistics in the JSON report, consistent with their definitions.
TEST(Generate, DraftingKeepsTheGreedyOutputAndReportsAcceptance) {
  const std::vector<std::string> base = {"generate", "--model", kTinyModel, "--prompt-ids", "5,6,7,5,6,7",
                                         "--max-tokens", "24", "--temperature", "0", "--json"};
  const auto plain = run_json(base);
  EXPECT_EQ(plain["stats"]["speculation"]["drafts"], 0);
  EXPECT_EQ(plain["stats"]["speculation"]["tokens_per_target_step"], 1.0);
  for (const std::vector<std::string>& draft :
       {std::vector<std::string>{"--draft", "ngram:2"}, {"--draft", "ngram:1", "--draft-len", "auto"},
        {"--draft", "model:" + kTinyModel, "--draft-len", "3"}, {"--draft", "self:1", "--draft-len", "2"}}) {
    std::vector<std::string> args = base;
    args.insert(args.end(), draft.begin(), draft.end());
    const auto report = run_json(args);
    EXPECT_EQ(report["token_ids"], plain["token_ids"]) << draft[1];
    const auto& speculation = report["stats"]["speculation"];
    EXPECT_EQ(speculation["drafter"], draft[1].substr(0, draft[1].find('@')));
    const double drafts = speculation["drafts"].get<double>();
    const double accepted = speculation["accepted_tokens"].get<double>();
    EXPECT_LE(accepted, speculation["draft_tokens"].get<double>());
    if (drafts > 0) {
      EXPECT_DOUBLE_EQ(speculation["mean_acceptance_length"].get<double>(), 1.0 + accepted / drafts);
    }
    EXPECT_EQ(speculation["generated_tokens"], 24);
    EXPECT_DOUBLE_EQ(speculation["tokens_per_target_step"].get<double>(),
                     24.0 / speculation["target_steps"].get<double>());
  }
  // The target as its own draft model: every drafted token is kept.
  std::vector<std::string> args = base;
  args.insert(args.end(), {"--draft", "model:" + kTinyModel});
  const auto self_report = run_json(args);
  const auto& self = self_report["stats"]["speculation"];
  EXPECT_EQ(self["accepted_tokens"], self["draft_tokens"]);
  EXPECT_GT(self["drafts"].get<int>(), 0);
}

TEST(Generate, BadDraftingOptionsAreRefused) {
  const std::vector<std::string> model = {"--model", kTinyModel, "--prompt-ids", "1,2"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = model;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--draft", "eagle:3"}), "unknown drafting kind 'eagle'");
  expect_refused(with({"--draft", "ngram"}), "expected ngram:N");
  expect_refused(with({"--draft", "ngram:x"}), "expected ngram:N");
  expect_refused(with({"--draft", "ngram:0"}), "n must be in [1, 16]");
  expect_refused(with({"--draft", "ngram:17"}), "n must be in [1, 16]");
  expect_refused(with({"--draft", "self:0"}), "exit layer must be in [1, 1]");
  expect_refused(with({"--draft", "self:2"}), "exit layer must be in [1, 1]");
  expect_refused(with({"--draft", "model:"}), "expected model:PATH");
  expect_refused(with({"--draft", "model:/nonexistent/draft.gguf"}), "/nonexistent/draft.gguf");
  expect_refused(with({"--draft", "ngram:2", "--draft-len", "0"}), "draft length '0'");
  expect_refused(with({"--draft", "ngram:2", "--draft-len", "17"}), "in [1, 16]");
  expect_refused(with({"--draft", "ngram:2", "--draft-len", "many"}), "or 'auto'");
  expect_refused(with({"--draft-len", "3"}), "--draft-len needs --draft");
}

// Online learning from the command line: the learner's counters in --json, the adapter
// saved and loaded back, the same greedy tokens as without learning.
TEST(Generate, LearningReportsItsCountersAndSavesTheAdapter) {
  const auto folder = std::filesystem::temp_directory_path() / "draftwise_generate_learn";
  std::filesystem::create_directories(folder);
  const std::string adapter = (folder / "head.safetensors").string();
  const std::vector<std::string> base = {"generate", "--model", kTinyModel, "--prompt-ids", "5,6,7,5,6,7",
                                         "--max-tokens", "40", "--temperature", "0", "--json"};
  std::vector<std::string> learning = base;
  learning.insert(learning.end(), {"--draft", "self:1", "--learn", "global", "--learn-batch", "8", "--learn-interval",
                                   "2", "--learn-time-share", "1", "--save-adapter", adapter});
  const auto learned = run_json(learning);
  EXPECT_EQ(learned["token_ids"], run_json(base)["token_ids"]);
  const auto& learner = learned["stats"]["learner"];
  EXPECT_EQ(learner["scope"], "global");
  EXPECT_GT(learner["records"].get<int>(), 0);
  EXPECT_GT(learner["updates"].get<int>(), 0);
  EXPECT_EQ(learner["skipped"], 0);
  for (const char* field : {"reverted", "seconds", "last_loss"}) EXPECT_TRUE(learner.contains(field)) << field;
  ASSERT_TRUE(std::filesystem::exists(adapter));
  std::vector<std::string> loading = base;
  loading.insert(loading.end(), {"--draft", "self:1", "--adapter", adapter});
  const auto frozen = run_json(loading);
  EXPECT_EQ(frozen["token_ids"], learned["token_ids"]);
  EXPECT_EQ(frozen["stats"]["learner"]["scope"], "off");
  EXPECT_EQ(frozen["stats"]["learner"]["updates"], 0);
  // A draft model learns too, through its full-depth head. The model drafting for itself
  // starts with every token kept; its default head (no lens) learns without losing that.
  // (With --learn-head lora+lens, 0.94 of them are kept here.)
  std::vector<std::string> longer = base;
  longer[std::find(longer.begin(), longer.end(), "--max-tokens") - longer.begin() + 1] = "80";
  std::vector<std::string> model_learning = longer;
  model_learning.insert(model_learning.end(), {"--draft", "model:" + kTinyModel, "--learn", "global", "--learn-batch",
                                               "8", "--learn-interval", "2", "--learn-time-share", "1"});
  const auto model_learned = run_json(model_learning);
  EXPECT_EQ(model_learned["token_ids"], run_json(longer)["token_ids"]);
  EXPECT_GT(model_learned["stats"]["learner"]["updates"].get<int>(), 0);
  EXPECT_EQ(model_learned["stats"]["speculation"]["acceptance_rate"].get<double>(), 1.0);
  std::filesystem::remove_all(folder);
}

TEST(Generate, BadLearningOptionsAreRefused) {
  const std::vector<std::string> model = {"--model", kTinyModel, "--prompt-ids", "1,2"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = model;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--draft", "self:1", "--learn", "everyone"}), "unknown learning scope \"everyone\"");
  expect_refused(with({"--learn", "global"}), "--learn and --adapter need --draft self:E or model:PATH");
  expect_refused(with({"--draft", "ngram:2", "--learn", "global"}), "n-gram drafting has no weights");
  expect_refused(with({"--draft", "ngram:2+learn"}), "only self:E and model:PATH drafters learn online");
  expect_refused(with({"--draft", "self:1", "--learn", "global", "--learn-rank", "0"}), "--learn-rank must be in");
  expect_refused(with({"--draft", "self:1", "--learn", "global", "--learn-lr", "-1"}), "--learn-lr must be positive");
  expect_refused(with({"--draft", "self:1", "--learn", "global", "--learn-head", "mlp"}),
                 "--learn-head must be lora or lora+lens, got \"mlp\"");
  expect_refused(with({"--draft", "self:1", "--learn", "global", "--learn-batch", "x"}), "--learn-batch");
  expect_refused(with({"--draft", "self:1", "--learn-key", "k"}), "--learn-key needs --learn key");
  expect_refused(with({"--draft", "self:1", "--adapter", "/nonexistent/a.safetensors"}), "/nonexistent/a.safetensors");
}

// qTTT from the command line: the adaptation's report in --json (spec, losses, what it trained
// on, its cost) and in the streamed mode's stderr line; seeded spans make a run repeatable.
TEST(Generate, QtttReportsTheAdaptationAndRepeatsWithItsSeed) {
  std::string prompt = "1";
  for (int i = 1; i < 20; ++i) prompt += "," + std::to_string((i * 37) % 250 + 3);  // 20 tokens
  const std::vector<std::string> base = {"generate", "--model", kTinyModel, "--prompt-ids", prompt, "--max-tokens",
                                         "8", "--temperature", "0"};
  std::vector<std::string> adapted = base;
  adapted.insert(adapted.end(), {"--qttt", "steps=3,span=8,lr=0.03,rank=2,seed=5", "--json"});
  const auto report = run_json(adapted);
  ASSERT_TRUE(report["stats"].contains("qttt")) << report.dump();
  const auto& qttt = report["stats"]["qttt"];
  EXPECT_EQ(qttt["spec"], "steps=3,span=8,lr=0.03,rank=2,optimizer=adam,seed=5");
  EXPECT_EQ(qttt["steps"], 3);
  EXPECT_EQ(qttt["span"], 8);
  EXPECT_EQ(qttt["context"], 19);  // every prompt position with a next token: all but the last
  ASSERT_EQ(qttt["losses"].size(), 3u);
  for (const auto& loss : qttt["losses"]) {
    EXPECT_TRUE(loss.is_number() && loss.get<double>() > 0 && std::isfinite(loss.get<double>())) << loss;
  }
  EXPECT_EQ(qttt["first_loss"], qttt["losses"][0]);
  EXPECT_EQ(qttt["last_loss"], qttt["losses"][2]);
  EXPECT_GE(qttt["seconds"].get<double>(), 0);
  EXPECT_GT(qttt["flops"].get<double>(), 0);
  // Rank 2 in both layers: A [2, 64] and B [64, 2] each, with Adam's two moments, in fp32.
  EXPECT_EQ(qttt["parameter_bytes"], 2 * (2 * 64 + 64 * 2) * 3 * 4);
  EXPECT_EQ(report["token_ids"].size(), 8u);
  const auto again = run_json(adapted);
  EXPECT_EQ(again["token_ids"], report["token_ids"]);
  EXPECT_EQ(again["stats"]["qttt"]["losses"], qttt["losses"]);

  std::vector<std::string> plain = base;
  plain.push_back("--json");
  EXPECT_FALSE(run_json(plain)["stats"].contains("qttt"));
  plain.insert(plain.end(), {"--qttt", "off"});
  EXPECT_FALSE(run_json(plain)["stats"].contains("qttt"));

  std::vector<std::string> streamed = base;
  streamed.insert(streamed.end(), {"--qttt", "steps=2,span=4"});
  const auto printed = run_draftwise(streamed);
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_NE(printed.err.find("; qttt: 2 steps of 4 tokens, loss "), std::string::npos) << printed.err;
  EXPECT_EQ(std::count(printed.err.begin(), printed.err.end(), '\n'), 1) << printed.err;
}

TEST(Generate, BadQtttSpecsAreRefusedNamingTheKey) {
  const std::vector<std::string> model = {"--model", kTinyModel, "--prompt-ids", "1,2,3"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = model;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--qttt", ""}), "--qttt: the spec is empty");
  expect_refused(with({"--qttt", "steps=0"}), "--qttt: 'steps' must be an integer ≥ 1, got '0'");
  expect_refused(with({"--qttt", "steps=8,span=x"}), "--qttt: 'span' must be an integer ≥ 1, got 'x'");
  expect_refused(with({"--qttt", "lr=0"}), "--qttt: 'lr' must be a positive number");
  expect_refused(with({"--qttt", "rank=half"}), "--qttt: 'rank' must be an integer ≥ 0");
  expect_refused(with({"--qttt", "optimizer=rmsprop"}), "--qttt: 'optimizer' must be adam or sgd");
  expect_refused(with({"--qttt", "seed=-4"}), "--qttt: 'seed' must be an integer ≥ 0");
  expect_refused(with({"--qttt", "depth=2"}), "--qttt: unknown key 'depth'");
  expect_refused(with({"--qttt", "steps"}), "--qttt: 'steps' is not key=value");
  // What the model cannot take: a rank above its hidden size (64).
  expect_refused(with({"--qttt", "rank=65"}), "--qttt: 'rank' must be 'full' or in [1, 64]");
  // A one-token prompt leaves nothing to train on.
  expect_refused({"--model", kTinyModel, "--prompt-ids", "1", "--qttt", "on"},
                 "qttt needs a prompt of at least 2 tokens");
}

TEST(Generate, DraftModelWithAnotherVocabularyIsRefused) {
  DW_REQUIRE_DEFAULT_MODEL();
  const std::string path = testing::default_model_path().string();
  expect_refused({"--model", path, "--prompt", "hi", "--draft", "model:" + kTinyModel},
                 "the draft model has 256 vocabulary rows, the target 49152");
  expect_refused({"--model", kTinyModel, "--prompt-ids", "1", "--draft", "model:" + path},
                 "the draft model has 49152 vocabulary rows, the target 256");
}

TEST(Generate, DefaultModelRefusesEmptyAndOverlongTextPrompts) {
  DW_REQUIRE_DEFAULT_MODEL();
  const std::string path = testing::default_model_path().string();
  expect_refused({"--model", path, "--prompt", ""}, "the prompt is empty");
  std::string huge;
  for (int i = 0; i < 9000; ++i) huge += " a";
  expect_refused({"--model", path, "--prompt", huge}, "context");
  expect_refused({"--model", path, "--prompt", "hi", "--stop", "x", "--top-k", "-1"}, "top-k");
}

TEST(Generate, RandomWeightsTooBigForMemoryAreRefused) {
  testing::ScratchDir scratch;
  const auto config = scratch.write("config.json", R"({"architectures": ["LlamaForCausalLM"],
      "vocab_size": 128256, "hidden_size": 16384, "intermediate_size": 53248,
      "num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8})");
  expect_refused({"--random-weights", config.string(), "--random-prompt", "4"}, "GiB");
}

}  // namespace
}  // namespace draftwise
