// Hex strings of raw bytes, as the Python fixture generators write them.
#pragma once

#include <string>

namespace draftwise::testing {

inline std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

}  // namespace draftwise::testing
