// Causal grouped-query attention of the CPU reference, for new tokens against a sequence's
// key/value cache (prefill, one-token decode and a k+1-token verification pass alike).
//
// New token t sits at position first_position + t and attends to cached positions
// [max(0, p − window + 1), p]; query head h reads key/value head h / (num_heads /
// num_kv_heads). Each (token, head) is one task with a fixed order of operations, so a
// token's output does not depend on how many tokens share the call.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace draftwise::cpu {

struct AttentionShape {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 0.0f;      // usually 1 / sqrt(head_dim)
  int64_t window = 0;      // sliding window length; 0 = attend to the whole prefix
};

//   q:   [new_tokens, num_heads, head_dim]
//   k,v: [first_position + new_tokens (or more), num_kv_heads, head_dim], the cache
//   out: [new_tokens, num_heads, head_dim]
void attention(const float* q, const float* k, const float* v, float* out, int64_t new_tokens,
               int64_t first_position, const AttentionShape& shape, ThreadPool& pool);

}  // namespace draftwise::cpu
