// Tokenizer from GGUF metadata (llama.cpp's tokenizer.ggml.* keys).
#include <cmath>

#include "engine/tokenizer/tokenizer_loader.h"
#include "target/gguf_reader.h"

namespace draftwise {
namespace {

enum class Elements { strings, numbers };

Expected<const GgufValue::Array*> array_of(const GgufFile& gguf, const std::string& key,
                                           Elements elements, bool required) {
  const GgufValue* value = gguf.find(key);
  if (value == nullptr) {
    if (required) return make_error("{}: missing metadata '{}'", gguf.name(), key);
    return static_cast<const GgufValue::Array*>(nullptr);
  }
  const GgufValue::Array* array = value->as_array();
  const gguf::ValueType actual = value->element_type();
  const bool wanted_strings = elements == Elements::strings;
  const bool elements_match = wanted_strings ? actual == gguf::ValueType::string
                                             : actual != gguf::ValueType::string &&
                                                   actual != gguf::ValueType::array &&
                                                   actual != gguf::ValueType::boolean;
  if (array == nullptr || !elements_match) {
    return make_error("{}: metadata '{}' must be an array of {}, got {}", gguf.name(), key,
                      wanted_strings ? "strings" : "numbers", value->to_display(2));
  }
  return array;
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
  const GgufValue* value = gguf.find(key);
  if (value == nullptr) return std::optional<int32_t>();
  const std::optional<int64_t> id = value->as_int();
  if (!id || *id < 0 || *id > INT32_MAX) {
    return make_error("{}: metadata '{}' must be a token id, got {}", gguf.name(), key,
                      value->to_display());
  }
  return std::optional<int32_t>(static_cast<int32_t>(*id));
}

Expected<bool> flag(const GgufFile& gguf, const std::string& key, bool fallback) {
  const GgufValue* value = gguf.find(key);
  if (value == nullptr) return fallback;
  const std::optional<bool> result = value->as_bool();
  if (!result) {
    return make_error("{}: metadata '{}' must be a bool, got {}", gguf.name(), key,
                      value->to_display());
  }
  return *result;
}

}  // namespace

Expected<Tokenizer> tokenizer_from_gguf(const GgufFile& gguf) {
  const std::string& name = gguf.name();
  const GgufValue* model_value = gguf.find("tokenizer.ggml.model");
  if (model_value == nullptr) return make_error("{}: the file has no tokenizer", name);
  const std::string* model = model_value->as_string();
  TokenizerDefinition definition;
  if (model != nullptr && *model == "gpt2") {
    definition.model = TokenizerModel::byte_level_bpe;
  } else if (model != nullptr && *model == "llama") {
    definition.model = TokenizerModel::sentencepiece_bpe;
  } else {
    return make_error("{}: tokenizer model {} is not supported (gpt2, llama)", name,
                      model_value->to_display());
  }
  const bool sentencepiece = definition.model == TokenizerModel::sentencepiece_bpe;

  DW_ASSIGN_OR_RETURN(const GgufValue::Array* tokens,
                      array_of(gguf, "tokenizer.ggml.tokens", Elements::strings, true));
  DW_ASSIGN_OR_RETURN(const GgufValue::Array* types,
                      array_of(gguf, "tokenizer.ggml.token_type", Elements::numbers, false));
  DW_ASSIGN_OR_RETURN(const GgufValue::Array* scores,
                      array_of(gguf, "tokenizer.ggml.scores", Elements::numbers, sentencepiece));
  DW_ASSIGN_OR_RETURN(const GgufValue::Array* merges,
                      array_of(gguf, "tokenizer.ggml.merges", Elements::strings, !sentencepiece));
  const size_t count = tokens->size();
  for (const auto& [key, array] : {std::pair{"token_type", types}, {"scores", scores}}) {
    if (array != nullptr && array->size() != count) {
      return make_error("{}: tokenizer.ggml.{} has {} entries for {} tokens", name, key,
                        array->size(), count);
    }
  }
  definition.tokens.reserve(count);
  definition.kinds.reserve(count);
  for (size_t id = 0; id < count; ++id) {
    definition.tokens.push_back(*(*tokens)[id].as_string());
    const std::optional<int64_t> type = types != nullptr ? (*types)[id].as_int() : 1;
    definition.kinds.push_back(kind_from_gguf(type.value_or(1)));
  }
  if (scores != nullptr && sentencepiece) {
    definition.scores.reserve(count);
    for (const GgufValue& score : *scores) {
      const double value =
          score.as_float().value_or(static_cast<double>(score.as_int().value_or(0)));
      if (!std::isfinite(value)) {
        return make_error("{}: tokenizer.ggml.scores holds a non-finite score", name);
      }
      definition.scores.push_back(static_cast<float>(value));
    }
  }
  if (merges != nullptr) {
    definition.merges.reserve(merges->size());
    for (const GgufValue& merge : *merges) {
      const std::string& text = *merge.as_string();
      const size_t space = text.find(' ', 1);
      if (space == std::string::npos) {
        return make_error("{}: merge '{}' is not two tokens separated by a space", name, text);
      }
      definition.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    }
  }

  if (!sentencepiece) {
    const GgufValue* pre_value = gguf.find("tokenizer.ggml.pre");
    const std::string* pre = pre_value != nullptr ? pre_value->as_string() : nullptr;
    const std::string pre_name = pre != nullptr ? *pre : "default";
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
  if (const GgufValue* chat_template = gguf.find("tokenizer.chat_template")) {
    if (chat_template->as_string() == nullptr) {
      return make_error("{}: tokenizer.chat_template must be a string", name);
    }
    definition.chat_template = *chat_template->as_string();
  }
  return Tokenizer::build(std::move(definition), name);
}

}  // namespace draftwise
