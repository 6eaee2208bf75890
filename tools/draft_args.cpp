#include "tools/draft_args.h"

namespace draftwise {

void add_draft_options(ArgParser& parser, DraftArgs& args) {
  parser.add_option("draft", &args.draft, "ngram:N|model:PATH|self:E",
                    "speculative decoding: the drafter that proposes tokens for the model to verify");
  parser.add_option("draft-len", &args.draft_len, "K|auto",
                    "with --draft: tokens proposed per step, at most 16, or auto (default 4)");
  add_learn_options(parser, args.learn);
}

Expected<DraftSetup> parse_draft_args(const DraftArgs& args, const ArgParser& parser) {
  DraftSetup setup;
  if (!args.draft.empty()) {
    Expected<DraftSpec> spec = parse_draft_spec(args.draft, /*with_length=*/false);
    if (!spec.ok()) return make_error("--draft {}", spec.error().message);
    setup.spec = std::move(*spec);
    const Expected<DraftLength> length = parse_draft_length(args.draft_len);
    if (!length.ok()) return make_error("--draft-len: {}", length.error().message);
    setup.length = *length;
  } else if (parser.given("draft-len")) {
    return make_error("--draft-len needs --draft");
  }
  DW_ASSIGN_OR_RETURN(setup.learning, parse_learn_args(args.learn));
  if (setup.spec && setup.spec->learn) {
    if (parser.given("learn")) return make_error("give either --draft {} or --learn", args.draft);
    setup.learning.scope = LearnScope::global;
    setup.learning.options.policy_gradient = !setup.spec->kl_only;
  }
  if (setup.learning.requested() && !setup.spec) {
    return make_error("--learn and --adapter need --draft self:E or model:PATH");
  }
  return setup;
}

Expected<std::unique_ptr<Drafter>> make_setup_drafter(const DraftSetup& setup, LoadedModel& model,
                                                      const BackendOptions& backend) {
  if (!setup.spec) return std::unique_ptr<Drafter>();
  Expected<std::unique_ptr<Drafter>> made = make_drafter(*setup.spec, model, backend);
  if (!made.ok()) return make_error("--draft {}", made.error().message);
  DW_TRY(attach_learning(**made, setup.learning));
  return std::move(*made);
}

}  // namespace draftwise
