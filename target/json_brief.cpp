#include "target/json_brief.h"

#include <fmt/format.h>

namespace draftwise {

std::string json_brief(const nlohmann::json& value) {
  constexpr size_t kMaxChars = 40;
  switch (value.type()) {
    case nlohmann::json::value_t::array:
      return fmt::format("an array of {} values", value.size());
    case nlohmann::json::value_t::object:
      return fmt::format("an object of {} keys", value.size());
    case nlohmann::json::value_t::string: {
      const std::string& text = value.get_ref<const std::string&>();
      std::string shown = "\"";
      for (size_t i = 0; i < text.size() && i < kMaxChars; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        shown += c < 0x20 || c == 0x7f ? fmt::format("\\x{:02x}", c) : std::string(1, text[i]);
      }
      return shown + (text.size() > kMaxChars ? "...\"" : "\"");
    }
    default:
      return value.dump();  // a number, bool or null: short, and not recursive
  }
}

}  // namespace draftwise
