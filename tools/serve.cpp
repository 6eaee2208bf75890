// draftwise serve: the OpenAI-compatible HTTP server (DESIGN.md, One request, end to end;
// Concurrency). Boost.Beast on Boost.Asio: a few I/O threads run every connection
// asynchronously (an open stream costs no thread); one engine thread owns the model, the
// drafters and the learner and runs the scheduler (continuous batching). Requests enter the
// engine through Scheduler::submit; output comes back by posting to the connection's strand,
// one server-sent event per engine step; a closed connection cancels its request.
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions (tools/openai_api.h), GET
// /v1/models, GET /health (503 while the model loads), GET /metrics (tools/server_metrics.h).
// With --api-key every endpoint but /health wants "Authorization: Bearer KEY". SIGTERM or
// SIGINT: stop accepting, let running requests finish (cancel them after
// --shutdown-timeout), save the learned adapter, exit.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>  // before Boost.Asio, whose 1.74 headers use std::exchange without it

#include <fmt/format.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "draft/learning_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/chat_template.h"
#include "engine/draft_spec.h"
#include "engine/scheduler.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/draft_args.h"
#include "tools/model_loader.h"
#include "tools/openai_api.h"
#include "tools/qttt_args.h"
#include "tools/server_metrics.h"

namespace draftwise {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  std::string port = "8080";
  std::string served_name;
  std::string api_key;
  std::string chat_template;
  std::string max_running = "64";
  std::string max_waiting = "256";
  std::string token_budget = "512";
  std::string speculation_max_batch = "32";
  std::string max_body = "4194304";
  std::string max_tokens_limit = "0";
  std::string http_threads = "2";
  std::string shutdown_timeout = "30";
  std::string qttt = "off";
  std::string qttt_max_steps = "64";
  BackendArgs backend;
  DraftArgs drafting;
};

struct ServeConfig {
  std::string model_path;
  std::string served_name;
  std::string api_key;
  std::optional<ChatFamily> chat_family;
  SchedulerOptions scheduling;
  int64_t max_body = 0;
  int64_t max_tokens_limit = 0;  // 0: the context length
  double shutdown_timeout = 30;
  int64_t port = 8080;
  int64_t http_threads = 2;
  BackendOptions backend;
  DraftSetup drafting;
  std::optional<QttOptions> qttt;  // for requests that do not say; none: no adaptation
  int64_t qttt_max_steps = 64;     // a request asking for more steps gets a 400
};

// Everything the connections and the engine thread share.
struct ServerState {
  ServeConfig config;
  ServerMetrics metrics;
  std::atomic<bool> ready{false};
  std::atomic<bool> stopping{false};
  std::atomic<int> requests_in_flight{0};  // submitted and not yet answered to the end (or dropped)
  std::string load_error;  // written before `failed` is set
  std::atomic<bool> failed{false};
  // The target can run no more passes (a tensor-parallel rank is gone): the server stops.
  std::atomic<bool> target_lost{false};

  // Set once by the engine thread before `ready`; read-only afterwards.
  LoadedModel model;
  std::optional<ChatTemplate> chat;
  std::vector<int32_t> stop_tokens;
  std::unique_ptr<Scheduler> scheduler;
  int64_t created = 0;

  // Engine thread: the drafters made so far, by spec and learning scope.
  std::map<std::string, std::unique_ptr<Drafter>> drafters;
  Drafter* default_drafter = nullptr;

  SchedulerCounters counters() const {
    return ready.load() ? scheduler->counters() : SchedulerCounters{};
  }
};

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t value =
      (static_cast<uint64_t>(Clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull) ^
      (counter.fetch_add(1) * 0xBF58476D1CE4E5B9ull);
  return fmt::format("{}-{:016x}", prefix, value);
}

std::string dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// What one completion request is while the engine runs it: its output as it comes, the
// timing, and how the connection hears of it. Shared by the connection and the callbacks.
struct CallState {
  CompletionCall call;
  ResponseContext context;
  Clock::time_point arrived;
  TicketId ticket = 0;
  // Engine thread: the output since the last flush.
  std::string pending_text;
  std::vector<TokenLogprob> pending_logprobs;
  int64_t pending_tokens = 0;
  int64_t sent_tokens = 0;
  Clock::time_point last_flush;
  bool done = false;
};

class Session;

