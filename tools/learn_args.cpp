#include "tools/learn_args.h"

#include "draft/learning_drafter.h"
#ifdef DRAFTWISE_HAVE_CUDA
#include "draft/dvi_loss_cuda.h"
#endif

namespace draftwise {

namespace {

Status set_integer(std::string_view flag, const std::string& text, int64_t& value) {
  if (text.empty()) return {};
  DW_ASSIGN_OR_RETURN(value, parse_integer_option(flag, text));
  return {};
}

Status set_number(std::string_view flag, const std::string& text, float& value) {
  if (text.empty()) return {};
  DW_ASSIGN_OR_RETURN(const double parsed, parse_number_option(flag, text));
  value = static_cast<float>(parsed);
  return {};
}

}  // namespace

void add_learn_options(ArgParser& parser, LearnArgs& args) {
  const LearnerOptions d;
  parser.add_option("learn", &args.scope, "off|global|key|request",
                    "online learning of the self:E draft head (DVI): whose traffic one adapter "
                    "learns from (default off)");
  parser.add_option("learn-key", &args.key, "KEY", "with --learn key: this run's learning key");
  parser.add_option("adapter", &args.adapter, "PATH",
                    "start from this draft-head adapter (safetensors)");
  parser.add_option("save-adapter", &args.save_adapter, "PATH",
                    "write the adapter the run ends with (safetensors)");
  parser.add_option("learn-head", &args.head, "lora|lora+lens",
                    "the draft head's trainable part: norm gain and low-rank adapter, and a lens on "
                    "the hidden state (default: lora+lens for self:E, lora for model:PATH)");
  parser.add_option("learn-rank", &args.rank, "R",
                    fmt::format("adapter rank (default {})", d.rank));
  parser.add_option("learn-alpha", &args.alpha, "A",
                    fmt::format("adapter scale α; γ = α / rank (default {})", d.alpha));
  parser.add_option("learn-lr", &args.learning_rate, "LR",
                    fmt::format("AdamW learning rate (default {})", d.learning_rate));
  parser.add_option("learn-batch", &args.batch, "N",
                    fmt::format("records per update (default {})", d.batch_size));
  parser.add_option("learn-interval", &args.interval, "N",
                    fmt::format("verifications between updates (default {})", d.update_interval));
  parser.add_option("learn-buffer", &args.buffer, "N",
                    fmt::format("records kept (default {})", d.buffer_size));
  parser.add_option("learn-top-k", &args.top_k, "K",
                    fmt::format("verifier logits kept per record (default {})", d.top_k));
  parser.add_option("learn-temperature", &args.temperature, "T",
                    fmt::format("distillation temperature (default {})", d.temperature));
  parser.add_option("learn-ce-weight", &args.cross_entropy_weight, "W",
                    fmt::format("weight of the reward-masked cross-entropy (default {})",
                                d.cross_entropy_weight));
  parser.add_option(
      "learn-pg-weight", &args.policy_gradient_weight, "W",
      fmt::format("policy-gradient weight after the ramp (default {})", d.policy_gradient_weight));
  parser.add_option("learn-pg-recent", &args.policy_gradient_recent, "N",
                    fmt::format("the policy gradient over the N newest records only; 0: over "
                                "every record kept (default {})",
                                d.policy_gradient_recent));
  parser.add_option(
      "learn-kd-floor", &args.distillation_floor, "W",
      fmt::format("distillation weight after the ramp (default {})", d.distillation_floor));
  parser.add_option("learn-warmup", &args.warmup, "N",
                    fmt::format("updates of distillation only (default {})", d.warmup_updates));
  parser.add_option(
      "learn-ramp", &args.ramp, "N",
      fmt::format("updates over which KL hands over to RL (default {})", d.ramp_updates));
  parser.add_option(
      "learn-time-share", &args.time_share, "F",
      fmt::format("most share of wall time spent in updates (default {})", d.time_share));
  parser.add_flag("learn-kl-only", &args.kl_only, "distillation only, no policy-gradient term");
}

Expected<LearningConfig> parse_learn_args(const LearnArgs& args) {
  LearningConfig config;
  Expected<LearnScope> scope = parse_learn_scope(args.scope);
  if (!scope.ok()) return make_error("--learn: {}", scope.error().message);
  config.scope = *scope;
  config.key = args.key;
  if (!args.key.empty() && config.scope != LearnScope::key)
    return make_error("--learn-key needs --learn key");
  config.adapter_path = args.adapter;
  config.save_path = args.save_adapter;
  LearnerOptions& o = config.options;
  if (args.head == "lora" || args.head == "lora+lens") {
    config.lens = args.head == "lora+lens";
  } else if (!args.head.empty()) {
    return make_error("--learn-head must be lora or lora+lens, got \"{}\"", args.head);
  }
  DW_TRY(set_integer("--learn-rank", args.rank, o.rank));
  DW_TRY(set_number("--learn-alpha", args.alpha, o.alpha));
  DW_TRY(set_number("--learn-lr", args.learning_rate, o.learning_rate));
  DW_TRY(set_integer("--learn-batch", args.batch, o.batch_size));
  DW_TRY(set_integer("--learn-interval", args.interval, o.update_interval));
  DW_TRY(set_integer("--learn-buffer", args.buffer, o.buffer_size));
  DW_TRY(set_integer("--learn-top-k", args.top_k, o.top_k));
  DW_TRY(set_number("--learn-temperature", args.temperature, o.temperature));
  DW_TRY(set_number("--learn-ce-weight", args.cross_entropy_weight, o.cross_entropy_weight));
  DW_TRY(set_number("--learn-pg-weight", args.policy_gradient_weight, o.policy_gradient_weight));
  DW_TRY(set_integer("--learn-pg-recent", args.policy_gradient_recent, o.policy_gradient_recent));
  DW_TRY(set_number("--learn-kd-floor", args.distillation_floor, o.distillation_floor));
  DW_TRY(set_integer("--learn-warmup", args.warmup, o.warmup_updates));
  DW_TRY(set_integer("--learn-ramp", args.ramp, o.ramp_updates));
  DW_TRY(set_number("--learn-time-share", args.time_share, o.time_share));
  o.policy_gradient = !args.kl_only;
  DW_TRY(validate_learner_options(o));
  return config;
}

Status attach_learning(Drafter& drafter, const LearningConfig& config) {
  if (!config.requested()) return {};
  auto* learning_drafter = dynamic_cast<LearningDrafter*>(&drafter);
  if (learning_drafter == nullptr) {
    return make_error(
        "{}: online learning and adapters are for the self:E and model:PATH drafters (n-gram "
        "drafting has no weights)",
        drafter.name());
  }
  Decoder& head = learning_drafter->head_decoder();
  std::optional<DraftAdapter> loaded;
  if (!config.adapter_path.empty()) {
    DW_ASSIGN_OR_RETURN(loaded, load_draft_adapter(config.adapter_path, head.config().hidden_size,
                                                   head.config().vocab_size));
  }
  std::unique_ptr<DraftHeadTrainer> trainer;
#ifdef DRAFTWISE_HAVE_CUDA
  if (const auto* gpu = dynamic_cast<const CudaDecoder*>(&head); gpu != nullptr) {
    DW_ASSIGN_OR_RETURN(trainer, CudaDraftHeadTrainer::create(*gpu));
  }
#endif
  LearnerOptions options = config.options;
  options.lens = config.lens.value_or(learning_drafter->lens_by_default());
  DW_ASSIGN_OR_RETURN(std::unique_ptr<DraftLearning> learning,
                      make_draft_learning(head, config.scope, options, std::move(loaded), std::move(trainer)));
  learning_drafter->set_learning(std::move(learning));
  return {};
}

Status save_learned_adapter(const Drafter& drafter, const LearningConfig& config) {
  if (config.save_path.empty()) return {};
  const auto* learning_drafter = dynamic_cast<const LearningDrafter*>(&drafter);
  const DraftLearning* learning = learning_drafter != nullptr ? learning_drafter->learning() : nullptr;
  if (learning == nullptr) return make_error("--save-adapter: {} has no adapter", drafter.name());
  const OnlineLearner* learner = config.scope == LearnScope::key ? learning->key_learner(config.key)
                                                                 : learning->global_learner();
  const std::shared_ptr<const DraftAdapter> adapter =
      learner != nullptr ? learner->adapter() : learning->initial_adapter();
  if (Status saved = save_draft_adapter(*adapter, config.save_path); !saved.ok()) {
    return make_error("--save-adapter: {}", saved.error().message);
  }
  return {};
}

nlohmann::json learner_json(const DraftLearning& learning) {
  const LearnerStats stats = learning.stats();
  return {{"scope", learn_scope_name(learning.scope())},
          {"records", stats.records},
          {"updates", stats.updates},
          {"skipped", stats.skipped},
          {"reverted", stats.reverted},
          {"seconds", stats.seconds},
          {"last_loss",
           {{"distillation", stats.last_loss.distillation},
            {"cross_entropy", stats.last_loss.cross_entropy},
            {"policy_gradient", stats.last_loss.policy_gradient},
            {"total", stats.last_loss.total}}}};
}

}  // namespace draftwise
