// The OpenAI request parser and response shapes of `draftwise serve`, without a socket: every
// field read as OpenAI documents it, errors that name the field, fields that would change the
// answer refused, and the objects clients parse.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tools/openai_api.h"

namespace draftwise {
namespace {

using nlohmann::json;

CompletionCall parse_ok(const json& body, ApiEndpoint endpoint) {
  auto parsed = parse_completion_call(body.dump(), endpoint);
  if (auto* error = std::get_if<ApiError>(&parsed)) ADD_FAILURE() << error->message;
  return std::holds_alternative<CompletionCall>(parsed) ? std::get<CompletionCall>(parsed) : CompletionCall{};
}

ApiError parse_error(const std::string& body, ApiEndpoint endpoint) {
  auto parsed = parse_completion_call(body, endpoint);
  EXPECT_TRUE(std::holds_alternative<ApiError>(parsed)) << body;
  return std::holds_alternative<ApiError>(parsed) ? std::get<ApiError>(parsed) : ApiError{};
}

TEST(OpenAiApi, ReadsTheFieldsOfACompletion) {
  const CompletionCall call = parse_ok({{"model", "m"},
                                        {"prompt", "Hello"},
                                        {"max_tokens", 7},
                                        {"temperature", 0.5},
                                        {"top_p", 0.9},
                                        {"seed", 3},
                                        {"stop", {"\n", "END"}},
                                        {"stream", true},
                                        {"stream_options", {{"include_usage", true}}},
                                        {"logprobs", 2},
                                        {"n", 1},
                                        {"user", "someone"},
                                        {"draftwise", {{"draft", "self:8"}, {"draft_len", "auto"}, {"learn", "request"}}}},
                                       ApiEndpoint::completions);
  EXPECT_EQ(call.model, "m");
  EXPECT_EQ(call.prompt_text, "Hello");
  EXPECT_EQ(call.max_tokens, 7);
  EXPECT_EQ(call.temperature, 0.5);
  EXPECT_EQ(call.top_p, 0.9);
  EXPECT_EQ(call.seed, 3u);
  EXPECT_EQ(call.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(call.stream);
  EXPECT_TRUE(call.include_usage);
  EXPECT_EQ(call.logprobs, 2);
  EXPECT_EQ(call.draft, "self:8");
  EXPECT_EQ(call.draft_len, "auto");
  EXPECT_EQ(call.learn, "request");
}

TEST(OpenAiApi, PromptsAsTextTokenIdsOrAListOfOne) {
  EXPECT_EQ(parse_ok({{"prompt", {"one"}}}, ApiEndpoint::completions).prompt_text, "one");
  EXPECT_EQ(parse_ok({{"prompt", {1, 2, 3}}}, ApiEndpoint::completions).prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_ok({{"prompt", {{4, 5}}}}, ApiEndpoint::completions).prompt_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_NE(parse_error(R"({"prompt": ["a", "b"]})", ApiEndpoint::completions).message.find("one prompt"),
            std::string::npos);
  EXPECT_EQ(parse_error(R"({"prompt": [1, -2]})", ApiEndpoint::completions).param, "prompt");
  EXPECT_EQ(parse_error(R"({"prompt": []})", ApiEndpoint::completions).param, "prompt");
}

TEST(OpenAiApi, ChatMessagesWithTextPartsAndTheNewerNames) {
  const CompletionCall call =
      parse_ok({{"messages",
                 {{{"role", "developer"}, {"content", "Be brief."}},
                  {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi "}}, {{"type", "text"}, {"text", "there"}}}}}}},
                {"max_completion_tokens", 5},
                {"logprobs", true},
                {"top_logprobs", 3}},
               ApiEndpoint::chat_completions);
  ASSERT_EQ(call.messages.size(), 2u);
  EXPECT_EQ(call.messages[0].role, "system");
  EXPECT_EQ(call.messages[1].content, "Hi there");
  EXPECT_EQ(call.max_tokens, 5);
  EXPECT_EQ(call.logprobs, 3);
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
                        ApiEndpoint::chat_completions)
                .param,
            "messages");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
                        ApiEndpoint::chat_completions)
                .param,
            "top_logprobs");
}

TEST(OpenAiApi, ErrorsNameTheField) {
  const ApiEndpoint completions = ApiEndpoint::completions;
  EXPECT_EQ(parse_error("{", completions).message, "the request body is not valid JSON");
  EXPECT_EQ(parse_error("3", completions).message, "the request body must be a JSON object");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "max_tokens": 0})", completions).param, "max_tokens");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "max_tokens": 2.5})", completions).param, "max_tokens");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "temperature": "hot"})", completions).param, "temperature");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "top_p": 0})", completions).param, "top_p");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "seed": -1})", completions).param, "seed");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "stop": [1]})", completions).param, "stop");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "logprobs": 21})", completions).param, "logprobs");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "n": 3})", completions).param, "n");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "echo": true})", completions).param, "echo");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "presence_penalty": 0.5})", completions).param, "presence_penalty");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "response_format": {"type": "json_object"}})", completions).param,
            "response_format");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "draftwise": {"draft_len": 99}})", completions).param,
            "draftwise.draft_len");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "draftwise": {"learn": "always"}})", completions).param, "draftwise.learn");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "draftwise": {"qttt": "steps=0"}})", completions).param, "draftwise.qttt");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user", "content": "x"}]})", completions).param, "messages");
  EXPECT_EQ(parse_error(R"({"prompt": "x"})", ApiEndpoint::chat_completions).param, "prompt");
  // Defaults that change nothing are accepted.
  parse_ok({{"prompt", "x"}, {"presence_penalty", 0}, {"logit_bias", json::object()}, {"echo", false}, {"best_of", 1}},
           completions);
}

