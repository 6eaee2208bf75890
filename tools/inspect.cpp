// draftwise inspect: what a model file holds, read through the same loaders that serve it,
// so a file that inspects cleanly also loads.
#include <cstdio>
#include <map>

#include <fmt/format.h>

#include "engine/tokenizer/tokenizer_loader.h"
#include "target/checkpoint.h"
#include "target/model_config.h"
#include "target/model_weights.h"
#include "tools/cli_args.h"
#include "tools/commands.h"

namespace draftwise {
namespace {

using Json = nlohmann::json;

Json token_json(const Tokenizer& tokenizer, const std::optional<int32_t>& id) {
  if (!id) return nullptr;
  return Json{{"id", *id}, {"text", tokenizer.token(*id)}};
}

Json tokenizer_json(const Tokenizer& tokenizer) {
  int64_t special = 0;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.kind(id) == TokenKind::control) ++special;
  }
  const TokenizerDefinition& definition = tokenizer.definition();
  Json json{
      {"model", tokenizer_model_name(tokenizer.model())},
      {"vocab_size", tokenizer.vocab_size()},
      {"merges", tokenizer.merge_count()},
      {"special_tokens", special},
      {"bos", token_json(tokenizer, definition.bos_id)},
      {"eos", token_json(tokenizer, definition.eos_id)},
      {"unk", token_json(tokenizer, definition.unk_id)},
      {"pad", token_json(tokenizer, definition.pad_id)},
      {"add_bos", definition.add_bos},
      {"add_eos", definition.add_eos},
  };
  if (tokenizer.model() == TokenizerModel::byte_level_bpe) {
    json["pre_tokenizer"] = pre_tokenizer_name(definition.pre_tokenizer);
  }
  return json;
}

Json config_json(const ModelConfig& config) {
  Json rope{{"type", rope_scaling_name(config.rope_scaling.type)}};
  if (config.rope_scaling.type == RopeScalingType::linear ||
      config.rope_scaling.type == RopeScalingType::llama3) {
    rope["factor"] = config.rope_scaling.factor;
  }
  if (config.rope_scaling.type == RopeScalingType::llama3) {
    rope["low_freq_factor"] = config.rope_scaling.low_freq_factor;
    rope["high_freq_factor"] = config.rope_scaling.high_freq_factor;
    rope["original_max_position_embeddings"] = config.rope_scaling.original_max_position_embeddings;
  }
  return Json{
      {"architecture", architecture_name(config.architecture)},
      {"num_layers", config.num_layers},
      {"hidden_size", config.hidden_size},
      {"intermediate_size", config.intermediate_size},
      {"num_heads", config.num_heads},
      {"num_kv_heads", config.num_kv_heads},
      {"head_dim", config.head_dim},
      {"vocab_size", config.vocab_size},
      {"max_position_embeddings", config.max_position_embeddings},
      {"rope_theta", config.rope_theta},
      {"rope_scaling", rope},
      {"rms_norm_eps", config.rms_norm_eps},
      {"tie_word_embeddings", config.tie_word_embeddings},
      {"attention_bias", config.attention_qkv_bias},
  };
}