// Turns an engine step's output into events for the connection.
using EventSink = std::function<void(std::string event, bool last)>;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ServerState& state) : stream_(std::move(socket)), state_(state) {}
  ~Session() { release_count(); }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }

 private:
  void read_request() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(state_.config.max_body));
    stream_.expires_after(std::chrono::seconds(60));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code error, size_t) { self->on_read(error); });
  }

  void on_read(beast::error_code error) {
    if (error == http::error::end_of_stream || error == net::error::operation_aborted ||
        error == beast::error::timeout || error == net::error::eof ||
        error == net::error::connection_reset) {
      return close();
    }
    if (error == http::error::body_limit) {
      keep_alive_ = false;
      drain_after_ =
          true;  // the client may still be sending: read it away, or it never reads our answer
      return send_error(
          "", ApiError{413,
                       fmt::format("the request body is larger than the limit of {} bytes",
                                   state_.config.max_body),
                       "invalid_request_error", "", "body_too_large"});
    }
    if (error) {
      keep_alive_ = false;
      drain_after_ = true;
      return send_error("", ApiError{400, "malformed HTTP request: " + error.message()});
    }
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    handle();
  }

  void handle() {
    const std::string target(request_.target());
    path_ = target.substr(0, target.find('?'));
    const http::verb method = request_.method();
    const auto allow = [&](const char* allowed) {
      send_error(allowed, ApiError{405,
                                   fmt::format("{} does not take {}; use {}", path_,
                                               std::string(request_.method_string()), allowed),
                                   "invalid_request_error"});
    };
    static const std::map<std::string, const char*> kRoutes = {{"/health", "GET"},
                                                               {"/metrics", "GET"},
                                                               {"/v1/models", "GET"},
                                                               {"/v1/completions", "POST"},
                                                               {"/v1/chat/completions", "POST"}};
    const auto route = kRoutes.find(path_);
    metric_path_ = route == kRoutes.end() ? "other" : path_;
    if (route == kRoutes.end()) {
      return send_error("", ApiError{404, fmt::format("no such endpoint: {}", path_),
                                     "invalid_request_error", "", "not_found"});
    }
    if (http::string_to_verb(route->second) != method) return allow(route->second);
    if (path_ == "/health") {
      const bool ready = state_.ready.load() && !state_.stopping.load();
      return send(ready ? 200 : 503, "application/json",
                  dump({{"status", ready ? "ok" : (state_.stopping ? "stopping" : "loading")}}));
    }
    if (!state_.config.api_key.empty()) {
      const std::string expected = "Bearer " + state_.config.api_key;
      if (request_[http::field::authorization] != expected) {
        return send_error(
            "", ApiError{401, "a valid API key is needed: send \"Authorization: Bearer KEY\"",
                         "invalid_request_error", "", "invalid_api_key"});
      }
    }
    if (path_ == "/metrics") {
      return send(200, "text/plain; version=0.0.4; charset=utf-8",
                  state_.metrics.prometheus(state_.counters(), state_.ready.load()));
    }
    if (!state_.ready.load()) {
      return send_error(
          "", ApiError{503, state_.failed ? state_.load_error : "the model is still loading",
                       "service_unavailable"});
    }
    if (path_ == "/v1/models") {
      const Json model = {{"id", state_.config.served_name},
                          {"object", "model"},
                          {"created", state_.created},
                          {"owned_by", "draftwise"},
                          {"root", state_.config.model_path},
                          {"max_model_len", state_.model.decoder->context_length()}};
      return send(200, "application/json",
                  dump({{"object", "list"}, {"data", Json::array({model})}}));
    }
    start_completion(path_ == "/v1/chat/completions" ? ApiEndpoint::chat_completions
                                                     : ApiEndpoint::completions);
  }

  // Parses, tokenizes and submits; the answer comes from the engine's callbacks.
  void start_completion(ApiEndpoint endpoint) {
    if (state_.stopping.load()) {
      return send_error("", ApiError{503, "the server is shutting down", "service_unavailable"});
    }
    std::variant<CompletionCall, ApiError> parsed =
        parse_completion_call(request_.body(), endpoint);
    if (auto* error = std::get_if<ApiError>(&parsed)) return send_error("", *error);
    auto call = std::make_shared<CallState>();
    call->call = std::move(std::get<CompletionCall>(parsed));
    call->arrived = Clock::now();
    call->last_flush = call->arrived;
    const CompletionCall& request = call->call;
    if (!request.model.empty() && request.model != state_.config.served_name &&
        request.model != state_.config.model_path) {
      return send_error(
          "", ApiError{404,
                       fmt::format("the model '{}' does not exist; this server serves '{}'",
                                   request.model, state_.config.served_name),
                       "invalid_request_error", "model", "model_not_found"});
    }
    Expected<ScheduledRequest> prepared = prepare(*call);
    if (!prepared.ok()) {
      return send_error("", ApiError{400, prepared.error().message, "invalid_request_error"});
    }
    std::variant<std::optional<QttOptions>, ApiError> qttt =
        resolve_qttt(request, state_.config.qttt, state_.config.qttt_max_steps,
                     state_.model.decoder->config(), static_cast<int64_t>(prepared->prompt.size()));
    if (auto* error = std::get_if<ApiError>(&qttt)) return send_error("", *error);
    prepared->options.qttt = std::get<std::optional<QttOptions>>(qttt);
    call->context = {random_id(endpoint == ApiEndpoint::chat_completions ? "chatcmpl" : "cmpl"),
                     unix_seconds(), state_.config.served_name,
                     prepared->drafter_spec.substr(0, prepared->drafter_spec.rfind('|'))};
    call_ = call;
    auto self = shared_from_this();
    const auto executor = stream_.get_executor();
    // Engine thread → this connection's strand.
    prepared->on_output = [call](const OutputEvent& event) {
      call->pending_text.append(event.text);
      if (event.token >= 0) ++call->pending_tokens;
      if (event.logprob != nullptr) call->pending_logprobs.push_back(*event.logprob);
    };
    prepared->on_step = [self, call, executor] { self->flush_step(*call, executor); };
    prepared->on_done = [self, call, executor](Expected<GenerationResult> outcome) {
      self->flush_step(*call, executor);
      auto shared = std::make_shared<Expected<GenerationResult>>(std::move(outcome));
      net::post(executor,
                [self, call, shared] { self->finish_completion(*call, std::move(*shared)); });
    };
    ++state_.requests_in_flight;
    counted_ = true;
    in_flight_ = true;
    std::variant<TicketId, Scheduler::Refused> ticket =
        state_.scheduler->submit(std::move(*prepared));
    if (auto* refused = std::get_if<Scheduler::Refused>(&ticket)) {
      release_count();
      in_flight_ = false;
      call_.reset();
      const int status = refused->kind == Scheduler::Refusal::invalid      ? 400
                         : refused->kind == Scheduler::Refusal::queue_full ? 429
                                                                           : 503;
      return send_error("", ApiError{status, refused->message,
                                     status == 400   ? "invalid_request_error"
                                     : status == 429 ? "rate_limit_exceeded"
                                                     : "service_unavailable"});
    }
    call->ticket = std::get<TicketId>(ticket);
    stream_.expires_never();
    watch_connection();
    if (call->call.stream) start_stream();
  }

  // The prompt tokens and options of a call; errors are the client's (400).
  Expected<ScheduledRequest> prepare(const CallState& state) {
    const CompletionCall& call = state.call;
    const Tokenizer* tokenizer = state_.model.tokenizer ? &*state_.model.tokenizer : nullptr;
    const Decoder& decoder = *state_.model.decoder;
    ScheduledRequest request;
    if (call.endpoint == ApiEndpoint::chat_completions) {
      if (tokenizer == nullptr || !state_.chat) {
        return make_error("this model has no chat template; use /v1/completions with a prompt");
      }
      DW_ASSIGN_OR_RETURN(const std::string rendered,
                          state_.chat->render(call.messages, /*add_generation_prompt=*/true));
      request.prompt =
          tokenizer->encode(rendered, EncodeOptions{.add_special = false, .parse_special = true});
    } else if (call.prompt_text) {
      if (tokenizer == nullptr)
        return make_error("this model has no tokenizer; send the prompt as token ids");
      request.prompt = tokenizer->encode(*call.prompt_text);
    } else {
      request.prompt = call.prompt_ids;
      for (const int32_t id : request.prompt) {
        if (id >= decoder.config().vocab_size) {
          return make_error("prompt token id {} is outside the vocabulary [0, {})", id,
                            decoder.config().vocab_size);
        }
      }
    }
    if (request.prompt.empty()) return make_error("the prompt is empty");
    const int64_t context = decoder.context_length();
    const int64_t prompt = static_cast<int64_t>(request.prompt.size());
    if (prompt >= context) {
      return make_error(
          "this model's maximum context length is {} tokens; the prompt has {}, which leaves no "
          "room to "
          "generate",
          context, prompt);
    }
    const int64_t limit =
        state_.config.max_tokens_limit > 0 ? state_.config.max_tokens_limit : context;
    GenerationOptions& options = request.options;
    if (call.max_tokens) {
      if (*call.max_tokens > limit) {
        return make_error("max_tokens is {}; this server allows at most {}", *call.max_tokens,
                          limit);
      }
      if (prompt + *call.max_tokens > context) {
        return make_error(
            "this model's maximum context length is {} tokens; {} in the prompt and {} to generate "
            "is {}",
            context, prompt, *call.max_tokens, prompt + *call.max_tokens);
      }
      options.max_tokens = *call.max_tokens;
    } else {
      options.max_tokens = std::min(limit, context - prompt);
    }
    options.sampling.temperature = call.temperature.value_or(1.0);
    options.sampling.top_p = call.top_p.value_or(1.0);
    options.sampling.top_k = call.top_k.value_or(0);
    options.sampling.min_p = call.min_p.value_or(0.0);
    options.sampling.seed =
        call.seed.value_or(static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
    options.stop = call.stop;
    if (!options.stop.empty() && tokenizer == nullptr)
      return make_error("stop strings need a model with a tokenizer");
    options.stop_token_ids = state_.stop_tokens;
    options.logprobs = call.logprobs;
    // Drafting: the server's default unless the request's extension object says otherwise.
    const DraftSetup& defaults = state_.config.drafting;
    std::string spec = defaults.spec ? defaults.spec->name : std::string();
    options.draft_length = defaults.length;
    if (call.draft) {
      if (*call.draft == "none") {
        spec.clear();
      } else {
        Expected<DraftSpec> parsed = parse_draft_spec(*call.draft, /*with_length=*/false);
        if (!parsed.ok()) return make_error("draftwise.draft: {}", parsed.error().message);
        if (parsed->learn)
          return make_error("draftwise.draft: give learning as draftwise.learn, not +learn");
        // What the drafter's construction would refuse, refused here (a 400, not a failed request).
        const int64_t layers = decoder.config().num_layers;
        if (parsed->kind == DraftSpec::Kind::ngram &&
            (parsed->n < 1 || parsed->n > NgramDrafter::kMaxN)) {
          return make_error("draftwise.draft: ngram:N needs N in [1, {}], got {}",
                            NgramDrafter::kMaxN, parsed->n);
        }
        if (parsed->kind == DraftSpec::Kind::self &&
            (parsed->exit_layer < 1 || parsed->exit_layer >= layers)) {
          return make_error("draftwise.draft: self:E needs E in [1, {}] for this model, got {}",
                            layers - 1, parsed->exit_layer);
        }
        if (parsed->kind == DraftSpec::Kind::model && !std::filesystem::exists(parsed->path)) {
          return make_error("draftwise.draft: no draft model at {}", parsed->path);
        }
        spec = parsed->name;
      }
    }
    if (call.draft_len) {
      if (spec.empty()) return make_error("draftwise.draft_len needs a drafter");
      DW_ASSIGN_OR_RETURN(options.draft_length, parse_draft_length(*call.draft_len));
    }
    std::string learn = std::string(learn_scope_name(defaults.learning.scope));
    if (call.learn) {
      if (*call.learn != "off" && (spec.empty() || spec.rfind("ngram:", 0) == 0)) {
        return make_error("draftwise.learn needs a drafter that learns (self:E or model:PATH)");
      }
      learn = *call.learn;
    }
    if (!spec.empty()) request.drafter_spec = spec + "|" + learn;
    options.learning_key = state_.config.api_key.empty() ? "anonymous" : state_.config.api_key;
    return request;
  }

  // Engine thread, after each step the call ran in: one event with what the step produced.
  void flush_step(CallState& call, net::any_io_executor executor) {
    if (call.pending_text.empty() && call.pending_tokens == 0) return;
    const Clock::time_point now = Clock::now();
    if (call.sent_tokens == 0 && call.pending_tokens > 0) {
      state_.metrics.time_to_first_token(std::chrono::duration<double>(now - call.arrived).count());
    } else if (call.pending_tokens > 0) {
      const double step = std::chrono::duration<double>(now - call.last_flush).count();
      for (int64_t i = 0; i < call.pending_tokens; ++i) {
        state_.metrics.inter_token(step / static_cast<double>(call.pending_tokens));
      }
    }
    call.last_flush = now;
    const bool first = call.sent_tokens == 0;
    call.sent_tokens += call.pending_tokens;
    call.pending_tokens = 0;
    if (call.call.stream && (!call.pending_text.empty() || !call.pending_logprobs.empty())) {
      const Json chunk = stream_chunk(call.call, call.context, call.pending_text, first,
                                      call.pending_logprobs, token_text());
      std::string event = "data: " + dump(chunk) + "\n\n";
      net::post(executor, [self = shared_from_this(), event = std::move(event)]() mutable {
        self->queue_event(std::move(event));
      });
    }
    call.pending_text.clear();
    call.pending_logprobs.clear();
  }

  TokenText token_text() const {
    const Tokenizer* tokenizer = state_.model.tokenizer ? &*state_.model.tokenizer : nullptr;
    return [tokenizer](int32_t token) {
      return tokenizer != nullptr ? tokenizer->token_bytes(token) : std::to_string(token);
    };
  }

  // Strand: the request ended in the engine.
  void finish_completion(CallState& call, Expected<GenerationResult> outcome) {
    call.done = true;
    in_flight_ = false;
    const double seconds = std::chrono::duration<double>(Clock::now() - call.arrived).count();
    if (!outcome.ok()) {
      state_.metrics.request_failed();
    } else {
      const FinishReason reason = outcome->finish_reason;
      state_.metrics.request_finished(
          reason == FinishReason::cancelled ? "abort" : std::string(finish_reason_name(reason)),
          *outcome, seconds);
    }
    if (disconnected_) return close();
    if (!call.call.stream) {
      if (!outcome.ok()) {
        return send_error("", ApiError{500, outcome.error().message, "internal_error"});
      }
      if (outcome->finish_reason == FinishReason::cancelled) {
        return send_error("",
                          ApiError{503, "the request was cancelled: the server is shutting down",
                                   "service_unavailable"});
      }
      return send(200, "application/json",
                  dump(completion_response(call.call, call.context, *outcome, token_text())));
    }
    if (!outcome.ok()) {
      queue_event("data: " +
                  dump(api_error_json(ApiError{500, outcome.error().message, "internal_error"})) +
                  "\n\n");
    } else if (outcome->finish_reason == FinishReason::cancelled) {
      queue_event("data: " +
                  dump(api_error_json(
                      ApiError{503, "the request was cancelled: the server is shutting down",
                               "service_unavailable"})) +
                  "\n\n");
    } else {
      queue_event("data: " + dump(stream_finish_chunk(call.call, call.context, *outcome)) + "\n\n");
      if (call.call.include_usage) {
        queue_event("data: " + dump(stream_usage_chunk(call.call, call.context, *outcome)) +
                    "\n\n");
      }
    }
    queue_event("data: [DONE]\n\n");
    stream_ended_ = true;
    write_events();
  }

  // Streaming: the header (chunked transfer), then one chunk per event.
  void start_stream() {
    auto response =
        std::make_shared<http::response<http::empty_body>>(http::status::ok, request_.version());
    response->set(http::field::server, "draftwise");
    response->set(http::field::content_type, "text/event-stream");
    response->set(http::field::cache_control, "no-cache");
    response->keep_alive(keep_alive_);
    response->chunked(true);
    auto serializer = std::make_shared<http::response_serializer<http::empty_body>>(*response);
    writing_ = true;
    http::async_write_header(
        stream_, *serializer,
        [self = shared_from_this(), response, serializer](beast::error_code error, size_t) {
          self->writing_ = false;
          self->header_sent_ = true;
          self->state_.metrics.http_response(self->metric_path_, 200);
          if (error) return self->lost_connection();
          self->write_events();
        });
  }

  void queue_event(std::string event) {
    if (disconnected_) return;
    events_.push_back(std::move(event));
    write_events();
  }

  void write_events() {
    if (writing_ || !header_sent_ || disconnected_) return;
    if (events_.empty()) {
      if (stream_ended_ && !last_chunk_sent_) {
        last_chunk_sent_ = true;
        writing_ = true;
        net::async_write(stream_, http::make_chunk_last(),
                         [self = shared_from_this()](beast::error_code error, size_t) {
                           self->writing_ = false;
                           if (error) return self->lost_connection();
                           self->response_done();
                         });
      }
      return;
    }
    auto event = std::make_shared<std::string>(std::move(events_.front()));
    events_.pop_front();
    writing_ = true;
    net::async_write(stream_, http::make_chunk(net::buffer(*event)),
                     [self = shared_from_this(), event](beast::error_code error, size_t) {
                       self->writing_ = false;
                       if (error) return self->lost_connection();
                       self->write_events();
                     });
  }

  // While the engine runs a request: a read on the socket notices a client that goes away
  // (bytes that arrive are kept for the next request on the connection).
  void watch_connection() {
    watching_ = true;
    stream_.socket().async_read_some(
        buffer_.prepare(4096), [self = shared_from_this()](beast::error_code error, size_t bytes) {
          self->watching_ = false;
          self->buffer_.commit(bytes);
          if (error == net::error::operation_aborted && self->resume_after_watch_) {
            self->resume_after_watch_ = false;
            return self->next_request();
          }
          if (error) return self->lost_connection();
          if (self->in_flight_ || !self->response_complete_) return self->watch_connection();
          self->next_request();
        });
  }

  void lost_connection() {
    if (disconnected_) return;
    disconnected_ = true;
    if (in_flight_ && call_) state_.scheduler->cancel(call_->ticket);
    if (!in_flight_) close();
  }

  void send_error(const char* allow, const ApiError& error) {
    send(error.status, "application/json", dump(api_error_json(error)), allow);
  }

  void send(int status, const std::string& content_type, std::string body, const char* allow = "") {
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), request_.version() == 0 ? 11 : request_.version());
    response->set(http::field::server, "draftwise");
    response->set(http::field::content_type, content_type);
    if (allow != nullptr && *allow != '\0') response->set(http::field::allow, allow);
    response->keep_alive(keep_alive_ && !state_.stopping.load());
    response->body() = std::move(body);
    response->prepare_payload();
    state_.metrics.http_response(metric_path_, status);
    writing_ = true;
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code error, size_t) {
                        self->writing_ = false;
                        if (error) return self->lost_connection();
                        self->response_done();
                      });
  }

  // The request's answer is out (or the connection is gone): a shutdown may stop the I/O now.
  void release_count() {
    if (counted_) --state_.requests_in_flight;
    counted_ = false;
  }

  void response_done() {
    response_complete_ = true;
    release_count();
    if (drain_after_) return drain();
    if (!keep_alive_ || state_.stopping.load()) return close();
    if (watching_) {
      // The watch read is still out: cancel it, and go on to the next request from its handler.
      resume_after_watch_ = true;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
      return;
    }
    next_request();
  }

  void next_request() {
    call_.reset();
    resume_after_watch_ = false;
    response_complete_ = false;
    header_sent_ = false;
    stream_ended_ = false;
    last_chunk_sent_ = false;
    events_.clear();
    read_request();
  }

  // Lingering close: reads and drops what the client still sends (for up to 10 s), then closes.
  void drain() {
    stream_.expires_after(std::chrono::seconds(10));
    auto scratch = std::make_shared<std::vector<char>>(65536);
    stream_.async_read_some(net::buffer(*scratch),
                            [self = shared_from_this(), scratch](beast::error_code error, size_t) {
                              if (error) return self->close();
                              self->drain();
                            });
  }

  void close() {
    release_count();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  ServerState& state_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  std::string path_;
  std::string metric_path_ = "other";  // a known route, or "other": bounded label values
  bool keep_alive_ = true;
  bool drain_after_ = false;
  std::shared_ptr<CallState> call_;
  bool in_flight_ = false;
  bool counted_ = false;  // in state_.requests_in_flight
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool disconnected_ = false;
  bool writing_ = false;
  bool header_sent_ = false;
  bool stream_ended_ = false;
  bool last_chunk_sent_ = false;
  bool response_complete_ = false;
  std::deque<std::string> events_;
};

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(net::io_context& io, tcp::acceptor acceptor, ServerState& state)
      : io_(io), acceptor_(std::move(acceptor)), state_(state) {}

  void accept() {
    acceptor_.async_accept(net::make_strand(io_), [self = shared_from_this()](
                                                      beast::error_code error, tcp::socket socket) {
      if (error == net::error::operation_aborted || !self->acceptor_.is_open()) return;
      if (!error) std::make_shared<Session>(std::move(socket), self->state_)->start();
      self->accept();
    });
  }
  void close() {
    beast::error_code ignored;
    acceptor_.close(ignored);
  }

 private:
  net::io_context& io_;
  tcp::acceptor acceptor_;
  ServerState& state_;
};

