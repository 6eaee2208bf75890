// Greedy picks as 64-bit keys (ops.h: argmax_key_index): the device side.
#pragma once

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace draftwise::cuda {

// The logit's bits mapped to an unsigned integer of the same order in the high half (−0 taken
// as +0), 0xFFFFFFFF − index in the low half; a non-finite logit is kNonFiniteArgmaxKey,
// above every other key, so that it marks its row.
__device__ __forceinline__ uint64_t argmax_key(float value, int32_t index) {
  if (!isfinite(value)) return kNonFiniteArgmaxKey;
  const uint32_t bits = __float_as_uint(value == 0.0f ? 0.0f : value);
  const uint32_t ordered = (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(index));
}

__device__ __forceinline__ uint64_t key_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

__device__ __forceinline__ uint64_t warp_max(uint64_t key) {
  for (int offset = 16; offset > 0; offset /= 2) key = key_max(key, __shfl_xor_sync(0xffffffffu, key, offset));
  return key;
}

}  // namespace draftwise::cuda
