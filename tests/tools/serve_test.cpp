// `draftwise serve` through real sockets, on the default model on the CPU: answers in
// OpenAI's shapes, streaming equal to non-streaming, usage counts, bad input answered with an
// error object and the right status while the server keeps serving, the API key, a client
// that disconnects mid-stream (its cache blocks freed, seen through /metrics), concurrent
// clients equal to one at a time, curl and the openai package as clients, and SIGTERM.
#include <gtest/gtest.h>

#include <signal.h>

#include <cstdlib>
#include <memory>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/http_client.h"
#include "tests/support/run_command.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

using nlohmann::json;
using testing::http_request;
using testing::HttpResponse;
using testing::ServerProcess;

std::vector<std::string> serve_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model", testing::default_model_path().string(), "--served-model-name", "smol"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

HttpResponse post(int port, const std::string& path, const json& body,
                  const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return http_request(port, "POST", path, body.dump(), headers);
}

// The text of a streamed answer, and its parsed chunks (without [DONE]).
struct Streamed {
  std::string text;
  std::vector<json> chunks;
  bool done = false;
};

Streamed join_stream(const std::string& body, bool chat) {
  Streamed out;
  for (const std::string& data : testing::sse_data(body)) {
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    json chunk = json::parse(data);
    if (!chunk["choices"].empty()) {
      const json& choice = chunk["choices"][0];
      if (chat && choice["delta"].contains("content")) out.text += choice["delta"]["content"].get<std::string>();
      if (!chat) out.text += choice["text"].get<std::string>();
    }
    out.chunks.push_back(std::move(chunk));
  }
  return out;
}

// /metrics' value of a sample ("name" or "name{labels}"), or -1.
double metric(const std::string& text, const std::string& sample) {
  const size_t at = text.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::atof(text.c_str() + at + sample.size() + 2);
}

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(testing::default_model_path())) return;
    server_ = new ServerProcess(serve_args({"--draft", "ngram:3"}));
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    DW_REQUIRE_DEFAULT_MODEL();
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(server_->ready()) << server_->log();
  }
  static int port() { return server_->port(); }
  static ServerProcess* server_;
};
ServerProcess* Serve::server_ = nullptr;

