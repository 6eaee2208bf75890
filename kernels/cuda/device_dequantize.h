// Stored tensors (plain floats and GGUF blocks) to bf16 in device memory, converted on the GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ops.h"
#include "kernels/status.h"
#include "kernels/tensor_type.h"

namespace draftwise::cuda {

// Converts `count` values of `type`, stored at host address `src`, into dst[0 .. count).
// Fails, writing nothing, for a type that does not convert or a count that is not a whole
// number of blocks. Synchronises the stream before returning.
Status dequantize_to_device_bf16(TensorType type, const std::byte* src, int64_t count, bf16* dst,
                                 cudaStream_t stream);

}  // namespace draftwise::cuda
