#include "target/gguf_reader.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace draftwise {
namespace {

constexpr int kMaxArrayNesting = 8;

// Smallest encoding of one string or nested-array element, used to reject counts that
// cannot fit in the bytes left before allocating anything for them.
uint64_t min_encoded_bytes(gguf::ValueType type) {
  return type == gguf::ValueType::array ? 12 : 8;  // element type + count; string length
}

template <typename T>
T load(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}

std::string display_string(const std::string& text) {
  constexpr size_t kMaxChars = 60;
  std::string shown = text.size() > kMaxChars ? text.substr(0, kMaxChars) + "..." : text;
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return fmt::format("\"{}\"", shown);
}

}  // namespace

size_t gguf_numeric_size(gguf::ValueType type) {
  switch (type) {
    case gguf::ValueType::u8:
    case gguf::ValueType::i8:
    case gguf::ValueType::boolean:
      return 1;
    case gguf::ValueType::u16:
    case gguf::ValueType::i16:
      return 2;
    case gguf::ValueType::u32:
    case gguf::ValueType::i32:
    case gguf::ValueType::f32:
      return 4;
    case gguf::ValueType::u64:
    case gguf::ValueType::i64:
    case gguf::ValueType::f64:
      return 8;
    case gguf::ValueType::string:
    case gguf::ValueType::array:
      return 0;
  }
  return 0;
}

std::optional<int64_t> GgufNumbers::int_at(size_t index) const {
  const std::byte* at = bytes_.data() + index * gguf_numeric_size(element_type_);
  switch (element_type_) {
    case gguf::ValueType::u8:
    case gguf::ValueType::boolean:
      return load<uint8_t>(at);
    case gguf::ValueType::i8:
      return load<int8_t>(at);
    case gguf::ValueType::u16:
      return load<uint16_t>(at);
    case gguf::ValueType::i16:
      return load<int16_t>(at);
    case gguf::ValueType::u32:
      return load<uint32_t>(at);
    case gguf::ValueType::i32:
      return load<int32_t>(at);
    case gguf::ValueType::i64:
      return load<int64_t>(at);
    case gguf::ValueType::u64: {
      const uint64_t value = load<uint64_t>(at);
      if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(value);
    }
    default:
      return std::nullopt;
  }
}

std::optional<double> GgufNumbers::float_at(size_t index) const {
  const std::byte* at = bytes_.data() + index * gguf_numeric_size(element_type_);
  if (element_type_ == gguf::ValueType::f32) return load<float>(at);
  if (element_type_ == gguf::ValueType::f64) return load<double>(at);
  return std::nullopt;
}

GgufValue GgufValue::unsigned_integer(gguf::ValueType type, uint64_t value) {
  GgufValue result;
  result.type_ = type;
  result.data_ = value;
  return result;
}

GgufValue GgufValue::signed_integer(gguf::ValueType type, int64_t value) {
  GgufValue result;
  result.type_ = type;
  result.data_ = value;
  return result;
}

GgufValue GgufValue::floating(gguf::ValueType type, double value) {
  GgufValue result;
  result.type_ = type;
  result.data_ = value;
  return result;
}

GgufValue GgufValue::boolean(bool value) {
  GgufValue result;
  result.type_ = gguf::ValueType::boolean;
  result.data_ = value;
  return result;
}

GgufValue GgufValue::string(std::string value) {
  GgufValue result;
  result.type_ = gguf::ValueType::string;
  result.data_ = std::move(value);
  return result;
}

GgufValue GgufValue::strings(std::vector<std::string> values) {
  GgufValue result;
  result.type_ = gguf::ValueType::array;
  result.element_type_ = gguf::ValueType::string;
  result.data_ = std::move(values);
  return result;
}

GgufValue GgufValue::numbers(GgufNumbers numbers) {
  GgufValue result;
  result.type_ = gguf::ValueType::array;
  result.element_type_ = numbers.element_type();
  result.data_ = std::move(numbers);
  return result;
}

GgufValue GgufValue::arrays(std::vector<GgufValue> arrays) {
  GgufValue result;
  result.type_ = gguf::ValueType::array;
  result.element_type_ = gguf::ValueType::array;
  result.data_ = std::move(arrays);
  return result;
}

