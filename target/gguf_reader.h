// Reader of GGUF files (v2, v3): metadata, tensor infos and views of tensor data.
// Every length, count and offset in the file is checked against the file's size before
// it is used, so a damaged or hostile file gives an error, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <memory>
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

// A GGUF array of integers, floats or bools, kept as its little-endian bytes and read
// element by element: a file's metadata then takes no more memory than the file.
class GgufNumbers {
 public:
  // `bytes` holds `count` elements of `element_type` and must outlive the object unless
  // `owner` keeps it alive.
  GgufNumbers(gguf::ValueType element_type, size_t count, std::span<const std::byte> bytes,
              std::shared_ptr<const std::string> owner = nullptr)
      : element_type_(element_type), count_(count), bytes_(bytes), owner_(std::move(owner)) {}

  gguf::ValueType element_type() const { return element_type_; }
  size_t size() const { return count_; }
  std::span<const std::byte> bytes() const { return bytes_; }

  // Element `index` (< size()): integers and bools as integers, floats as floats;
  // nullopt for the other kind.
  std::optional<int64_t> int_at(size_t index) const;
  std::optional<double> float_at(size_t index) const;

 private:
  gguf::ValueType element_type_;
  size_t count_;
  std::span<const std::byte> bytes_;
  std::shared_ptr<const std::string> owner_;
};

// Bytes one element of a numeric GGUF type takes; 0 for strings and arrays.
size_t gguf_numeric_size(gguf::ValueType type);

class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue unsigned_integer(gguf::ValueType type, uint64_t value);
  static GgufValue signed_integer(gguf::ValueType type, int64_t value);
  static GgufValue floating(gguf::ValueType type, double value);
  static GgufValue boolean(bool value);
  static GgufValue string(std::string value);
  static GgufValue strings(std::vector<std::string> values);
  static GgufValue numbers(GgufNumbers numbers);
  static GgufValue arrays(std::vector<GgufValue> arrays);
  // An array of `elements`, all scalars of `element_type` or all arrays, packed into the
  // representation of its element type (for writing GGUF files in tests and tools).
  static GgufValue array(gguf::ValueType element_type, const std::vector<GgufValue>& elements);

  gguf::ValueType type() const { return type_; }
  gguf::ValueType element_type() const { return element_type_; }  // arrays only

  // Typed reads; nullopt / nullptr when the value has another type. Any integer type reads
  // as an integer when it fits; float32 and float64 read as floats.
  std::optional<int64_t> as_int() const;
  std::optional<double> as_float() const;
  std::optional<bool> as_bool() const;
  const std::string* as_string() const;
  const std::vector<std::string>* as_strings() const;  // an array of strings
  const GgufNumbers* as_numbers() const;               // an array of numbers or bools
  const std::vector<GgufValue>* as_arrays() const;     // an array of arrays
  size_t array_size() const;                           // 0 for a scalar

  // Short one-line rendering: strings cut, arrays as "[count x type]" plus their first
  // `max_items` elements (nested arrays by their size only).
  std::string to_display(size_t max_items = 8) const;

 private:
  gguf::ValueType type_ = gguf::ValueType::u8;
  gguf::ValueType element_type_ = gguf::ValueType::u8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<std::string>, GgufNumbers,
               std::vector<GgufValue>>
      data_;
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

  // Typed reads of a metadata key: nullopt when the key is absent, an error naming the file
  // and key when it holds another type. Any integer type reads as an integer that fits.
  Expected<std::optional<int64_t>> read_int(std::string_view key) const;
  Expected<std::optional<double>> read_float(std::string_view key) const;
  Expected<std::optional<bool>> read_bool(std::string_view key) const;
  Expected<std::optional<std::string>> read_string(std::string_view key) const;

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
