// Reader of safetensors files and of sharded checkpoints (model.safetensors.index.json).
//
// Layout: u64 little-endian header length N; N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte after the
// header) plus an optional "__metadata__" object of strings; then the data.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/mapped_file.h"
#include "kernels/status.h"
#include "kernels/tensor_type.h"

namespace draftwise {

struct SafetensorsTensor {
  std::string name;
  TensorType type = TensorType::f32;
  std::vector<int64_t> shape;  // row-major, outermost first
  std::span<const std::byte> data;
};

class SafetensorsFile {
 public:
  static Expected<SafetensorsFile> open(const std::string& path);
  // Parses `bytes`, which must outlive the result; `name` labels errors.
  static Expected<SafetensorsFile> parse(std::span<const std::byte> bytes, std::string name);

  const std::string& name() const { return name_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;

  std::string name_;
  std::optional<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// safetensors dtype names ("F32", "BF16", ...); nullopt for unknown names.
std::optional<TensorType> safetensors_dtype(std::string_view name);

// All tensors of a checkpoint folder: model.safetensors, or the shards listed by
// model.safetensors.index.json, each checked to hold exactly the tensors the index says.
class SafetensorsCheckpoint {
 public:
  static Expected<SafetensorsCheckpoint> open_folder(const std::string& folder);
  static Expected<SafetensorsCheckpoint> open_file(const std::string& path);

  const std::vector<SafetensorsFile>& shards() const { return shards_; }

 private:
  std::vector<SafetensorsFile> shards_;
};

}  // namespace draftwise
