// Writes safetensors files for tests, including headers edited to be wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace draftwise::testing {

class SafetensorsBuilder {
 public:
  // Adds a tensor at the end of the data section.
  void add_tensor(const std::string& name, const std::string& dtype,
                  const std::vector<int64_t>& shape, const std::string& bytes);
  void add_metadata(const std::string& key, const std::string& value);

  // The header as it will be written; tests may edit it before build_with().
  nlohmann::json header() const { return header_; }
  std::string build() const { return build_with(header_.dump()); }
  // A file with `header_text` as its JSON header and this builder's data.
  std::string build_with(const std::string& header_text) const;

 private:
  nlohmann::json header_ = nlohmann::json::object();
  std::string data_;
};

// Raw little-endian bytes of float values.
std::string f32_bytes(const std::vector<float>& values);

}  // namespace draftwise::testing
