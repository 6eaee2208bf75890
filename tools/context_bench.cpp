// draftwise context-bench: what a token costs as the context grows, for any models on any
// backend, through the Decoder interface: decode step latency and throughput (greedy, at
// chosen batch sizes) after contexts of chosen lengths, and prefill throughput at chosen
// prompt lengths. Meant for TTT targets (their state is the same size at every length)
// against attention targets of the same shape (docs/ttt.md), and for a tensor-parallel target
// against one GPU (--tp; docs/tensor-parallel.md), where it also times the all-reduces of a
// step. Wall-clock times of whole passes (each pass ends with its tokens on the host), after
// warm-up; medians over repeats.
#include <algorithm>
#include <chrono>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kernels/random.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/model_loader.h"

namespace draftwise {

namespace {

struct ContextBenchArgs {
  std::vector<std::string> models;
  std::vector<std::string> random_weights;
  BackendArgs backend;
  std::string contexts = "1024,4096,16384,32768";
  std::string batches = "1";
  std::string prefills = "2048,16384";
  std::string steps = "32";
  std::string repeats = "3";
  std::string chunk = "2048";
  std::string json_path;
  std::string markdown_path;
};

using Clock = std::chrono::steady_clock;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::vector<int32_t> random_tokens(int64_t count, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t& token : tokens) token = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return tokens;
}

// Feeds `tokens` in chunks of `chunk`, the last row's next token picked; returns it.
Expected<int32_t> prefill(Decoder& decoder, SequenceId sequence, std::span<const int32_t> tokens, int64_t chunk) {
  std::vector<int32_t> picked;
  for (size_t at = 0; at < tokens.size(); at += static_cast<size_t>(chunk)) {
    const size_t count = std::min(tokens.size() - at, static_cast<size_t>(chunk));
    const int32_t last = static_cast<int32_t>(count) - 1;
    const bool final = at + count == tokens.size();
    const ForwardRequest request{sequence, tokens.subspan(at, count),
                                 final ? std::span<const int32_t>(&last, 1) : std::span<const int32_t>()};
    DW_TRY(decoder.forward_greedy(std::span(&request, 1), picked));
  }
  return picked.empty() ? 0 : picked.front();
}

struct DecodeFigure {
  int64_t context = 0;
  int64_t batch = 1;
  double ms_per_step = 0;
  double tokens_per_second = 0;
};

struct ModelFigures {
  std::string name, backend;
  std::vector<DecodeFigure> decode;
  std::vector<std::pair<int64_t, double>> prefill_tokens;  // length → tokens/s
  // Tensor parallelism: batch → ms a decode step spends in its 2·L all-reduces of [batch,
  // hidden] bf16 (timed apart, the same collectives as in the step).
  std::vector<std::pair<int64_t, double>> all_reduce_ms;
};

Expected<ModelFigures> measure(const std::string& name, LoadedModel& model, const std::vector<int32_t>& contexts,
                               const std::vector<int32_t>& batches, const std::vector<int32_t>& prefills,
                               int64_t steps, int64_t repeats, int64_t chunk) {
  Decoder& decoder = *model.decoder;
  const int64_t vocab = decoder.config().vocab_size;
  ModelFigures figures{name, model.backend, {}, {}, {}};
  for (const int32_t context : contexts) {
    for (const int32_t batch : batches) {
      // `batch` sequences of `context` tokens each, then steps of one token for every one.
      std::vector<SequenceId> sequences;
      std::vector<int32_t> next_tokens;
      const auto release = [&] {
        for (const SequenceId sequence : sequences) decoder.release_sequence(sequence);
      };
      for (int32_t b = 0; b < batch; ++b) {
        sequences.push_back(decoder.create_sequence());
        const std::vector<int32_t> tokens =
            random_tokens(context, vocab, 7 + static_cast<uint64_t>(context) + 1000 * static_cast<uint64_t>(b));
        Expected<int32_t> next = prefill(decoder, sequences.back(), tokens, chunk);
        if (!next.ok()) {
          release();
          return make_error("{}: prefill of {}: {}", name, context, next.error().message);
        }
        next_tokens.push_back(*next);
      }
      std::vector<int32_t> picked;
      const int32_t row = 0;
      std::vector<ForwardRequest> requests(static_cast<size_t>(batch));
      std::vector<double> per_step;
      for (int64_t repeat = 0; repeat <= repeats; ++repeat) {  // the first is the warm-up
        const Clock::time_point start = Clock::now();
        for (int64_t step = 0; step < steps; ++step) {
          for (size_t b = 0; b < requests.size(); ++b) {
            requests[b] = ForwardRequest{sequences[b], std::span(&next_tokens[b], 1), std::span(&row, 1)};
          }
          if (Status ran = decoder.forward_greedy(requests, picked); !ran.ok()) {
            release();
            return make_error("{}: decode at batch {} after {}: {}", name, batch, context, ran.error().message);
          }
          next_tokens = picked;
        }
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        if (repeat > 0) per_step.push_back(ms / static_cast<double>(steps));
      }
      release();
      const double ms = median(per_step);
      figures.decode.push_back({context, batch, ms, 1000.0 * static_cast<double>(batch) / ms});
      fmt::print(stderr, "{}: decode at batch {} after {} tokens: {:.3f} ms/step, {:.0f} tokens/s\n", name, batch,
                 context, ms, figures.decode.back().tokens_per_second);
    }
  }
  // A tensor-parallel target: the all-reduces of one decode step, 2 per layer of [batch, hidden].
  for (const int32_t batch : batches) {
    const int64_t elements = static_cast<int64_t>(batch) * decoder.config().hidden_size;
    Expected<double> seconds = decoder.time_all_reduce(elements, 50);
    if (!seconds.ok()) break;  // one device: nothing to time
    const double step_ms = 2.0 * static_cast<double>(decoder.config().num_layers) * *seconds * 1000.0;
    figures.all_reduce_ms.emplace_back(batch, step_ms);
    fmt::print(stderr, "{}: all-reduces of a decode step at batch {}: {:.3f} ms\n", name, batch, step_ms);
  }
  for (const int32_t length : prefills) {
    const std::vector<int32_t> tokens = random_tokens(length, vocab, 99 + static_cast<uint64_t>(length));
    std::vector<double> rates;
    for (int64_t repeat = 0; repeat <= repeats; ++repeat) {
      const SequenceId sequence = decoder.create_sequence();
      const Clock::time_point start = Clock::now();
      Expected<int32_t> next = prefill(decoder, sequence, tokens, chunk);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      decoder.release_sequence(sequence);
      if (!next.ok()) return make_error("{}: prefill of {}: {}", name, length, next.error().message);
      if (repeat > 0) rates.push_back(static_cast<double>(length) / seconds);
    }
    figures.prefill_tokens.emplace_back(length, median(rates));
    fmt::print(stderr, "{}: prefill of {} tokens: {:.0f} tokens/s\n", name, length, figures.prefill_tokens.back().second);
  }
  return figures;
}

std::string markdown(const std::vector<ModelFigures>& all, const std::vector<int32_t>& contexts,
                     const std::vector<int32_t>& prefills, const std::string& command) {
  const auto context_header = [&](const char* title) {
    std::string out = fmt::format("{}\n\n| model | backend | batch |", title);
    for (const int32_t c : contexts) out += fmt::format(" after {} |", c);
    out += "\n|---|---|---:|";
    for (size_t i = 0; i < contexts.size(); ++i) out += "---:|";
    return out + "\n";
  };
  // One row per model and batch size, one column per context.
  const auto decode_rows = [&](bool throughput) {
    std::string out;
    for (const ModelFigures& m : all) {
      std::vector<int64_t> seen;
      for (const DecodeFigure& f : m.decode) {
        if (std::find(seen.begin(), seen.end(), f.batch) != seen.end()) continue;
        seen.push_back(f.batch);
        out += fmt::format("| {} | {} | {} |", m.name, m.backend, f.batch);
        for (const DecodeFigure& g : m.decode) {
          if (g.batch != f.batch) continue;
          out += throughput ? fmt::format(" {:.0f} |", g.tokens_per_second) : fmt::format(" {:.3f} |", g.ms_per_step);
        }
        out += "\n";
      }
    }
    return out;
  };
  std::string out = context_header("Decode step latency (greedy; one token for every sequence of the batch), ms:");
  out += decode_rows(false);
  out += "\n" + context_header("Decode throughput, tokens/s:");
  out += decode_rows(true);
  out += "\nPrefill, tokens/s:\n\n| model |";
  for (const int32_t p : prefills) out += fmt::format(" {} tokens |", p);
  out += "\n|---|";
  for (size_t i = 0; i < prefills.size(); ++i) out += "---:|";
  out += "\n";
  for (const ModelFigures& m : all) {
    out += fmt::format("| {} |", m.name);
    for (const auto& [p, rate] : m.prefill_tokens) out += fmt::format(" {:.0f} |", rate);
    out += "\n";
  }
  std::string reduces;
  for (const ModelFigures& m : all) {
    for (const auto& [batch, ms] : m.all_reduce_ms) {
      reduces += fmt::format("| {} | {} | {} | {:.3f} |\n", m.name, m.backend, batch, ms);
    }
  }
  if (!reduces.empty()) {
    out += "\nAll-reduces of one decode step (2 per layer of [batch, hidden] bf16, timed apart), ms:\n\n"
           "| model | backend | batch | ms per step |\n|---|---|---:|---:|\n" +
           reduces;
  }
  out += fmt::format("\nCommand: `{}`\n", command);
  return out;
}

Expected<std::vector<int32_t>> parse_lengths(std::string_view name, const std::string& text) {
  if (text.empty()) return std::vector<int32_t>();
  DW_ASSIGN_OR_RETURN(std::vector<int32_t> lengths, parse_id_list_option(name, text));
  for (const int32_t length : lengths) {
    if (length < 1) return make_error("{}: lengths must be positive, got {}", name, length);
  }
  return lengths;
}

}  // namespace

