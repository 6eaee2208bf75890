// The learners of one learning drafter, by scope (DVI.md, Safety rails):
//   off      no learning; drafting uses the initial (e.g. loaded) adapter, frozen
//   global   one learner learns from every request
//   key      one learner per learning key (an API key), each from the initial adapter
//   request  each request learns alone, from the global adapter as it is when the request
//            begins, and its learner is dropped at its end; the global adapter is untouched
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "draft/drafter.h"
#include "draft/dvi_learner.h"

namespace draftwise {

enum class LearnScope { off, global, key, request };
Expected<LearnScope> parse_learn_scope(std::string_view text);  // "off", "global", "key", "request"
std::string_view learn_scope_name(LearnScope scope);

class DraftLearning {
 public:
  DraftLearning(std::unique_ptr<DraftHeadTrainer> trainer, DraftAdapter initial, LearnScope scope,
                const LearnerOptions& options);

  LearnScope scope() const { return scope_; }
  const LearnerOptions& options() const { return options_; }
  bool learns() const { return scope_ != LearnScope::off; }

  // A request begins and ends; begin picks (or makes) its learner.
  void begin_request(DraftRequestId request, std::string_view key);
  void end_request(DraftRequestId request);
  // The adapter the request drafts with now.
  std::shared_ptr<const DraftAdapter> adapter(DraftRequestId request) const;
  // The adapter learning starts from (the one drafting uses when the scope is off).
  std::shared_ptr<const DraftAdapter> initial_adapter() const { return initial_; }
  // The request's learner; null when the scope is off.
  OnlineLearner* learner(DraftRequestId request);
  // The global learner (scopes global and request), or the learner of `key`; null when none.
  const OnlineLearner* global_learner() const { return global_.get(); }
  const OnlineLearner* key_learner(std::string_view key) const;

  // After an engine step of `step_seconds` (wall time): the learners of the requests in
  // progress count it as serving time, and every learner whose update is due takes it.
  Status between_steps(double step_seconds);
  // Counters of every learner, request learners that ended included.
  LearnerStats stats() const;
  // Learning on or off for every learner, now and for those made later.
  void set_enabled(bool enabled);
  bool enabled() const { return enabled_; }

 private:
  std::unique_ptr<OnlineLearner> make_learner(DraftAdapter initial) const;

  std::unique_ptr<DraftHeadTrainer> trainer_;
  std::shared_ptr<const DraftAdapter> initial_;
  LearnScope scope_;
  LearnerOptions options_;
  bool enabled_ = true;
  std::unique_ptr<OnlineLearner> global_;
  std::map<std::string, std::unique_ptr<OnlineLearner>, std::less<>> by_key_;
  std::unordered_map<DraftRequestId, std::unique_ptr<OnlineLearner>> by_request_;
  std::unordered_map<DraftRequestId, OnlineLearner*> of_request_;
  LearnerStats ended_;  // request learners that are gone
};

// Learning for an early-exit drafter on `target`: `trainer` (null: the CPU trainer, for a
// CPU decoder) and the initial adapter (`loaded`, or the untrained one: the final norm's
// gain, A random, B zero).
Expected<std::unique_ptr<DraftLearning>> make_draft_learning(
    Decoder& target, LearnScope scope, const LearnerOptions& options,
    std::optional<DraftAdapter> loaded, std::unique_ptr<DraftHeadTrainer> trainer = nullptr);

}  // namespace draftwise
