// The GGUF (ggml) block formats, one block at a time, as inline functions that compile for
// the host (cpu/dequantize.cpp) and the GPU (cuda/dequantize.cu) alike.
//
// Block layouts (little-endian, packed; "half" is IEEE fp16):
//   Q4_0 (32 values, 18 B): half d; u8 qs[16]           x = (q - 8) * d
//   Q4_1 (32 values, 20 B): half d, m; u8 qs[16]        x = q * d + m
//   Q5_0 (32 values, 22 B): half d; u32 qh; u8 qs[16]      x = (q - 16) * d, q = 4 low bits | 1 high
//   Q5_1 (32 values, 24 B): half d, m; u32 qh; u8 qs[16]   x = q * d + m
//   Q8_0 (32 values, 34 B): half d; i8 qs[32]              x = q * d
// In the 4/5-bit formats value j < 16 takes the low nibble of qs[j] and value j + 16 the
// high nibble; in Q5 bit j of qh is value j's fifth bit.
//
// K-quants use 256-value super-blocks:
//   Q4_K (144 B): half d, dmin; u8 scales[12]; u8 qs[128]
//     eight 32-value sub-blocks with 6-bit scale sc and min m packed in scales[12];
//     x = d * sc * q - dmin * m. Sub-blocks 2i and 2i+1 share qs[32i .. 32i+32): low
//     nibbles for the first, high nibbles for the second.
//   Q5_K (176 B): as Q4_K plus u8 qh[32] (after scales): bit 2i / 2i+1 of qh[l] is the
//     fifth bit of value l in sub-block 2i / 2i+1.
//   Q6_K (210 B): u8 ql[128]; u8 qh[64]; i8 scales[16]; half d
//     sixteen 16-value sub-blocks, x = d * scales[s] * (q - 32) with q 6 bits (4 in ql,
//     2 in qh); each 128-value half uses ql[64], qh[32] and scales[8].
#pragma once

#include <cstdint>

#include "kernels/half.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define DW_HOST_DEVICE __host__ __device__
#else
#define DW_HOST_DEVICE
#endif

namespace draftwise::quant {

using Byte = unsigned char;

// Block formats with the same numbering on host and device.
enum class BlockFormat : int { q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k };

DW_HOST_DEVICE inline float load_half(const Byte* at) {
  uint16_t bits;
  __builtin_memcpy(&bits, at, sizeof bits);
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(bits));
#else
  return fp16_to_f32(bits);
#endif
}

DW_HOST_DEVICE inline uint32_t load_u32(const Byte* at) {
  uint32_t value;
  __builtin_memcpy(&value, at, sizeof value);
  return value;
}

