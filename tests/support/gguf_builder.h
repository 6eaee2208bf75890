// Writes GGUF files for tests: well-formed ones, and, through the raw tensor-info entry
// point and byte edits, the damaged ones the reader must refuse.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/tensor_type.h"
#include "target/gguf_reader.h"

namespace draftwise::testing {

class GgufBuilder {
 public:
  explicit GgufBuilder(uint32_t version = 3) : version_(version) {}

  void add(const std::string& key, GgufValue value) {
    metadata_.emplace_back(key, std::move(value));
  }
  void add_u32(const std::string& key, uint32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string(const std::string& key, const std::string& value);
  void add_strings(const std::string& key, const std::vector<std::string>& values);
  void add_i32s(const std::string& key, const std::vector<int32_t>& values);
  void add_f32s(const std::string& key, const std::vector<float>& values);
  // Sets general.alignment (and aligns the data section to it).
  void set_alignment(uint32_t alignment);

  // A tensor with `shape` row-major (outermost first) and its stored bytes, placed at the
  // next aligned offset of the data section.
  void add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& shape,
                  const std::string& bytes);
  // A tensor info written exactly as given: ggml type code, ne[] innermost first, offset.
  // No data is added for it.
  void add_raw_tensor_info(const std::string& name, uint32_t ggml_type,
                           const std::vector<uint64_t>& ne, uint64_t offset);
  // Bytes appended after the data section (for tests that need data past the last tensor).
  void append_data(const std::string& bytes) { data_ += bytes; }

  std::string build() const;

 private:
  struct TensorInfo {
    std::string name;
    uint32_t ggml_type;
    std::vector<uint64_t> ne;
    uint64_t offset;
  };
  uint32_t version_;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<TensorInfo> tensors_;
  std::string data_;
};

// Appends the little-endian bytes of a scalar.
template <typename T>
void append_scalar(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

}  // namespace draftwise::testing
