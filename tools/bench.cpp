// draftwise bench: the acceptance-rate benchmark (engine/benchmark.h). Runs every mode on
// the same prompts in one process and writes DIR/results.json: the configuration, the
// model file's SHA-256, the device and date; per prompt, per category and overall for each
// mode, tokens/s, the speed-up against `ar`, the speculation statistics, and whether its
// output equals `ar`'s (where not: where it first differs, and both continuations). From it,
// DIR/report.md and the SVG plots (tools/bench_report.h). A summary table goes to stdout,
// progress to stderr. With --qttt every request adapts its queries on its prompt first; with
// --niah the command is the needle-in-a-haystack benchmark of qTTT instead (tools/niah_bench.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "draft/learning_drafter.h"
#include "engine/benchmark.h"
#include "engine/chat_template.h"
#include "engine/draft_spec.h"
#include "kernels/sha256.h"
#include "tools/bench_expect.h"
#include "tools/bench_progress.h"
#include "tools/bench_report.h"
#include "tools/bench_results.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/learn_args.h"
#include "tools/model_loader.h"
#include "tools/niah_bench.h"
#include "tools/speculation_json.h"

namespace draftwise {

namespace {

struct BenchArgs {
  std::string model;
  std::string prompts;
  std::string modes = "ar";
  std::string max_tokens = "128";
  std::string limit = "0";
  std::string categories;
  BackendArgs backend;
  std::string out;
  std::string holdout = "0";
  std::string temperature = "0";
  std::string seed = "0";
  std::string expect;
  std::string write_expect;
  std::string qttt = "off";
  LearnArgs learn;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const size_t end = comma == std::string::npos ? text.size() : comma;
    std::string part = text.substr(start, end - start);
    while (!part.empty() && part.front() == ' ') part.erase(part.begin());
    while (!part.empty() && part.back() == ' ') part.pop_back();
    parts.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return parts;
}

// The modes, `ar` first (added when not named): each a spec and its drafter's key.
struct ModeSpec {
  std::string name;
  std::optional<DraftSpec> draft;  // none: ar
};
Expected<std::vector<ModeSpec>> parse_modes(const std::string& text) {
  std::vector<ModeSpec> modes = {{"ar", std::nullopt}};
  std::set<std::string> names = {"ar"};
  for (const std::string& part : split_commas(text)) {
    if (part.empty()) return make_error("--modes '{}': an empty mode", text);
    if (part == "ar") continue;
    Expected<DraftSpec> spec = parse_draft_spec(part, /*with_length=*/true);
    if (!spec.ok()) return make_error("--modes {}", spec.error().message);
    if (!spec->draft_length) spec->draft_length = DraftLength::fixed(4);
    const std::string name =
        spec->name + (spec->learn ? (spec->kl_only ? "+learn-kl" : "+learn") : "") + "@" +
        (spec->draft_length->is_adaptive() ? std::string("auto") : std::to_string(spec->draft_length->current()));
    if (!names.insert(name).second) return make_error("--modes: '{}' is given twice", name);
    modes.push_back({name, std::move(*spec)});
  }
  return modes;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}


int report_error(const Error& error) {
  print_error("draftwise bench: " + error.message);
  return 1;
}

}  // namespace

int run_bench(const std::vector<std::string>& cli) {
  if (std::find(cli.begin(), cli.end(), "--niah") != cli.end()) {
    std::vector<std::string> rest;
    for (const std::string& arg : cli) {
      if (arg != "--niah") rest.push_back(arg);
    }
    return run_niah_bench(rest);
  }
  BenchArgs args;
  ArgParser parser(
      "bench",
      "The acceptance-rate benchmark: every mode (ar, ngram:N, self:E, model:PATH, each with an "
      "optional @K draft length) on the same prompts, greedy unless --temperature; writes "
      "DIR/results.json, DIR/report.md and SVG plots. 'draftwise bench --niah' is the "
      "needle-in-a-haystack benchmark of qTTT, with its own options (bench --niah --help).");
  parser.add_option("model", &args.model, "PATH", "GGUF file or Hugging Face model folder (with a chat template)");
  parser.add_option("prompts", &args.prompts, "FILE",
                    "Spec-Bench question.jsonl, or JSONL lines with \"prompt\" or \"messages\"");
  parser.add_option("modes", &args.modes, "MODES", "comma-separated, e.g. ar,ngram:3@4,self:8@6 (ar is always run)");
  parser.add_option("max-tokens", &args.max_tokens, "N", "new tokens per turn (default 128)");
  parser.add_option("limit", &args.limit, "N", "the first N prompts of each category; 0: all (default 0)");
  parser.add_option("categories", &args.categories, "a,b", "only these categories");
  add_backend_options(parser, args.backend);
  parser.add_option("out", &args.out, "DIR", "where results.json goes (created if missing)");
  parser.add_option("holdout", &args.holdout, "N",
                    "with +learn modes: hold back every N-th prompt of each category, run them before and after "
                    "learning on the rest (default 0: no hold-out)");
  parser.add_option("temperature", &args.temperature, "T",
                    "sample at temperature T (default 0: greedy); sampled runs measure acceptance only, with no "
                    "lossless text check");
  parser.add_option("seed", &args.seed, "S", "the sampling seed (default 0)");
  parser.add_option("expect", &args.expect, "FILE",
                    "regression mode: expected τ and acceptance per position per mode, with tolerances; exits 3 when "
                    "a value is outside (tools/bench_expect.h gives the format)");
  parser.add_option("write-expect", &args.write_expect, "FILE",
                    "write this run's τ and acceptance per position as an expectations file for --expect");
  parser.add_option(
      "qttt", &args.qttt, "SPEC",
      fmt::format("query-only test-time training: every request, in every mode, adapts its query "
                  "projections on its prompt before decoding. SPEC: off, on ({}), or some of those "
                  "keys (docs/qttt.md; default off)",
                  qtt_spec(QttOptions{})));
  add_learn_options(parser, args.learn);
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  for (const char* flag : {"learn", "learn-key", "save-adapter"}) {
    if (parser.given(flag)) {
      return report_error(make_error("--{} is for generate; bench modes learn with a +learn suffix "
                                     "(self:8+learn@6) and their adapters are saved under DIR/adapters",
                                     flag));
    }
  }
  Expected<LearningConfig> learning = parse_learn_args(args.learn);
  if (!learning.ok()) return report_error(learning.error());
  const Expected<int64_t> holdout = parse_integer_option("--holdout", args.holdout);
  if (!holdout.ok()) return report_error(holdout.error());
  if (*holdout < 0 || *holdout == 1) {
    return report_error(make_error("--holdout must be 0 (none) or at least 2, got {}", *holdout));
  }
  if (args.model.empty()) return report_error(make_error("--model is required"));
  if (args.prompts.empty()) return report_error(make_error("--prompts is required"));
  if (args.out.empty()) return report_error(make_error("--out is required"));

  const Expected<int64_t> max_tokens = parse_integer_option("--max-tokens", args.max_tokens);
  if (!max_tokens.ok()) return report_error(max_tokens.error());
  if (*max_tokens <= 0) return report_error(make_error("--max-tokens must be positive, got {}", *max_tokens));
  const Expected<int64_t> limit = parse_integer_option("--limit", args.limit);
  if (!limit.ok()) return report_error(limit.error());
  if (*limit < 0) return report_error(make_error("--limit must be ≥ 0, got {}", *limit));
  const Expected<double> temperature = parse_number_option("--temperature", args.temperature);
  if (!temperature.ok()) return report_error(temperature.error());
  const Expected<int64_t> seed = parse_integer_option("--seed", args.seed);
  if (!seed.ok()) return report_error(seed.error());
  if (*seed < 0) return report_error(make_error("--seed must be ≥ 0, got {}", *seed));
  SamplingParams sampling;
  sampling.temperature = *temperature;
  sampling.seed = static_cast<uint64_t>(*seed);
  if (const Status valid = validate_sampling_params(sampling); !valid.ok()) {
    return report_error(make_error("--temperature: {}", valid.error().message));
  }
  const bool greedy = sampling.greedy();
  std::optional<QttOptions> qttt;
  if (args.qttt != "off") {
    Expected<QttOptions> parsed = parse_qtt_spec(args.qttt);
    // parse_qtt_spec's errors start "qttt: ", so that "--" makes them name the flag.
    if (!parsed.ok()) return report_error(make_error("--{}", parsed.error().message));
    qttt = *parsed;
  }
  std::optional<nlohmann::json> expectations;
  if (!args.expect.empty()) {
    std::ifstream file(args.expect);
    if (!file) return report_error(make_error("--expect {}: cannot be read", args.expect));
    nlohmann::json parsed = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) return report_error(make_error("--expect {}: not valid JSON", args.expect));
    expectations = std::move(parsed);
  }
  const Expected<BackendOptions> backend_options =
      parse_backend_options(args.backend);
  if (!backend_options.ok()) return report_error(backend_options.error());
  const BackendOptions& backend = *backend_options;
  Expected<std::vector<ModeSpec>> modes = parse_modes(args.modes);
  if (!modes.ok()) return report_error(modes.error());
  std::vector<std::string> categories;
  if (!args.categories.empty()) categories = split_commas(args.categories);
  Expected<std::vector<BenchPrompt>> read = read_bench_prompts(args.prompts);
  if (!read.ok()) return report_error(read.error());
  Expected<std::vector<BenchPrompt>> prompts = select_bench_prompts(std::move(*read), categories, *limit);
  if (!prompts.ok()) return report_error(prompts.error());