GgufValue GgufValue::array(gguf::ValueType element_type, const std::vector<GgufValue>& elements) {
  if (element_type == gguf::ValueType::array) return arrays(elements);
  if (element_type == gguf::ValueType::string) {
    std::vector<std::string> values;
    for (const GgufValue& element : elements) values.push_back(*element.as_string());
    return strings(std::move(values));
  }
  auto bytes = std::make_shared<std::string>();
  const auto append = [&](auto value) {
    bytes->append(reinterpret_cast<const char*>(&value), sizeof value);
  };
  for (const GgufValue& element : elements) {
    // An integer element's bits, whichever signedness it was made with.
    const uint64_t bits = std::holds_alternative<uint64_t>(element.data_)
                              ? std::get<uint64_t>(element.data_)
                              : static_cast<uint64_t>(element.as_int().value_or(0));
    switch (element_type) {
      case gguf::ValueType::u8:
        append(static_cast<uint8_t>(bits));
        break;
      case gguf::ValueType::i8:
        append(static_cast<int8_t>(bits));
        break;
      case gguf::ValueType::u16:
        append(static_cast<uint16_t>(bits));
        break;
      case gguf::ValueType::i16:
        append(static_cast<int16_t>(bits));
        break;
      case gguf::ValueType::u32:
        append(static_cast<uint32_t>(bits));
        break;
      case gguf::ValueType::i32:
        append(static_cast<int32_t>(bits));
        break;
      case gguf::ValueType::u64:
        append(bits);
        break;
      case gguf::ValueType::i64:
        append(static_cast<int64_t>(bits));
        break;
      case gguf::ValueType::f32:
        append(static_cast<float>(*element.as_float()));
        break;
      case gguf::ValueType::f64:
        append(*element.as_float());
        break;
      case gguf::ValueType::boolean:
        append(static_cast<uint8_t>(*element.as_bool()));
        break;
      default:
        break;
    }
  }
  const std::span<const std::byte> view(reinterpret_cast<const std::byte*>(bytes->data()),
                                        bytes->size());
  return numbers(GgufNumbers(element_type, elements.size(), view, std::move(bytes)));
}

std::optional<int64_t> GgufValue::as_int() const {
  if (const auto* value = std::get_if<int64_t>(&data_)) return *value;
  if (const auto* value = std::get_if<uint64_t>(&data_)) {
    if (*value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(*value);
    }
  }
  return std::nullopt;
}

std::optional<double> GgufValue::as_float() const {
  if (const auto* value = std::get_if<double>(&data_)) return *value;
  return std::nullopt;
}

std::optional<bool> GgufValue::as_bool() const {
  if (const auto* value = std::get_if<bool>(&data_)) return *value;
  return std::nullopt;
}

const std::string* GgufValue::as_string() const {
  return std::get_if<std::string>(&data_);
}

const std::vector<std::string>* GgufValue::as_strings() const {
  return std::get_if<std::vector<std::string>>(&data_);
}

const GgufNumbers* GgufValue::as_numbers() const {
  return std::get_if<GgufNumbers>(&data_);
}

const std::vector<GgufValue>* GgufValue::as_arrays() const {
  return std::get_if<std::vector<GgufValue>>(&data_);
}

size_t GgufValue::array_size() const {
  if (const auto* values = as_strings()) return values->size();
  if (const auto* values = as_numbers()) return values->size();
  if (const auto* values = as_arrays()) return values->size();
  return 0;
}

std::string GgufValue::to_display(size_t max_items) const {
  if (const auto* value = std::get_if<uint64_t>(&data_)) return fmt::format("{}", *value);
  if (const auto* value = std::get_if<int64_t>(&data_)) return fmt::format("{}", *value);
  if (const auto* value = std::get_if<double>(&data_)) return fmt::format("{}", *value);
  if (const auto* value = std::get_if<bool>(&data_)) return *value ? "true" : "false";
  if (const auto* value = as_string()) return display_string(*value);
  const size_t count = array_size();
  std::string text = fmt::format("[{} x {}]", count, gguf::value_type_name(element_type_));
  for (size_t i = 0; i < std::min(max_items, count); ++i) {
    text += i == 0 ? " " : ", ";
    if (const auto* values = as_strings()) {
      text += display_string((*values)[i]);
    } else if (const auto* numbers = as_numbers()) {
      const std::optional<double> number = numbers->float_at(i);
      text +=
          number ? fmt::format("{}", *number) : fmt::format("{}", numbers->int_at(i).value_or(-1));
    } else {
      const GgufValue& nested = (*as_arrays())[i];
      text += fmt::format("[{} x {}]", nested.array_size(),
                          gguf::value_type_name(nested.element_type()));
    }
  }
  if (count > max_items) text += ", ...";
  return text;
}

