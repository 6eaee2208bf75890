// GPT-2's reversible map between bytes and printable characters, which byte-level BPE
// vocabularies are written in: printable Latin-1 bytes map to themselves and the other 68
// bytes (controls, space, DEL, NBSP, soft hyphen...) to U+0100 onwards, so that
// " the" is spelled "Ġthe".
#pragma once

#include <array>
#include <optional>
#include <string>

namespace draftwise::byte_level {

// UTF-8 spelling of the character that stands for `byte`.
const std::string& byte_to_symbol(unsigned char byte);

// The byte a character stands for; nullopt for characters outside the map.
std::optional<unsigned char> symbol_to_byte(char32_t code_point);

}  // namespace draftwise::byte_level