  Expected<LoadedModel> model = load_model_file(args.model, backend);
  if (!model.ok()) return report_error(model.error());
  if (!model->tokenizer || !model->tokenizer->chat_template()) {
    return report_error(make_error("{}: bench needs a model with a tokenizer and a chat template", args.model));
  }
  const Tokenizer& tokenizer = *model->tokenizer;
  Expected<ChatTemplate> chat = recognize_chat_template(tokenizer);
  if (!chat.ok()) return report_error(make_error("{}: {}", args.model, chat.error().message));
  const Expected<std::string> model_hash = sha256_of_path(args.model);
  if (!model_hash.ok()) return report_error(model_hash.error());
  if (qttt) {
    if (const Status valid = check_qtt_options(*qttt, model->decoder->config()); !valid.ok()) {
      return report_error(make_error("--{}", valid.error().message));
    }
  }

  // One drafter per distinct spec: modes that differ only in the draft length share it; a
  // learning mode has its own, whose adapter it carries from prompt to prompt.
  std::map<std::string, std::unique_ptr<Drafter>> drafters;
  std::vector<BenchMode> bench_modes;
  std::vector<std::pair<size_t, LearningDrafter*>> learning_modes;  // mode index, its drafter
  for (const ModeSpec& spec : *modes) {
    BenchMode mode;
    mode.name = spec.name;
    if (spec.draft) {
      std::unique_ptr<Drafter>& drafter = drafters[spec.draft->learn ? spec.name : spec.draft->name];
      if (!drafter) {
        Expected<std::unique_ptr<Drafter>> made = make_drafter(*spec.draft, *model, backend);
        if (!made.ok()) return report_error(make_error("--modes {}", made.error().message));
        drafter = std::move(*made);
        LearningConfig own = *learning;
        own.scope = spec.draft->learn ? LearnScope::global : LearnScope::off;
        own.options.policy_gradient = !spec.draft->kl_only;
        if (spec.draft->kind != DraftSpec::Kind::ngram) {
          if (Status attached = attach_learning(*drafter, own); !attached.ok()) {
            return report_error(make_error("--modes {}: {}", spec.name, attached.error().message));
          }
        }
      }
      if (spec.draft->learn) learning_modes.push_back({bench_modes.size(), dynamic_cast<LearningDrafter*>(drafter.get())});
      mode.drafter = drafter.get();
      mode.draft_length = *spec.draft->draft_length;
    }
    bench_modes.push_back(std::move(mode));
  }
  if (*holdout > 0 && learning_modes.empty()) {
    return report_error(make_error("--holdout needs at least one +learn mode"));
  }