// Reads the file front to back; every read is bounds-checked.
class GgufParser {
 public:
  GgufParser(std::span<const std::byte> bytes, const std::string& name)
      : bytes_(bytes), name_(name) {}

  Status parse(GgufFile& file);

 private:
  uint64_t remaining() const { return bytes_.size() - position_; }

  Error truncated(std::string_view what) const {
    return make_error("{}: truncated: {} at byte {} runs past the end of the file ({} bytes)",
                      name_, what, position_, bytes_.size());
  }

  template <typename T>
  Expected<T> read_scalar(std::string_view what) {
    if (remaining() < sizeof(T)) return truncated(what);
    T value;
    std::memcpy(&value, bytes_.data() + position_, sizeof(T));
    position_ += sizeof(T);
    return value;
  }

  Expected<std::string> read_string(std::string_view what) {
    DW_ASSIGN_OR_RETURN(uint64_t length, read_scalar<uint64_t>(what));
    if (length > remaining()) {
      return make_error("{}: {} at byte {} has length {}, past the end of the file ({} bytes)",
                        name_, what, position_ - 8, length, bytes_.size());
    }
    std::string text(reinterpret_cast<const char*>(bytes_.data() + position_), length);
    position_ += length;
    return text;
  }

  Expected<GgufValue> read_value(uint32_t type_code, const std::string& key, int depth);
  Status read_metadata(GgufFile& file, uint64_t count);
  Status read_tensor_infos(GgufFile& file, uint64_t count);
  Status place_tensors(GgufFile& file);

  std::span<const std::byte> bytes_;
  const std::string& name_;
  uint64_t position_ = 0;
};