int report_error(const Error& error) {
  print_error("draftwise serve: " + error.message);
  return 1;
}

Expected<ServeConfig> parse_serve_args(const ServeArgs& args, const ArgParser& parser) {
  ServeConfig config;
  config.model_path = args.model;
  if (config.model_path.empty()) return make_error("--model is required");
  config.served_name = args.served_name.empty() ? args.model : args.served_name;
  config.api_key = args.api_key;
  if (!args.chat_template.empty()) {
    DW_ASSIGN_OR_RETURN(config.chat_family, parse_chat_family(args.chat_template));
  }
  const auto positive = [](const char* flag, const std::string& text, int64_t low,
                           int64_t high = std::numeric_limits<int64_t>::max()) -> Expected<int64_t> {
    DW_ASSIGN_OR_RETURN(const int64_t value, parse_integer_option(flag, text));
    if (high == std::numeric_limits<int64_t>::max() && value < low) {
      return make_error("{} must be at least {}, got {}", flag, low, value);
    }
    if (value < low || value > high) return make_error("{} must be in [{}, {}], got {}", flag, low, high, value);
    return value;
  };
  DW_ASSIGN_OR_RETURN(config.port, positive("--port", args.port, 0, 65535));
  DW_ASSIGN_OR_RETURN(config.http_threads, positive("--http-threads", args.http_threads, 1, 64));
  DW_ASSIGN_OR_RETURN(config.scheduling.max_running,
                      positive("--max-running", args.max_running, 1));
  DW_ASSIGN_OR_RETURN(config.scheduling.max_waiting,
                      positive("--max-waiting", args.max_waiting, 0));
  DW_ASSIGN_OR_RETURN(config.scheduling.token_budget,
                      positive("--token-budget", args.token_budget, 1));
  DW_ASSIGN_OR_RETURN(config.scheduling.speculation_max_batch,
                      positive("--speculation-max-batch", args.speculation_max_batch, 0));
  DW_ASSIGN_OR_RETURN(config.max_body, positive("--max-body-bytes", args.max_body, 1024));
  DW_ASSIGN_OR_RETURN(config.max_tokens_limit,
                      positive("--max-tokens-limit", args.max_tokens_limit, 0));
  DW_ASSIGN_OR_RETURN(const double timeout,
                      parse_number_option("--shutdown-timeout", args.shutdown_timeout));
  if (!(timeout >= 0)) return make_error("--shutdown-timeout must be ≥ 0, got {}", timeout);
  config.shutdown_timeout = timeout;
  DW_ASSIGN_OR_RETURN(config.qttt_max_steps, positive("--qttt-max-steps", args.qttt_max_steps, 1));
  DW_ASSIGN_OR_RETURN(config.qttt, parse_qttt_option(args.qttt));
  if (config.qttt && config.qttt->steps > config.qttt_max_steps) {
    return make_error("--qttt asks for {} steps, more than --qttt-max-steps {}", config.qttt->steps,
                      config.qttt_max_steps);
  }
  DW_ASSIGN_OR_RETURN(config.backend, parse_backend_options(args.backend));
  DW_ASSIGN_OR_RETURN(config.drafting, parse_draft_args(args.drafting, parser));
  return config;
}

