// The drafting flags that generate and batch share: --draft, --draft-len and the learner's
// flags (tools/learn_args.h), parsed and checked together, and the drafter they ask for.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "draft/drafter.h"
#include "engine/draft_spec.h"
#include "tools/cli_args.h"
#include "tools/learn_args.h"
#include "tools/model_loader.h"

namespace draftwise {

struct DraftArgs {
  std::string draft;
  std::string draft_len = "4";
  LearnArgs learn;
};

void add_draft_options(ArgParser& parser, DraftArgs& args);

struct DraftSetup {
  std::optional<DraftSpec> spec;  // none: no drafting
  DraftLength length = DraftLength::fixed(4);
  LearningConfig learning;
};

// Errors name the flag (a draft length or learning flags without --draft, both --learn and a
// +learn drafter).
Expected<DraftSetup> parse_draft_args(const DraftArgs& args, const ArgParser& parser);

// The drafter of `setup` for `model` with its learning attached; null without --draft.
Expected<std::unique_ptr<Drafter>> make_setup_drafter(const DraftSetup& setup, LoadedModel& model,
                                                      const BackendOptions& backend);

}  // namespace draftwise