Expected<GgufValue> GgufParser::read_value(uint32_t type_code, const std::string& key, int depth) {
  if (!gguf::is_known_value_type(type_code)) {
    return make_error("{}: metadata '{}' has unknown value type {}", name_, key, type_code);
  }
  const auto type = static_cast<gguf::ValueType>(type_code);
  const std::string what = fmt::format("value of metadata '{}'", key);
  switch (type) {
    case gguf::ValueType::u8: {
      DW_ASSIGN_OR_RETURN(uint8_t value, read_scalar<uint8_t>(what));
      return GgufValue::unsigned_integer(type, value);
    }
    case gguf::ValueType::i8: {
      DW_ASSIGN_OR_RETURN(int8_t value, read_scalar<int8_t>(what));
      return GgufValue::signed_integer(type, value);
    }
    case gguf::ValueType::u16: {
      DW_ASSIGN_OR_RETURN(uint16_t value, read_scalar<uint16_t>(what));
      return GgufValue::unsigned_integer(type, value);
    }
    case gguf::ValueType::i16: {
      DW_ASSIGN_OR_RETURN(int16_t value, read_scalar<int16_t>(what));
      return GgufValue::signed_integer(type, value);
    }
    case gguf::ValueType::u32: {
      DW_ASSIGN_OR_RETURN(uint32_t value, read_scalar<uint32_t>(what));
      return GgufValue::unsigned_integer(type, value);
    }
    case gguf::ValueType::i32: {
      DW_ASSIGN_OR_RETURN(int32_t value, read_scalar<int32_t>(what));
      return GgufValue::signed_integer(type, value);
    }
    case gguf::ValueType::u64: {
      DW_ASSIGN_OR_RETURN(uint64_t value, read_scalar<uint64_t>(what));
      return GgufValue::unsigned_integer(type, value);
    }
    case gguf::ValueType::i64: {
      DW_ASSIGN_OR_RETURN(int64_t value, read_scalar<int64_t>(what));
      return GgufValue::signed_integer(type, value);
    }
    case gguf::ValueType::f32: {
      DW_ASSIGN_OR_RETURN(float value, read_scalar<float>(what));
      return GgufValue::floating(type, value);
    }
    case gguf::ValueType::f64: {
      DW_ASSIGN_OR_RETURN(double value, read_scalar<double>(what));
      return GgufValue::floating(type, value);
    }
    case gguf::ValueType::boolean: {
      DW_ASSIGN_OR_RETURN(uint8_t value, read_scalar<uint8_t>(what));
      if (value > 1) {
        return make_error("{}: metadata '{}' is a bool with value {} (must be 0 or 1)", name_, key,
                          value);
      }
      return GgufValue::boolean(value != 0);
    }
    case gguf::ValueType::string: {
      DW_ASSIGN_OR_RETURN(std::string value, read_string(what));
      return GgufValue::string(std::move(value));
    }
    case gguf::ValueType::array: {
      if (depth >= kMaxArrayNesting) {
        return make_error("{}: metadata '{}' nests arrays deeper than {}", name_, key,
                          kMaxArrayNesting);
      }
      DW_ASSIGN_OR_RETURN(uint32_t element_code, read_scalar<uint32_t>(what));
      if (!gguf::is_known_value_type(element_code)) {
        return make_error("{}: metadata '{}' is an array of unknown value type {}", name_, key,
                          element_code);
      }
      const auto element_type = static_cast<gguf::ValueType>(element_code);
      DW_ASSIGN_OR_RETURN(uint64_t count, read_scalar<uint64_t>(what));
      const auto too_long = [&] {
        return make_error(
            "{}: metadata '{}' is an array of {} {} values, which cannot fit in the {} bytes "
            "left in the file (truncated or corrupt)",
            name_, key, count, gguf::value_type_name(element_type), remaining());
      };
      if (const size_t element_bytes = gguf_numeric_size(element_type); element_bytes > 0) {
        // Numbers stay in the file: read in place, validated here.
        if (count > remaining() / element_bytes) return too_long();
        const std::span<const std::byte> bytes = bytes_.subspan(position_, count * element_bytes);
        if (element_type == gguf::ValueType::boolean) {
          for (const std::byte byte : bytes) {
            if (static_cast<unsigned>(byte) > 1) {
              return make_error("{}: metadata '{}' holds a bool that is not 0 or 1", name_, key);
            }
          }
        }
        position_ += count * element_bytes;
        return GgufValue::numbers(GgufNumbers(element_type, count, bytes));
      }
      if (count > remaining() / min_encoded_bytes(element_type)) return too_long();
      if (element_type == gguf::ValueType::string) {
        std::vector<std::string> values;
        values.reserve(count);
        for (uint64_t i = 0; i < count; ++i) {
          DW_ASSIGN_OR_RETURN(std::string value, read_string(what));
          values.push_back(std::move(value));
        }
        return GgufValue::strings(std::move(values));
      }
      std::vector<GgufValue> arrays;
      arrays.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        DW_ASSIGN_OR_RETURN(GgufValue element, read_value(element_code, key, depth + 1));
        arrays.push_back(std::move(element));
      }
      return GgufValue::arrays(std::move(arrays));
    }
  }
  return make_error("{}: metadata '{}' has unknown value type {}", name_, key, type_code);
}

Status GgufParser::read_metadata(GgufFile& file, uint64_t count) {
  // Each entry takes at least a key length, a type and one byte of value.
  if (count > remaining() / 13) {
    return make_error(
        "{}: header claims {} metadata entries, more than the file can hold "
        "(truncated or corrupt)",
        name_, count);
  }
  for (uint64_t i = 0; i < count; ++i) {
    DW_ASSIGN_OR_RETURN(std::string key, read_string(fmt::format("key of metadata entry {}", i)));
    DW_ASSIGN_OR_RETURN(uint32_t type_code,
                        read_scalar<uint32_t>(fmt::format("type of metadata '{}'", key)));
    DW_ASSIGN_OR_RETURN(GgufValue value, read_value(type_code, key, 0));
    if (file.metadata_index_.count(key) != 0) {
      return make_error("{}: metadata key '{}' appears twice", name_, key);
    }
    file.metadata_index_.emplace(key, file.metadata_.size());
    file.metadata_.emplace_back(std::move(key), std::move(value));
  }
  return {};
}

