#include "kernels/cuda/device_dequantize.h"

#include <vector>

#include "kernels/cpu/dequantize.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"

namespace draftwise::cuda {

Status dequantize_to_device_bf16(TensorType type, const std::byte* src, int64_t count, bf16* dst,
                                 cudaStream_t stream) {
  const TensorTypeTraits& traits = tensor_type_traits(type);
  if (!traits.converts_to_f32) return make_error("tensor type {} cannot be converted to bf16", traits.name);
  if (count < 0 || count % traits.block_elements != 0) {
    return make_error("{} values of type {} are not a whole number of {}-value blocks", count, traits.name,
                      traits.block_elements);
  }
  if (count == 0) return {};
  if (type == TensorType::f64) {  // rare: through fp32 on the host
    std::vector<float> values(static_cast<size_t>(count));
    DW_TRY(dequantize_to_f32(type, src, count, values.data()));
    DW_ASSIGN_OR_RETURN(DeviceBuffer staged, upload(values, "a weight being converted", stream));
    DW_TRY(cuda_status(convert_f32_to_bf16(staged.as<float>(), dst, count, stream), "convert_f32_to_bf16"));
    DW_CUDA_TRY(cudaStreamSynchronize(stream));
    return {};
  }
  const size_t bytes = static_cast<size_t>(count / traits.block_elements) * traits.block_bytes;
  if (type == TensorType::bf16) return copy_to_device(dst, src, bytes, stream);
  DW_ASSIGN_OR_RETURN(DeviceBuffer staged, DeviceBuffer::allocate(bytes, "a weight being dequantized"));
  DW_TRY(copy_to_device(staged.data(), src, bytes, stream));
  switch (type) {
    case TensorType::f32:
      DW_TRY(cuda_status(convert_f32_to_bf16(staged.as<float>(), dst, count, stream), "convert_f32_to_bf16"));
      break;
    case TensorType::f16:
      DW_TRY(cuda_status(convert_f16_to_bf16(staged.as<uint16_t>(), dst, count, stream), "convert_f16_to_bf16"));
      break;
    default: {
      const std::optional<quant::BlockFormat> format = block_format(type);
      if (!format) return make_error("tensor type {} has no GPU dequantization", traits.name);
      DW_TRY(cuda_status(dequantize_blocks_to_bf16(static_cast<int>(*format), staged.data(),
                                                   count / traits.block_elements,
                                                   static_cast<int64_t>(traits.block_bytes), dst, stream),
                         "dequantize_blocks_to_bf16"));
    }
  }
  DW_CUDA_TRY(cudaStreamSynchronize(stream));  // before the staging buffer is freed
  return {};
}

}  // namespace draftwise::cuda