QttOptions qttt_options(const CompletionCall& call) {
  EXPECT_TRUE(call.qttt.has_value() && call.qttt->has_value());
  return call.qttt && *call.qttt ? **call.qttt : QttOptions{};
}

CompletionCall parse_qttt(const json& field) {
  return parse_ok({{"prompt", "x"}, {"draftwise", {{"qttt", field}}}}, ApiEndpoint::completions);
}

TEST(OpenAiApi, QtttIsASpecAnObjectOfItsKeysOrFalse) {
  EXPECT_FALSE(parse_ok({{"prompt", "x"}}, ApiEndpoint::completions).qttt.has_value());

  const QttOptions spec = qttt_options(parse_qttt("steps=8,rank=4"));
  EXPECT_EQ(spec.steps, 8);
  EXPECT_EQ(spec.rank, 4);
  EXPECT_EQ(spec.span, QttOptions{}.span);  // keys left out keep their defaults
  EXPECT_EQ(qtt_spec(qttt_options(parse_qttt("on"))), qtt_spec(QttOptions{}));
  EXPECT_EQ(qtt_spec(qttt_options(parse_qttt(true))), qtt_spec(QttOptions{}));
  EXPECT_EQ(qtt_spec(qttt_options(parse_qttt(json::object()))), qtt_spec(QttOptions{}));
  for (const json& off : {json("off"), json(false)}) {
    const CompletionCall call = parse_qttt(off);
    ASSERT_TRUE(call.qttt.has_value()) << off;
    EXPECT_FALSE(call.qttt->has_value()) << off;
  }

  const QttOptions object = qttt_options(parse_qttt(
      {{"steps", 2}, {"span", 8.0}, {"lr", 0.03}, {"rank", "full"}, {"optimizer", "sgd"}, {"seed", 9}}));
  EXPECT_EQ(object.steps, 2);
  EXPECT_EQ(object.span, 8);
  EXPECT_FLOAT_EQ(object.learning_rate, 0.03f);
  EXPECT_EQ(object.rank, 0);
  EXPECT_EQ(object.optimizer, QttOptimizer::sgd);
  EXPECT_EQ(object.seed, 9u);
  EXPECT_EQ(qttt_options(parse_qttt({{"rank", 4}})).rank, 4);
  // The object and the spec are the same options.
  const QttOptions same = qttt_options(parse_qttt("steps=2,span=8,lr=0.03,rank=full,optimizer=sgd,seed=9"));
  EXPECT_EQ(qtt_spec(object), qtt_spec(same));
}