int run_context_bench(const std::vector<std::string>& cli) {
  ContextBenchArgs args;
  ArgParser parser("context-bench",
                   "per-token decode latency after contexts of several lengths, and prefill throughput, per model");
  parser.add_list_option("model", &args.models, "PATH", "a model file or folder (repeatable)");
  parser.add_list_option("random-weights", &args.random_weights, "CONFIG.json",
                         "seeded random weights in a config's shape, TTT or attention (repeatable)");
  add_backend_options(parser, args.backend);
  parser.add_option("contexts", &args.contexts, "1024,4096", "tokens before the timed decode steps (default 1024,4096,16384,32768)");
  parser.add_option("batches", &args.batches, "1,32", "sequences decoded together in each timed step (default 1)");
  parser.add_option("prefill", &args.prefills, "2048,16384", "prompt lengths whose prefill is timed (default 2048,16384; empty: none)");
  parser.add_option("steps", &args.steps, "N", "decode steps per timed repeat (default 32)");
  parser.add_option("repeats", &args.repeats, "N", "timed repeats after one warm-up; medians reported (default 3)");
  parser.add_option("chunk", &args.chunk, "N", "prefill chunk, tokens per pass (default 2048)");
  parser.add_option("json", &args.json_path, "FILE", "also write the figures as JSON");
  parser.add_option("markdown", &args.markdown_path, "FILE", "also write the figures as Markdown");
  if (const std::optional<int> code = parser.parse_or_exit_code(cli)) return *code;
  const auto fail = [](const Error& error) {
    print_error(fmt::format("draftwise context-bench: {}", error.message));
    return 1;
  };
  if (args.models.empty() && args.random_weights.empty()) {
    return fail(Error{"give at least one --model PATH or --random-weights CONFIG.json"});
  }
  Expected<std::vector<int32_t>> contexts = parse_lengths("--contexts", args.contexts);
  if (!contexts.ok()) return fail(contexts.error());
  Expected<std::vector<int32_t>> prefills = parse_lengths("--prefill", args.prefills);
  if (!prefills.ok()) return fail(prefills.error());
  Expected<std::vector<int32_t>> batches = parse_lengths("--batches", args.batches);
  if (!batches.ok()) return fail(batches.error());
  if (batches->empty()) return fail(Error{"--batches needs at least one batch size"});
  Expected<int64_t> steps = parse_integer_option("--steps", args.steps);
  Expected<int64_t> repeats = parse_integer_option("--repeats", args.repeats);
  Expected<int64_t> chunk = parse_integer_option("--chunk", args.chunk);
  if (!steps.ok()) return fail(steps.error());
  if (!repeats.ok()) return fail(repeats.error());
  if (!chunk.ok()) return fail(chunk.error());
  if (*steps < 1 || *repeats < 1 || *chunk < 1) return fail(Error{"--steps, --repeats and --chunk must be positive"});
  Expected<BackendOptions> backend = parse_backend_options(args.backend);
  if (!backend.ok()) return fail(backend.error());
  int64_t longest = 1;
  for (const int32_t length : *contexts) longest = std::max<int64_t>(longest, length);
  for (const int32_t length : *prefills) longest = std::max<int64_t>(longest, length);
  backend->context_length = longest + (*steps) * (*repeats + 1) + 16;

  std::vector<ModelFigures> all;
  const auto run = [&](const std::string& name, Expected<LoadedModel> model) -> Status {
    if (!model.ok()) return make_error("{}: {}", name, model.error().message);
    DW_ASSIGN_OR_RETURN(ModelFigures figures, measure(name, *model, *contexts, *batches, *prefills, *steps, *repeats, *chunk));
    all.push_back(std::move(figures));
    return {};
  };
  for (const std::string& path : args.models) {
    if (Status ran = run(path, load_model_file(path, *backend)); !ran.ok()) return fail(ran.error());
  }
  for (const std::string& path : args.random_weights) {
    if (Status ran = run(path, load_random_model(path, *backend)); !ran.ok()) return fail(ran.error());
  }
  std::string command = "draftwise context-bench";
  for (const std::string& arg : cli) command += " " + arg;
  nlohmann::json report = {{"command", command},
                           {"steps", *steps},
                           {"repeats", *repeats},
                           {"chunk", *chunk},
                           {"models", nlohmann::json::array()}};
  for (const ModelFigures& m : all) {
    nlohmann::json model = {{"name", m.name},
                            {"backend", m.backend},
                            {"decode", nlohmann::json::array()},
                            {"prefill_tokens_per_second", nlohmann::json::array()},
                            {"all_reduce_ms_per_decode_step", nlohmann::json::array()}};
    for (const DecodeFigure& f : m.decode) {
      model["decode"].push_back({{"context", f.context},
                                 {"batch", f.batch},
                                 {"ms_per_step", f.ms_per_step},
                                 {"tokens_per_second", f.tokens_per_second}});
    }
    for (const auto& [batch, ms] : m.all_reduce_ms) {
      model["all_reduce_ms_per_decode_step"].push_back({{"batch", batch}, {"ms", ms}});
    }
    for (const auto& [p, rate] : m.prefill_tokens) {
      model["prefill_tokens_per_second"].push_back({{"tokens", p}, {"tokens_per_second", rate}});
    }
    report["models"].push_back(model);
  }
  const std::string table = markdown(all, *contexts, *prefills, command);
  fmt::print("{}", table);
  if (!args.json_path.empty() && !(std::ofstream(args.json_path) << report.dump(2) << "\n")) {
    return fail(Error{fmt::format("{}: cannot be written", args.json_path)});
  }
  if (!args.markdown_path.empty() && !(std::ofstream(args.markdown_path) << table)) {
    return fail(Error{fmt::format("{}: cannot be written", args.markdown_path)});
  }
  return 0;
}

}  // namespace draftwise
