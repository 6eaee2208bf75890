#include "target/checkpoint.h"

#include <filesystem>

#include <fmt/ranges.h>

namespace draftwise {

Expected<Checkpoint> Checkpoint::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) {
    return make_error("{}: no such file or folder", path);
  }
  Checkpoint checkpoint;
  checkpoint.path_ = path;
  if (fs::is_directory(status)) {
    checkpoint.format_ = CheckpointFormat::safetensors;
    checkpoint.folder_ = path;
    DW_ASSIGN_OR_RETURN(checkpoint.safetensors_, SafetensorsCheckpoint::open_folder(path));
  } else if (fs::path(path).extension() == ".safetensors") {
    checkpoint.format_ = CheckpointFormat::safetensors;
    checkpoint.folder_ = fs::path(path).parent_path().string();
    if (checkpoint.folder_.empty()) checkpoint.folder_ = ".";
    DW_ASSIGN_OR_RETURN(checkpoint.safetensors_, SafetensorsCheckpoint::open_file(path));
  } else {
    DW_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::open(path));
    return from_gguf(std::move(gguf));
  }
  checkpoint.index_tensors();
  return checkpoint;
}

Checkpoint Checkpoint::from_gguf(GgufFile gguf) {
  Checkpoint checkpoint;
  checkpoint.format_ = CheckpointFormat::gguf;
  checkpoint.path_ = gguf.name();
  checkpoint.folder_ = std::filesystem::path(gguf.name()).parent_path().string();
  checkpoint.gguf_ = std::move(gguf);
  checkpoint.index_tensors();
  return checkpoint;
}

void Checkpoint::index_tensors() {
  if (gguf_) {
    for (const GgufTensorInfo& info : gguf_->tensors()) {
      tensors_.push_back({info.name, info.type, info.shape, gguf_->tensor_data(info)});
    }
  } else {
    for (const SafetensorsFile& shard : safetensors_->shards()) {
      for (const SafetensorsTensor& tensor : shard.tensors()) {
        tensors_.push_back({tensor.name, tensor.type, tensor.shape, tensor.data});
      }
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const CheckpointTensor* Checkpoint::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace draftwise