  BenchConfig config;
  config.max_tokens = *max_tokens;
  config.sampling = sampling;
  config.stop_token_ids = chat_stop_token_ids(*model->decoder, tokenizer);
  config.qttt = qttt;
  BenchFormat format;
  format.render = [&](std::span<const ChatMessage> messages) -> Expected<std::vector<int32_t>> {
    DW_ASSIGN_OR_RETURN(const std::string text, chat->render(messages, /*add_generation_prompt=*/true));
    return tokenizer.encode(text, EncodeOptions{.add_special = false, .parse_special = true});
  };
  format.answer_text = [&](std::span<const int32_t> tokens) { return tokenizer.decode(tokens, /*skip_special=*/true); };
  const auto decode = [&](std::span<const int32_t> tokens) { return tokenizer.decode(tokens, /*skip_special=*/false); };

  // Phases: every prompt once; or, with a hold-out, the held-back prompts with the heads as
  // they start, learning over the rest, and the held-back prompts again with the learned heads
  // (learning off while held-back prompts run).
  struct Phase {
    std::string name;
    std::vector<BenchPrompt> prompts;
    bool learn = true;
    std::vector<PromptOutcome> outcomes;
  };
  std::vector<Phase> phases;
  if (*holdout == 0) {
    phases.push_back({"all", *prompts, true, {}});
  } else {
    std::vector<BenchPrompt> learning_part, held_back;
    std::map<std::string, int64_t> seen;
    for (const BenchPrompt& prompt : *prompts) {
      (++seen[prompt.category] % *holdout == 0 ? held_back : learning_part).push_back(prompt);
    }
    if (held_back.empty() || learning_part.empty()) {
      return report_error(make_error("--holdout {} leaves no prompts in one of the two parts", *holdout));
    }
    phases.push_back({"heldout_before", held_back, false, {}});
    phases.push_back({"learning", learning_part, true, {}});
    phases.push_back({"heldout_after", held_back, false, {}});
  }
  // τ over processed tokens of each learning mode: one point per prompt of a learning phase.
  std::map<std::string, nlohmann::json> curves;
  std::map<size_t, int64_t> processed;
  size_t total_prompts = 0;
  for (const Phase& phase : phases) total_prompts += phase.prompts.size();
  std::vector<std::string> names;
  for (const BenchMode& mode : bench_modes) names.push_back(mode.name);
  BenchProgressDisplay display(stderr, isatty(fileno(stderr)) != 0, total_prompts, names);
  for (Phase& phase : phases) {
    for (const auto& [m, drafter] : learning_modes) drafter->learning()->set_enabled(phase.learn);
    const BenchProgress progress = [&](size_t done, size_t, const PromptOutcome& last) {
      display.prompt_done(phases.size() > 1 ? phase.name : std::string(), phase.prompts[last.prompt].category,
                          phase.prompts[last.prompt].id, last);
      if (!phase.learn) return;
      for (const auto& [m, drafter] : learning_modes) {
        const ModeOutcome& result = last.modes[m];
        processed[m] += result.speculation.generated_tokens;
        const LearnerStats stats = drafter->learning()->stats();
        curves[bench_modes[m].name].push_back({{"prompt", phase.prompts[last.prompt].id},
                                                {"prompt_number", done},
                                                {"tokens", processed[m]},
                                                {"tau", result.speculation.mean_acceptance_length()},
                                                {"drafts", result.speculation.drafts},
                                                {"accepted_tokens", result.speculation.accepted_tokens},
                                                {"acceptance_rate", result.speculation.acceptance_rate()},
                                                {"updates", stats.updates},
                                                {"learner_seconds", stats.seconds}});
      }
    };
    Expected<std::vector<PromptOutcome>> outcomes =
        run_bench(*model->decoder, phase.prompts, bench_modes, config, format, progress);
    if (!outcomes.ok()) {
      display.finish();
      return report_error(outcomes.error());
    }
    phase.outcomes = std::move(*outcomes);
  }

