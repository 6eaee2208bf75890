// Read-only memory map of a whole file. Model files are read through this so that
// tensors are views into the page cache rather than copies.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "kernels/status.h"

namespace draftwise {

class MappedFile {
 public:
  // Maps `path` read-only. An empty file maps to an empty span.
  static Expected<MappedFile> open(const std::string& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const std::byte* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  void release();

  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string: configs, tokenizer files.
Expected<std::string> read_text_file(const std::string& path);

}  // namespace draftwise
