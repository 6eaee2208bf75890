// One-line, bounded descriptions of JSON values for error messages. A value from a file
// may be nested arbitrarily deep or be megabytes long; dump() would recurse through all of
// it, so messages use this instead.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace draftwise {

// Scalars as written (strings cut to 40 characters, control characters escaped);
// containers by kind and size: "an array of 3 values", "an object of 2 keys".
std::string json_brief(const nlohmann::json& value);

}  // namespace draftwise
