// draftwise: one binary, one subcommand per job.
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/model_loader.h"

namespace {

struct Command {
  std::string_view name;
  int (*run)(const std::vector<std::string>&);
  std::string_view summary;
};

constexpr Command kCommands[] = {
    {"batch", draftwise::run_batch,
     "offline decoding of a JSONL file of requests, many at once, one JSON result a line"},
    {"bench", draftwise::run_bench,
     "the acceptance-rate benchmark: modes of drafting on the same prompts, results.json; --niah: "
     "needle in a haystack with and without qTTT"},
    {"context-bench", draftwise::run_context_bench,
     "per-token decode latency after long contexts and prefill throughput (TTT against attention)"},
    {"generate", draftwise::run_generate,
     "complete one prompt, streaming the text; token counts and speed at the end"},
    {"inspect", draftwise::run_inspect,
     "what is inside a model file: architecture, tensors, tokenizer, chat template"},
    {"loadgen", draftwise::run_loadgen,
     "load on an OpenAI-compatible server: concurrent streaming clients, throughput and latency"},
    {"perf", draftwise::run_perf,
     "decode and prefill speed on a GPU against its measured bandwidth and GEMM rate"},
    {"report", draftwise::run_report,
     "remake report.md and the plots of a bench run from its results.json (or niah.json)"},
    {"serve", draftwise::run_serve,
     "the OpenAI-compatible HTTP server: completions and chat, streaming, continuous batching"},
    {"version", draftwise::run_version, "build information and the CUDA devices visible"},
};

void print_usage(std::FILE* out) {
  fmt::print(out, "usage: draftwise <command> [arguments]\n\ncommands:\n");
  for (const Command& command : kCommands) {
    fmt::print(out, "  {:<10} {}\n", command.name, command.summary);
  }
  fmt::print(out, "\n'draftwise <command> --help' describes a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string_view name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  const std::vector<std::string> args(argv + 2, argv + argc);
  // A tensor-parallel rank above 0 runs rank 0's command line as a follower, whatever the command.
  if (const std::optional<int> followed = draftwise::run_as_tensor_parallel_follower(args)) return *followed;
  for (const Command& command : kCommands) {
    if (command.name != name) continue;
    try {
      return command.run(args);
    } catch (const std::bad_alloc&) {
      draftwise::print_error(fmt::format("draftwise {}: out of memory", name));
    } catch (const std::exception& error) {
      draftwise::print_error(fmt::format("draftwise {}: internal error: {}", name, error.what()));
    }
    return 1;
  }
  draftwise::print_error(fmt::format("draftwise: unknown command '{}'", name));
  print_usage(stderr);
  return 2;
}
