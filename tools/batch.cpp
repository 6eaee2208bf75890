// draftwise batch: offline decoding of a JSONL file of requests (tools/batch_lines.h), many
// in flight at once through the engine's batched generation, with the drafting and learning
// flags of generate. Every output line is written and flushed as soon as its batch ends, so a
// crash or kill loses at most the requests in flight; --resume skips the ids already in the
// output (a torn last line is cut off first). A bad line or a failed request gets an error
// record and the batch goes on; the exit code is 1 when any did.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "engine/generation.h"
#include "tools/batch_lines.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/draft_args.h"
#include "tools/model_loader.h"
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

struct Pending {
  BatchLine line;
  std::vector<int32_t> prompt;
  GenerationOptions options;
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
  const auto started = std::chrono::steady_clock::now();
  std::set<std::string> seen;
  std::vector<Pending> pending;
  const std::string drafter_name = defaults.drafter != nullptr ? defaults.drafter->name() : std::string();

  const auto run_pending = [&] {
    if (pending.empty()) return;
    std::vector<GenerationRequest> requests;
    for (const Pending& each : pending) requests.push_back({each.prompt, each.options, {}});
    const std::vector<Expected<GenerationResult>> results = generate_batch(*model->decoder, &tokenizer, requests);
    for (size_t i = 0; i < pending.size(); ++i) {
      const nlohmann::json& id = pending[i].line.id;
      if (!results[i].ok()) {
        ++failed;
        write(batch_error_record(id, results[i].error().message, "generation_error"));
        continue;
      }
      const GenerationResult& result = *results[i];
      ++succeeded;
      tokens += result.stats.completion_tokens;
      speculation.add(result.stats.speculation);
      write({{"id", id},
             {"text", result.text},
             {"finish_reason", finish_reason_name(result.finish_reason)},
             {"usage",
              {{"prompt_tokens", result.stats.prompt_tokens},
               {"completion_tokens", result.stats.completion_tokens},
               {"total_tokens", result.stats.prompt_tokens + result.stats.completion_tokens}}},
             {"speculation", speculation_json(result.stats.speculation, drafter_name)}});
    }
    pending.clear();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    fmt::print(stderr, "[{} done, {} failed, {} skipped] {:.1f} tokens/s{}\n", succeeded, failed, skipped,
               seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0,
               defaults.drafter != nullptr ? fmt::format(", τ {:.2f}", speculation.mean_acceptance_length())
                                           : std::string());
  };

  std::string text;
  int64_t number = 0;
  while (std::getline(input, text)) {
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
    Pending request{std::move(*line), {}, defaults};
    GenerationOptions& options = request.options;
    if (request.line.max_tokens) options.max_tokens = *request.line.max_tokens;
    if (request.line.temperature) options.sampling.temperature = *request.line.temperature;
    if (request.line.top_p) options.sampling.top_p = *request.line.top_p;
    options.sampling.seed = request.line.seed ? *request.line.seed : static_cast<uint64_t>(*seed + number);
    options.stop = request.line.stop;
    Status prepared = validate_sampling_params(options.sampling);
    if (prepared.ok()) {
      if (request.line.prompt) {
        request.prompt = tokenizer.encode(*request.line.prompt);
      } else if (!chat) {
        prepared = make_error("the model has no chat template for \"messages\"; give a \"prompt\"");
      } else if (Expected<std::string> rendered = chat->render(request.line.messages, /*add_generation_prompt=*/true);
                 rendered.ok()) {
        request.prompt = tokenizer.encode(*rendered, EncodeOptions{.add_special = false, .parse_special = true});
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
    pending.push_back(std::move(request));
    if (static_cast<int64_t>(pending.size()) >= *parallel) run_pending();
  }
  run_pending();
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
