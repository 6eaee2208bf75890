// Conversion of stored tensor data (plain floats and GGUF quantized blocks) to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "kernels/quant_blocks.h"
#include "kernels/status.h"
#include "kernels/tensor_type.h"

namespace draftwise {

// Converts `count` values of `type` starting at `src` into `dst` ([count] fp32).
// `src` holds exactly tensor_type_bytes(type, count) bytes. Fails, writing nothing, when
// the type does not convert to fp32 or `count` is not a whole number of blocks.
Status dequantize_to_f32(TensorType type, const std::byte* src, int64_t count, float* dst);

// The block format of a quantized type; nullopt for plain float types.
std::optional<quant::BlockFormat> block_format(TensorType type);

}  // namespace draftwise
