// Rotary position embeddings (Su et al. 2021) of the CPU reference.
//
// Each pair of dimensions (a, b) of a head is rotated by the angle position · inv_freq[j]:
// a' = a·cos − b·sin, b' = b·cos + a·sin. The pairing says which dimensions form pair j:
//   half_split:  (j, j + head_dim/2)   Hugging Face "rotate_half" (Llama, Qwen2, Mistral)
//   interleaved: (2j, 2j + 1)          GPT-J, and the row order of llama.cpp's Llama Q/K
// The angle is rounded to fp32 before cos/sin, as transformers computes it.
#pragma once

#include <cstdint>

namespace draftwise::cpu {

enum class RopePairing { half_split, interleaved };

// cos/sin of every token's angles.
//   positions: [tokens]
//   inv_freq:  [half]          half = head_dim / 2
//   cos, sin:  [tokens, half]
void rope_tables(const int64_t* positions, int64_t tokens, const float* inv_freq, int64_t half,
                 float* cos, float* sin);

// Rotates `heads` consecutive heads of each token in place.
//   x:        [tokens] rows, row_stride floats apart, each starting with [heads, head_dim]
//   cos, sin: [tokens, head_dim / 2] from rope_tables
void apply_rope(float* x, int64_t row_stride, int64_t tokens, int64_t heads, int64_t head_dim,
                const float* cos, const float* sin, RopePairing pairing);

}  // namespace draftwise::cpu