Status GgufParser::read_tensor_infos(GgufFile& file, uint64_t count) {
  // name length + n_dims + one extent + type + offset.
  if (count > remaining() / 32) {
    return make_error(
        "{}: header claims {} tensors, more than the file can hold (truncated or "
        "corrupt)",
        name_, count);
  }
  file.tensors_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    GgufTensorInfo tensor;
    DW_ASSIGN_OR_RETURN(tensor.name, read_string(fmt::format("name of tensor {}", i)));
    const std::string what = fmt::format("info of tensor '{}'", tensor.name);
    DW_ASSIGN_OR_RETURN(uint32_t dims, read_scalar<uint32_t>(what));
    if (dims == 0 || dims > gguf::kMaxDims) {
      return make_error("{}: tensor '{}' has {} dimensions (must be 1 to {})", name_, tensor.name,
                        dims, gguf::kMaxDims);
    }
    std::vector<int64_t> extents(dims);  // ne[]: innermost first
    for (uint32_t d = 0; d < dims; ++d) {
      DW_ASSIGN_OR_RETURN(uint64_t extent, read_scalar<uint64_t>(what));
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return make_error("{}: tensor '{}' has extent {} in dimension {}, too large", name_,
                          tensor.name, extent, d);
      }
      extents[d] = static_cast<int64_t>(extent);
    }
    DW_ASSIGN_OR_RETURN(uint32_t ggml_type, read_scalar<uint32_t>(what));
    DW_ASSIGN_OR_RETURN(uint64_t offset, read_scalar<uint64_t>(what));

    const std::optional<TensorType> type = gguf::tensor_type_from_ggml(ggml_type);
    if (!type) {
      if (gguf::is_known_ggml_type(ggml_type)) {
        return make_error("{}: tensor '{}' has quantization type {}, which draftwise cannot read",
                          name_, tensor.name, gguf::ggml_type_name(ggml_type));
      }
      return make_error("{}: tensor '{}' has unknown tensor type {}", name_, tensor.name,
                        ggml_type);
    }
    tensor.type = *type;
    const std::optional<int64_t> elements = checked_element_count(extents.data(), dims);
    if (!elements) {
      return make_error("{}: tensor '{}' has a shape whose element count overflows", name_,
                        tensor.name);
    }
    const int64_t block = tensor_type_traits(*type).block_elements;
    if (extents[0] % block != 0) {
      return make_error(
          "{}: tensor '{}' has rows of {} values, not a multiple of the {} block "
          "size {}",
          name_, tensor.name, extents[0], tensor_type_name(*type), block);
    }
    const std::optional<uint64_t> nbytes = tensor_type_bytes(*type, *elements);
    if (!nbytes) {
      return make_error("{}: tensor '{}' is too large", name_, tensor.name);
    }
    tensor.nbytes = *nbytes;
    tensor.offset = offset;  // relative for now; place_tensors makes it absolute
    tensor.shape.assign(extents.rbegin(), extents.rend());
    if (file.tensor_index_.count(tensor.name) != 0) {
      return make_error("{}: tensor '{}' appears twice", name_, tensor.name);
    }
    file.tensor_index_.emplace(tensor.name, file.tensors_.size());
    file.tensors_.push_back(std::move(tensor));
  }
  return {};
}

Status GgufParser::place_tensors(GgufFile& file) {
  const uint64_t alignment = file.alignment_;
  const uint64_t padding = (alignment - position_ % alignment) % alignment;
  const uint64_t data_start = position_ + padding;
  if (file.tensors_.empty()) return {};
  if (data_start > bytes_.size()) {
    return make_error(
        "{}: truncated: the data section would start at byte {}, past the end of "
        "the file ({} bytes)",
        name_, data_start, bytes_.size());
  }
  const uint64_t data_size = bytes_.size() - data_start;
  for (GgufTensorInfo& tensor : file.tensors_) {
    if (tensor.offset % alignment != 0) {
      return make_error("{}: tensor '{}' has offset {}, not a multiple of the alignment {}", name_,
                        tensor.name, tensor.offset, alignment);
    }
    if (tensor.offset > data_size || tensor.nbytes > data_size - tensor.offset) {
      return make_error(
          "{}: tensor '{}' ({} bytes at data offset {}) leaves the data section ({} bytes); "
          "the file may be truncated",
          name_, tensor.name, tensor.nbytes, tensor.offset, data_size);
    }
    tensor.offset += data_start;
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& tensor : file.tensors_) {
    if (tensor.nbytes > 0) by_offset.push_back(&tensor);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& previous = *by_offset[i - 1];
    if (previous.offset + previous.nbytes > by_offset[i]->offset) {
      return make_error("{}: tensors '{}' and '{}' overlap in the data section", name_,
                        previous.name, by_offset[i]->name);
    }
  }
  return {};
}

