// The online-learning flags that generate and bench share (DVI.md; docs/online-learning.md
// gives the defaults and how they were chosen), parsed into the learner's options; and the
// learner's counters as the commands report them.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "draft/drafter.h"
#include "draft/dvi_learning.h"
#include "tools/cli_args.h"

namespace draftwise {

struct LearnArgs {
  std::string scope = "off";
  std::string key;
  std::string adapter;
  std::string save_adapter;
  std::string head, rank, alpha, learning_rate, batch, interval, buffer, top_k, temperature;
  std::string cross_entropy_weight, policy_gradient_weight, policy_gradient_recent,
      distillation_floor, warmup, ramp, time_share;
  bool kl_only = false;
};

void add_learn_options(ArgParser& parser, LearnArgs& args);

struct LearningConfig {
  LearnScope scope = LearnScope::off;
  std::string key;  // the learning key of this command's requests
  LearnerOptions options;
  std::string adapter_path;  // load from here at start ("" : the untrained head)
  std::string save_path;     // save here at the end ("" : nowhere)
  // --learn-head as given; unset, each drafter's own default (LearningDrafter::lens_by_default).
  std::optional<bool> lens;
  // Whether it asks for anything: learning, or an adapter to load or save.
  bool requested() const {
    return scope != LearnScope::off || !adapter_path.empty() || !save_path.empty();
  }
};

// Errors name the flag.
Expected<LearningConfig> parse_learn_args(const LearnArgs& args);

// Attaches learning to a drafter with a draft head (self:E, model:PATH) as `config` asks
// (nothing when it asks for none); refuses learning for drafters without weights to learn.
Status attach_learning(Drafter& drafter, const LearningConfig& config);

// The adapter a run ends with (the global one, or the key's), saved to config.save_path.
Status save_learned_adapter(const Drafter& drafter, const LearningConfig& config);

// {"scope", "records", "updates", "skipped", "reverted", "seconds", "loss": {...}}
nlohmann::json learner_json(const DraftLearning& learning);

}  // namespace draftwise
