// Constants of the GGUF file format (versions 2 and 3), shared by the reader and by the
// test helper that writes GGUF files.
//
// Layout (little-endian): "GGUF" u32 version, u64 tensor_count, u64 metadata_kv_count;
// metadata_kv_count x (string key, u32 value_type, value); tensor_count x (string name,
// u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset); padding to `general.alignment`
// (default 32); the data section. A string is u64 length + bytes (no terminator); an array
// is u32 element_type, u64 count, elements. ne[0] is the innermost (contiguous) extent.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "kernels/tensor_type.h"

namespace draftwise::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxDims = 4;

enum class ValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

std::string_view value_type_name(ValueType type);
bool is_known_value_type(uint32_t code);

// Storage type of a ggml type code; nullopt for codes draftwise does not read.
std::optional<TensorType> tensor_type_from_ggml(uint32_t ggml_type);
// ggml type code of a storage type; nullopt for types GGUF cannot hold.
std::optional<uint32_t> ggml_type_code(TensorType type);
// Whether ggml defines (or once defined) the type code.
bool is_known_ggml_type(uint32_t ggml_type);
// Name of a ggml type code ("IQ2_XXS"; "type 99" for unknown codes).
std::string ggml_type_name(uint32_t ggml_type);

// Token types of `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

}  // namespace draftwise::gguf
