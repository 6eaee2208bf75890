#include "draft/dvi_learning.h"

#include <set>

#include "target/cpu_decoder.h"

namespace draftwise {

Expected<LearnScope> parse_learn_scope(std::string_view text) {
  if (text == "off") return LearnScope::off;
  if (text == "global") return LearnScope::global;
  if (text == "key") return LearnScope::key;
  if (text == "request") return LearnScope::request;
  return make_error("unknown learning scope \"{}\": use off, global, key or request", text);
}

std::string_view learn_scope_name(LearnScope scope) {
  switch (scope) {
    case LearnScope::off:
      return "off";
    case LearnScope::global:
      return "global";
    case LearnScope::key:
      return "key";
    case LearnScope::request:
      return "request";
  }
  return "off";
}

DraftLearning::DraftLearning(std::unique_ptr<DraftHeadTrainer> trainer, DraftAdapter initial,
                             LearnScope scope, const LearnerOptions& options)
    : trainer_(std::move(trainer)),
      initial_(std::make_shared<const DraftAdapter>(initial.with_new_version())),
      scope_(scope),
      options_(options) {
  if (scope_ == LearnScope::global || scope_ == LearnScope::request)
    global_ = make_learner(*initial_);
}

std::unique_ptr<OnlineLearner> DraftLearning::make_learner(DraftAdapter initial) const {
  auto learner = std::make_unique<OnlineLearner>(*trainer_, std::move(initial), options_);
  learner->set_enabled(enabled_);
  return learner;
}

void DraftLearning::begin_request(DraftRequestId request, std::string_view key) {
  OnlineLearner* learner = nullptr;
  switch (scope_) {
    case LearnScope::off:
      break;
    case LearnScope::global:
      learner = global_.get();
      break;
    case LearnScope::key: {
      auto it = by_key_.find(key);
      if (it == by_key_.end())
        it = by_key_.emplace(std::string(key), make_learner(*initial_)).first;
      learner = it->second.get();
      break;
    }
    case LearnScope::request: {
      std::unique_ptr<OnlineLearner>& own = by_request_[request];
      own = make_learner(*global_->adapter());
      learner = own.get();
      break;
    }
  }
  of_request_[request] = learner;
}

void DraftLearning::end_request(DraftRequestId request) {
  of_request_.erase(request);
  const auto it = by_request_.find(request);
  if (it == by_request_.end()) return;
  ended_.add(it->second->stats());
  by_request_.erase(it);
}

std::shared_ptr<const DraftAdapter> DraftLearning::adapter(DraftRequestId request) const {
  const auto it = of_request_.find(request);
  return it != of_request_.end() && it->second != nullptr ? it->second->adapter() : initial_;
}

OnlineLearner* DraftLearning::learner(DraftRequestId request) {
  const auto it = of_request_.find(request);
  return it != of_request_.end() ? it->second : nullptr;
}

const OnlineLearner* DraftLearning::key_learner(std::string_view key) const {
  const auto it = by_key_.find(key);
  return it != by_key_.end() ? it->second.get() : nullptr;
}

Status DraftLearning::between_steps(double step_seconds) {
  std::set<OnlineLearner*> serving;
  for (const auto& [request, learner] : of_request_) {
    if (learner != nullptr) serving.insert(learner);
  }
  for (OnlineLearner* learner : serving) learner->add_serving_time(step_seconds);
  if (global_ && scope_ == LearnScope::global) DW_TRY(global_->maybe_update());
  for (auto& [key, learner] : by_key_) DW_TRY(learner->maybe_update());
  for (auto& [request, learner] : by_request_) DW_TRY(learner->maybe_update());
  return {};
}

LearnerStats DraftLearning::stats() const {
  LearnerStats total = ended_;
  if (global_) total.add(global_->stats());
  for (const auto& [key, learner] : by_key_) total.add(learner->stats());
  for (const auto& [request, learner] : by_request_) total.add(learner->stats());
  return total;
}

void DraftLearning::set_enabled(bool enabled) {
  enabled_ = enabled;
  if (global_) global_->set_enabled(enabled);
  for (auto& [key, learner] : by_key_) learner->set_enabled(enabled);
  for (auto& [request, learner] : by_request_) learner->set_enabled(enabled);
}

Expected<std::unique_ptr<DraftLearning>> make_draft_learning(
    Decoder& target, LearnScope scope, const LearnerOptions& options,
    std::optional<DraftAdapter> loaded, std::unique_ptr<DraftHeadTrainer> trainer) {
  DW_TRY(validate_learner_options(options));
  const ModelConfig& config = target.config();
  if (trainer == nullptr) {
    auto* cpu = dynamic_cast<CpuDecoder*>(&target);
    if (cpu == nullptr) {
      return make_error("{} has no draft-head trainer for online learning", target.device_name());
    }
    trainer = std::make_unique<CpuDraftHeadTrainer>(cpu->lm_head(), config.hidden_size,
                                                    static_cast<float>(config.rms_norm_eps),
                                                    cpu->thread_pool());
  }
  DraftAdapter initial;
  if (loaded) {
    if (loaded->shape.hidden != config.hidden_size || loaded->shape.vocab != config.vocab_size) {
      return make_error(
          "the adapter is for hidden size {} and vocabulary {}, the model has {} and {}",
          loaded->shape.hidden, loaded->shape.vocab, config.hidden_size, config.vocab_size);
    }
    initial = std::move(*loaded);
  } else {
    DW_ASSIGN_OR_RETURN(const std::vector<float> gain, target.final_norm_weight());
    const DraftAdapterShape shape{config.hidden_size, config.vocab_size, options.rank,
                                  options.alpha, options.lens};
    DW_ASSIGN_OR_RETURN(initial, DraftAdapter::initial(shape, gain, options.seed));
  }
  return std::make_unique<DraftLearning>(std::move(trainer), std::move(initial), scope, options);
}

}  // namespace draftwise