// Engine thread: loads the model, then runs the scheduler until shutdown.
void run_engine(ServerState& state) {
  ServeConfig& config = state.config;
  Expected<LoadedModel> model = load_model_file(config.model_path, config.backend);
  if (!model.ok()) {
    state.load_error = "the model failed to load: " + model.error().message;
    print_error("draftwise serve: " + state.load_error);
    state.failed = true;
    return;
  }
  state.model = std::move(*model);
  if (const Status checked = check_qttt_option(config.qttt, state.model.decoder->config()); !checked.ok()) {
    state.load_error = checked.error().message;
    print_error("draftwise serve: " + state.load_error);
    state.failed = true;
    return;
  }
  if (state.model.tokenizer) {
    const Tokenizer& tokenizer = *state.model.tokenizer;
    state.stop_tokens = chat_stop_token_ids(*state.model.decoder, tokenizer);
    const auto token_text = [&](std::optional<int32_t> id) {
      return id ? tokenizer.token(*id) : std::string();
    };
    if (config.chat_family) {
      state.chat = ChatTemplate::of_family(*config.chat_family, token_text(tokenizer.bos_id()),
                                           token_text(tokenizer.eos_id()));
    } else if (tokenizer.chat_template()) {
      Expected<ChatTemplate> chat = recognize_chat_template(tokenizer);
      if (!chat.ok()) {
        state.load_error = chat.error().message +
                           "; name the family with --chat-template chatml|llama3|llama2|mistral";
        print_error("draftwise serve: " + state.load_error);
        state.failed = true;
        return;
      }
      state.chat = std::move(*chat);
    }
  }
  const auto provide = [&state](const std::string& key) -> Expected<Drafter*> {
    const auto found = state.drafters.find(key);
    if (found != state.drafters.end()) return found->second.get();
    const size_t bar = key.rfind('|');
    DraftSetup setup = state.config.drafting;
    DW_ASSIGN_OR_RETURN(setup.spec, parse_draft_spec(key.substr(0, bar), /*with_length=*/false));
    DW_ASSIGN_OR_RETURN(setup.learning.scope, parse_learn_scope(key.substr(bar + 1)));
    if (setup.spec->kind == DraftSpec::Kind::ngram) setup.learning = LearningConfig{};
    DW_ASSIGN_OR_RETURN(std::unique_ptr<Drafter> drafter,
                        make_setup_drafter(setup, state.model, state.config.backend));
    Drafter* made = drafter.get();
    state.drafters.emplace(key, std::move(drafter));
    return made;
  };
  if (config.drafting.spec) {
    Expected<Drafter*> drafter =
        provide(config.drafting.spec->name + "|" +
                std::string(learn_scope_name(config.drafting.learning.scope)));
    if (!drafter.ok()) {
      state.load_error = drafter.error().message;
      print_error("draftwise serve: " + state.load_error);
      state.failed = true;
      return;
    }
    state.default_drafter = *drafter;
  }
  const Tokenizer* tokenizer = state.model.tokenizer ? &*state.model.tokenizer : nullptr;
  state.scheduler =
      std::make_unique<Scheduler>(*state.model.decoder, tokenizer, config.scheduling, provide);
  state.created = unix_seconds();
  state.ready = true;
  if (state.stopping) state.scheduler->stop(/*cancel_held=*/true);  // a signal came while loading
  fmt::print(stderr, "draftwise serve: {} on {} ready{}{}\n", config.served_name, state.model.backend,
             config.drafting.spec
                 ? fmt::format(", drafting {} (learning: {})", config.drafting.spec->name,
                               learn_scope_name(config.drafting.learning.scope))
                 : std::string(),
             config.qttt ? ", adapting queries by default (qttt " + qtt_spec(*config.qttt) + ")" : std::string());
  state.scheduler->run([&state] {
    if (!state.target_lost) {
      if (const Status health = state.model.decoder->health(); !health.ok()) {
        print_error("draftwise serve: the target can run no more passes: " + health.error().message + "; stopping");
        state.target_lost = true;
        state.scheduler->stop(/*cancel_held=*/true);
      }
    }
    if (state.default_drafter == nullptr) return;
    if (const auto* learning = dynamic_cast<const LearningDrafter*>(state.default_drafter);
        learning != nullptr && learning->learning() != nullptr) {
      state.metrics.set_learner(learning->learning()->stats());
    }
  });
  if (state.default_drafter != nullptr) {
    if (const Status saved = save_learned_adapter(*state.default_drafter, config.drafting.learning);
        !saved.ok()) {
      print_error("draftwise serve: " + saved.error().message);
    }
  }
}

}  // namespace

