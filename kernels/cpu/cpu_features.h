// Which SIMD instruction sets this CPU offers, checked once at run time: the build targets
// baseline x86-64 and kernels pick their AVX2+FMA versions only where the CPU has them.
#pragma once

namespace draftwise::cpu {

// False when the environment sets DRAFTWISE_CPU_ISA=portable.
bool cpu_has_avx2_fma();

}  // namespace draftwise::cpu
