#include "target/safetensors_reader.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace draftwise {
namespace {

using Json = nlohmann::json;

// The safetensors reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeName {
  std::string_view name;
  TensorType type;
};

constexpr std::array<DtypeName, 15> kDtypes = {{
    {"F32", TensorType::f32},
    {"F16", TensorType::f16},
    {"BF16", TensorType::bf16},
    {"F64", TensorType::f64},
    {"I8", TensorType::i8},
    {"U8", TensorType::u8},
    {"I16", TensorType::i16},
    {"U16", TensorType::u16},
    {"I32", TensorType::i32},
    {"U32", TensorType::u32},
    {"I64", TensorType::i64},
    {"U64", TensorType::u64},
    {"BOOL", TensorType::boolean},
    {"F8_E4M3", TensorType::f8_e4m3},
    {"F8_E5M2", TensorType::f8_e5m2},
}};

Expected<SafetensorsTensor> parse_tensor_entry(const std::string& file_name,
                                               const std::string& tensor_name, const Json& entry,
                                               std::span<const std::byte> data) {
  const auto fail = [&](std::string_view problem) {
    return make_error("{}: tensor '{}': {}", file_name, tensor_name, problem);
  };
  if (!entry.is_object()) return fail("header entry is not an object");
  const auto dtype_it = entry.find("dtype");
  const auto shape_it = entry.find("shape");
  const auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) return fail("missing string 'dtype'");
  if (shape_it == entry.end() || !shape_it->is_array()) return fail("missing array 'shape'");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return fail("'data_offsets' must be two unsigned integers [begin, end]");
  }
  SafetensorsTensor tensor;
  tensor.name = tensor_name;
  const std::string& dtype = dtype_it->get_ref<const std::string&>();
  const std::optional<TensorType> type = safetensors_dtype(dtype);
  if (!type) return fail(fmt::format("unknown dtype '{}'", dtype));
  tensor.type = *type;
  for (const Json& extent : *shape_it) {
    if (!extent.is_number_unsigned() ||
        extent.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail("shape entries must be non-negative integers");
    }
    tensor.shape.push_back(extent.get<int64_t>());
  }
  const std::optional<int64_t> elements =
      checked_element_count(tensor.shape.data(), tensor.shape.size());
  const std::optional<uint64_t> expected_bytes =
      elements ? tensor_type_bytes(tensor.type, *elements) : std::nullopt;
  if (!expected_bytes) return fail("shape is too large");
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end) return fail(fmt::format("data_offsets [{}, {}] are reversed", begin, end));
  if (end > data.size()) {
    return fail(
        fmt::format("data_offsets [{}, {}] leave the data section ({} bytes); the file "
                    "may be truncated",
                    begin, end, data.size()));
  }
  if (end - begin != *expected_bytes) {
    return fail(fmt::format("data_offsets span {} bytes but {} {} values need {}", end - begin,
                            *elements, dtype, *expected_bytes));
  }
  tensor.data = data.subspan(begin, end - begin);
  return tensor;
}

}  // namespace

std::optional<TensorType> safetensors_dtype(std::string_view name) {
  for (const DtypeName& dtype : kDtypes) {
    if (dtype.name == name) return dtype.type;
  }
  return std::nullopt;
}

Expected<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  DW_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  const std::span<const std::byte> bytes = mapped.bytes();
  DW_ASSIGN_OR_RETURN(SafetensorsFile file, parse(bytes, path));
  file.file_ = std::move(mapped);
  return file;
}