Status GgufParser::parse(GgufFile& file) {
  DW_ASSIGN_OR_RETURN(uint32_t magic, read_scalar<uint32_t>("file magic"));
  if (magic != gguf::kMagic) {
    return make_error("{}: not a GGUF file (wrong magic bytes)", name_);
  }
  DW_ASSIGN_OR_RETURN(uint32_t version, read_scalar<uint32_t>("version"));
  if ((version & 0xffffu) == 0 && version != 0) {
    return make_error("{}: big-endian GGUF files are not supported", name_);
  }
  if (version < 2) {
    return make_error("{}: GGUF version {} is not supported (only versions 2 and 3)", name_,
                      version);
  }
  if (version > 3) {
    return make_error("{}: GGUF version {} is newer than this reader (versions 2 and 3)", name_,
                      version);
  }
  file.version_ = version;
  DW_ASSIGN_OR_RETURN(uint64_t tensor_count, read_scalar<uint64_t>("tensor count"));
  DW_ASSIGN_OR_RETURN(uint64_t metadata_count, read_scalar<uint64_t>("metadata count"));
  DW_TRY(read_metadata(file, metadata_count));

  if (const GgufValue* alignment = file.find("general.alignment")) {
    const std::optional<int64_t> value = alignment->as_int();
    if (alignment->type() != gguf::ValueType::u32 || !value || *value == 0 ||
        (*value & (*value - 1)) != 0) {
      return make_error("{}: general.alignment must be a uint32 power of two, got {}", name_,
                        alignment->to_display());
    }
    file.alignment_ = static_cast<uint64_t>(*value);
  }
  DW_TRY(read_tensor_infos(file, tensor_count));
  return place_tensors(file);
}

Expected<GgufFile> GgufFile::open(const std::string& path) {
  DW_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  const std::span<const std::byte> bytes = mapped.bytes();
  DW_ASSIGN_OR_RETURN(GgufFile file, parse(bytes, path));
  file.file_ = std::move(mapped);
  return file;
}

Expected<GgufFile> GgufFile::parse(std::span<const std::byte> bytes, std::string name) {
  GgufFile file;
  file.name_ = std::move(name);
  file.bytes_ = bytes;
  GgufParser parser(bytes, file.name_);
  DW_TRY(parser.parse(file));
  return file;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {

// Reads `key` through `as_type` (a GgufValue accessor); `wanted` names the type in errors.
template <typename T, typename Read>
Expected<std::optional<T>> read_typed(const GgufFile& file, std::string_view key,
                                      std::string_view wanted, Read as_type) {
  const GgufValue* value = file.find(key);
  if (value == nullptr) return std::optional<T>();
  std::optional<T> typed = as_type(*value);
  if (!typed) {
    return make_error("{}: metadata '{}' must be {}, got {}", file.name(), key, wanted,
                      value->to_display());
  }
  return typed;
}

}  // namespace

Expected<std::optional<int64_t>> GgufFile::read_int(std::string_view key) const {
  return read_typed<int64_t>(*this, key, "an integer",
                             [](const GgufValue& value) { return value.as_int(); });
}

Expected<std::optional<double>> GgufFile::read_float(std::string_view key) const {
  return read_typed<double>(*this, key, "a float",
                            [](const GgufValue& value) { return value.as_float(); });
}

Expected<std::optional<bool>> GgufFile::read_bool(std::string_view key) const {
  return read_typed<bool>(*this, key, "a bool",
                          [](const GgufValue& value) { return value.as_bool(); });
}

Expected<std::optional<std::string>> GgufFile::read_string(std::string_view key) const {
  return read_typed<std::string>(*this, key, "a string", [](const GgufValue& value) {
    const std::string* text = value.as_string();
    return text != nullptr ? std::optional<std::string>(*text) : std::nullopt;
  });
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace draftwise
