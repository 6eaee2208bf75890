// Drafting modes as users name them (`generate --draft`, `bench --modes`): "ngram:N",
// "self:E", "model:PATH", optionally followed by "+learn" (online learning, KL → RL) or
// "+learn-kl" (distillation only), and in bench modes by "@K", the draft length.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "engine/speculation.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/status.h"

namespace draftwise {

struct DraftSpec {
  enum class Kind { ngram, self, model };
  Kind kind = Kind::ngram;
  int n = 0;           // ngram:N
  int exit_layer = 0;  // self:E (checked against the model's layers when the drafter is built)
  std::string path;    // model:PATH
  std::optional<DraftLength> draft_length;  // "@K" / "@auto"
  bool learn = false;    // "+learn" or "+learn-kl"
  bool kl_only = false;  // "+learn-kl"
  std::string name;    // the spec without the learning and length suffixes
};

// `with_length`: whether a trailing "@K" or "@auto" is the draft length (bench modes);
// otherwise an "@" is part of the spec (a model path may hold one).
Expected<DraftSpec> parse_draft_spec(std::string_view text, bool with_length);
// "K" in [1, DraftLength::kMaxDraftLength], or "auto".
Expected<DraftLength> parse_draft_length(std::string_view text);

// A draft model must draft in the target's vocabulary: the same tokens by id, of the same
// kinds, and the same BOS/EOS. The error names the first difference.
Status check_same_vocabulary(const Tokenizer& target, const Tokenizer& draft);

}  // namespace draftwise
