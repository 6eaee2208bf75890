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
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user", "content": "x"}]})", completions).param, "messages");
  EXPECT_EQ(parse_error(R"({"prompt": "x"})", ApiEndpoint::chat_completions).param, "prompt");
  // Defaults that change nothing are accepted.
  parse_ok({{"prompt", "x"}, {"presence_penalty", 0}, {"logit_bias", json::object()}, {"echo", false}, {"best_of", 1}},
           completions);
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
