// Tokenizer from Hugging Face files: tokenizer.json (model, normalizer, pre-tokenizer,
// post-processor, added tokens) and tokenizer_config.json (BOS/EOS flags, chat template).
// Only the combinations real BPE models use are accepted; anything else is an error that
// names the unsupported part rather than a tokenizer that silently differs.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer_loader.h"
#include "kernels/mapped_file.h"
#include "target/json_brief.h"

namespace draftwise {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 "▁"

// What the normalizer and pre-tokenizer sections say, flattened out of their Sequences.
struct Pipeline {
  bool nfc = false;
  bool prepends_marker = false;  // Prepend("▁")
  bool replaces_spaces = false;  // Replace(" ", "▁")
  bool byte_level = false;
  bool byte_level_regex = false;
  bool add_prefix_space = false;
  bool individual_digits = false;
  std::optional<std::string> split_regex;
  bool metaspace = false;
  bool metaspace_split = true;
  std::string metaspace_scheme = "always";
};

std::string type_of(const Json& node) {
  const auto it = node.find("type");
  return it != node.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool bool_field(const Json& node, const char* key, bool fallback) {
  const auto it = node.find(key);
  return it != node.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

std::string string_field(const Json& node, const char* key) {
  const auto it = node.find(key);
  return it != node.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A Sequence's parts, or the node itself.
Expected<std::vector<const Json*>> flatten(const Json& node, const char* list_key,
                                           const std::string& where) {
  std::vector<const Json*> parts;
  if (node.is_null()) return parts;
  if (!node.is_object()) return make_error("{} is not an object", where);
  if (type_of(node) != "Sequence") {
    parts.push_back(&node);
    return parts;
  }
  const auto list = node.find(list_key);
  if (list == node.end() || !list->is_array()) {
    return make_error("{} Sequence has no '{}' list", where, list_key);
  }
  for (const Json& part : *list) {
    if (!part.is_object()) return make_error("{} Sequence holds a non-object", where);
    if (type_of(part) == "Sequence") return make_error("{} nests Sequences", where);
    parts.push_back(&part);
  }
  return parts;
}

Status read_normalizer(const Json& root, const std::string& name, Pipeline& pipeline) {
  const std::string where = name + ": normalizer";
  const auto node = root.find("normalizer");
  if (node == root.end()) return {};
  DW_ASSIGN_OR_RETURN(std::vector<const Json*> parts, flatten(*node, "normalizers", where));
  for (const Json* part : parts) {
    const std::string type = type_of(*part);
    if (type == "NFC") {
      pipeline.nfc = true;
    } else if (type == "Prepend" && string_field(*part, "prepend") == kSpaceMarker) {
      pipeline.prepends_marker = true;
    } else if (type == "Replace" && part->contains("pattern") && (*part)["pattern"].is_object() &&
               string_field((*part)["pattern"], "String") == " " &&
               string_field(*part, "content") == kSpaceMarker) {
      pipeline.replaces_spaces = true;
    } else {
      return make_error(
          "{} '{}' is not supported (NFC, SentencePiece's Prepend/Replace of "
          "\"▁\")",
          where, type.empty() ? json_brief(*part) : type);
    }
  }
  return {};
}

Status read_pre_tokenizer(const Json& root, const std::string& name, Pipeline& pipeline) {
  const std::string where = name + ": pre_tokenizer";
  const auto node = root.find("pre_tokenizer");
  if (node == root.end()) return {};
  DW_ASSIGN_OR_RETURN(std::vector<const Json*> parts, flatten(*node, "pretokenizers", where));
  for (const Json* part : parts) {
    const std::string type = type_of(*part);
    if (type == "ByteLevel") {
      pipeline.byte_level = true;
      pipeline.byte_level_regex = bool_field(*part, "use_regex", true);
      pipeline.add_prefix_space = bool_field(*part, "add_prefix_space", false);
    } else if (type == "Digits") {
      if (!bool_field(*part, "individual_digits", false)) {
        return make_error("{} Digits without individual_digits is not supported", where);
      }
      pipeline.individual_digits = true;
    } else if (type == "Split") {
      const auto pattern = part->find("pattern");
      if (pattern == part->end() || !pattern->is_object() || !pattern->contains("Regex") ||
          string_field(*part, "behavior") != "Isolated" || bool_field(*part, "invert", false)) {
        return make_error("{} Split must be an isolated, non-inverted Regex split", where);
      }
      pipeline.split_regex = string_field(*pattern, "Regex");
    } else if (type == "Metaspace") {
      if (string_field(*part, "replacement") != kSpaceMarker) {
        return make_error("{} Metaspace with a replacement other than \"▁\" is not supported",
                          where);
      }
      pipeline.metaspace = true;
      pipeline.metaspace_split = bool_field(*part, "split", true);
      if (part->contains("prepend_scheme")) {
        pipeline.metaspace_scheme = string_field(*part, "prepend_scheme");
      } else if (!bool_field(*part, "add_prefix_space", true)) {
        pipeline.metaspace_scheme = "never";
      }
    } else {
      return make_error("{} '{}' is not supported (ByteLevel, Digits, Split, Metaspace)", where,
                        type.empty() ? json_brief(*part) : type);
    }
  }
  return {};
}

// Sets the model, pre-tokenizer family and prefix rules from the pipeline.
Status choose_family(const Pipeline& pipeline, const std::string& name,
                     TokenizerDefinition& definition) {
  definition.nfc = pipeline.nfc;
  if (pipeline.metaspace || (pipeline.prepends_marker && pipeline.replaces_spaces)) {
    // Every part of the pipeline must be one this family implements; a part left unused
    // would make the ids silently differ.
    if (pipeline.byte_level || pipeline.split_regex || pipeline.individual_digits) {
      return make_error(
          "{}: ByteLevel, Split or Digits together with SentencePiece's \"▁\" "
          "rules is not supported",
          name);
    }
    if (pipeline.metaspace && pipeline.prepends_marker) {
      return make_error(
          "{}: both a Prepend normalizer and a Metaspace pre-tokenizer add \"▁\"; "
          "not supported",
          name);
    }
    definition.model = TokenizerModel::sentencepiece_bpe;
    definition.metaspace = pipeline.metaspace;
    definition.metaspace_split = pipeline.metaspace && pipeline.metaspace_split;
    if (!pipeline.metaspace || pipeline.metaspace_scheme == "always") {
      definition.dummy_prefix = DummyPrefix::every_segment;
    } else if (pipeline.metaspace_scheme == "first") {
      definition.dummy_prefix = DummyPrefix::first_segment;
    } else if (pipeline.metaspace_scheme == "never") {
      definition.dummy_prefix = DummyPrefix::none;
    } else {
      return make_error("{}: Metaspace prepend_scheme '{}' is not supported", name,
                        pipeline.metaspace_scheme);
    }
    if (pipeline.nfc) return make_error("{}: NFC with SentencePiece BPE is not supported", name);
    return {};
  }
  if (!pipeline.byte_level) {
    return make_error(
        "{}: cannot tell the tokenizer family: no ByteLevel or Metaspace "
        "pre-tokenizer and no SentencePiece normalizer",
        name);
  }
  if (pipeline.prepends_marker || pipeline.replaces_spaces) {
    return make_error("{}: a Prepend or Replace normalizer with byte-level BPE is not supported",
                      name);
  }
  definition.model = TokenizerModel::byte_level_bpe;
  definition.add_prefix_space = pipeline.add_prefix_space;
  if (pipeline.split_regex) {
    if (pipeline.byte_level_regex || pipeline.individual_digits) {
      return make_error(
          "{}: a Split regex together with ByteLevel's own regex or Digits is "
          "not supported",
          name);
    }
    for (const PreTokenizerKind kind :
         {PreTokenizerKind::gpt2, PreTokenizerKind::llama3, PreTokenizerKind::qwen2}) {
      if (*pipeline.split_regex == pre_tokenizer_regex(kind)) {
        definition.pre_tokenizer = kind;
        return {};
      }
    }
    return make_error(
        "{}: pre-tokenizer regex is not one of the supported families (GPT-2, "
        "Llama 3, Qwen2): {}",
        name, *pipeline.split_regex);
  }
  if (!pipeline.byte_level_regex) {
    return make_error("{}: ByteLevel without a regex split is not supported", name);
  }
  definition.pre_tokenizer =
      pipeline.individual_digits ? PreTokenizerKind::smollm : PreTokenizerKind::gpt2;
  return {};
}

Status read_vocabulary(const Json& model, const Json& root, const std::string& name,
                       bool has_normalizer, TokenizerDefinition& definition) {
  const auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) {
    return make_error("{}: model has no 'vocab' object", name);
  }
  std::vector<std::pair<std::string, int64_t>> entries;
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= INT32_MAX) {
      return make_error("{}: vocabulary id of '{}' is not a valid token id", name, token);
    }
    entries.emplace_back(token, id.get<int64_t>());
    max_id = std::max(max_id, id.get<int64_t>());
  }
  struct Added {
    std::string content;
    int64_t id;
    bool special;
    bool lstrip;
    bool rstrip;
  };
  std::vector<Added> added;
  if (const auto list = root.find("added_tokens"); list != root.end() && !list->is_null()) {
    if (!list->is_array()) return make_error("{}: 'added_tokens' is not a list", name);
    for (const Json& token : *list) {
      if (!token.is_object() || !token.contains("id") || !token["id"].is_number_integer() ||
          !token.contains("content") || !token["content"].is_string()) {
        return make_error("{}: an added token lacks an integer 'id' or string 'content'", name);
      }
      const int64_t id = token["id"].get<int64_t>();
      if (id < 0 || id >= INT32_MAX) {
        return make_error("{}: added token id {} is out of range", name, id);
      }
      const std::string content = token["content"].get<std::string>();
      const bool special = bool_field(token, "special", false);
      if (bool_field(token, "single_word", false)) {
        return make_error("{}: added token '{}' has single_word, which is not supported", name,
                          content);
      }
      // Hugging Face matches normalized added tokens after normalization, which changes how
      // a normalizer treats the text around them; the engine matches on the raw text.
      if (bool_field(token, "normalized", !special) && has_normalizer) {
        return make_error(
            "{}: added token '{}' is matched after normalization (normalized: "
            "true), which is not supported with a normalizer",
            name, content);
      }
      added.push_back({content, id, special, bool_field(token, "lstrip", false),
                       bool_field(token, "rstrip", false)});
      max_id = std::max(max_id, id);
    }
  }
  // An id-indexed table must stay proportional to the file; refuse sparse giant ids.
  if (max_id >= static_cast<int64_t>(entries.size() + added.size()) * 2 + 1024) {
    return make_error("{}: token id {} is far beyond the {} tokens defined", name, max_id,
                      entries.size() + added.size());
  }
  const size_t count = static_cast<size_t>(max_id + 1);
  definition.tokens.assign(count, std::string());
  definition.kinds.assign(count, TokenKind::unused);
  std::vector<bool> assigned(count, false);
  for (auto& [token, id] : entries) {
    if (assigned[id]) {
      return make_error("{}: vocabulary id {} is given to both '{}' and '{}'", name, id,
                        definition.tokens[id], token);
    }
    assigned[id] = true;
    definition.tokens[id] = std::move(token);
    definition.kinds[id] = TokenKind::normal;
  }
  for (Added& token : added) {
    if (assigned[token.id] && definition.tokens[token.id] != token.content) {
      return make_error("{}: added token '{}' has id {}, which the vocabulary gives to '{}'", name,
                        token.content, token.id, definition.tokens[token.id]);
    }
    assigned[token.id] = true;
    definition.tokens[token.id] = std::move(token.content);
    definition.kinds[token.id] = token.special ? TokenKind::control : TokenKind::user_defined;
    if (token.lstrip || token.rstrip) {
      definition.added_token_strip[static_cast<int32_t>(token.id)] = {token.lstrip, token.rstrip};
    }
  }
  return {};
}

Status read_merges(const Json& model, const std::string& name, TokenizerDefinition& definition) {
  const auto merges = model.find("merges");
  if (merges == model.end() || merges->is_null()) return {};
  if (!merges->is_array()) return make_error("{}: model 'merges' is not a list", name);
  definition.merges.reserve(merges->size());
  for (const Json& merge : *merges) {
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return make_error("{}: merge '{}' is not two tokens separated by one space", name, text);
      }
      definition.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      definition.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return make_error("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", name,
                        json_brief(merge));
    }
  }
  return {};
}

