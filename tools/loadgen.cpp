// draftwise loadgen: a load generator for an OpenAI-compatible server over real sockets.
// N clients, each one streaming request at a time (chat completions, greedy unless told),
// for a duration or a number of requests; per request the time to the first token, the gaps
// between stream chunks (one chunk per engine step) and the time per output token. Prints a
// JSON summary: requests, errors, completion tokens/s, TTFT / chunk gap / TPOT p50 and p99.
// --outputs writes each prompt's answer; --expect-outputs compares against such a file (greedy
// answers of a concurrent run against one-at-a-time), and the exit code says whether any
// request failed or any answer differed. With --logprobs the answers carry their tokens and,
// per position, the gap between the two most likely tokens' log-probabilities: where an
// answer first differs from the reference, the reference's gap there says whether the
// difference came after a near-tie (DESIGN.md, Numerics).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <mutex>
#include <thread>
#include <utility>  // before Boost.Asio, whose 1.74 headers use std::exchange without it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/benchmark.h"
#include "tools/cli_args.h"
#include "tools/commands.h"

namespace draftwise {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct LoadArgs {
  std::string url = "http://127.0.0.1:8080";
  std::string prompts;
  std::string clients = "8";
  std::string duration = "30";
  std::string requests = "0";
  std::string max_tokens = "128";
  std::string temperature = "0";
  std::string api_key;
  std::string model;
  std::string outputs, expect_outputs;
  std::string draft;
  bool logprobs = false;
};

// An answer, and with --logprobs its tokens and each position's top-1/top-2 log-probability gap.
struct Answer {
  std::string text;
  std::vector<std::string> tokens;
  std::vector<double> gaps;
  bool operator==(const Answer& other) const { return text == other.text; }
};

Json answer_json(const Answer& answer) {
  if (answer.tokens.empty()) return answer.text;
  return {{"text", answer.text}, {"tokens", answer.tokens}, {"gaps", answer.gaps}};
}

Answer answer_from_json(const Json& json) {
  Answer answer;
  if (json.is_string()) {
    answer.text = json.get<std::string>();
  } else if (json.is_object()) {
    answer.text = json.value("text", "");
    if (json.contains("tokens") && json["tokens"].is_array()) {
      for (const Json& token : json["tokens"]) answer.tokens.push_back(token.is_string() ? token.get<std::string>() : "");
    }
    if (json.contains("gaps") && json["gaps"].is_array()) {
      for (const Json& gap : json["gaps"]) answer.gaps.push_back(gap.is_number() ? gap.get<double>() : 0.0);
    }
  }
  return answer;
}

// The reference's gap where `answer` first differs from it (by token), if both have tokens.
std::optional<double> first_difference_gap(const Answer& reference, const Answer& answer) {
  if (reference.tokens.empty() || answer.tokens.empty()) return std::nullopt;
  const size_t common = std::min(reference.tokens.size(), answer.tokens.size());
  size_t i = 0;
  while (i < common && reference.tokens[i] == answer.tokens[i]) ++i;
  if (i >= reference.gaps.size()) return std::nullopt;
  return reference.gaps[i];
}

struct RequestTiming {
  size_t prompt = 0;
  bool ok = false;
  std::string error;
  Answer answer;
  int64_t completion_tokens = 0;
  double ttft = 0;
  double total = 0;
  std::vector<double> gaps;
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p * static_cast<double>(values.size() - 1);
  const size_t low = static_cast<size_t>(rank);
  const size_t high = std::min(values.size() - 1, low + 1);
  return values[low] + (values[high] - values[low]) * (rank - static_cast<double>(low));
}

// One streaming chat request; the timing of its events.
RequestTiming run_request(const std::string& host, unsigned short port, const std::string& body,
                          const std::string& api_key) {
  RequestTiming timing;
  try {
    net::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(600));
    stream.connect(tcp::endpoint(net::ip::make_address(host), port));
    http::request<http::string_body> request(http::verb::post, "/v1/chat/completions", 11);
    request.set(http::field::host, host);
    request.set(http::field::content_type, "application/json");
    if (!api_key.empty()) request.set(http::field::authorization, "Bearer " + api_key);
    request.body() = body;
    request.prepare_payload();
    const Clock::time_point sent = Clock::now();
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ull << 30);
    std::string pending;
    bool saw_done = false, first = true;
    Clock::time_point last = sent;
    auto on_chunk = [&](uint64_t, beast::string_view data, beast::error_code&) -> size_t {
      pending.append(data.data(), data.size());
      const Clock::time_point now = Clock::now();
      size_t end;
      while ((end = pending.find("\n\n")) != std::string::npos) {
        const std::string event = pending.substr(0, end);
        pending.erase(0, end + 2);
        if (event.rfind("data: ", 0) != 0) continue;
        const std::string payload = event.substr(6);
        if (payload == "[DONE]") {
          saw_done = true;
          continue;
        }
        const Json chunk = Json::parse(payload, nullptr, false);
        if (chunk.is_discarded()) continue;
        if (chunk.contains("error")) {
          timing.error = chunk["error"].value("message", "error event");
          continue;
        }
        if (chunk.contains("usage") && chunk["usage"].is_object()) {
          timing.completion_tokens = chunk["usage"].value("completion_tokens", 0);
        }
        if (!chunk.contains("choices") || chunk["choices"].empty()) continue;
        const Json& delta = chunk["choices"][0]["delta"];
        if (!delta.contains("content") || delta["content"].get<std::string>().empty()) continue;
        timing.answer.text += delta["content"].get<std::string>();
        const Json& logprobs = chunk["choices"][0]["logprobs"];
        if (logprobs.is_object() && logprobs.contains("content") && logprobs["content"].is_array()) {
          for (const Json& token : logprobs["content"]) {
            timing.answer.tokens.push_back(token.value("token", ""));
            const Json& top = token["top_logprobs"];
            timing.answer.gaps.push_back(top.is_array() && top.size() >= 2
                                             ? top[0].value("logprob", 0.0) - top[1].value("logprob", 0.0)
                                             : 0.0);
          }
        }
        if (first) {
          timing.ttft = std::chrono::duration<double>(now - sent).count();
          first = false;
        } else {
          timing.gaps.push_back(std::chrono::duration<double>(now - last).count());
        }
        last = now;
      }
      return data.size();
    };
    parser.on_chunk_body(on_chunk);
    http::read(stream, buffer, parser);
    timing.total = std::chrono::duration<double>(Clock::now() - sent).count();
    const int status = static_cast<int>(parser.get().result_int());
    if (status != 200) {
      timing.error = fmt::format("HTTP {}: {}", status, parser.get().body().substr(0, 200));
    } else if (!saw_done && timing.error.empty()) {
      timing.error = "the stream ended without [DONE]";
    }
    timing.ok = timing.error.empty();
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  } catch (const std::exception& error) {
    timing.error = error.what();
  }
  return timing;
}

