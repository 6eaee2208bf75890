// Reader of GGUF files (v2, v3): metadata, tensor infos and views of tensor data.
// Every length, count and offset in the file is checked against the file's size before
// it is used, so a damaged or hostile file gives an error, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "kernels/mapped_file.h"
#include "kernels/status.h"
#include "kernels/tensor_type.h"
#include "target/gguf_format.h"

namespace draftwise {

class GgufValue {
 public:
  using Array = std::vector<GgufValue>;

  GgufValue() = default;
  static GgufValue unsigned_integer(gguf::ValueType type, uint64_t value);
  static GgufValue signed_integer(gguf::ValueType type, int64_t value);
  static GgufValue floating(gguf::ValueType type, double value);
  static GgufValue boolean(bool value);
  static GgufValue string(std::string value);
  static GgufValue array(gguf::ValueType element_type, Array elements);

  gguf::ValueType type() const { return type_; }
  gguf::ValueType element_type() const { return element_type_; }  // arrays only

  // Typed reads; nullopt / nullptr when the value has another type. Any integer type reads
  // as an integer when it fits; float32 and float64 read as floats.
  std::optional<int64_t> as_int() const;
  std::optional<double> as_float() const;
  std::optional<bool> as_bool() const;
  const std::string* as_string() const;
  const Array* as_array() const;

  // Short human-readable rendering; arrays show their first `max_items` elements.
  std::string to_display(size_t max_items = 8) const;

 private:
  gguf::ValueType type_ = gguf::ValueType::u8;
  gguf::ValueType element_type_ = gguf::ValueType::u8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> data_;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // row-major, outermost first (the reverse of GGUF's ne[])
  TensorType type = TensorType::f32;
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Maps and parses the file at `path`.
  static Expected<GgufFile> open(const std::string& path);
  // Parses `bytes`, which must outlive the result; `name` labels errors.
  static Expected<GgufFile> parse(std::span<const std::byte> bytes, std::string name);

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  std::span<const std::byte> tensor_data(const GgufTensorInfo& tensor) const {
    return bytes_.subspan(tensor.offset, tensor.nbytes);
  }

 private:
  GgufFile() = default;

  std::string name_;
  std::optional<MappedFile> file_;
  std::span<const std::byte> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = gguf::kDefaultAlignment;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;

  friend class GgufParser;
};

}  // namespace draftwise
