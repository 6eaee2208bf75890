// SHA-256 (FIPS 180-4), for naming the exact model file a benchmark ran.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "kernels/status.h"

namespace draftwise {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const uint8_t> bytes);
  // The digest as 64 lowercase hex digits; the object is spent afterwards.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
};

// The SHA-256 of a file's bytes, or of a folder: of the concatenated "name digest" lines of
// its regular files, sorted by name. An unreadable path is an error naming it.
Expected<std::string> sha256_of_path(const std::string& path);

}  // namespace draftwise
