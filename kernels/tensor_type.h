// Storage types of tensors in model files: the plain dtypes of safetensors and the
// GGUF (ggml) block-quantized formats. A quantized tensor is stored in blocks along its
// innermost dimension; `block_elements` values take `block_bytes` bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace draftwise {

enum class TensorType : uint8_t {
  f32,
  f16,
  bf16,
  f64,
  i8,
  u8,
  i16,
  u16,
  i32,
  u32,
  i64,
  u64,
  boolean,
  f8_e4m3,
  f8_e5m2,
  q4_0,
  q4_1,
  q5_0,
  q5_1,
  q8_0,
  q4_k,
  q5_k,
  q6_k,
};

struct TensorTypeTraits {
  std::string_view name;  // as GGUF / safetensors spell it: "F32", "BF16", "Q4_K"
  int64_t block_elements;
  int64_t block_bytes;
  bool converts_to_f32;  // dequantize_to_f32 accepts it
};

const TensorTypeTraits& tensor_type_traits(TensorType type);

inline std::string_view tensor_type_name(TensorType type) {
  return tensor_type_traits(type).name;
}

// Bytes taken by `elements` values of `type`; nullopt when `elements` is negative or not a
// whole number of blocks, or the size overflows.
std::optional<uint64_t> tensor_type_bytes(TensorType type, int64_t elements);

// Product of a shape's extents; nullopt on a negative extent or on overflow.
std::optional<int64_t> checked_element_count(const int64_t* extents, size_t rank);

}  // namespace draftwise