Expected<SafetensorsFile> SafetensorsFile::parse(std::span<const std::byte> bytes,
                                                 std::string name) {
  SafetensorsFile file;
  file.name_ = std::move(name);
  const std::string& file_name = file.name_;
  if (bytes.size() < 8) {
    return make_error("{}: truncated: {} bytes, too short for a safetensors header", file_name,
                      bytes.size());
  }
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), sizeof header_bytes);
  if (header_bytes > bytes.size() - 8) {
    return make_error(
        "{}: header length {} runs past the end of the file ({} bytes); not a "
        "safetensors file, or truncated",
        file_name, header_bytes, bytes.size());
  }
  if (header_bytes > kMaxHeaderBytes) {
    return make_error("{}: header length {} is above the 100 MB limit", file_name, header_bytes);
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  Json header;
  try {
    header = Json::parse(header_begin, header_begin + header_bytes);
  } catch (const Json::exception& error) {
    return make_error("{}: header is not valid JSON: {}", file_name, error.what());
  }
  if (!header.is_object()) return make_error("{}: header is not a JSON object", file_name);
  const std::span<const std::byte> data = bytes.subspan(8 + header_bytes);

  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      if (!entry.is_object()) {
        return make_error("{}: __metadata__ is not an object of strings", file_name);
      }
      for (const auto& [meta_key, meta_value] : entry.items()) {
        if (!meta_value.is_string()) {
          return make_error("{}: __metadata__ value '{}' is not a string", file_name, meta_key);
        }
        file.metadata_.emplace(meta_key, meta_value.get<std::string>());
      }
      continue;
    }
    DW_ASSIGN_OR_RETURN(SafetensorsTensor tensor, parse_tensor_entry(file_name, key, entry, data));
    file.tensors_.push_back(std::move(tensor));
  }

  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& tensor : file.tensors_) {
    if (!tensor.data.empty()) by_offset.push_back(&tensor);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->data.data() < b->data.data(); });
  // As the reference implementation requires, the tensors tile the data section exactly:
  // no overlap, no hole, nothing after the last one.
  const std::byte* expected = data.data();
  for (size_t i = 0; i < by_offset.size(); ++i) {
    const SafetensorsTensor& tensor = *by_offset[i];
    if (tensor.data.data() < expected) {
      return make_error("{}: tensors '{}' and '{}' overlap in the data section", file_name,
                        by_offset[i - 1]->name, tensor.name);
    }
    if (tensor.data.data() > expected) {
      return make_error("{}: {} unused bytes before tensor '{}' in the data section", file_name,
                        tensor.data.data() - expected, tensor.name);
    }
    expected = tensor.data.data() + tensor.data.size();
  }
  if (expected != data.data() + data.size()) {
    return make_error("{}: {} bytes after the last tensor; the header does not describe them",
                      file_name, data.data() + data.size() - expected);
  }
  return file;
}

Expected<SafetensorsCheckpoint> SafetensorsCheckpoint::open_file(const std::string& path) {
  SafetensorsCheckpoint checkpoint;
  DW_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(path));
  checkpoint.shards_.push_back(std::move(file));
  return checkpoint;
}

Expected<SafetensorsCheckpoint> SafetensorsCheckpoint::open_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path single = fs::path(folder) / "model.safetensors";
  const fs::path index_path = fs::path(folder) / "model.safetensors.index.json";
  std::error_code ignored;
  if (!fs::exists(index_path, ignored)) {
    if (!fs::exists(single, ignored)) {
      return make_error("{}: no model.safetensors or model.safetensors.index.json in the folder",
                        folder);
    }
    return open_file(single.string());
  }

  DW_ASSIGN_OR_RETURN(std::string index_text, read_text_file(index_path.string()));
  Json index;
  try {
    index = Json::parse(index_text);
  } catch (const Json::exception& error) {
    return make_error("{}: not valid JSON: {}", index_path.string(), error.what());
  }
  const auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || weight_map == index.end() || !weight_map->is_object()) {
    return make_error("{}: missing object 'weight_map'", index_path.string());
  }
  // Shard file name -> tensors the index places there.
  std::map<std::string, std::set<std::string>> expected_by_shard;
  for (const auto& [tensor_name, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      return make_error("{}: weight_map entry '{}' is not a file name", index_path.string(),
                        tensor_name);
    }
    const std::string& shard_name = shard.get_ref<const std::string&>();
    if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == "." ||
        shard_name == "..") {
      return make_error("{}: shard '{}' of tensor '{}' must be a file in the same folder",
                        index_path.string(), shard_name, tensor_name);
    }
    expected_by_shard[shard_name].insert(tensor_name);
  }

  SafetensorsCheckpoint checkpoint;
  std::unordered_map<std::string, std::string> seen;  // tensor -> shard
  for (const auto& [shard_name, expected] : expected_by_shard) {
    DW_ASSIGN_OR_RETURN(SafetensorsFile shard,
                        SafetensorsFile::open((fs::path(folder) / shard_name).string()));
    std::set<std::string> found;
    for (const SafetensorsTensor& tensor : shard.tensors()) {
      const auto [it, inserted] = seen.emplace(tensor.name, shard_name);
      if (!inserted) {
        return make_error("{}: tensor '{}' is in both {} and {}", folder, tensor.name, it->second,
                          shard_name);
      }
      if (expected.count(tensor.name) == 0) {
        return make_error("{}: tensor '{}' is in {}, but the index does not place it there", folder,
                          tensor.name, shard_name);
      }
      found.insert(tensor.name);
    }
    for (const std::string& name : expected) {
      if (found.count(name) == 0) {
        return make_error("{}: the index places tensor '{}' in {}, which does not contain it",
                          folder, name, shard_name);
      }
    }
    checkpoint.shards_.push_back(std::move(shard));
  }
  return checkpoint;
}

}  // namespace draftwise