int report_error(const Error& error) {
  print_error("draftwise loadgen: " + error.message);
  return 1;
}

}  // namespace

int run_loadgen(const std::vector<std::string>& cli) {
  LoadArgs args;
  ArgParser parser("loadgen",
                   "Load on an OpenAI-compatible server: concurrent streaming chat clients; throughput, time to "
                   "first token, chunk gaps and time per output token (p50, p99) as JSON.");
  parser.add_option("url", &args.url, "http://HOST:PORT", "the server (default http://127.0.0.1:8080)");
  parser.add_option("prompts", &args.prompts, "FILE", "Spec-Bench question.jsonl or JSONL with prompt/messages");
  parser.add_option("clients", &args.clients, "N", "concurrent clients, each one request at a time (default 8)");
  parser.add_option("duration", &args.duration, "SECONDS", "send for this long (default 30)");
  parser.add_option("requests", &args.requests, "N", "stop after N requests instead; 0: by duration (default 0)");
  parser.add_option("max-tokens", &args.max_tokens, "N", "max_tokens of each request (default 128)");
  parser.add_option("temperature", &args.temperature, "T", "temperature of each request (default 0)");
  parser.add_option("api-key", &args.api_key, "KEY", "sent as a Bearer token");
  parser.add_option("model", &args.model, "NAME", "the model field (default: none)");
  parser.add_option("draft", &args.draft, "SPEC|none", "draftwise.draft of each request (default: the server's)");
  parser.add_option("outputs", &args.outputs, "FILE", "write each prompt's answer (JSON: index → text)");
  parser.add_option("expect-outputs", &args.expect_outputs, "FILE", "compare the answers with such a file");
  parser.add_flag("logprobs", &args.logprobs,
                  "ask for the top-2 log-probabilities, to say where differing answers first differ");
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  if (args.prompts.empty()) return report_error(make_error("--prompts is required"));
  const std::string prefix = "http://";
  if (args.url.rfind(prefix, 0) != 0) return report_error(make_error("--url must start with http://"));
  std::string authority = args.url.substr(prefix.size());
  authority = authority.substr(0, authority.find('/'));
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) return report_error(make_error("--url needs a port: http://HOST:PORT"));
  const std::string host = authority.substr(0, colon);
  const Expected<int64_t> port = parse_integer_option("--url port", authority.substr(colon + 1));
  if (!port.ok() || *port <= 0 || *port > 65535) return report_error(make_error("--url: bad port"));
  const Expected<int64_t> clients = parse_integer_option("--clients", args.clients);
  if (!clients.ok() || *clients < 1 || *clients > 4096) return report_error(make_error("--clients must be in [1, 4096]"));
  const Expected<double> duration = parse_number_option("--duration", args.duration);
  if (!duration.ok() || !(*duration > 0)) return report_error(make_error("--duration must be positive"));
  const Expected<int64_t> total_requests = parse_integer_option("--requests", args.requests);
  if (!total_requests.ok() || *total_requests < 0) return report_error(make_error("--requests must be ≥ 0"));
  const Expected<int64_t> max_tokens = parse_integer_option("--max-tokens", args.max_tokens);
  if (!max_tokens.ok() || *max_tokens < 1) return report_error(make_error("--max-tokens must be positive"));
  const Expected<double> temperature = parse_number_option("--temperature", args.temperature);
  if (!temperature.ok() || *temperature < 0) return report_error(make_error("--temperature must be ≥ 0"));
  Expected<std::vector<BenchPrompt>> prompts = read_bench_prompts(args.prompts);
  if (!prompts.ok()) return report_error(prompts.error());
  if (prompts->empty()) return report_error(make_error("{}: no prompts", args.prompts));

  std::vector<std::string> bodies;
  for (const BenchPrompt& prompt : *prompts) {
    Json messages = Json::array();
    if (!prompt.turns.empty()) {
      messages.push_back({{"role", "user"}, {"content", prompt.turns.front()}});
    } else {
      for (const ChatMessage& message : prompt.messages) messages.push_back({{"role", message.role}, {"content", message.content}});
    }
    Json body = {{"messages", messages},
                 {"max_tokens", *max_tokens},
                 {"temperature", *temperature},
                 {"seed", 0},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    if (!args.model.empty()) body["model"] = args.model;
    if (!args.draft.empty()) body["draftwise"] = {{"draft", args.draft}};
    if (args.logprobs) {
      body["logprobs"] = true;
      body["top_logprobs"] = 2;
    }
    bodies.push_back(body.dump());
  }

  std::atomic<int64_t> next{0};
  std::mutex mutex;
  std::vector<RequestTiming> timings;
  const Clock::time_point started = Clock::now();
  const Clock::time_point deadline = started + std::chrono::milliseconds(static_cast<int64_t>(*duration * 1000));
  std::vector<std::thread> threads;
  for (int64_t c = 0; c < *clients; ++c) {
    threads.emplace_back([&] {
      for (;;) {
        if (*total_requests == 0 && Clock::now() >= deadline) return;
        const int64_t index = next.fetch_add(1);
        if (*total_requests > 0 && index >= *total_requests) return;
        const size_t prompt = static_cast<size_t>(index) % bodies.size();
        RequestTiming timing = run_request(host, static_cast<unsigned short>(*port), bodies[prompt], args.api_key);
        timing.prompt = prompt;
        std::lock_guard lock(mutex);
        timings.push_back(std::move(timing));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double wall = std::chrono::duration<double>(Clock::now() - started).count();

  int64_t errors = 0, tokens = 0;
  std::vector<double> ttft, gaps, tpot;
  std::map<size_t, Answer> answers;
  int64_t inconsistent = 0;
  std::vector<double> difference_gaps;  // the reference's gap where an answer first differs
  std::vector<std::string> error_samples;
  for (const RequestTiming& timing : timings) {
    if (!timing.ok) {
      ++errors;
      if (error_samples.size() < 5) error_samples.push_back(timing.error);
      continue;
    }
    tokens += timing.completion_tokens;
    ttft.push_back(timing.ttft);
    gaps.insert(gaps.end(), timing.gaps.begin(), timing.gaps.end());
    if (timing.completion_tokens > 1) {
      tpot.push_back((timing.total - timing.ttft) / static_cast<double>(timing.completion_tokens - 1));
    }
    const auto [it, inserted] = answers.emplace(timing.prompt, timing.answer);
    if (!inserted && !(it->second == timing.answer)) {
      ++inconsistent;
      if (const std::optional<double> gap = first_difference_gap(it->second, timing.answer)) difference_gaps.push_back(*gap);
    }
  }
  int64_t differing = 0;
  if (!args.expect_outputs.empty()) {
    std::ifstream in(args.expect_outputs);
    const Json expected = Json::parse(in, nullptr, false);
    if (expected.is_discarded() || !expected.is_object()) {
      return report_error(make_error("--expect-outputs {}: not a JSON object of answers", args.expect_outputs));
    }
    for (const auto& [prompt, answer] : answers) {
      const std::string key = std::to_string(prompt);
      if (!expected.contains(key)) continue;
      const Answer reference = answer_from_json(expected[key]);
      if (reference == answer) continue;
      ++differing;
      if (const std::optional<double> gap = first_difference_gap(reference, answer)) difference_gaps.push_back(*gap);
    }
  }
  if (!args.outputs.empty()) {
    Json out = Json::object();
    for (const auto& [prompt, answer] : answers) out[std::to_string(prompt)] = answer_json(answer);
    std::ofstream(args.outputs) << out.dump(1, ' ', false, Json::error_handler_t::replace) << "\n";
  }
  const Json summary = {{"clients", *clients},
                        {"requests", timings.size()},
                        {"errors", errors},
                        {"error_samples", error_samples},
                        {"seconds", wall},
                        {"completion_tokens", tokens},
                        {"tokens_per_second", wall > 0 ? static_cast<double>(tokens) / wall : 0.0},
                        {"requests_per_second", wall > 0 ? static_cast<double>(timings.size()) / wall : 0.0},
                        {"ttft_p50", percentile(ttft, 0.5)},
                        {"ttft_p99", percentile(ttft, 0.99)},
                        {"chunk_gap_p50", percentile(gaps, 0.5)},
                        {"chunk_gap_p99", percentile(gaps, 0.99)},
                        {"tpot_p50", percentile(tpot, 0.5)},
                        {"tpot_p99", percentile(tpot, 0.99)},
                        {"answers_inconsistent_across_repeats", inconsistent},
                        {"answers_differing_from_expected", differing},
                        {"first_difference_gaps",
                         {{"count", difference_gaps.size()},
                          {"median", percentile(difference_gaps, 0.5)},
                          {"max", difference_gaps.empty()
                                      ? 0.0
                                      : *std::max_element(difference_gaps.begin(), difference_gaps.end())}}}};
  fmt::print("{}\n", summary.dump(1));
  return errors > 0 || inconsistent > 0 || differing > 0 ? 1 : 0;
}

}  // namespace draftwise
