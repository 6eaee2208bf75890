// Tokenizer from GGUF metadata (llama.cpp's tokenizer.ggml.* keys).
#include <cmath>

#include "engine/tokenizer/tokenizer_loader.h"
#include "target/gguf_reader.h"

namespace draftwise {
namespace {

// The string array at `key`; nullptr when absent and not required.
Expected<const std::vector<std::string>*> strings_at(const GgufFile& gguf, const std::string& key,
                                                     bool required) {
  const GgufValue* value = gguf.find(key);
  if (value == nullptr) {
    if (required) return make_error("{}: missing metadata '{}'", gguf.name(), key);
    return static_cast<const std::vector<std::string>*>(nullptr);
  }
  if (value->as_strings() == nullptr) {
    return make_error("{}: metadata '{}' must be an array of strings, got {}", gguf.name(), key,
                      value->to_display(2));
  }
  return value->as_strings();
}

// The numeric array at `key`; nullptr when absent and not required.
Expected<const GgufNumbers*> numbers_at(const GgufFile& gguf, const std::string& key,
                                        bool required) {
  const GgufValue* value = gguf.find(key);
  if (value == nullptr) {
    if (required) return make_error("{}: missing metadata '{}'", gguf.name(), key);
    return static_cast<const GgufNumbers*>(nullptr);
  }
  const GgufNumbers* numbers = value->as_numbers();
  if (numbers == nullptr || numbers->element_type() == gguf::ValueType::boolean) {
    return make_error("{}: metadata '{}' must be an array of numbers, got {}", gguf.name(), key,
                      value->to_display(2));
  }
  return numbers;
}

TokenKind kind_from_gguf(int64_t type) {
  switch (static_cast<gguf::TokenType>(type)) {
    case gguf::TokenType::unknown:
      return TokenKind::unknown;
    case gguf::TokenType::control:
      return TokenKind::control;
    case gguf::TokenType::user_defined:
      return TokenKind::user_defined;
    case gguf::TokenType::unused:
      return TokenKind::unused;
    case gguf::TokenType::byte:
      return TokenKind::byte;
    default:
      return TokenKind::normal;
  }
}

Expected<std::optional<int32_t>> token_id(const GgufFile& gguf, const std::string& key) {
  DW_ASSIGN_OR_RETURN(std::optional<int64_t> id, gguf.read_int(key));
  if (id && (*id < 0 || *id > INT32_MAX)) {
    return make_error("{}: metadata '{}' must be a token id, got {}", gguf.name(), key, *id);
  }
  return id ? std::optional<int32_t>(static_cast<int32_t>(*id)) : std::nullopt;
}

Expected<bool> flag(const GgufFile& gguf, const std::string& key, bool fallback) {
  DW_ASSIGN_OR_RETURN(std::optional<bool> value, gguf.read_bool(key));
  return value.value_or(fallback);
}

}  // namespace

Expected<Tokenizer> tokenizer_from_gguf(const GgufFile& gguf) {
  const std::string& name = gguf.name();
  DW_ASSIGN_OR_RETURN(std::optional<std::string> model, gguf.read_string("tokenizer.ggml.model"));
  if (!model) return make_error("{}: the file has no tokenizer", name);
  TokenizerDefinition definition;
  if (*model == "gpt2") {
    definition.model = TokenizerModel::byte_level_bpe;
  } else if (*model == "llama") {
    definition.model = TokenizerModel::sentencepiece_bpe;
  } else {
    return make_error("{}: tokenizer model '{}' is not supported (gpt2, llama)", name, *model);
  }
  const bool sentencepiece = definition.model == TokenizerModel::sentencepiece_bpe;

  DW_ASSIGN_OR_RETURN(const std::vector<std::string>* tokens,
                      strings_at(gguf, "tokenizer.ggml.tokens", true));
  DW_ASSIGN_OR_RETURN(const GgufNumbers* types,
                      numbers_at(gguf, "tokenizer.ggml.token_type", false));
  DW_ASSIGN_OR_RETURN(const GgufNumbers* scores,
                      numbers_at(gguf, "tokenizer.ggml.scores", sentencepiece));
  DW_ASSIGN_OR_RETURN(const std::vector<std::string>* merges,
                      strings_at(gguf, "tokenizer.ggml.merges", !sentencepiece));
  const size_t count = tokens->size();
  for (const auto& [key, array] : {std::pair{"token_type", types}, {"scores", scores}}) {
    if (array != nullptr && array->size() != count) {
      return make_error("{}: tokenizer.ggml.{} has {} entries for {} tokens", name, key,
                        array->size(), count);
    }
  }
  definition.tokens = *tokens;
  definition.kinds.reserve(count);
  for (size_t id = 0; id < count; ++id) {
    const int64_t type = types != nullptr ? types->int_at(id).value_or(1) : 1;
    definition.kinds.push_back(kind_from_gguf(type));
  }
  if (scores != nullptr && sentencepiece) {
    definition.scores.reserve(count);
    for (size_t id = 0; id < count; ++id) {
      const std::optional<double> score = scores->float_at(id);
      const double value = score ? *score : static_cast<double>(scores->int_at(id).value_or(0));
      if (!std::isfinite(value)) {
        return make_error("{}: tokenizer.ggml.scores holds a non-finite score", name);
      }
      definition.scores.push_back(static_cast<float>(value));
    }
  }
  if (merges != nullptr) {
    definition.merges.reserve(merges->size());
    for (const std::string& text : *merges) {
      const size_t space = text.find(' ', 1);
      if (space == std::string::npos) {
        return make_error("{}: merge '{}' is not two tokens separated by a space", name, text);
      }
      definition.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    }
  }

  if (!sentencepiece) {
    DW_ASSIGN_OR_RETURN(std::optional<std::string> pre, gguf.read_string("tokenizer.ggml.pre"));
    const std::string pre_name = pre.value_or("default");
    if (pre_name == "default" || pre_name == "gpt2") {
      definition.pre_tokenizer = PreTokenizerKind::gpt2;
    } else if (pre_name == "llama-bpe" || pre_name == "llama3") {
      definition.pre_tokenizer = PreTokenizerKind::llama3;
      definition.ignore_merges = true;
    } else if (pre_name == "qwen2") {
      definition.pre_tokenizer = PreTokenizerKind::qwen2;
      definition.nfc = true;
    } else if (pre_name == "smollm") {
      definition.pre_tokenizer = PreTokenizerKind::smollm;
    } else {
      return make_error("{}: pre-tokenizer '{}' is not supported (gpt2, llama-bpe, qwen2, smollm)",
                        name, pre_name);
    }
  } else {
    DW_ASSIGN_OR_RETURN(bool space_prefix, flag(gguf, "tokenizer.ggml.add_space_prefix", true));
    definition.dummy_prefix = space_prefix ? DummyPrefix::every_segment : DummyPrefix::none;
    definition.byte_fallback = true;
  }

  DW_ASSIGN_OR_RETURN(definition.bos_id, token_id(gguf, "tokenizer.ggml.bos_token_id"));
  DW_ASSIGN_OR_RETURN(definition.eos_id, token_id(gguf, "tokenizer.ggml.eos_token_id"));
  DW_ASSIGN_OR_RETURN(definition.unk_id, token_id(gguf, "tokenizer.ggml.unknown_token_id"));
  DW_ASSIGN_OR_RETURN(definition.pad_id, token_id(gguf, "tokenizer.ggml.padding_token_id"));
  DW_ASSIGN_OR_RETURN(definition.add_bos,
                      flag(gguf, "tokenizer.ggml.add_bos_token", sentencepiece));
  DW_ASSIGN_OR_RETURN(definition.add_eos, flag(gguf, "tokenizer.ggml.add_eos_token", false));
  DW_ASSIGN_OR_RETURN(definition.chat_template, gguf.read_string("tokenizer.chat_template"));
  return Tokenizer::build(std::move(definition), name);
}

}  // namespace draftwise
