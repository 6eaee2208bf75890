#include "tests/support/gguf_builder.h"

#include <stdexcept>

#include "target/gguf_format.h"

namespace draftwise::testing {
namespace {

void append_string(std::string& out, const std::string& text) {
  append_scalar<uint64_t>(out, text.size());
  out += text;
}

void append_value(std::string& out, const GgufValue& value) {
  using gguf::ValueType;
  switch (value.type()) {
    case ValueType::u8:
      append_scalar<uint8_t>(out, static_cast<uint8_t>(*value.as_int()));
      break;
    case ValueType::i8:
      append_scalar<int8_t>(out, static_cast<int8_t>(*value.as_int()));
      break;
    case ValueType::u16:
      append_scalar<uint16_t>(out, static_cast<uint16_t>(*value.as_int()));
      break;
    case ValueType::i16:
      append_scalar<int16_t>(out, static_cast<int16_t>(*value.as_int()));
      break;
    case ValueType::u32:
      append_scalar<uint32_t>(out, static_cast<uint32_t>(*value.as_int()));
      break;
    case ValueType::i32:
      append_scalar<int32_t>(out, static_cast<int32_t>(*value.as_int()));
      break;
    case ValueType::u64:
      append_scalar<uint64_t>(out, static_cast<uint64_t>(*value.as_int()));
      break;
    case ValueType::i64:
      append_scalar<int64_t>(out, *value.as_int());
      break;
    case ValueType::f32:
      append_scalar<float>(out, static_cast<float>(*value.as_float()));
      break;
    case ValueType::f64:
      append_scalar<double>(out, *value.as_float());
      break;
    case ValueType::boolean:
      append_scalar<uint8_t>(out, *value.as_bool() ? 1 : 0);
      break;
    case ValueType::string:
      append_string(out, *value.as_string());
      break;
    case ValueType::array:
      append_scalar<uint32_t>(out, static_cast<uint32_t>(value.element_type()));
      append_scalar<uint64_t>(out, value.array_size());
      if (const auto* strings = value.as_strings()) {
        for (const std::string& text : *strings) append_string(out, text);
      } else if (const auto* numbers = value.as_numbers()) {
        out.append(reinterpret_cast<const char*>(numbers->bytes().data()), numbers->bytes().size());
      } else {
        for (const GgufValue& element : *value.as_arrays()) append_value(out, element);
      }
      break;
  }
}

}  // namespace

void GgufBuilder::add_u32(const std::string& key, uint32_t value) {
  add(key, GgufValue::unsigned_integer(gguf::ValueType::u32, value));
}

void GgufBuilder::add_f32(const std::string& key, float value) {
  add(key, GgufValue::floating(gguf::ValueType::f32, value));
}

void GgufBuilder::add_bool(const std::string& key, bool value) {
  add(key, GgufValue::boolean(value));
}

void GgufBuilder::add_string(const std::string& key, const std::string& value) {
  add(key, GgufValue::string(value));
}

void GgufBuilder::add_strings(const std::string& key, const std::vector<std::string>& values) {
  add(key, GgufValue::strings(values));
}

void GgufBuilder::add_i32s(const std::string& key, const std::vector<int32_t>& values) {
  std::vector<GgufValue> elements;
  for (const int32_t value : values) {
    elements.push_back(GgufValue::signed_integer(gguf::ValueType::i32, value));
  }
  add(key, GgufValue::array(gguf::ValueType::i32, elements));
}

void GgufBuilder::add_f32s(const std::string& key, const std::vector<float>& values) {
  std::vector<GgufValue> elements;
  for (const float value : values)
    elements.push_back(GgufValue::floating(gguf::ValueType::f32, value));
  add(key, GgufValue::array(gguf::ValueType::f32, elements));
}

void GgufBuilder::set_alignment(uint32_t alignment) {
  alignment_ = alignment;
  add_u32("general.alignment", alignment);
}

void GgufBuilder::add_tensor(const std::string& name, TensorType type,
                             const std::vector<int64_t>& shape, const std::string& bytes) {
  const std::optional<uint32_t> code = gguf::ggml_type_code(type);
  if (!code) throw std::invalid_argument("type has no GGUF code");
  data_.resize((data_.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  TensorInfo info{name, *code, {}, data_.size()};
  for (auto it = shape.rbegin(); it != shape.rend(); ++it)
    info.ne.push_back(static_cast<uint64_t>(*it));
  tensors_.push_back(std::move(info));
  data_ += bytes;
}

void GgufBuilder::add_raw_tensor_info(const std::string& name, uint32_t ggml_type,
                                      const std::vector<uint64_t>& ne, uint64_t offset) {
  tensors_.push_back({name, ggml_type, ne, offset});
}

std::string GgufBuilder::build() const {
  std::string out;
  append_scalar<uint32_t>(out, gguf::kMagic);
  append_scalar<uint32_t>(out, version_);
  append_scalar<uint64_t>(out, tensors_.size());
  append_scalar<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    append_string(out, key);
    append_scalar<uint32_t>(out, static_cast<uint32_t>(value.type()));
    append_value(out, value);
  }
  for (const TensorInfo& tensor : tensors_) {
    append_string(out, tensor.name);
    append_scalar<uint32_t>(out, static_cast<uint32_t>(tensor.ne.size()));
    for (const uint64_t extent : tensor.ne) append_scalar<uint64_t>(out, extent);
    append_scalar<uint32_t>(out, tensor.ggml_type);
    append_scalar<uint64_t>(out, tensor.offset);
  }
  if (!tensors_.empty()) out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  return out + data_;
}

}  // namespace draftwise::testing