TEST(OpenAiApi, BadQtttFieldsAreRefusedNamingTheKey) {
  struct Case {
    json field;
    std::string message;  // a part of the error's message
  };
  const std::vector<Case> cases = {
      {3, "'draftwise.qttt' must be a spec"},
      {nullptr, "'draftwise.qttt' must be a spec"},
      {json::array({"on"}), "'draftwise.qttt' must be a spec"},
      {"", "draftwise.qttt: the spec is empty"},
      {"steps", "draftwise.qttt: 'steps' is not key=value"},
      {"steps=0", "draftwise.qttt: 'steps' must be an integer ≥ 1, got '0'"},
      {"steps=many", "'steps' must be an integer"},
      {"span=0", "'span' must be an integer ≥ 1"},
      {"lr=-1", "'lr' must be a positive number"},
      {"rank=-2", "'rank' must be an integer ≥ 0"},
      {"optimizer=rmsprop", "'optimizer' must be adam or sgd, got 'rmsprop'"},
      {"seed=-1", "'seed' must be an integer ≥ 0"},
      {"depth=3", "unknown key 'depth'"},
      {{{"steps", "8"}}, "'draftwise.qttt.steps' must be an integer"},
      {{{"steps", 0}}, "'steps' must be an integer ≥ 1"},
      {{{"steps", 100001}}, "'steps' must be at most 100000"},
      {{{"span", 2.5}}, "'draftwise.qttt.span' must be an integer"},
      {{{"lr", "fast"}}, "'draftwise.qttt.lr' must be a number"},
      {{{"lr", 0}}, "'lr' must be a positive number"},
      {{{"rank", "half"}}, "'draftwise.qttt.rank' must be an integer or \"full\""},
      {{{"rank", -1}}, "'rank' must be an integer ≥ 0"},
      {{{"optimizer", "adam,steps=9"}}, "'draftwise.qttt.optimizer' must be \"adam\" or \"sgd\""},
      {{{"seed", -1}}, "'seed' must be an integer ≥ 0"},
      {{{"depth", 1}}, "unknown field 'draftwise.qttt.depth'"},
  };
  for (const Case& each : cases) {
    SCOPED_TRACE(each.field.dump());
    const ApiError error =
        parse_error(json{{"prompt", "x"}, {"draftwise", {{"qttt", each.field}}}}.dump(), ApiEndpoint::completions);
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, "draftwise.qttt");
    EXPECT_NE(error.message.find(each.message), std::string::npos) << error.message;
  }
}

TEST(OpenAiApi, QtttIsTheRequestsOwnElseTheServersDefaultWithinTheStepLimitAndTheModel) {
  ModelConfig config;
  config.hidden_size = 64;
  QttOptions server_default;
  server_default.steps = 3;
  const auto call = [](const json& field) {
    json body = {{"prompt", "x"}};
    if (!field.is_null()) body["draftwise"] = {{"qttt", field}};
    return parse_ok(body, ApiEndpoint::completions);
  };
  const auto resolved = [&](const json& field, const std::optional<QttOptions>& fallback, int64_t prompt_tokens = 10) {
    const auto outcome = resolve_qttt(call(field), fallback, 64, config, prompt_tokens);
    if (const auto* error = std::get_if<ApiError>(&outcome)) ADD_FAILURE() << error->message;
    return std::holds_alternative<ApiError>(outcome) ? std::nullopt : std::get<std::optional<QttOptions>>(outcome);
  };
  EXPECT_FALSE(resolved(nullptr, std::nullopt).has_value());
  EXPECT_EQ(resolved(nullptr, server_default).value().steps, 3);
  EXPECT_FALSE(resolved(false, server_default).has_value());
  EXPECT_EQ(resolved("steps=8", server_default).value().steps, 8);
  EXPECT_EQ(resolved("steps=64,rank=64", std::nullopt).value().steps, 64);  // at the limits
  EXPECT_EQ(resolved("on", std::nullopt, 2).value().steps, QttOptions{}.steps);
  // A one-token prompt has nothing to train on: the server's default passes it by.
  EXPECT_FALSE(resolved(nullptr, server_default, 1).has_value());

  const auto refused = [&](const json& field, int64_t prompt_tokens = 10) {
    const auto outcome = resolve_qttt(call(field), server_default, 64, config, prompt_tokens);
    EXPECT_TRUE(std::holds_alternative<ApiError>(outcome)) << field;
    const ApiError error = std::holds_alternative<ApiError>(outcome) ? std::get<ApiError>(outcome) : ApiError{};
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, "draftwise.qttt");
    return error.message;
  };
  EXPECT_NE(refused({{"steps", 65}}).find("'draftwise.qttt' asks for 65 steps; this server allows at most 64"),
            std::string::npos);
  EXPECT_NE(refused("rank=65").find("draftwise.qttt: 'rank' must be 'full' or in [1, 64]"), std::string::npos);
  EXPECT_NE(refused("on", 1).find("'draftwise.qttt' needs a prompt of at least 2 tokens to train on, got 1"),
            std::string::npos);
}

