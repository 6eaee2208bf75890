// One view over the two model file formats: a GGUF file, or a Hugging Face folder (or a
// single .safetensors file) of safetensors weights. Tensor data stays memory-mapped.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kernels/status.h"
#include "kernels/tensor_type.h"
#include "target/gguf_reader.h"
#include "target/safetensors_reader.h"

namespace draftwise {

enum class CheckpointFormat { gguf, safetensors };

struct CheckpointTensor {
  std::string name;  // as stored in the file
  TensorType type = TensorType::f32;
  std::vector<int64_t> shape;  // row-major, outermost first
  std::span<const std::byte> data;
};

class Checkpoint {
 public:
  // `path` is a GGUF file, a .safetensors file, or a folder with config.json and
  // model.safetensors (or a model.safetensors.index.json and its shards).
  static Expected<Checkpoint> open(const std::string& path);
  // A checkpoint over a GGUF file already parsed (named by the file's name).
  static Checkpoint from_gguf(GgufFile gguf);

  CheckpointFormat format() const { return format_; }
  const std::string& path() const { return path_; }
  // The folder holding config.json and tokenizer files (safetensors checkpoints).
  const std::string& folder() const { return folder_; }
  // GGUF metadata; nullptr for safetensors checkpoints.
  const GgufFile* gguf() const { return gguf_ ? &*gguf_ : nullptr; }

  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  const CheckpointTensor* find(std::string_view name) const;

 private:
  Checkpoint() = default;
  void index_tensors();

  CheckpointFormat format_ = CheckpointFormat::gguf;
  std::string path_;
  std::string folder_;
  std::optional<GgufFile> gguf_;
  std::optional<SafetensorsCheckpoint> safetensors_;
  std::vector<CheckpointTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace draftwise
