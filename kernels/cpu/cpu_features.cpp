#include "kernels/cpu/cpu_features.h"

#include <cstdlib>
#include <string_view>

namespace draftwise::cpu {

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool has = [] {
    // DRAFTWISE_CPU_ISA=portable forces the portable kernels (tests run both paths).
    const char* forced = std::getenv("DRAFTWISE_CPU_ISA");
    if (forced != nullptr && std::string_view(forced) == "portable") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace draftwise::cpu