TEST_F(Serve, CompletionStreamingEqualsNonStreamingAndUsageIsRight) {
  const json request = {{"model", "smol"}, {"prompt", "The capital of France is"}, {"max_tokens", 12},
                        {"temperature", 0}};
  const HttpResponse whole = post(port(), "/v1/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json answer = json::parse(whole.body);
  EXPECT_EQ(answer["object"], "text_completion");
  EXPECT_EQ(answer["model"], "smol");
  EXPECT_TRUE(answer["id"].get<std::string>().rfind("cmpl-", 0) == 0);
  const std::string text = answer["choices"][0]["text"];
  EXPECT_FALSE(text.empty());
  const json& usage = answer["usage"];
  EXPECT_GT(usage["prompt_tokens"].get<int>(), 3);
  EXPECT_EQ(usage["total_tokens"].get<int>(), usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
  if (answer["choices"][0]["finish_reason"] == "length") {
    EXPECT_EQ(usage["completion_tokens"], 12);
  }
  EXPECT_EQ(answer["draftwise"]["drafter"], "ngram:3");

  json streaming = request;
  streaming["stream"] = true;
  streaming["stream_options"] = {{"include_usage", true}};
  const HttpResponse stream = post(port(), "/v1/completions", streaming);
  ASSERT_EQ(stream.status, 200) << stream.body;
  EXPECT_EQ(stream.headers.at("content-type"), "text/event-stream");
  const Streamed joined = join_stream(stream.body, /*chat=*/false);
  EXPECT_TRUE(joined.done);
  EXPECT_EQ(joined.text, text);
  ASSERT_GE(joined.chunks.size(), 2u);
  const json& usage_chunk = joined.chunks.back();
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"], usage);
  EXPECT_EQ(joined.chunks[joined.chunks.size() - 2]["choices"][0]["finish_reason"], answer["choices"][0]["finish_reason"]);
}

TEST_F(Serve, ChatStreamingEqualsNonStreaming) {
  const json request = {{"messages", {{{"role", "user"}, {"content", "Name three colours."}}}},
                        {"max_completion_tokens", 16},
                        {"temperature", 0}};
  const HttpResponse whole = post(port(), "/v1/chat/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json answer = json::parse(whole.body);
  EXPECT_EQ(answer["object"], "chat.completion");
  EXPECT_EQ(answer["choices"][0]["message"]["role"], "assistant");
  const std::string text = answer["choices"][0]["message"]["content"];
  EXPECT_FALSE(text.empty());
  EXPECT_LE(answer["usage"]["completion_tokens"].get<int>(), 16);

  json streaming = request;
  streaming["stream"] = true;
  const HttpResponse stream = post(port(), "/v1/chat/completions", streaming);
  ASSERT_EQ(stream.status, 200);
  const Streamed joined = join_stream(stream.body, /*chat=*/true);
  EXPECT_TRUE(joined.done);
  EXPECT_EQ(joined.text, text);
  ASSERT_FALSE(joined.chunks.empty());
  EXPECT_EQ(joined.chunks.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(joined.chunks.front()["choices"][0]["delta"]["role"], "assistant");
}

TEST_F(Serve, TokenIdPromptsLogprobsAndDrafterChoice) {
  const json ids = {504, 3575, 282, 4649, 314};
  const HttpResponse response = post(port(), "/v1/completions",
                                     {{"prompt", ids}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 2},
                                      {"draftwise", {{"draft", "none"}}}});
  ASSERT_EQ(response.status, 200) << response.body;
  const json answer = json::parse(response.body);
  EXPECT_EQ(answer["usage"]["prompt_tokens"], 5);
  EXPECT_TRUE(answer["draftwise"]["drafter"].is_null());
  const json& logprobs = answer["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), answer["usage"]["completion_tokens"].get<size_t>());
  for (size_t i = 0; i < logprobs["tokens"].size(); ++i) {
    const double own = logprobs["token_logprobs"][i];
    EXPECT_LE(own, 0.0);
    ASSERT_EQ(logprobs["top_logprobs"][i].size(), 2u);
    // Greedy: the chosen token is the most likely one.
    double best = -1e9;
    for (const auto& [token, value] : logprobs["top_logprobs"][i].items()) best = std::max(best, value.get<double>());
    EXPECT_NEAR(own, best, 1e-5);
  }
}

TEST_F(Serve, BadInputGetsAnErrorObjectAndTheRightStatus) {
  struct Case {
    std::string name, method, path, body;
    int status;
  };
  const std::string chat = "/v1/chat/completions", completions = "/v1/completions";
  std::vector<Case> cases = {
      {"malformed JSON", "POST", completions, "{\"prompt\": \"hi\", ", 400},
      {"not an object", "POST", completions, "[1, 2]", 400},
      {"wrong type", "POST", completions, R"({"prompt": "hi", "max_tokens": "ten"})", 400},
      {"wrong type of stream", "POST", completions, R"({"prompt": "hi", "stream": "yes"})", 400},
      {"a field that matters", "POST", completions, R"({"prompt": "hi", "logit_bias": {"5": 10}})", 400},
      {"tools", "POST", chat, R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]})",
       400},
      {"missing messages", "POST", chat, R"({"max_tokens": 4})", 400},
      {"empty messages", "POST", chat, R"({"messages": []})", 400},
      {"unknown role", "POST", chat, R"({"messages": [{"role": "wizard", "content": "hi"}]})", 400},
      {"missing prompt", "POST", completions, R"({"max_tokens": 4})", 400},
      {"max_tokens 0", "POST", completions, R"({"prompt": "hi", "max_tokens": 0})", 400},
      {"max_tokens negative", "POST", completions, R"({"prompt": "hi", "max_tokens": -3})", 400},
      {"max_tokens too large", "POST", completions, R"({"prompt": "hi", "max_tokens": 1000000000})", 400},
      {"n > 1", "POST", completions, R"({"prompt": "hi", "n": 2})", 400},
      {"temperature negative", "POST", completions, R"({"prompt": "hi", "temperature": -1})", 400},
      {"token id outside the vocabulary", "POST", completions, R"({"prompt": [1, 2, 99999999]})", 400},
      {"unknown extension field", "POST", completions, R"({"prompt": "hi", "draftwise": {"draftt": "x"}})", 400},
      {"bad drafter", "POST", completions, R"({"prompt": "hi", "draftwise": {"draft": "ngram:0"}})", 400},
      {"bad qttt spec", "POST", completions, R"({"prompt": "hi", "draftwise": {"qttt": "steps=0"}})", 400},
      {"qttt over the step limit", "POST", completions, R"({"prompt": "hi", "draftwise": {"qttt": {"steps": 65}}})",
       400},
      {"invalid UTF-8", "POST", completions, "{\"prompt\": \"caf\xff\xfe\"}", 400},
      {"wrong model", "POST", completions, R"({"model": "gpt-9", "prompt": "hi"})", 404},
      {"unknown path", "GET", "/v2/everything", "", 404},
      {"wrong method", "GET", completions, "", 405},
      {"wrong method on models", "POST", "/v1/models", "{}", 405},
  };
  // A prompt over the context (8192 positions), as token ids.
  json long_prompt = {{"prompt", std::vector<int>(9000, 42)}, {"max_tokens", 4}};
  cases.push_back({"prompt over the context", "POST", completions, long_prompt.dump(), 400});
  // 10 MB body.
  cases.push_back({"10 MB body", "POST", completions,
                   "{\"prompt\": \"" + std::string(10 * 1024 * 1024, 'a') + "\"}", 413});
  for (const Case& each : cases) {
    SCOPED_TRACE(each.name);
    const HttpResponse response = http_request(port(), each.method, each.path, each.body);
    EXPECT_EQ(response.status, each.status) << response.body.substr(0, 300);
    const json error = json::parse(response.body, nullptr, false);
    ASSERT_TRUE(error.is_object()) << response.body.substr(0, 300);
    ASSERT_TRUE(error.contains("error"));
    EXPECT_FALSE(error["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(error["error"]["type"].is_string());
    if (each.status == 405) {
      EXPECT_TRUE(response.headers.count("allow") > 0);
    }
  }
  EXPECT_NE(json::parse(http_request(port(), "POST", completions, R"({"prompt": "hi", "max_tokens": "ten"})").body)
                ["error"]["param"],
            nullptr);
  // Still serving.
  const HttpResponse after = post(port(), completions, {{"prompt", "Hello"}, {"max_tokens", 3}});
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(http_request(port(), "GET", "/health").status, 200);
}

TEST_F(Serve, ModelsHealthAndMetrics) {
  const HttpResponse models = http_request(port(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  const json list = json::parse(models.body);
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["data"][0]["id"], "smol");
  EXPECT_EQ(list["data"][0]["max_model_len"], 8192);
  EXPECT_EQ(json::parse(http_request(port(), "GET", "/health").body)["status"], "ok");
  ASSERT_EQ(post(port(), "/v1/completions", {{"prompt", "One, two, three,"}, {"max_tokens", 6}}).status, 200);
  const std::string text = http_request(port(), "GET", "/metrics").body;
  EXPECT_GT(metric(text, "draftwise:generation_tokens_total"), 0);
  EXPECT_GT(metric(text, "draftwise:prompt_tokens_total"), 0);
  EXPECT_GE(metric(text, "draftwise:num_requests_running"), 0);
  EXPECT_GT(metric(text, "draftwise:time_to_first_token_seconds_count"), 0);
  EXPECT_GE(metric(text, "draftwise:spec_decode_num_draft_tokens_total"), 0);
  EXPECT_NE(text.find("draftwise:spec_decode_num_accepted_tokens_per_pos"), std::string::npos);
  EXPECT_NE(text.find("# TYPE draftwise:inter_token_latency_seconds histogram"), std::string::npos);
}

// qTTT per request: the answer reports the adaptation under draftwise.qttt (for a stream, in
// the usage chunk), a request that does not ask is not adapted, and /metrics counts both.
TEST_F(Serve, AQtttRequestIsAdaptedAndReportsItsLosses) {
  const json request = {{"prompt", "The quick brown fox jumps over the lazy dog. The quick brown"},
                        {"max_tokens", 4},
                        {"temperature", 0},
                        {"draftwise", {{"qttt", "steps=2,span=8"}}}};
  const HttpResponse whole = post(port(), "/v1/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json answer = json::parse(whole.body);
  const json& qttt = answer["draftwise"]["qttt"];
  ASSERT_TRUE(qttt.is_object()) << whole.body;
  EXPECT_EQ(qttt["steps"], 2);
  EXPECT_EQ(qttt["span"], 8);
  EXPECT_EQ(qttt["context"], answer["usage"]["prompt_tokens"].get<int>() - 1);
  ASSERT_EQ(qttt["losses"].size(), 2u);
  EXPECT_EQ(qttt["first_loss"], qttt["losses"][0]);
  EXPECT_EQ(qttt["last_loss"], qttt["losses"][1]);
  EXPECT_GT(qttt["seconds"].get<double>(), 0);
  EXPECT_EQ(answer["draftwise"]["drafter"], "ngram:3");  // beside the speculation statistics

  json streaming = request;
  streaming["stream"] = true;
  streaming["stream_options"] = {{"include_usage", true}};
  const HttpResponse stream = post(port(), "/v1/completions", streaming);
  ASSERT_EQ(stream.status, 200) << stream.body;
  const Streamed joined = join_stream(stream.body, /*chat=*/false);
  ASSERT_FALSE(joined.chunks.empty());
  EXPECT_EQ(joined.chunks.back()["draftwise"]["qttt"]["losses"].size(), 2u);
  EXPECT_EQ(joined.text, answer["choices"][0]["text"]);  // the same adaptation, the same greedy answer

  json unadapted = request;
  unadapted.erase("draftwise");
  const HttpResponse plain = post(port(), "/v1/completions", unadapted);
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_FALSE(json::parse(plain.body)["draftwise"].contains("qttt"));

  const std::string metrics = http_request(port(), "GET", "/metrics").body;
  EXPECT_GE(metric(metrics, "draftwise:qttt_adapted_requests_total"), 2) << metrics;
  EXPECT_GT(metric(metrics, "draftwise:qttt_seconds_total"), 0) << metrics;
}

TEST_F(Serve, DisconnectMidStreamCancelsTheRequestAndFreesItsBlocks) {
  const std::string body =
      json{{"prompt", "Count from 1 to 1000: 1, 2, 3, 4,"}, {"max_tokens", 2000}, {"temperature", 0}, {"stream", true}}
          .dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const std::string before = http_request(port(), "GET", "/metrics").body;
  const double aborted_before = metric(before, "draftwise:request_success_total{finished_reason=\"abort\"}");
  // Reads for a moment (the header and the first events), then hangs up.
  const std::string got = testing::raw_exchange(port(), request, std::chrono::milliseconds(1500));
  EXPECT_NE(got.find("data: "), std::string::npos) << got.substr(0, 300);
  bool freed = false;
  std::string text;
  for (int i = 0; i < 200 && !freed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    text = http_request(port(), "GET", "/metrics").body;
    freed = metric(text, "draftwise:num_requests_running") == 0 && metric(text, "draftwise:kv_cache_used_blocks") == 0 &&
            metric(text, "draftwise:request_success_total{finished_reason=\"abort\"}") == aborted_before + 1;
  }
  EXPECT_TRUE(freed) << text;
}

TEST_F(Serve, ConcurrentClientsGetWhatEachGetsAlone) {
  const std::vector<std::string> prompts = {"The sky is", "My favourite food is", "Once upon a time",
                                            "def fibonacci(n):", "The three primary colours are", "In 1492,"};
  std::vector<std::string> alone;
  for (const std::string& prompt : prompts) {
    const HttpResponse response =
        post(port(), "/v1/completions", {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}});
    ASSERT_EQ(response.status, 200);
    alone.push_back(json::parse(response.body)["choices"][0]["text"]);
  }
  std::vector<std::string> together(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] {
      const HttpResponse response = post(
          port(), "/v1/completions", {{"prompt", prompts[i]}, {"max_tokens", 16}, {"temperature", 0}, {"stream", true}});
      together[i] = join_stream(response.body, /*chat=*/false).text;
    });
  }
  for (std::thread& client : clients) client.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i], alone[i]) << prompts[i];
}