// Token texts may hold newlines and other controls; show them escaped on one line.
std::string printable(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string count_text(int64_t count) {
  if (count >= 1'000'000'000) return fmt::format("{:.2f}B", static_cast<double>(count) / 1e9);
  if (count >= 1'000'000) return fmt::format("{:.1f}M", static_cast<double>(count) / 1e6);
  return fmt::format("{}", count);
}

void print_text(const Json& report, bool list_tensors, const Checkpoint& checkpoint) {
  const auto line = [](std::string_view key, const std::string& value) {
    fmt::print("  {:<24} {}\n", key, value);
  };
  fmt::print("{}\n", report["path"].get<std::string>());
  std::string format = report["format"].get<std::string>();
  if (report.contains("gguf_version"))
    format += fmt::format(" v{}", report["gguf_version"].get<int>());
  line("format", fmt::format("{} ({} tensors)", format, report["tensor_count"].get<int64_t>()));
  if (report.contains("architecture")) {
    line("architecture", report["architecture"].get<std::string>());
    for (const char* key : {"num_layers", "hidden_size", "intermediate_size", "num_heads",
                            "num_kv_heads", "head_dim", "vocab_size", "max_position_embeddings"}) {
      line(key, fmt::format("{}", report[key].get<int64_t>()));
    }
    line("rope_theta", fmt::format("{:g}", report["rope_theta"].get<double>()));
    line("rope_scaling", report["rope_scaling"]["type"].get<std::string>());
    line("rms_norm_eps", fmt::format("{:g}", report["rms_norm_eps"].get<double>()));
    line("tie_word_embeddings", report["tie_word_embeddings"].get<bool>() ? "yes" : "no");
    line("attention_bias", report["attention_bias"].get<bool>() ? "yes" : "no");
    const int64_t parameters = report["parameter_count"].get<int64_t>();
    line("parameters", fmt::format("{} ({})", count_text(parameters), parameters));
  }
  std::string types;
  for (const auto& [type, count] : report["tensor_types"].items()) {
    types += fmt::format("{}{} x{}", types.empty() ? "" : ", ", type, count.get<int64_t>());
  }
  line("tensor types", types.empty() ? "none" : types);
  if (report["tokenizer"].is_null()) {
    line("tokenizer", "none (token ids only)");
  } else {
    const Json& tokenizer = report["tokenizer"];
    std::string kind = tokenizer["model"].get<std::string>();
    if (tokenizer.contains("pre_tokenizer")) {
      kind += fmt::format(" ({} pre-tokenizer)", tokenizer["pre_tokenizer"].get<std::string>());
    }
    line("tokenizer",
         fmt::format("{}, {} tokens, {} merges", kind, tokenizer["vocab_size"].get<int64_t>(),
                     tokenizer["merges"].get<int64_t>()));
    std::string specials;
    for (const char* role : {"bos", "eos", "unk", "pad"}) {
      if (tokenizer[role].is_null()) continue;
      specials += fmt::format("{}{}={} ({})", specials.empty() ? "" : ", ", role,
                              printable(tokenizer[role]["text"].get<std::string>()),
                              tokenizer[role]["id"].get<int64_t>());
    }
    line("special tokens",
         fmt::format("{}; {} control tokens", specials.empty() ? "none" : specials,
                     tokenizer["special_tokens"].get<int64_t>()));
    line("adds", fmt::format("BOS {}, EOS {}", tokenizer["add_bos"].get<bool>() ? "yes" : "no",
                             tokenizer["add_eos"].get<bool>() ? "yes" : "no"));
  }
  line("chat template", report["has_chat_template"].get<bool>() ? "yes" : "no");
  if (list_tensors) {
    fmt::print("\ntensors:\n");
    for (const CheckpointTensor& tensor : checkpoint.tensors()) {
      fmt::print("  {:<48} {:<6} {}\n", tensor.name, tensor_type_name(tensor.type),
                 shape_to_string(tensor.shape));
    }
  }
}

Expected<Json> build_report(const Checkpoint& checkpoint) {
  Json report{{"path", checkpoint.path()}};
  report["format"] = checkpoint.format() == CheckpointFormat::gguf ? "gguf" : "safetensors";
  if (const GgufFile* gguf = checkpoint.gguf()) report["gguf_version"] = gguf->version();
  report["tensor_count"] = checkpoint.tensors().size();
  std::map<std::string, int64_t> types;
  for (const CheckpointTensor& tensor : checkpoint.tensors()) {
    ++types[std::string(tensor_type_name(tensor.type))];
  }
  report["tensor_types"] = types;

  // A file without tensors (a tokenizer-only GGUF) has no model config to read.
  if (!checkpoint.tensors().empty()) {
    DW_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(checkpoint));
    DW_ASSIGN_OR_RETURN(ModelWeights weights, ModelWeights::bind(checkpoint, config));
    report.update(config_json(config));
    int64_t parameters = 0;
    for (const WeightTensor& tensor : weights.tensors()) {
      parameters += *checked_element_count(tensor.shape.data(), tensor.shape.size());
    }
    report["parameter_count"] = parameters;
  }
  DW_ASSIGN_OR_RETURN(std::optional<Tokenizer> tokenizer, load_tokenizer(checkpoint));
  report["tokenizer"] = tokenizer ? tokenizer_json(*tokenizer) : Json(nullptr);
  report["has_chat_template"] = tokenizer && tokenizer->chat_template().has_value();
  return report;
}

}  // namespace

Expected<Json> inspect_model(const std::string& path) {
  DW_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::open(path));
  return build_report(checkpoint);
}

int run_inspect(const std::vector<std::string>& args) {
  std::string path;
  bool json = false;
  bool tensors = false;
  ArgParser parser("inspect",
                   "Reports what a model file holds: a GGUF file, a .safetensors file, "
                   "or a Hugging Face model folder.");
  parser.add_positional("PATH", &path, "model file or folder");
  parser.add_flag("json", &json, "print one JSON object");
  parser.add_flag("tensors", &tensors, "list every tensor with its type and shape");
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(args)) return *exit_code;
  Expected<Checkpoint> checkpoint = Checkpoint::open(path);
  Expected<Json> report = checkpoint.ok() ? build_report(*checkpoint) : checkpoint.error();
  if (!report.ok()) {
    print_error("draftwise inspect: " + report.error().message);
    return 1;
  }
  if (json) {
    if (tensors) {
      Json list = Json::array();
      for (const CheckpointTensor& tensor : checkpoint->tensors()) {
        list.push_back({{"name", tensor.name},
                        {"type", tensor_type_name(tensor.type)},
                        {"shape", tensor.shape}});
      }
      (*report)["tensors"] = std::move(list);
    }
    // Invalid UTF-8 in names or token texts is replaced rather than thrown on.
    fmt::print("{}\n", report->dump(2, ' ', false, Json::error_handler_t::replace));
  } else {
    print_text(*report, tensors, *checkpoint);
  }
  return 0;
}

}  // namespace draftwise
