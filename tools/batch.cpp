// draftwise batch: offline decoding of a JSONL file of requests (tools/batch_lines.h), many
// in flight at once through the engine's scheduler (continuous batching: a finished request's
// place goes to the next line at once), with the drafting and learning flags of generate.
// Every output line is written and flushed as soon as its request ends, so a crash or kill
// loses at most the requests in flight; --resume skips the ids already in the output (a torn
// last line is cut off first). A bad line or a failed request gets an error record and the
// batch goes on; the exit code is 1 when any did. Progress goes to stderr: a status line on a
// terminal, a plain line every few seconds otherwise.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "engine/generation.h"
#include "engine/scheduler.h"
#include "tools/batch_lines.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/draft_args.h"
#include "tools/model_loader.h"
#include "tools/qttt_args.h"
#include "tools/speculation_json.h"

namespace draftwise {

namespace {

struct BatchArgs {
  std::string model, input, output;
  std::string max_tokens = "256";
  std::string parallel = "16";
  std::string temperature = "1.0";
  std::string top_p = "1.0";
  std::string seed = "0";
  bool resume = false;
  std::string qttt = "off";
  BackendArgs backend;
  DraftArgs drafting;
};

int report_error(const Error& error) {
  print_error("draftwise batch: " + error.message);
  return 1;
}

// The ids of the complete records of `path`, after cutting off a torn last line.
Expected<std::set<std::string>> finished_ids(const std::filesystem::path& path) {
  std::set<std::string> ids;
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return ids;
  std::string content;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error("{}: cannot be read", path.string());
    content.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t end = content.rfind('\n');
  const size_t complete = end == std::string::npos ? 0 : end + 1;
  if (complete < content.size()) {
    std::filesystem::resize_file(path, complete, error);
    if (error) return make_error("{}: cannot cut off the torn last line: {}", path.string(), error.message());
  }
  size_t start = 0;
  while (start < complete) {
    const size_t newline = content.find('\n', start);
    const nlohmann::json id = batch_output_id(std::string_view(content).substr(start, newline - start));
    if (!id.is_null()) ids.insert(id.dump());
    start = newline + 1;
  }
  return ids;
}

// Lines in the input, for the progress display's total.
int64_t count_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int64_t lines = 0;
  std::string text;
  while (std::getline(in, text)) lines += text.find_first_not_of(" \t\r") != std::string::npos ? 1 : 0;
  return lines;
}

// The status line: done of total, failures, completion tokens/s, τ and the time left.
class BatchProgress {
 public:
  BatchProgress(int64_t total, bool drafting)
      : terminal_(isatty(fileno(stderr)) != 0), total_(total), drafting_(drafting),
        started_(std::chrono::steady_clock::now()), last_(started_) {}

  void update(int64_t done, int64_t failed, int64_t skipped, int64_t tokens, const SpeculationStats& speculation,
              bool last = false) {
    const auto now = std::chrono::steady_clock::now();
    if (!last && !terminal_ && std::chrono::duration<double>(now - last_).count() < 5.0) return;
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - started_).count();
    const int64_t handled = done + failed + skipped;
    const double rate = seconds > 0 ? static_cast<double>(done + failed) / seconds : 0.0;
    const int64_t left = std::max<int64_t>(0, total_ - handled);
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * std::min<int64_t>(handled, total_) / total_) : kWidth;
    std::string line = fmt::format("[{}{}] {}/{} done, {} failed, {} skipped, {:.1f} tokens/s", std::string(filled, '#'),
                                   std::string(kWidth - filled, '.'), handled, total_, failed, skipped,
                                   seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0);
    if (drafting_) {
      line += fmt::format(", τ {:.2f}, acceptance {:.2f}", speculation.mean_acceptance_length(),
                          speculation.acceptance_rate());
    }
    if (rate > 0 && left > 0) line += fmt::format(", ETA {:.0f} s", static_cast<double>(left) / rate);
    if (terminal_) {
      fmt::print(stderr, "\r{:<{}}", line, width_);
      width_ = std::max(width_, line.size());
      if (last) fmt::print(stderr, "\n");
    } else {
      fmt::print(stderr, "{}\n", line);
    }
  }

 private:
  bool terminal_;
  int64_t total_;
  bool drafting_;
  std::chrono::steady_clock::time_point started_, last_;
  size_t width_ = 0;
};

}  // namespace

