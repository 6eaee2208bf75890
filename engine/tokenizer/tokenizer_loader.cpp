#include "engine/tokenizer/tokenizer_loader.h"

#include <filesystem>

#include "target/checkpoint.h"

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

}  // namespace draftwise