// TemplateProcessing's single-sequence template: a special token before / after "A".
Status read_post_processor(const Json& root, const std::string& name,
                           TokenizerDefinition& definition) {
  const auto node = root.find("post_processor");
  if (node == root.end() || node->is_null()) return {};
  DW_ASSIGN_OR_RETURN(std::vector<const Json*> parts,
                      flatten(*node, "processors", name + ": post_processor"));
  for (const Json* part : parts) {
    const std::string type = type_of(*part);
    if (type == "ByteLevel") continue;  // offsets only
    if (type != "TemplateProcessing") {
      return make_error("{}: post_processor '{}' is not supported (TemplateProcessing, ByteLevel)",
                        name, type);
    }
    const auto single = part->find("single");
    if (single == part->end() || !single->is_array()) {
      return make_error("{}: TemplateProcessing has no 'single' template", name);
    }
    const auto special_id = [&](const Json& item) -> std::optional<int32_t> {
      if (!item.is_object() || !item.contains("SpecialToken")) return std::nullopt;
      const std::string token = string_field(item["SpecialToken"], "id");
      for (size_t id = 0; id < definition.tokens.size(); ++id) {
        if (definition.tokens[id] == token) return static_cast<int32_t>(id);
      }
      return std::nullopt;
    };
    if (!single->empty()) {
      if (const std::optional<int32_t> bos = special_id(single->front())) {
        definition.add_bos = true;
        definition.bos_id = bos;
      }
      if (single->size() > 1) {
        if (const std::optional<int32_t> eos = special_id(single->back())) {
          definition.add_eos = true;
          definition.eos_id = eos;
        }
      }
    }
  }
  return {};
}

