// Dequantization of stored tensors (plain floats and GGUF blocks, kernels/quant_blocks.h)
// to fp32 on the host.
#include "kernels/cpu/dequantize.h"

#include <cstring>
#include <optional>

#include "kernels/half.h"
#include "kernels/quant_blocks.h"

namespace draftwise {

using quant::Byte;
using quant::load_half;

std::optional<quant::BlockFormat> block_format(TensorType type) {
  switch (type) {
    case TensorType::q4_0:
      return quant::BlockFormat::q4_0;
    case TensorType::q4_1:
      return quant::BlockFormat::q4_1;
    case TensorType::q5_0:
      return quant::BlockFormat::q5_0;
    case TensorType::q5_1:
      return quant::BlockFormat::q5_1;
    case TensorType::q8_0:
      return quant::BlockFormat::q8_0;
    case TensorType::q4_k:
      return quant::BlockFormat::q4_k;
    case TensorType::q5_k:
      return quant::BlockFormat::q5_k;
    case TensorType::q6_k:
      return quant::BlockFormat::q6_k;
    default:
      return std::nullopt;
  }
}

Status dequantize_to_f32(TensorType type, const std::byte* src, int64_t count, float* dst) {
  const TensorTypeTraits& traits = tensor_type_traits(type);
  if (!traits.converts_to_f32) {
    return make_error("tensor type {} cannot be converted to F32", traits.name);
  }
  if (count < 0 || count % traits.block_elements != 0) {
    return make_error("{} values of type {} are not a whole number of {}-value blocks", count,
                      traits.name, traits.block_elements);
  }
  // An empty tensor may have no storage at all: nothing to read (memcpy of null is UB).
  if (count == 0) return {};
  const Byte* in = reinterpret_cast<const Byte*>(src);
  switch (type) {
    case TensorType::f32:
      std::memcpy(dst, in, static_cast<size_t>(count) * sizeof(float));
      return {};
    case TensorType::f16:
      for (int64_t i = 0; i < count; ++i) dst[i] = load_half(in + 2 * i);
      return {};
    case TensorType::bf16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, in + 2 * i, sizeof bits);
        dst[i] = bf16_to_f32(bits);
      }
      return {};
    case TensorType::f64:
      for (int64_t i = 0; i < count; ++i) {
        double value;
        std::memcpy(&value, in + 8 * i, sizeof value);
        dst[i] = static_cast<float>(value);
      }
      return {};
    default:
      break;
  }
  const quant::BlockFormat format = *block_format(type);
  const int64_t blocks = count / traits.block_elements;
  for (int64_t b = 0; b < blocks; ++b) {
    quant::dequantize_block(format, in + b * traits.block_bytes, dst + b * traits.block_elements);
  }
  return {};
}

}  // namespace draftwise
