#include "target/rope_frequencies.h"

#include <cmath>
#include <numbers>

namespace draftwise {

std::vector<float> rope_inverse_frequencies(const ModelConfig& config) {
  const int64_t half = config.head_dim / 2;
  const RopeScaling& scaling = config.rope_scaling;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) {
    const float exponent = static_cast<float>(2 * j) / static_cast<float>(config.head_dim);
    const float power = static_cast<float>(std::pow(config.rope_theta, static_cast<double>(exponent)));
    float value = 1.0f / power;
    switch (scaling.type) {
      case RopeScalingType::none:
        break;
      case RopeScalingType::linear:
        value = static_cast<float>(value / scaling.factor);
        break;
      case RopeScalingType::llama3: {
        const double original = static_cast<double>(scaling.original_max_position_embeddings);
        const double low_freq_wavelength = original / scaling.low_freq_factor;
        const double high_freq_wavelength = original / scaling.high_freq_factor;
        const double wavelength = 2.0 * std::numbers::pi / value;
        if (wavelength > low_freq_wavelength) {
          value = static_cast<float>(value / scaling.factor);
        } else if (wavelength >= high_freq_wavelength) {
          const double smooth = (original / wavelength - scaling.low_freq_factor) /
                                (scaling.high_freq_factor - scaling.low_freq_factor);
          value = static_cast<float>((1.0 - smooth) * value / scaling.factor + smooth * value);
        }
        break;
      }
      case RopeScalingType::freq_factors:
        value = value / scaling.freq_factors[static_cast<size_t>(j)];
        break;
    }
    inv_freq[static_cast<size_t>(j)] = value;
  }
  return inv_freq;
}

}  // namespace draftwise
