// libFuzzer harness: arbitrary bytes as a GGUF file. Whatever parses is then read the way
// the engine reads a model: metadata rendered, tokenizer built, tensors dequantized, config
// read and weights bound and loaded. Any crash, sanitizer report or leak is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/tokenizer/tokenizer_loader.h"
#include "kernels/cpu/dequantize.h"
#include "target/checkpoint.h"
#include "target/gguf_reader.h"
#include "target/model_config.h"
#include "target/model_weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftwise;
  Expected<GgufFile> file =
      GgufFile::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz.gguf");
  if (!file.ok()) return 0;
  for (const auto& [key, value] : file->metadata()) (void)value.to_display();
  if (const Expected<Tokenizer> tokenizer = tokenizer_from_gguf(*file); tokenizer.ok()) {
    const std::vector<int32_t> ids = tokenizer->encode("Hello <s> world \xF0\x9F\x98\x80 12");
    (void)tokenizer->decode(ids);
  }
  std::vector<float> values;
  for (const GgufTensorInfo& tensor : file->tensors()) {
    int64_t count = 1;
    for (const int64_t extent : tensor.shape) count *= extent;
    if (!tensor_type_traits(tensor.type).converts_to_f32 || count > (1 << 20)) continue;
    values.resize(static_cast<size_t>(count));
    if (!dequantize_to_f32(tensor.type, file->tensor_data(tensor).data(), count, values.data())
             .ok()) {
      __builtin_trap();  // the reader accepted a tensor whose data cannot be read
    }
  }
  const Checkpoint checkpoint = Checkpoint::from_gguf(std::move(file).value());
  const Expected<ModelConfig> config = load_model_config(checkpoint);
  if (!config.ok()) return 0;
  const Expected<ModelWeights> weights = ModelWeights::bind(checkpoint, *config);
  if (!weights.ok()) return 0;
  for (const WeightTensor& tensor : weights->tensors()) {
    if (tensor.source->data.size() <= (1 << 20) && !weights->load_f32(tensor).ok()) {
      __builtin_trap();  // bound weights must load
    }
  }
  return 0;
}
