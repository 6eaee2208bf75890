#include "target/gguf_format.h"

#include <array>
#include <string>

#include <fmt/format.h>

namespace draftwise::gguf {
namespace {

struct GgmlType {
  uint32_t code;
  std::string_view name;
  std::optional<TensorType> storage;  // nullopt: recognised but not readable
};

// ggml's type codes (ggml.h, enum ggml_type). Codes 4, 5 and 31-33 were retired.
constexpr std::array<GgmlType, 34> kGgmlTypes = {{
    {0, "F32", TensorType::f32},         {1, "F16", TensorType::f16},
    {2, "Q4_0", TensorType::q4_0},       {3, "Q4_1", TensorType::q4_1},
    {6, "Q5_0", TensorType::q5_0},       {7, "Q5_1", TensorType::q5_1},
    {8, "Q8_0", TensorType::q8_0},       {9, "Q8_1", std::nullopt},
    {10, "Q2_K", std::nullopt},          {11, "Q3_K", std::nullopt},
    {12, "Q4_K", TensorType::q4_k},      {13, "Q5_K", TensorType::q5_k},
    {14, "Q6_K", TensorType::q6_k},      {15, "Q8_K", std::nullopt},
    {16, "IQ2_XXS", std::nullopt},       {17, "IQ2_XS", std::nullopt},
    {18, "IQ3_XXS", std::nullopt},       {19, "IQ1_S", std::nullopt},
    {20, "IQ4_NL", std::nullopt},        {21, "IQ3_S", std::nullopt},
    {22, "IQ2_S", std::nullopt},         {23, "IQ4_XS", std::nullopt},
    {24, "I8", TensorType::i8},          {25, "I16", TensorType::i16},
    {26, "I32", TensorType::i32},        {27, "I64", TensorType::i64},
    {28, "F64", TensorType::f64},        {29, "IQ1_M", std::nullopt},
    {30, "BF16", TensorType::bf16},      {34, "TQ1_0", std::nullopt},
    {35, "TQ2_0", std::nullopt},         {39, "MXFP4", std::nullopt},
    {4, "Q4_2 (retired)", std::nullopt}, {5, "Q4_3 (retired)", std::nullopt},
}};

const GgmlType* find_ggml_type(uint32_t code) {
  for (const GgmlType& type : kGgmlTypes) {
    if (type.code == code) return &type;
  }
  return nullptr;
}

}  // namespace

std::string_view value_type_name(ValueType type) {
  static constexpr std::array<std::string_view, 13> kNames = {
      "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
      "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto index = static_cast<uint32_t>(type);
  return index < kNames.size() ? kNames[index] : "unknown";
}

bool is_known_value_type(uint32_t code) {
  return code <= static_cast<uint32_t>(ValueType::f64);
}

std::optional<TensorType> tensor_type_from_ggml(uint32_t ggml_type) {
  const GgmlType* type = find_ggml_type(ggml_type);
  return type != nullptr ? type->storage : std::nullopt;
}

std::optional<uint32_t> ggml_type_code(TensorType storage) {
  for (const GgmlType& type : kGgmlTypes) {
    if (type.storage == storage) return type.code;
  }
  return std::nullopt;
}

bool is_known_ggml_type(uint32_t ggml_type) {
  return find_ggml_type(ggml_type) != nullptr;
}

std::string ggml_type_name(uint32_t ggml_type) {
  const GgmlType* type = find_ggml_type(ggml_type);
  return type != nullptr ? std::string(type->name) : fmt::format("type {}", ggml_type);
}

}  // namespace draftwise::gguf
