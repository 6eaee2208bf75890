#include "engine/tokenizer/tokenizer_loader.h"

#include <filesystem>

#include "target/checkpoint.h"
#include "target/gguf_reader.h"

namespace draftwise {

Expected<std::optional<Tokenizer>> load_tokenizer(const Checkpoint& checkpoint) {
  if (const GgufFile* gguf = checkpoint.gguf()) {
    if (gguf->find("tokenizer.ggml.model") == nullptr) return std::optional<Tokenizer>();
    DW_ASSIGN_OR_RETURN(Tokenizer tokenizer, tokenizer_from_gguf(*gguf));
    return std::optional<Tokenizer>(std::move(tokenizer));
  }
  std::error_code ignored;
  if (!std::filesystem::exists(std::filesystem::path(checkpoint.folder()) / "tokenizer.json",
                               ignored)) {
    return std::optional<Tokenizer>();
  }
  DW_ASSIGN_OR_RETURN(Tokenizer tokenizer, tokenizer_from_hf_folder(checkpoint.folder()));
  return std::optional<Tokenizer>(std::move(tokenizer));
}

Expected<Tokenizer> load_tokenizer_from(const std::string& path) {
  std::error_code error;
  const std::filesystem::path where(path);
  if (std::filesystem::is_directory(where, error)) return tokenizer_from_hf_folder(path);
  if (!std::filesystem::is_regular_file(where, error)) return make_error("{}: no such tokenizer file or folder", path);
  if (where.filename() == "tokenizer.json") {
    return tokenizer_from_hf_folder(where.has_parent_path() ? where.parent_path().string() : ".");
  }
  Expected<GgufFile> gguf = GgufFile::open(path);
  if (!gguf.ok()) {
    return make_error("{}: not a tokenizer.json, a folder with one, or a GGUF file ({})", path, gguf.error().message);
  }
  if (gguf->find("tokenizer.ggml.model") == nullptr) return make_error("{}: this GGUF file has no tokenizer", path);
  return tokenizer_from_gguf(*gguf);
}

}  // namespace draftwise
