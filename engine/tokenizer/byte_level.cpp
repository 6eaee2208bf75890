#include "engine/tokenizer/byte_level.h"

#include "engine/tokenizer/unicode.h"

namespace draftwise::byte_level {
namespace {

bool maps_to_itself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
}

struct Tables {
  std::array<char32_t, 256> code_points{};
  std::array<std::string, 256> symbols;
  Tables() {
    char32_t next_extra = 256;
    for (int byte = 0; byte < 256; ++byte) {
      code_points[byte] = maps_to_itself(byte) ? static_cast<char32_t>(byte) : next_extra++;
      unicode::append_utf8(symbols[byte], code_points[byte]);
    }
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

}  // namespace

const std::string& byte_to_symbol(unsigned char byte) {
  return tables().symbols[byte];
}

std::optional<unsigned char> symbol_to_byte(char32_t code_point) {
  if (code_point < 256 && maps_to_itself(static_cast<int>(code_point))) {
    return static_cast<unsigned char>(code_point);
  }
  if (code_point >= 256 && code_point < 256 + 68) {
    const std::array<char32_t, 256>& code_points = tables().code_points;
    for (int byte = 0; byte < 256; ++byte) {
      if (code_points[byte] == code_point) return static_cast<unsigned char>(byte);
    }
  }
  return std::nullopt;
}

}  // namespace draftwise::byte_level