// "<s>" or {"content": "<s>", ...} -> id.
Expected<std::optional<int32_t>> config_token(const Json& config, const char* key,
                                              const TokenizerDefinition& definition,
                                              const std::string& name) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::optional<int32_t>();
  std::string text;
  if (it->is_string()) {
    text = it->get<std::string>();
  } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    text = (*it)["content"].get<std::string>();
  } else {
    return make_error("{}: '{}' must be a token string", name, key);
  }
  for (size_t id = 0; id < definition.tokens.size(); ++id) {
    if (definition.tokens[id] == text) return std::optional<int32_t>(static_cast<int32_t>(id));
  }
  return make_error("{}: {} '{}' is not in the vocabulary", name, key, text);
}

Status read_tokenizer_config(std::string_view text, const std::string& name,
                             TokenizerDefinition& definition) {
  Json config;
  try {
    config = Json::parse(text);
  } catch (const Json::exception& error) {
    return make_error("{}: not valid JSON: {}", name, error.what());
  }
  if (!config.is_object()) return make_error("{}: not a JSON object", name);
  for (const auto& [key, slot] : {std::pair{"bos_token", &definition.bos_id},
                                  {"eos_token", &definition.eos_id},
                                  {"unk_token", &definition.unk_id},
                                  {"pad_token", &definition.pad_id}}) {
    DW_ASSIGN_OR_RETURN(std::optional<int32_t> id, config_token(config, key, definition, name));
    if (id) *slot = id;
  }
  for (const auto& [key, slot] :
       {std::pair{"add_bos_token", &definition.add_bos}, {"add_eos_token", &definition.add_eos}}) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    if (!it->is_boolean()) return make_error("{}: '{}' must be true or false", name, key);
    *slot = it->get<bool>();
  }
  if (const auto it = config.find("chat_template"); it != config.end() && !it->is_null()) {
    if (it->is_string()) {
      definition.chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      // Named templates: [{"name": "default", "template": "..."}, ...]
      for (const Json& entry : *it) {
        if (entry.is_object() && string_field(entry, "name") == "default") {
          definition.chat_template = string_field(entry, "template");
        }
      }
    } else {
      return make_error("{}: 'chat_template' must be a string or a list of named templates", name);
    }
  }
  return {};
}

}  // namespace