TEST_F(Serve, CurlIsAClient) {
  if (std::system("command -v curl > /dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
  testing::ScratchDir dir;
  const auto out = dir.path() / "curl.out";
  const std::string command =
      "curl -sN -H 'Content-Type: application/json' -d '{\"prompt\": \"Hello\", \"max_tokens\": 4, \"stream\": true}' "
      "http://127.0.0.1:" + std::to_string(port()) + "/v1/completions > " + out.string();
  ASSERT_EQ(std::system(command.c_str()), 0);
  const std::string body = testing::read_file(out);
  const std::vector<std::string> events = testing::sse_data(body);
  ASSERT_FALSE(events.empty()) << body;
  EXPECT_EQ(events.back(), "[DONE]");
}

TEST_F(Serve, OpenAiPythonPackageIsAClient) {
  if (std::system("python3 -c 'import openai' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "the openai Python package is not installed";
  }
  testing::ScratchDir dir;
  const auto script = dir.write("client.py",
                                "import sys, openai\n"
                                "client = openai.OpenAI(base_url=sys.argv[1], api_key='none')\n"
                                "r = client.completions.create(model='smol', prompt='Hello', max_tokens=5, temperature=0)\n"
                                "s = ''.join(c.choices[0].text for c in client.completions.create(model='smol', "
                                "prompt='Hello', max_tokens=5, temperature=0, stream=True) if c.choices)\n"
                                "c = client.chat.completions.create(model='smol', messages=[{'role': 'user', "
                                "'content': 'Hi'}], max_tokens=5)\n"
                                "assert r.choices[0].text == s, (r.choices[0].text, s)\n"
                                "assert r.usage.completion_tokens >= 1 and c.choices[0].message.role == 'assistant'\n"
                                "print('ok')\n");
  const std::string command =
      "python3 " + script.string() + " http://127.0.0.1:" + std::to_string(port()) + "/v1 > " +
      (dir.path() / "out").string() + " 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << testing::read_file(dir.path() / "out");
}

TEST(ServeAlone, ApiKeyProtectsEverythingButHealth) {
  DW_REQUIRE_DEFAULT_MODEL();
  ServerProcess server(serve_args({"--api-key", "s3cret"}));
  ASSERT_TRUE(server.ready()) << server.log();
  EXPECT_EQ(http_request(server.port(), "GET", "/health").status, 200);
  const json body = {{"prompt", "Hi"}, {"max_tokens", 2}};
  const HttpResponse none = post(server.port(), "/v1/completions", body);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(json::parse(none.body)["error"]["code"], "invalid_api_key");
  EXPECT_EQ(post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(http_request(server.port(), "GET", "/metrics").status, 401);
  EXPECT_EQ(http_request(server.port(), "GET", "/v1/models").status, 401);
  EXPECT_EQ(post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer s3cret"}}).status, 200);
}

TEST(ServeAlone, AFullQueueIsA429AndTheServerGoesOn) {
  DW_REQUIRE_DEFAULT_MODEL();
  ServerProcess server(serve_args({"--max-running", "1", "--max-waiting", "0"}));
  ASSERT_TRUE(server.ready()) << server.log();
  HttpResponse first;
  std::thread client([&] {
    first = post(server.port(), "/v1/completions", {{"prompt", "Count to fifty:"}, {"max_tokens", 60}, {"temperature", 0}});
  });
  // Wait until the first request runs, then a second finds no place.
  for (int i = 0; i < 200; ++i) {
    if (metric(http_request(server.port(), "GET", "/metrics").body, "draftwise:num_requests_running") == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const HttpResponse second = post(server.port(), "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}});
  EXPECT_EQ(second.status, 429) << second.body;
  EXPECT_EQ(json::parse(second.body)["error"]["type"], "rate_limit_exceeded");
  client.join();
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(post(server.port(), "/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}}).status, 200);
}

TEST(ServeAlone, SigtermFinishesTheRunningRequestAndExits) {
  DW_REQUIRE_DEFAULT_MODEL();
  ServerProcess server(serve_args());
  ASSERT_TRUE(server.ready()) << server.log();
  Streamed streamed;
  std::thread client([&] {
    const HttpResponse response = post(server.port(), "/v1/completions",
                                       {{"prompt", "Count to fifty:"}, {"max_tokens", 40}, {"stream", true}});
    streamed = join_stream(response.body, /*chat=*/false);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(server.stop(SIGTERM, std::chrono::seconds(120)), 0) << server.log();
  client.join();
  EXPECT_TRUE(streamed.done) << server.log();
  ASSERT_GE(streamed.chunks.size(), 1u);
  EXPECT_NE(streamed.chunks.back()["choices"][0]["finish_reason"], nullptr);
}

TEST(ServeAlone, TheReadmeSetupLearnsAndSavesItsAdapterAtShutdown) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::ScratchDir dir;
  const auto adapter = dir.path() / "adapter.safetensors";
  ServerProcess server(serve_args({"--draft", "self:8", "--draft-len", "4", "--learn", "global", "--save-adapter",
                                   adapter.string()}));
  ASSERT_TRUE(server.ready()) << server.log();
  const HttpResponse response = post(server.port(), "/v1/chat/completions",
                                     {{"messages", {{{"role", "user"}, {"content", "List five fruits."}}}},
                                      {"max_tokens", 24},
                                      {"temperature", 0}});
  ASSERT_EQ(response.status, 200) << response.body;
  const json answer = json::parse(response.body);
  EXPECT_EQ(answer["draftwise"]["drafter"], "self:8");
  EXPECT_GT(answer["draftwise"]["drafts"].get<int>(), 0);
  const std::string metrics = http_request(server.port(), "GET", "/metrics").body;
  EXPECT_GT(metric(metrics, "draftwise:learner_records_total"), 0) << metrics;
  EXPECT_FALSE(std::filesystem::exists(adapter));
  EXPECT_EQ(server.stop(SIGINT, std::chrono::seconds(120)), 0) << server.log();
  EXPECT_TRUE(std::filesystem::exists(adapter)) << server.log();
  EXPECT_GT(std::filesystem::file_size(adapter), 0u);
}

// serve --qttt adapts every request that does not say otherwise and has a context to train on;
// --qttt-max-steps caps what a request may ask for, with a 400 naming draftwise.qttt.
TEST(ServeAlone, TheQtttDefaultAppliesUnlessARequestSaysAndItsStepsAreCapped) {
  DW_REQUIRE_DEFAULT_MODEL();
  ServerProcess server(serve_args({"--qttt", "steps=2,span=8", "--qttt-max-steps", "3"}));
  ASSERT_TRUE(server.ready()) << server.log();
  const auto ask = [&](const json& extension) {
    json body = {{"prompt", "One, two, three, four, five,"}, {"max_tokens", 2}, {"temperature", 0}};
    if (!extension.is_null()) body["draftwise"] = extension;
    return post(server.port(), "/v1/completions", body);
  };
  const HttpResponse by_default = ask(nullptr);
  ASSERT_EQ(by_default.status, 200) << by_default.body;
  EXPECT_EQ(json::parse(by_default.body)["draftwise"]["qttt"]["losses"].size(), 2u);
  const HttpResponse own = ask({{"qttt", {{"steps", 3}, {"span", 4}, {"rank", 2}}}});
  ASSERT_EQ(own.status, 200) << own.body;
  EXPECT_EQ(json::parse(own.body)["draftwise"]["qttt"]["losses"].size(), 3u);
  EXPECT_EQ(json::parse(own.body)["draftwise"]["qttt"]["spec"], "steps=3,span=4,lr=0.001,rank=2,optimizer=adam,seed=0");
  const HttpResponse off = ask({{"qttt", false}});
  ASSERT_EQ(off.status, 200) << off.body;
  EXPECT_FALSE(json::parse(off.body)["draftwise"].contains("qttt"));

  // A one-token prompt has nothing to train on: the default passes it by, a request's own qttt
  // is refused.
  const HttpResponse one_token =
      post(server.port(), "/v1/completions", {{"prompt", json::array({504})}, {"max_tokens", 2}});
  ASSERT_EQ(one_token.status, 200) << one_token.body;
  EXPECT_FALSE(json::parse(one_token.body)["draftwise"].contains("qttt"));
  const HttpResponse one_token_own = post(server.port(), "/v1/completions",
                                          {{"prompt", json::array({504})}, {"draftwise", {{"qttt", "steps=2"}}}});
  EXPECT_EQ(one_token_own.status, 400) << one_token_own.body;
  EXPECT_EQ(json::parse(one_token_own.body)["error"]["param"], "draftwise.qttt");

  const HttpResponse over = ask({{"qttt", "steps=4"}});
  EXPECT_EQ(over.status, 400) << over.body;
  const json error = json::parse(over.body)["error"];
  EXPECT_EQ(error["param"], "draftwise.qttt");
  EXPECT_NE(error["message"].get<std::string>().find("at most 3"), std::string::npos) << over.body;
  const HttpResponse too_wide = ask({{"qttt", "rank=100000"}});
  EXPECT_EQ(too_wide.status, 400) << too_wide.body;
  EXPECT_EQ(json::parse(too_wide.body)["error"]["param"], "draftwise.qttt");
  EXPECT_EQ(metric(http_request(server.port(), "GET", "/metrics").body, "draftwise:qttt_adapted_requests_total"), 2);
}

TEST(ServeAlone, ADefaultQtttTheModelCannotTakeStopsTheServer) {
  DW_REQUIRE_DEFAULT_MODEL();
  testing::expect_command_refused(
      "serve", {"--model", testing::default_model_path().string(), "--port", "0", "--qttt", "rank=100000"},
      "--qttt: 'rank' must be 'full' or in [1, 576]");
}

TEST(ServeAlone, RefusesAMissingModelAndBadFlags) {
  testing::expect_command_refused("serve", {"--model", "/nonexistent/model.gguf", "--port", "0"}, "/nonexistent");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--port", "70000"}, "--port");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--max-running", "0"}, "--max-running");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--chat-template", "jinja9"}, "jinja9");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--qttt", "steps=0"},
                                  "--qttt: 'steps' must be an integer ≥ 1");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--qttt", "optimizer=lion"},
                                  "--qttt: 'optimizer' must be adam or sgd");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--qttt-max-steps", "0"},
                                  "--qttt-max-steps must be at least 1");
  testing::expect_command_refused("serve", {"--model", "x.gguf", "--qttt", "steps=65"},
                                  "--qttt asks for 65 steps, more than --qttt-max-steps 64");
}

}  // namespace
}  // namespace draftwise