int run_serve(const std::vector<std::string>& cli) {
  ServeArgs args;
  ArgParser parser(
      "serve",
      "The OpenAI-compatible HTTP server: /v1/completions and /v1/chat/completions (streaming too), "
      "/v1/models, /health, /metrics; continuous batching, speculation and online learning.");
  parser.add_option("model", &args.model, "PATH", "GGUF file or Hugging Face model folder");
  parser.add_option("host", &args.host, "ADDRESS", "address to listen on (default 127.0.0.1)");
  parser.add_option("port", &args.port, "N",
                    "port to listen on; 0 picks a free one (default 8080)");
  parser.add_option("served-model-name", &args.served_name, "NAME",
                    "the model's name in the API (default: --model)");
  parser.add_option("api-key", &args.api_key, "KEY",
                    "require \"Authorization: Bearer KEY\" (all but /health)");
  parser.add_option(
      "chat-template", &args.chat_template, "chatml|llama3|llama2|mistral",
      "render chats in this family when the model's own template is not one draftwise knows");
  parser.add_option("max-running", &args.max_running, "N",
                    "requests in the running batch (default 64)");
  parser.add_option("max-waiting", &args.max_waiting, "N",
                    "requests queued behind them; more get 429 (default 256)");
  parser.add_option("token-budget", &args.token_budget, "N",
                    "tokens per engine step, prefill chunks included (default 512)");
  parser.add_option("speculation-max-batch", &args.speculation_max_batch, "N",
                    "no drafting while more than N requests run; 0: always (default 32, measured: "
                    "docs/serving.md)");
  parser.add_option("max-body-bytes", &args.max_body, "N",
                    "largest request body; larger get 413 (default 4194304)");
  parser.add_option("max-tokens-limit", &args.max_tokens_limit, "N",
                    "largest max_tokens a request may ask for; 0: the context length (default 0)");
  parser.add_option("http-threads", &args.http_threads, "N",
                    "threads running the connections (default 2)");
  parser.add_option(
      "shutdown-timeout", &args.shutdown_timeout, "SECONDS",
      "on SIGTERM/SIGINT, how long running requests may take to finish before they are cancelled "
      "(default 30)");
  add_qttt_option(parser, args.qttt,
                  "the prompt of every request of two tokens or more whose \"draftwise\" object does not say "
                  "(\"qttt\": SPEC, an object of its keys, or false)");
  parser.add_option("qttt-max-steps", &args.qttt_max_steps, "N",
                    "most qTTT steps a request may ask for; more get 400. The adaptation runs on the engine "
                    "thread and holds up every running request while it trains (default 64)");
  add_backend_options(parser, args.backend);
  add_draft_options(parser, args.drafting);
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  Expected<ServeConfig> config = parse_serve_args(args, parser);
  if (!config.ok()) return report_error(config.error());
  const int64_t port = config->port, threads = config->http_threads;
  ServerState state;
  state.config = std::move(*config);
  net::io_context io(static_cast<int>(threads));
  beast::error_code error;
  const net::ip::address address = net::ip::make_address(args.host, error);
  if (error)
    return report_error(
        make_error("--host {}: not an IP address ({})", args.host, error.message()));
  tcp::acceptor acceptor(io);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(net::socket_base::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(net::socket_base::max_listen_connections, error);
  if (error)
    return report_error(
        make_error("cannot listen on {}:{}: {}", args.host, port, error.message()));
  const tcp::endpoint bound = acceptor.local_endpoint();
  // The address goes out first, so that scripts and tests that asked for port 0 learn it.
  fmt::print("draftwise serve: listening on http://{}:{}\n", bound.address().to_string(),
             bound.port());
  std::fflush(stdout);
  auto listener = std::make_shared<Listener>(io, std::move(acceptor), state);
  listener->accept();

  std::thread engine([&state] { run_engine(state); });
  std::atomic<bool> engine_done{false};
  std::atomic<bool> load_failed{false};

  // Shutdown: stop accepting, let running requests end (cancel them past the timeout), then
  // stop the I/O threads once the last response is out.
  net::signal_set signals(io, SIGINT, SIGTERM);
  net::steady_timer ticker(io);
  Clock::time_point deadline = Clock::time_point::max();
  bool cancelled = false;
  std::function<void()> tick = [&] {
    ticker.expires_after(std::chrono::milliseconds(50));
    ticker.async_wait([&](beast::error_code wait_error) {
      if (wait_error) return;
      if (!state.stopping && state.target_lost) {
        // A lost target: the requests it failed are answered, then the server ends (exit 1).
        state.stopping = true;
        listener->close();
        deadline = Clock::now();
      }
      if (!state.stopping && state.failed) {
        // A model that failed to load: nothing to serve.
        load_failed = true;
        state.stopping = true;
        listener->close();
        io.stop();
        return;
      }
      if (state.stopping) {
        if (!cancelled && Clock::now() >= deadline && state.ready) {
          cancelled = true;
          state.scheduler->stop(/*cancel_held=*/true);
        }
        if (engine_done && state.requests_in_flight.load() == 0) {
          io.stop();
          return;
        }
      }
      tick();
    });
  };
  signals.async_wait([&](beast::error_code signal_error, int signal) {
    if (signal_error) return;
    fmt::print(stderr, "draftwise serve: {} received; finishing the running requests\n",
               signal == SIGINT ? "SIGINT" : "SIGTERM");
    state.stopping = true;
    listener->close();
    deadline = Clock::now() + std::chrono::milliseconds(
                                  static_cast<int64_t>(state.config.shutdown_timeout * 1000));
    if (state.ready) state.scheduler->stop(/*cancel_held=*/state.config.shutdown_timeout == 0);
  });
  tick();
  std::thread watcher([&] {
    engine.join();
    engine_done = true;
  });
  std::vector<std::thread> pool;
  for (int64_t i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (std::thread& thread : pool) thread.join();
  if (!engine_done && state.ready) state.scheduler->stop(/*cancel_held=*/true);
  watcher.join();
  if (load_failed || state.target_lost) return 1;
  fmt::print(stderr, "draftwise serve: stopped\n");
  return 0;
}

}  // namespace draftwise
