// SwiGLU of the CPU reference (Shazeer 2020): out = silu(gate) · up, silu(x) = x·σ(x).
#pragma once

#include <cstdint>

namespace draftwise::cpu {

//   gate, up, out: [count]; out may alias gate or up
void swiglu(const float* gate, const float* up, float* out, int64_t count);

}  // namespace draftwise::cpu
