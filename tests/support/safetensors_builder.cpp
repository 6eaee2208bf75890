#include "tests/support/safetensors_builder.h"

#include "tests/support/gguf_builder.h"

namespace draftwise::testing {

void SafetensorsBuilder::add_tensor(const std::string& name, const std::string& dtype,
                                    const std::vector<int64_t>& shape, const std::string& bytes) {
  header_[name] = {{"dtype", dtype},
                   {"shape", shape},
                   {"data_offsets", {data_.size(), data_.size() + bytes.size()}}};
  data_ += bytes;
}

void SafetensorsBuilder::add_metadata(const std::string& key, const std::string& value) {
  header_["__metadata__"][key] = value;
}

std::string SafetensorsBuilder::build_with(const std::string& header_text) const {
  std::string out;
  append_scalar<uint64_t>(out, header_text.size());
  return out + header_text + data_;
}

std::string f32_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

}  // namespace draftwise::testing
