// libFuzzer harness: arbitrary bytes as a safetensors file; accepted tensors are converted
// to fp32 where their dtype allows.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/dequantize.h"
#include "target/safetensors_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftwise;
  const Expected<SafetensorsFile> file =
      SafetensorsFile::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz.safetensors");
  if (!file.ok()) return 0;
  std::vector<float> values;
  for (const SafetensorsTensor& tensor : file->tensors()) {
    const std::optional<int64_t> count =
        checked_element_count(tensor.shape.data(), tensor.shape.size());
    if (!count) __builtin_trap();  // the reader accepted a shape it cannot count
    if (*tensor_type_bytes(tensor.type, *count) != tensor.data.size()) __builtin_trap();
    if (!tensor_type_traits(tensor.type).converts_to_f32 || *count > (1 << 20)) continue;
    values.resize(static_cast<size_t>(*count));
    if (!dequantize_to_f32(tensor.type, tensor.data.data(), *count, values.data()).ok()) {
      __builtin_trap();
    }
  }
  return 0;
}