  display.finish();
  nlohmann::json mode_names = nlohmann::json::array();
  for (const BenchMode& mode : bench_modes) mode_names.push_back(mode.name);
  std::set<std::string> category_names;
  for (const BenchPrompt& prompt : *prompts) category_names.insert(prompt.category);
  LearnerOptions learner_defaults = learning->options;
  nlohmann::json results = {
      {"config",
       {{"model", args.model},
        {"model_sha256", *model_hash},
        {"device", model->decoder->device_name()},
        {"backend", model->backend},
        {"date", utc_now()},
        {"prompts_file", args.prompts},
        {"prompts", prompts->size()},
        {"categories", category_names},
        {"limit_per_category", *limit},
        {"max_tokens", *max_tokens},
        {"temperature", sampling.temperature},
        {"seed", sampling.seed},
        {"holdout_every", *holdout},
        {"qttt", qttt ? nlohmann::json(qtt_spec(*qttt)) : nlohmann::json(nullptr)},
        {"modes", mode_names}}},
      {"overall", nlohmann::json::object()},
      {"categories", nlohmann::json::object()},
      {"prompts", nlohmann::json::array()}};
  if (!learning_modes.empty()) {
    const char* head = !learning->lens ? "lora+lens for self:E, lora for model:PATH"
                       : *learning->lens ? "lora+lens"
                                         : "lora";
    results["config"]["learner"] = {{"head", head},
                                    {"rank", learner_defaults.rank},
                                    {"alpha", learner_defaults.alpha},
                                    {"learning_rate", learner_defaults.learning_rate},
                                    {"batch_size", learner_defaults.batch_size},
                                    {"update_interval", learner_defaults.update_interval},
                                    {"buffer_size", learner_defaults.buffer_size},
                                    {"top_k", learner_defaults.top_k},
                                    {"temperature", learner_defaults.temperature},
                                    {"cross_entropy_weight", learner_defaults.cross_entropy_weight},
                                    {"policy_gradient_weight", learner_defaults.policy_gradient_weight},
                                    {"policy_gradient_recent", learner_defaults.policy_gradient_recent},
                                    {"importance_clip", learner_defaults.importance_clip},
                                    {"distillation_floor", learner_defaults.distillation_floor},
                                    {"warmup_updates", learner_defaults.warmup_updates},
                                    {"ramp_updates", learner_defaults.ramp_updates},
                                    {"time_share", learner_defaults.time_share},
                                    {"adapter", learning->adapter_path}};
  }
  const auto phase_summaries = [&](const Phase& phase, nlohmann::json& overall_json, nlohmann::json& categories_json) {
    const std::vector<ModeSummary> overall = summarize_bench(phase.outcomes, phase.prompts, bench_modes.size());
    for (size_t m = 0; m < bench_modes.size(); ++m) {
      overall_json[bench_modes[m].name] = summary_json(overall[m], bench_modes[m].name, greedy);
    }
    std::set<std::string> names;
    for (const BenchPrompt& prompt : phase.prompts) names.insert(prompt.category);
    for (const std::string& category : names) {
      const std::vector<ModeSummary> summaries =
          summarize_bench(phase.outcomes, phase.prompts, bench_modes.size(), category);
      for (size_t m = 0; m < bench_modes.size(); ++m) {
        categories_json[category][bench_modes[m].name] = summary_json(summaries[m], bench_modes[m].name, greedy);
      }
    }
    return overall;
  };
  std::map<std::string, std::vector<ModeSummary>> overall_by_phase;
  for (const Phase& phase : phases) {
    if (phase.name == "all" || phase.name == "learning") {
      overall_by_phase[phase.name] = phase_summaries(phase, results["overall"], results["categories"]);
    } else {
      nlohmann::json& section = results["holdout"][phase.name == "heldout_before" ? "before" : "after"];
      section["prompts"] = phase.prompts.size();
      section["overall"] = nlohmann::json::object();
      section["categories"] = nlohmann::json::object();
      overall_by_phase[phase.name] = phase_summaries(phase, section["overall"], section["categories"]);
    }
  }
  for (const auto& [m, drafter] : learning_modes) {
    results["overall"][bench_modes[m].name]["learner"] = learner_json(*drafter->learning());
    const ModeSummary& summary = overall_by_phase[phases.size() > 1 ? "learning" : "all"][m];
    results["overall"][bench_modes[m].name]["learner_time_share"] =
        summary.seconds > 0 ? drafter->learning()->stats().seconds / summary.seconds : 0.0;
    results["learning_curves"][bench_modes[m].name] = curves[bench_modes[m].name];
  }
  for (const Phase& phase : phases) {
    for (const PromptOutcome& outcome : phase.outcomes) {
      const BenchPrompt& prompt = phase.prompts[outcome.prompt];
      nlohmann::json entry = {{"id", prompt.id}, {"category", prompt.category}, {"modes", nlohmann::json::object()}};
      if (phases.size() > 1) entry["phase"] = phase.name;
      for (size_t m = 0; m < bench_modes.size(); ++m) {
        entry["modes"][bench_modes[m].name] =
            mode_outcome_json(outcome, m, m == 0 ? std::string() : bench_modes[m].name, greedy, decode);
      }
      results["prompts"].push_back(std::move(entry));
    }
  }
  if (const Status written = write_results_json(results, args.out, "results.json"); !written.ok()) {
    return report_error(written.error());
  }
  const Expected<std::vector<ReportFile>> report = bench_report_files(results);
  if (!report.ok()) return report_error(report.error());
  if (const Status written = write_report_files(*report, args.out); !written.ok()) return report_error(written.error());

