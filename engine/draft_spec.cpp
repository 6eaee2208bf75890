#include "engine/draft_spec.h"

#include <charconv>

namespace draftwise {

namespace {

std::optional<int> parse_int(std::string_view text) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::string token_label(const std::optional<int32_t>& id) { return id ? std::to_string(*id) : "none"; }

std::string_view kind_name(TokenKind kind) {
  switch (kind) {
    case TokenKind::normal: return "a normal token";
    case TokenKind::byte: return "a byte token";
    case TokenKind::control: return "a control token";
    case TokenKind::user_defined: return "a user-defined token";
    case TokenKind::unknown: return "the unknown token";
    case TokenKind::unused: return "an unused token";
  }
  return "a token of an unknown kind";
}

}  // namespace

Expected<DraftLength> parse_draft_length(std::string_view text) {
  if (text == "auto") return DraftLength::adaptive();
  const std::optional<int> k = parse_int(text);
  if (!k || *k < 1 || *k > DraftLength::kMaxDraftLength) {
    return make_error("draft length '{}': expected a number in [1, {}] or 'auto'", text,
                      DraftLength::kMaxDraftLength);
  }
  return DraftLength::fixed(*k);
}

Expected<DraftSpec> parse_draft_spec(std::string_view text, bool with_length) {
  DraftSpec spec;
  std::string_view body = text;
  if (with_length) {
    if (const size_t at = body.rfind('@'); at != std::string_view::npos) {
      DW_ASSIGN_OR_RETURN(spec.draft_length, parse_draft_length(body.substr(at + 1)));
      body = body.substr(0, at);
    }
  }
  for (const std::string_view suffix : {std::string_view("+learn"), std::string_view("+learn-kl")}) {
    if (body.size() > suffix.size() && body.ends_with(suffix)) {
      spec.learn = true;
      spec.kl_only = suffix == "+learn-kl";
      body = body.substr(0, body.size() - suffix.size());
    }
  }
  spec.name = std::string(body);
  const size_t colon = body.find(':');
  const std::string_view kind = body.substr(0, colon);
  const std::string_view argument = colon == std::string_view::npos ? std::string_view() : body.substr(colon + 1);
  if (kind == "ngram") {
    const std::optional<int> n = parse_int(argument);
    if (!n) return make_error("'{}': expected ngram:N with N a number", text);
    spec.kind = DraftSpec::Kind::ngram;
    spec.n = *n;
  } else if (kind == "self") {
    const std::optional<int> exit_layer = parse_int(argument);
    if (!exit_layer) return make_error("'{}': expected self:E with E the exit layer, a number", text);
    spec.kind = DraftSpec::Kind::self;
    spec.exit_layer = *exit_layer;
  } else if (kind == "model") {
    if (argument.empty()) return make_error("'{}': expected model:PATH", text);
    spec.kind = DraftSpec::Kind::model;
    spec.path = std::string(argument);
  } else {
    return make_error("'{}': unknown drafting kind '{}' (expected ngram:N, self:E or model:PATH)", text, kind);
  }
  if (spec.learn && spec.kind == DraftSpec::Kind::ngram) {
    return make_error("'{}': only self:E and model:PATH drafters learn online (+learn)", text);
  }
  return spec;
}

Status check_same_vocabulary(const Tokenizer& target, const Tokenizer& draft) {
  if (draft.vocab_size() != target.vocab_size()) {
    return make_error("the draft model's vocabulary has {} tokens, the target's {}", draft.vocab_size(),
                      target.vocab_size());
  }
  for (int32_t id = 0; id < target.vocab_size(); ++id) {
    if (draft.token(id) != target.token(id)) {
      return make_error("token {} is '{}' in the draft model's vocabulary and '{}' in the target's", id,
                        draft.token(id), target.token(id));
    }
    if (draft.kind(id) != target.kind(id)) {
      return make_error("token {} ('{}') is {} in the draft model's vocabulary and {} in the target's", id,
                        target.token(id), kind_name(draft.kind(id)), kind_name(target.kind(id)));
    }
  }
  if (draft.bos_id() != target.bos_id()) {
    return make_error("the draft model's BOS token is {}, the target's {}", token_label(draft.bos_id()),
                      token_label(target.bos_id()));
  }
  if (draft.eos_id() != target.eos_id()) {
    return make_error("the draft model's EOS token is {}, the target's {}", token_label(draft.eos_id()),
                      token_label(target.eos_id()));
  }
  return {};
}

}  // namespace draftwise
