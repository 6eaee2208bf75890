// Building a Tokenizer from the files models come with: a GGUF's tokenizer.ggml.* metadata,
// or a Hugging Face tokenizer.json with its tokenizer_config.json.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"
#include "kernels/status.h"

namespace draftwise {

class Checkpoint;
class GgufFile;

// tokenizer.ggml.model "gpt2" (byte-level BPE; tokenizer.ggml.pre picks the split rules) or
// "llama" (SentencePiece BPE).
Expected<Tokenizer> tokenizer_from_gguf(const GgufFile& gguf);

// tokenizer.json text, and tokenizer_config.json text when there is one. `name` labels errors.
Expected<Tokenizer> parse_tokenizer_json(std::string_view tokenizer_json,
                                         std::optional<std::string_view> config_json,
                                         const std::string& name);

// tokenizer.json (required) and tokenizer_config.json (optional) in `folder`.
Expected<Tokenizer> tokenizer_from_hf_folder(const std::string& folder);

// The tokenizer a checkpoint comes with: its GGUF metadata, or the files beside its
// safetensors. nullopt when the checkpoint has none (a weights-only folder).
Expected<std::optional<Tokenizer>> load_tokenizer(const Checkpoint& checkpoint);

// A tokenizer from elsewhere (`--tokenizer PATH`): a folder with tokenizer.json, a
// tokenizer.json file (its tokenizer_config.json beside it is read too), or a GGUF file's
// tokenizer metadata.
Expected<Tokenizer> load_tokenizer_from(const std::string& path);

}  // namespace draftwise