  for (const auto& [m, drafter] : learning_modes) {
    const std::filesystem::path folder = std::filesystem::path(args.out) / "adapters";
    std::error_code error;
    std::filesystem::create_directories(folder, error);
    std::string file = bench_modes[m].name;
    for (char& c : file) {
      if (c == ':' || c == '@' || c == '+') c = '_';
    }
    const Status saved = save_draft_adapter(*drafter->learning()->global_learner()->adapter(),
                                            folder / (file + ".safetensors"));
    if (!saved.ok()) return report_error(saved.error());
  }
  const std::vector<ModeSummary>& overall = overall_by_phase[phases.size() > 1 ? "learning" : "all"];
  if (phases.size() > 1) {
    const std::vector<ModeSummary>& before = overall_by_phase["heldout_before"];
    const std::vector<ModeSummary>& after = overall_by_phase["heldout_after"];
    fmt::print("held-back prompts ({} of {}), before and after learning on the rest\n\n", phases[0].prompts.size(),
               prompts->size());
    fmt::print("| mode | τ before | τ after | ratio | speed-up before | speed-up after |\n"
               "|---|---:|---:|---:|---:|---:|\n");
    for (size_t m = 1; m < bench_modes.size(); ++m) {
      const double tau_before = before[m].speculation.mean_acceptance_length();
      const double tau_after = after[m].speculation.mean_acceptance_length();
      fmt::print("| {} | {:.3f} | {:.3f} | {:.3f} | {:.2f} | {:.2f} |\n", bench_modes[m].name, tau_before, tau_after,
                 tau_before > 0 ? tau_after / tau_before : 0.0, before[m].speedup, after[m].speedup);
    }
    fmt::print("\nlearning part:\n");
  }
  fmt::print("{} prompts, {} new tokens a turn, {}{}, on {}\n\n",
             phases.size() > 1 ? phases[1].prompts.size() : prompts->size(), *max_tokens,
             greedy ? std::string("greedy")
                    : fmt::format("temperature {}, seed {}", sampling.temperature, sampling.seed),
             qttt ? ", qTTT " + qtt_spec(*qttt) : std::string(), model->backend);
  fmt::print("| mode | tokens/s | speed-up | τ | acceptance | equal to ar | differing after a near-tie |\n"
             "|---|---:|---:|---:|---:|---:|---:|\n");
  for (size_t m = 0; m < bench_modes.size(); ++m) {
    const ModeSummary& summary = overall[m];
    fmt::print("| {} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {} | {} |\n", bench_modes[m].name,
               summary.mean_tokens_per_second, summary.speedup, summary.speculation.mean_acceptance_length(),
               summary.speculation.acceptance_rate(),
               greedy ? fmt::format("{}/{}", summary.lossless_prompts, summary.prompts) : std::string("not checked"),
               greedy ? std::to_string(summary.near_tie_prompts) : std::string("—"));
  }
  if (!args.write_expect.empty()) {
    const nlohmann::json written = expectations_of(results["overall"], 0.05);
    if (const Status saved = write_file_atomically(args.write_expect, written.dump(2) + "\n"); !saved.ok()) {
      return report_error(saved.error());
    }
  }
  if (expectations) {
    const Expected<std::vector<ExpectationCheck>> checks = check_expectations(*expectations, results["overall"]);
    if (!checks.ok()) return report_error(make_error("--expect {}: {}", args.expect, checks.error().message));
    size_t outside = 0;
    for (const ExpectationCheck& check : *checks) {
      if (check.passed()) continue;
      ++outside;
      fmt::print(stderr, "outside the expectation: {} {}: {:.4f}, expected {:.4f} ± {:.4f}\n", check.mode,
                 check.quantity, check.actual, check.expected, check.allowed);
    }
    fmt::print("\nexpectations {}: {} checks, {}\n", args.expect, checks->size(),
               outside == 0 ? std::string("all within tolerance") : fmt::format("{} outside", outside));
    if (outside > 0) return 3;
  }
  return 0;
}

}  // namespace draftwise