DW_HOST_DEVICE inline void dequantize_q4_0(const Byte* block, float* out) {
  const float d = load_half(block);
  const Byte* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    out[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    out[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

DW_HOST_DEVICE inline void dequantize_q4_1(const Byte* block, float* out) {
  const float d = load_half(block);
  const float m = load_half(block + 2);
  const Byte* qs = block + 4;
  for (int j = 0; j < 16; ++j) {
    out[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    out[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Five-bit values of a Q5_0/Q5_1 block: 4 low bits from qs, the fifth from qh.
DW_HOST_DEVICE inline void unpack_q5(const Byte* qh_bytes, const Byte* qs, int* q) {
  const uint32_t qh = load_u32(qh_bytes);
  for (int j = 0; j < 16; ++j) {
    q[j] = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    q[j + 16] = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
  }
}

DW_HOST_DEVICE inline void dequantize_q5_0(const Byte* block, float* out) {
  const float d = load_half(block);
  int q[32];
  unpack_q5(block + 2, block + 6, q);
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(q[j] - 16) * d;
}

DW_HOST_DEVICE inline void dequantize_q5_1(const Byte* block, float* out) {
  const float d = load_half(block);
  const float m = load_half(block + 2);
  int q[32];
  unpack_q5(block + 4, block + 8, q);
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(q[j]) * d + m;
}

DW_HOST_DEVICE inline void dequantize_q8_0(const Byte* block, float* out) {
  const float d = load_half(block);
  const Byte* qs = block + 2;
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<int8_t>(qs[j])) * d;
}

// Scale and min of sub-block `index` (0..7) from the 12 packed bytes of Q4_K/Q5_K:
// sub-blocks 0-3 keep 6 bits in bytes 0-3 (scale) and 4-7 (min); sub-blocks 4-7 keep
// their low 4 bits in bytes 8-11 and their top 2 bits in the spare top bits of bytes 0-7.
DW_HOST_DEVICE inline void k_scale_min(int index, const Byte* scales, int* scale, int* min) {
  if (index < 4) {
    *scale = scales[index] & 63;
    *min = scales[index + 4] & 63;
  } else {
    *scale = (scales[index + 4] & 0x0f) | ((scales[index - 4] >> 6) << 4);
    *min = (scales[index + 4] >> 4) | ((scales[index] >> 6) << 4);
  }
}

DW_HOST_DEVICE inline void dequantize_q4_k(const Byte* block, float* out) {
  const float d = load_half(block);
  const float dmin = load_half(block + 2);
  const Byte* scales = block + 4;
  const Byte* qs = block + 16;
  for (int pair = 0; pair < 4; ++pair) {
    int scale_lo, min_lo, scale_hi, min_hi;
    k_scale_min(2 * pair, scales, &scale_lo, &min_lo);
    k_scale_min(2 * pair + 1, scales, &scale_hi, &min_hi);
    const float d_lo = d * static_cast<float>(scale_lo), m_lo = dmin * static_cast<float>(min_lo);
    const float d_hi = d * static_cast<float>(scale_hi), m_hi = dmin * static_cast<float>(min_hi);
    const Byte* q = qs + 32 * pair;
    float* y = out + 64 * pair;
    for (int l = 0; l < 32; ++l) {
      y[l] = d_lo * static_cast<float>(q[l] & 0x0f) - m_lo;
      y[l + 32] = d_hi * static_cast<float>(q[l] >> 4) - m_hi;
    }
  }
}

DW_HOST_DEVICE inline void dequantize_q5_k(const Byte* block, float* out) {
  const float d = load_half(block);
  const float dmin = load_half(block + 2);
  const Byte* scales = block + 4;
  const Byte* qh = block + 16;
  const Byte* qs = block + 48;
  for (int pair = 0; pair < 4; ++pair) {
    int scale_lo, min_lo, scale_hi, min_hi;
    k_scale_min(2 * pair, scales, &scale_lo, &min_lo);
    k_scale_min(2 * pair + 1, scales, &scale_hi, &min_hi);
    const float d_lo = d * static_cast<float>(scale_lo), m_lo = dmin * static_cast<float>(min_lo);
    const float d_hi = d * static_cast<float>(scale_hi), m_hi = dmin * static_cast<float>(min_hi);
    const Byte bit_lo = static_cast<Byte>(1u << (2 * pair));
    const Byte bit_hi = static_cast<Byte>(1u << (2 * pair + 1));
    const Byte* q = qs + 32 * pair;
    float* y = out + 64 * pair;
    for (int l = 0; l < 32; ++l) {
      const int lo = (q[l] & 0x0f) + ((qh[l] & bit_lo) != 0 ? 16 : 0);
      const int hi = (q[l] >> 4) + ((qh[l] & bit_hi) != 0 ? 16 : 0);
      y[l] = d_lo * static_cast<float>(lo) - m_lo;
      y[l + 32] = d_hi * static_cast<float>(hi) - m_hi;
    }
  }
}

DW_HOST_DEVICE inline void dequantize_q6_k(const Byte* block, float* out) {
  const float d = load_half(block + 208);
  for (int half = 0; half < 2; ++half) {
    const Byte* ql = block + 64 * half;
    const Byte* qh = block + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(block + 192 + 8 * half);
    float* y = out + 128 * half;
    for (int l = 0; l < 32; ++l) {
      const int s = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[s + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[s + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[s + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[s + 6]) * static_cast<float>(q4);
    }
  }
}

// Values and bytes per block.
DW_HOST_DEVICE inline int block_values(BlockFormat format) {
  return format == BlockFormat::q4_k || format == BlockFormat::q5_k || format == BlockFormat::q6_k ? 256 : 32;
}

// Dequantizes one block of `format` into out[0 .. block_values(format)).
DW_HOST_DEVICE inline void dequantize_block(BlockFormat format, const Byte* block, float* out) {
  switch (format) {
    case BlockFormat::q4_0:
      return dequantize_q4_0(block, out);
    case BlockFormat::q4_1:
      return dequantize_q4_1(block, out);
    case BlockFormat::q5_0:
      return dequantize_q5_0(block, out);
    case BlockFormat::q5_1:
      return dequantize_q5_1(block, out);
    case BlockFormat::q8_0:
      return dequantize_q8_0(block, out);
    case BlockFormat::q4_k:
      return dequantize_q4_k(block, out);
    case BlockFormat::q5_k:
      return dequantize_q5_k(block, out);
    case BlockFormat::q6_k:
      return dequantize_q6_k(block, out);
  }
}

}  // namespace draftwise::quant
