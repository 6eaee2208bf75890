// The rotary inverse frequencies of a model, with its frequency scaling applied.
#pragma once

#include <vector>

#include "target/model_config.h"

namespace draftwise {

// inv_freq[j] = 1 / theta^(2j / head_dim), j < head_dim / 2, in fp32 as transformers
// computes it, then scaled:
//   linear:       inv_freq / factor
//   llama3:       transformers' _compute_llama3_parameters (Llama 3.1): wavelengths below
//                 original_max / high_freq_factor are kept, those above
//                 original_max / low_freq_factor divided by factor, those between blended
//   freq_factors: inv_freq / freq_factors[j] (GGUF rope_freqs.weight)
std::vector<float> rope_inverse_frequencies(const ModelConfig& config);

}  // namespace draftwise
