#include "kernels/host_memory.h"

#include <algorithm>
#include <fstream>
#include <string>

namespace draftwise {

namespace {

std::optional<int64_t> meminfo_available() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return std::nullopt;
}

std::optional<int64_t> cgroup_headroom() {
  std::ifstream limit_file("/sys/fs/cgroup/memory.max");
  std::ifstream current_file("/sys/fs/cgroup/memory.current");
  std::string limit;
  int64_t current = 0;
  if (!(limit_file >> limit) || limit == "max" || !(current_file >> current)) return std::nullopt;
  try {
    return std::max<int64_t>(0, std::stoll(limit) - current);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::optional<int64_t> available_host_memory_bytes() {
  const std::optional<int64_t> available = meminfo_available();
  const std::optional<int64_t> headroom = cgroup_headroom();
  if (available && headroom) return std::min(*available, *headroom);
  return available ? available : headroom;
}

}  // namespace draftwise
