#include "kernels/tensor_type.h"

#include <array>
#include <limits>

namespace draftwise {
namespace {

// Indexed by TensorType. GGUF block layouts are documented in kernels/cpu/dequantize.cpp.
constexpr std::array<TensorTypeTraits, 23> kTraits = {{
    {"F32", 1, 4, true},      {"F16", 1, 2, true},      {"BF16", 1, 2, true},
    {"F64", 1, 8, true},      {"I8", 1, 1, false},      {"U8", 1, 1, false},
    {"I16", 1, 2, false},     {"U16", 1, 2, false},     {"I32", 1, 4, false},
    {"U32", 1, 4, false},     {"I64", 1, 8, false},     {"U64", 1, 8, false},
    {"BOOL", 1, 1, false},    {"F8_E4M3", 1, 1, false}, {"F8_E5M2", 1, 1, false},
    {"Q4_0", 32, 18, true},   {"Q4_1", 32, 20, true},   {"Q5_0", 32, 22, true},
    {"Q5_1", 32, 24, true},   {"Q8_0", 32, 34, true},   {"Q4_K", 256, 144, true},
    {"Q5_K", 256, 176, true}, {"Q6_K", 256, 210, true},
}};

}  // namespace

const TensorTypeTraits& tensor_type_traits(TensorType type) {
  return kTraits[static_cast<size_t>(type)];
}

std::optional<uint64_t> tensor_type_bytes(TensorType type, int64_t elements) {
  const TensorTypeTraits& traits = tensor_type_traits(type);
  if (elements < 0 || elements % traits.block_elements != 0) return std::nullopt;
  const uint64_t blocks = static_cast<uint64_t>(elements / traits.block_elements);
  const uint64_t block_bytes = static_cast<uint64_t>(traits.block_bytes);
  if (blocks > std::numeric_limits<uint64_t>::max() / block_bytes) return std::nullopt;
  return blocks * block_bytes;
}

std::optional<int64_t> checked_element_count(const int64_t* extents, size_t rank) {
  int64_t count = 1;
  for (size_t i = 0; i < rank; ++i) {
    if (extents[i] < 0) return std::nullopt;
    if (extents[i] != 0 && count > std::numeric_limits<int64_t>::max() / extents[i]) {
      return std::nullopt;
    }
    count *= extents[i];
  }
  return count;
}

}  // namespace draftwise
