#include "target/random_weights.h"

#include <string_view>

#include "kernels/random.h"

namespace draftwise {

namespace {

uint64_t name_hash(std::string_view name) {
  uint64_t hash = 0xCBF29CE484222325ull;  // FNV-1a
  for (const char c : name) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
  return hash;
}

}  // namespace

uint64_t random_weight_stream(uint64_t seed, std::string_view tensor_name) { return seed ^ name_hash(tensor_name); }

WeightLoader random_weight_loader(uint64_t seed) {
  return [seed](const DecoderTensorSpec& spec) -> Expected<std::vector<float>> {
    int64_t count = 1;
    for (const int64_t extent : spec.shape) count *= extent;
    const bool is_norm = spec.name.ends_with("norm.weight");
    std::vector<float> values(static_cast<size_t>(count), 1.0f);
    if (is_norm) return values;
    Rng rng(random_weight_stream(seed, spec.name));
    for (float& value : values) value = static_cast<float>((2.0 * rng.uniform() - 1.0) * kRandomWeightHalfWidth);
    return values;
  };
}

}  // namespace draftwise