TEST(OpenAiApi, AnAdaptedRequestsResponseCarriesItsQtttReport) {
  const CompletionCall call = parse_ok({{"prompt", "x"}, {"stream", true}}, ApiEndpoint::completions);
  const ResponseContext context{"cmpl-1", 1700000000, "smol", ""};
  const TokenText text = [](int32_t token) { return std::to_string(token); };
  GenerationResult result;
  result.token_ids = {5};
  EXPECT_FALSE(completion_response(call, context, result, text)["draftwise"].contains("qttt"));
  QttReport report;
  report.options.steps = 2;
  report.options.span = 8;
  report.span = 8;
  report.context = 30;
  report.losses = {3.5, 3.25};
  report.seconds = 0.5;
  report.flops = 1e6;
  report.parameter_bytes = 4096;
  result.stats.qttt = report;
  for (const json& statistics : {completion_response(call, context, result, text)["draftwise"],
                                 stream_usage_chunk(call, context, result)["draftwise"]}) {
    EXPECT_EQ(statistics["drafts"], 0);  // the speculation statistics stay beside it
    const json& qttt = statistics["qttt"];
    EXPECT_EQ(qttt["spec"], qtt_spec(report.options));
    EXPECT_EQ(qttt["steps"], 2);
    EXPECT_EQ(qttt["span"], 8);
    EXPECT_EQ(qttt["context"], 30);
    EXPECT_EQ(qttt["losses"], json::array({3.5, 3.25}));
    EXPECT_EQ(qttt["first_loss"], 3.5);
    EXPECT_EQ(qttt["last_loss"], 3.25);
    EXPECT_EQ(qttt["seconds"], 0.5);
    EXPECT_EQ(qttt["flops"], 1e6);
    EXPECT_EQ(qttt["parameter_bytes"], 4096);
  }
}

TEST(OpenAiApi, ResponsesHaveOpenAisShape) {
  CompletionCall call = parse_ok({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"logprobs", true}},
                                 ApiEndpoint::chat_completions);
  GenerationResult result;
  result.text = "Hi";
  result.token_ids = {5, 6};
  result.logprobs = {{5, -0.5f, {}}, {6, -0.25f, {}}};
  result.finish_reason = FinishReason::stop;
  result.stats.prompt_tokens = 4;
  result.stats.completion_tokens = 2;
  const ResponseContext context{"chatcmpl-1", 1700000000, "smol", "ngram:3"};
  const TokenText text = [](int32_t token) { return token == 5 ? std::string("H") : std::string("i"); };
  const json whole = completion_response(call, context, result, text);
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(whole["usage"]["total_tokens"], 6);
  EXPECT_EQ(whole["choices"][0]["logprobs"]["content"][1]["token"], "i");
  EXPECT_EQ(whole["choices"][0]["logprobs"]["content"][1]["bytes"], json::array({105}));
  EXPECT_EQ(whole["draftwise"]["drafter"], "ngram:3");
  const json first = stream_chunk(call, context, "H", /*first=*/true, {}, text);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(stream_finish_chunk(call, context, result)["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(stream_usage_chunk(call, context, result)["choices"].empty());

  call.endpoint = ApiEndpoint::completions;
  const json legacy = logprobs_json(call, result.logprobs, text, 10);
  EXPECT_EQ(legacy["tokens"], json::array({"H", "i"}));
  EXPECT_EQ(legacy["text_offset"], json::array({10, 11}));
  const ApiError error{429, "busy", "rate_limit_exceeded"};
  EXPECT_EQ(api_error_json(error)["error"]["type"], "rate_limit_exceeded");
  EXPECT_TRUE(api_error_json(error)["error"]["param"].is_null());
}

}  // namespace
}  // namespace draftwise
