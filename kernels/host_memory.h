// How much host memory this process may still take.
#pragma once

#include <cstdint>
#include <optional>

namespace draftwise {

// MemAvailable of /proc/meminfo (Linux), capped by a cgroup v2 memory.max when one is set;
// nullopt where neither can be read.
std::optional<int64_t> available_host_memory_bytes();

}  // namespace draftwise