Expected<Tokenizer> parse_tokenizer_json(std::string_view tokenizer_json,
                                         std::optional<std::string_view> config_json,
                                         const std::string& name) {
  Json root;
  try {
    root = Json::parse(tokenizer_json);
  } catch (const Json::exception& error) {
    return make_error("{}: not valid JSON: {}", name, error.what());
  }
  if (!root.is_object()) return make_error("{}: not a JSON object", name);
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object()) {
    return make_error("{}: missing 'model' object", name);
  }
  const std::string model_type = type_of(*model);
  if (!model_type.empty() && model_type != "BPE") {
    return make_error("{}: tokenizer model '{}' is not supported (BPE)", name, model_type);
  }
  if (const auto dropout = model->find("dropout");
      dropout != model->end() && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return make_error("{}: BPE dropout is not supported", name);
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!string_field(*model, key).empty()) {
      return make_error("{}: BPE '{}' is not supported", name, key);
    }
  }

  TokenizerDefinition definition;
  Pipeline pipeline;
  DW_TRY(read_normalizer(root, name, pipeline));
  DW_TRY(read_pre_tokenizer(root, name, pipeline));
  DW_TRY(choose_family(pipeline, name, definition));
  const bool has_normalizer = pipeline.nfc || pipeline.prepends_marker || pipeline.replaces_spaces;
  DW_TRY(read_vocabulary(*model, root, name, has_normalizer, definition));
  DW_TRY(read_merges(*model, name, definition));
  definition.byte_fallback = bool_field(*model, "byte_fallback", false);
  definition.ignore_merges = bool_field(*model, "ignore_merges", false);
  definition.fuse_unk = bool_field(*model, "fuse_unk", false);
  if (definition.model == TokenizerModel::sentencepiece_bpe) {
    // With byte fallback, pieces spelled <0xXX> are byte tokens.
    for (size_t id = 0; id < definition.tokens.size(); ++id) {
      const std::string& token = definition.tokens[id];
      if (definition.byte_fallback && definition.kinds[id] == TokenKind::normal &&
          token.size() == 6 && token.starts_with("<0x") && token.back() == '>') {
        definition.kinds[id] = TokenKind::byte;
      }
    }
  }
  if (const std::string unk = string_field(*model, "unk_token"); !unk.empty()) {
    for (size_t id = 0; id < definition.tokens.size(); ++id) {
      if (definition.tokens[id] == unk) {
        definition.unk_id = static_cast<int32_t>(id);
        if (definition.kinds[id] == TokenKind::normal) definition.kinds[id] = TokenKind::unknown;
        break;
      }
    }
    if (!definition.unk_id)
      return make_error("{}: unk_token '{}' is not in the vocabulary", name, unk);
    definition.missing_byte_id = definition.unk_id;
  }
  DW_TRY(read_post_processor(root, name, definition));
  if (config_json) {
    constexpr std::string_view kFile = "tokenizer.json";
    const std::string config_name =
        name.ends_with(kFile) ? name.substr(0, name.size() - kFile.size()) + "tokenizer_config.json"
                              : name + " (tokenizer_config.json)";
    DW_TRY(read_tokenizer_config(*config_json, config_name, definition));
  }
  return Tokenizer::build(std::move(definition), name);
}

Expected<Tokenizer> tokenizer_from_hf_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string tokenizer_path = (fs::path(folder) / "tokenizer.json").string();
  const std::string config_path = (fs::path(folder) / "tokenizer_config.json").string();
  DW_ASSIGN_OR_RETURN(std::string tokenizer_text, read_text_file(tokenizer_path));
  std::optional<std::string> config_text;
  std::error_code ignored;
  if (fs::exists(config_path, ignored)) {
    DW_ASSIGN_OR_RETURN(config_text, read_text_file(config_path));
  }
  return parse_tokenizer_json(tokenizer_text, config_text, tokenizer_path);
}

}  // namespace draftwise
