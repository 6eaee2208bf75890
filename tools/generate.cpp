// draftwise generate: one prompt from the command line, streamed as it is produced.
#include <cstdio>
#include <memory>
#include <optional>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "draft/learning_drafter.h"
#include "engine/chat_template.h"
#include "engine/draft_spec.h"
#include "engine/generation.h"
#include "kernels/random.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#include "tools/draft_args.h"
#include "tools/learn_args.h"
#include "tools/model_loader.h"
#include "tools/qttt_args.h"
#include "tools/speculation_json.h"

namespace draftwise {

namespace {

struct GenerateArgs {
  std::string model;
  std::string random_weights;
  std::string prompt;
  bool prompt_given = false;
  std::string prompt_ids;
  bool prompt_ids_given = false;
  std::string random_prompt;
  bool random_prompt_given = false;
  bool chat = false;
  std::string system;
  std::string max_tokens = "256";
  std::string temperature = "1.0";
  std::string top_k = "0";
  std::string top_p = "1.0";
  std::string min_p = "0.0";
  std::string seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool json = false;
  std::string qttt = "off";
  BackendArgs backend;
  DraftArgs drafting;
};

Expected<LoadedModel> load_model(const GenerateArgs& args, const BackendOptions& options) {
  if (args.model.empty() == args.random_weights.empty()) {
    return make_error("give exactly one of --model PATH and --random-weights CONFIG.json");
  }
  return args.random_weights.empty() ? load_model_file(args.model, options)
                                     : load_random_model(args.random_weights, options);
}

// The prompt's token ids, and the extra stop tokens its chat format ends turns with.
Expected<std::vector<int32_t>> prompt_tokens(const GenerateArgs& args, const LoadedModel& model,
                                             uint64_t seed, std::vector<int32_t>& stop_tokens) {
  const int sources = int{args.prompt_given} + int{args.prompt_ids_given} + int{args.random_prompt_given};
  if (sources != 1) return make_error("give exactly one of --prompt, --prompt-ids and --random-prompt");
  if (args.chat && !args.prompt_given) return make_error("--chat needs --prompt");
  if (!args.system.empty() && !args.chat) return make_error("--system needs --chat");
  if (args.prompt_ids_given) {
    DW_ASSIGN_OR_RETURN(std::vector<int32_t> ids, parse_id_list_option("--prompt-ids", args.prompt_ids));
    return ids;
  }
  const int64_t vocab = model.decoder->config().vocab_size;
  if (args.random_prompt_given) {
    DW_ASSIGN_OR_RETURN(const int64_t length, parse_integer_option("--random-prompt", args.random_prompt));
    if (length <= 0) return make_error("--random-prompt must be positive, got {}", length);
    if (length >= model.decoder->context_length()) {
      return make_error("--random-prompt {} does not fit the context of {} tokens", length,
                        model.decoder->context_length());
    }
    Rng rng(seed ^ 0x5EED);
    std::vector<int32_t> ids(static_cast<size_t>(length));
    for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
    return ids;
  }
  if (!model.tokenizer) {
    return make_error("this model has no tokenizer files; give the prompt as --prompt-ids, or a tokenizer with --tokenizer PATH");
  }
  if (args.prompt.empty()) return make_error("the prompt is empty");
  const Tokenizer& tokenizer = *model.tokenizer;
  if (!args.chat) return tokenizer.encode(args.prompt);
  if (!tokenizer.chat_template()) {
    return make_error("the model has no chat template; drop --chat and format the prompt yourself");
  }
  DW_ASSIGN_OR_RETURN(const ChatTemplate chat, recognize_chat_template(tokenizer));
  std::vector<ChatMessage> messages;
  if (!args.system.empty()) messages.push_back({"system", args.system});
  messages.push_back({"user", args.prompt});
  DW_ASSIGN_OR_RETURN(const std::string text, chat.render(messages, /*add_generation_prompt=*/true));
  for (const char* end_of_turn : {"<|im_end|>", "<|eot_id|>"}) {
    if (const std::optional<int32_t> id = tokenizer.find(end_of_turn)) stop_tokens.push_back(*id);
  }
  return tokenizer.encode(text, EncodeOptions{.add_special = false, .parse_special = true});
}

Expected<GenerationOptions> generation_options(const GenerateArgs& args, uint64_t seed) {
  GenerationOptions options;
  DW_ASSIGN_OR_RETURN(options.max_tokens, parse_integer_option("--max-tokens", args.max_tokens));
  if (options.max_tokens <= 0) return make_error("--max-tokens must be positive, got {}", options.max_tokens);
  DW_ASSIGN_OR_RETURN(options.sampling.temperature, parse_number_option("--temperature", args.temperature));
  DW_ASSIGN_OR_RETURN(options.sampling.top_k, parse_integer_option("--top-k", args.top_k));
  DW_ASSIGN_OR_RETURN(options.sampling.top_p, parse_number_option("--top-p", args.top_p));
  DW_ASSIGN_OR_RETURN(options.sampling.min_p, parse_number_option("--min-p", args.min_p));
  options.sampling.seed = seed;
  if (const Status valid = validate_sampling_params(options.sampling); !valid.ok()) {
    return make_error("--{}", valid.error().message);
  }
  options.stop = args.stop;
  DW_ASSIGN_OR_RETURN(options.qttt, parse_qttt_option(args.qttt));
  return options;
}

int report_error(const Error& error) {
  print_error("draftwise generate: " + error.message);
  return 1;
}

}  // namespace

int run_generate(const std::vector<std::string>& cli) {
  GenerateArgs args;
  ArgParser parser("generate",
                   "Completes one prompt with a model (CPU reference or CUDA), streaming "
                   "the text, then reports token counts and speed.");
  parser.add_option("model", &args.model, "PATH", "GGUF file or Hugging Face model folder");
  parser.add_option("random-weights", &args.random_weights, "CONFIG.json",
                    "instead of --model: seeded random weights in this config's shape");
  parser.add_option("prompt", &args.prompt, "TEXT", "the prompt text");
  parser.add_option("prompt-ids", &args.prompt_ids, "1,2,3", "the prompt as token ids (no chat template)");
  parser.add_option("random-prompt", &args.random_prompt, "N", "a prompt of N random token ids");
  parser.add_flag("chat", &args.chat, "format --prompt as a user message with the model's chat template");
  parser.add_option("system", &args.system, "TEXT", "with --chat: a system message");
  parser.add_option("max-tokens", &args.max_tokens, "N", "most tokens to generate (default 256)");
  parser.add_option("temperature", &args.temperature, "T", "0 is greedy (default 1.0)");
  parser.add_option("top-k", &args.top_k, "K", "keep the K most likely tokens; 0 keeps all (default 0)");
  parser.add_option("top-p", &args.top_p, "P", "nucleus sampling mass in (0, 1] (default 1.0)");
  parser.add_option("min-p", &args.min_p, "P", "drop tokens below P × the top probability (default 0)");
  parser.add_option("seed", &args.seed, "S", "sampling seed (default: random, reported with --json)");
  parser.add_list_option("stop", &args.stop, "TEXT", "end the completion before this text");
  parser.add_flag("ignore-eos", &args.ignore_eos, "keep generating past end-of-sequence tokens");
  parser.add_flag("json", &args.json, "print one JSON object at the end instead of streaming");
  add_qttt_option(parser, args.qttt, "the prompt");
  add_backend_options(parser, args.backend);
  add_draft_options(parser, args.drafting);
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  args.prompt_given = parser.given("prompt");
  args.prompt_ids_given = parser.given("prompt-ids");
  args.random_prompt_given = parser.given("random-prompt");

  uint64_t seed = std::random_device{}();
  if (!args.seed.empty()) {
    const Expected<int64_t> parsed = parse_integer_option("--seed", args.seed);
    if (!parsed.ok()) return report_error(parsed.error());
    if (*parsed < 0) return report_error(make_error("--seed must be ≥ 0, got {}", *parsed));
    seed = static_cast<uint64_t>(*parsed);
  }
  Expected<GenerationOptions> options = generation_options(args, seed);
  if (!options.ok()) return report_error(options.error());
  const Expected<BackendOptions> backend_options =
      parse_backend_options(args.backend);
  if (!backend_options.ok()) return report_error(backend_options.error());
  const BackendOptions& backend = *backend_options;
  Expected<DraftSetup> setup = parse_draft_args(args.drafting, parser);
  if (!setup.ok()) return report_error(setup.error());
  options->draft_length = setup->length;
  const LearningConfig& learning = setup->learning;
  options->learning_key = learning.key;

  Expected<LoadedModel> model = load_model(args, backend);
  if (!model.ok()) return report_error(model.error());
  if (Status checked = check_qttt_option(options->qttt, model->decoder->config()); !checked.ok()) {
    return report_error(checked.error());
  }
  Expected<std::unique_ptr<Drafter>> made = make_setup_drafter(*setup, *model, backend);
  if (!made.ok()) return report_error(made.error());
  std::unique_ptr<Drafter> drafter = std::move(*made);
  options->drafter = drafter.get();
  std::vector<int32_t> stop_tokens;
  const Expected<std::vector<int32_t>> prompt = prompt_tokens(args, *model, seed, stop_tokens);
  if (!prompt.ok()) return report_error(prompt.error());
  if (!args.ignore_eos) {
    // Configs may list ids past the embedding rows (never generated): those are skipped.
    for (const int64_t id : model->decoder->config().eos_token_ids) {
      if (id >= 0 && id < model->decoder->config().vocab_size) stop_tokens.push_back(static_cast<int32_t>(id));
    }
    if (model->tokenizer && model->tokenizer->eos_id()) stop_tokens.push_back(*model->tokenizer->eos_id());
    options->stop_token_ids = stop_tokens;
  }

  const Tokenizer* tokenizer = model->tokenizer ? &*model->tokenizer : nullptr;
  bool first_output = true;
  const OutputCallback stream = [&](const OutputEvent& event) {
    if (tokenizer != nullptr) {
      fmt::print("{}", event.text);
    } else if (event.token >= 0) {
      fmt::print("{}{}", first_output ? "" : " ", event.token);
      first_output = false;
    }
    std::fflush(stdout);
  };
  const Expected<GenerationResult> result =
      generate(*model->decoder, tokenizer, *prompt, *options, args.json ? OutputCallback() : stream);
  if (!result.ok()) return report_error(result.error());
  if (drafter) {
    if (Status saved = save_learned_adapter(*drafter, learning); !saved.ok()) return report_error(saved.error());
  }
  const auto* learning_drafter = dynamic_cast<const LearningDrafter*>(drafter.get());
  const DraftLearning* learner = learning_drafter != nullptr ? learning_drafter->learning() : nullptr;

  const GenerationStats& stats = result->stats;
  if (args.json) {
    nlohmann::json report = {
        {"text", tokenizer != nullptr ? nlohmann::json(result->text) : nlohmann::json(nullptr)},
        {"token_ids", result->token_ids},
        {"finish_reason", finish_reason_name(result->finish_reason)},
        {"device", model->decoder->device_name()},
        {"seed", seed},
        {"stats",
         {{"prompt_tokens", stats.prompt_tokens},
          {"completion_tokens", stats.completion_tokens},
          {"prefill_tokens_per_second", stats.prefill_tokens_per_second()},
          {"decode_tokens_per_second", stats.decode_tokens_per_second()},
          {"speculation", speculation_json(stats.speculation, drafter ? drafter->name() : std::string())}}}};
    if (learner != nullptr) report["stats"]["learner"] = learner_json(*learner);
    if (stats.qttt) report["stats"]["qttt"] = qttt_json(*stats.qttt);
    fmt::print("{}\n", report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  fmt::print("\n");
  std::fflush(stdout);
  const std::string drafting =
      drafter ? fmt::format("; {}: τ {:.2f}, acceptance {:.2f}, {:.2f} tokens per target step", drafter->name(),
                            stats.speculation.mean_acceptance_length(), stats.speculation.acceptance_rate(),
                            stats.speculation.tokens_per_target_step())
              : std::string();
  const LearnerStats learned = learner != nullptr ? learner->stats() : LearnerStats{};
  const std::string learning_line =
      learner != nullptr && learner->learns()
          ? fmt::format("; learner: {} updates ({} skipped, {} reverted) in {:.2f} s", learned.updates,
                        learned.skipped, learned.reverted, learned.seconds)
          : std::string();
  const std::string adaptation = stats.qttt ? "; " + qttt_summary(*stats.qttt) : std::string();
  fmt::print(stderr,
             "[{} prompt tokens, {} completion tokens, finish: {}; prefill {:.1f} tokens/s, "
             "decode {:.1f} tokens/s on {}{}{}{}]\n",
             stats.prompt_tokens, stats.completion_tokens, finish_reason_name(result->finish_reason),
             stats.prefill_tokens_per_second(), stats.decode_tokens_per_second(), model->backend, drafting,
             learning_line, adaptation);
  return 0;
}

}  // namespace draftwise