int run_batch(const std::vector<std::string>& cli) {
  BatchArgs args;
  ArgParser parser("batch",
                   "Offline decoding: every request of a JSONL file ({\"id\", \"prompt\" | \"messages\", "
                   "\"max_tokens\", \"temperature\", \"top_p\", \"seed\", \"stop\"}), many at once, one JSON "
                   "result a line.");
  parser.add_option("model", &args.model, "PATH", "GGUF file or Hugging Face model folder (with a tokenizer)");
  parser.add_option("input", &args.input, "FILE", "the requests, one JSON object a line");
  parser.add_option("output", &args.output, "FILE", "the results, one JSON object a line");
  parser.add_option("max-tokens", &args.max_tokens, "N", "most tokens a request generates unless it says (default 256)");
  parser.add_option("parallel", &args.parallel, "N", "requests in flight at once, batched (default 16)");
  parser.add_option("temperature", &args.temperature, "T", "unless a request says; 0 is greedy (default 1.0)");
  parser.add_option("top-p", &args.top_p, "P", "unless a request says (default 1.0)");
  parser.add_option("seed", &args.seed, "S",
                    "sampling seed; a request without its own draws with S + its line number (default 0)");
  parser.add_flag("resume", &args.resume, "continue an output file: skip the ids it already holds");
  add_qttt_option(parser, args.qttt, "each request's prompt");
  add_backend_options(parser, args.backend);
  add_draft_options(parser, args.drafting);
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  if (args.model.empty()) return report_error(make_error("--model is required"));
  if (args.input.empty()) return report_error(make_error("--input is required"));
  if (args.output.empty()) return report_error(make_error("--output is required"));

  GenerationOptions defaults;
  Expected<int64_t> max_tokens = parse_integer_option("--max-tokens", args.max_tokens);
  if (!max_tokens.ok()) return report_error(max_tokens.error());
  if (*max_tokens <= 0) return report_error(make_error("--max-tokens must be positive, got {}", *max_tokens));
  defaults.max_tokens = *max_tokens;
  const Expected<int64_t> parallel = parse_integer_option("--parallel", args.parallel);
  if (!parallel.ok()) return report_error(parallel.error());
  if (*parallel <= 0) return report_error(make_error("--parallel must be positive, got {}", *parallel));
  const Expected<double> temperature = parse_number_option("--temperature", args.temperature);
  if (!temperature.ok()) return report_error(temperature.error());
  const Expected<double> top_p = parse_number_option("--top-p", args.top_p);
  if (!top_p.ok()) return report_error(top_p.error());
  const Expected<int64_t> seed = parse_integer_option("--seed", args.seed);
  if (!seed.ok()) return report_error(seed.error());
  if (*seed < 0) return report_error(make_error("--seed must be ≥ 0, got {}", *seed));
  Expected<std::optional<QttOptions>> qttt = parse_qttt_option(args.qttt);
  if (!qttt.ok()) return report_error(qttt.error());
  defaults.qttt = *qttt;
  defaults.sampling.temperature = *temperature;
  defaults.sampling.top_p = *top_p;
  if (const Status valid = validate_sampling_params(defaults.sampling); !valid.ok()) {
    return report_error(make_error("--{}", valid.error().message));
  }
  const Expected<BackendOptions> backend = parse_backend_options(args.backend);
  if (!backend.ok()) return report_error(backend.error());
  Expected<DraftSetup> setup = parse_draft_args(args.drafting, parser);
  if (!setup.ok()) return report_error(setup.error());
  defaults.draft_length = setup->length;
  defaults.learning_key = setup->learning.key;

  std::ifstream input(args.input, std::ios::binary);
  if (!input) return report_error(make_error("--input {}: cannot be read", args.input));
  const std::filesystem::path output_path(args.output);
  std::error_code error;
  if (!args.resume && std::filesystem::exists(output_path, error) && std::filesystem::file_size(output_path, error) > 0) {
    return report_error(make_error("--output {} already holds results; give --resume to continue it, or remove it",
                                   args.output));
  }
  Expected<std::set<std::string>> done = finished_ids(output_path);
  if (!done.ok()) return report_error(done.error());

  Expected<LoadedModel> model = load_model_file(args.model, *backend);
  if (!model.ok()) return report_error(model.error());
  if (!model->tokenizer) return report_error(make_error("{}: batch needs a model with a tokenizer", args.model));
  if (Status checked = check_qttt_option(defaults.qttt, model->decoder->config()); !checked.ok()) {
    return report_error(checked.error());
  }
  const Tokenizer& tokenizer = *model->tokenizer;
  Expected<std::unique_ptr<Drafter>> drafter = make_setup_drafter(*setup, *model, *backend);
  if (!drafter.ok()) return report_error(drafter.error());
  defaults.drafter = drafter->get();
  defaults.stop_token_ids = chat_stop_token_ids(*model->decoder, tokenizer);
  std::optional<ChatTemplate> chat;
  if (Expected<ChatTemplate> recognized = recognize_chat_template(tokenizer); recognized.ok()) {
    chat = std::move(*recognized);
  }

  std::FILE* out = std::fopen(args.output.c_str(), "ab");
  if (out == nullptr) return report_error(make_error("--output {}: cannot be written", args.output));
  const auto write = [&](const nlohmann::json& record) {
    const std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    std::fwrite(line.data(), 1, line.size(), out);
    std::fflush(out);
  };
  int64_t failed = 0, succeeded = 0, skipped = 0, tokens = 0;
  SpeculationStats speculation;
  std::set<std::string> seen;
  const std::string drafter_name = defaults.drafter != nullptr ? defaults.drafter->name() : std::string();
  BatchProgress progress(count_lines(args.input), defaults.drafter != nullptr);

  // This thread is the engine thread: it submits lines and steps the scheduler, which keeps
  // `parallel` requests running and a few more queued.
  SchedulerOptions scheduling;
  scheduling.max_running = *parallel;
  scheduling.max_waiting = *parallel;
  Scheduler scheduler(*model->decoder, &tokenizer, scheduling, {});
  int64_t in_flight = 0;
  int64_t number = 0;  // of the input line being read
  const auto submit = [&](const nlohmann::json& id, std::vector<int32_t> prompt, const GenerationOptions& options) {
    ScheduledRequest request;
    request.prompt = std::move(prompt);
    request.options = options;
    request.on_done = [&, id](Expected<GenerationResult> outcome) {
      --in_flight;
      if (!outcome.ok()) {
        ++failed;
        write(batch_error_record(id, outcome.error().message, "generation_error"));
      } else {
        const GenerationResult& result = *outcome;
        ++succeeded;
        tokens += result.stats.completion_tokens;
        speculation.add(result.stats.speculation);
        nlohmann::json record = {
            {"id", id},
            {"text", result.text},
            {"finish_reason", finish_reason_name(result.finish_reason)},
            {"usage",
             {{"prompt_tokens", result.stats.prompt_tokens},
              {"completion_tokens", result.stats.completion_tokens},
              {"total_tokens", result.stats.prompt_tokens + result.stats.completion_tokens}}},
            {"speculation", speculation_json(result.stats.speculation, drafter_name)}};
        if (result.stats.qttt) record["qttt"] = qttt_json(*result.stats.qttt);
        write(record);
      }
      progress.update(succeeded, failed, skipped, tokens, speculation);
    };
    const std::variant<TicketId, Scheduler::Refused> ticket = scheduler.submit(std::move(request));
    if (const auto* refused = std::get_if<Scheduler::Refused>(&ticket)) {
      ++failed;
      write(batch_error_record(id, fmt::format("line {}: {}", number, refused->message), "invalid_request_error"));
      return;
    }
    ++in_flight;
  };

  std::string text;
  bool more = true;
  while (more || in_flight > 0) {
    // Keep the scheduler fed: every running place taken, as many queued behind.
    while (more && in_flight < 2 * *parallel) {
      if (!std::getline(input, text)) {
        more = false;
        break;
      }
      ++number;
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines carry nothing
      nlohmann::json id;
      Expected<BatchLine> line = parse_batch_line(text, number, id);
      if (done->count(id.dump()) > 0) {
        ++skipped;
        continue;
      }
      if (!seen.insert(id.dump()).second) {
        ++failed;
        write(batch_error_record(id, fmt::format("line {}: the id {} was given before", number, id.dump()),
                                 "invalid_request_error"));
        continue;
      }
      if (!line.ok()) {
        ++failed;
        write(batch_error_record(id, line.error().message, "invalid_request_error"));
        continue;
      }
      GenerationOptions options = defaults;
      if (line->max_tokens) options.max_tokens = *line->max_tokens;
      if (line->temperature) options.sampling.temperature = *line->temperature;
      if (line->top_p) options.sampling.top_p = *line->top_p;
      options.sampling.seed = line->seed ? *line->seed : static_cast<uint64_t>(*seed + number);
      options.stop = line->stop;
      std::vector<int32_t> prompt;
      Status prepared = validate_sampling_params(options.sampling);
      if (prepared.ok()) {
        if (line->prompt) {
          prompt = tokenizer.encode(*line->prompt);
        } else if (!chat) {
          prepared = make_error("the model has no chat template for \"messages\"; give a \"prompt\"");
        } else if (Expected<std::string> rendered = chat->render(line->messages, /*add_generation_prompt=*/true);
                   rendered.ok()) {
          prompt = tokenizer.encode(*rendered, EncodeOptions{.add_special = false, .parse_special = true});
        } else {
          prepared = rendered.error();
        }
      }
      if (!prepared.ok()) {
        ++failed;
        write(batch_error_record(id, fmt::format("line {}: {}", number, prepared.error().message),
                                 "invalid_request_error"));
        continue;
      }
      submit(id, std::move(prompt), options);
    }
    if (in_flight > 0) scheduler.step();
  }
  progress.update(succeeded, failed, skipped, tokens, speculation, /*last=*/true);
  const bool read_failed = input.bad();
  std::fclose(out);
  if (read_failed) return report_error(make_error("--input {}: read error", args.input));
  if (defaults.drafter != nullptr) {
    if (Status saved = save_learned_adapter(*defaults.drafter, setup->learning); !saved.ok()) {
      return report_error(saved.error());
    }
  }
  fmt::print(stderr, "draftwise batch: {} done, {} failed, {} already in {}\n", succeeded, failed, skipped,
             args.output);
  return failed > 0 ? 1 : 0;
}

}  // namespace draftwise
