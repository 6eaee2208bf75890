#!/usr/bin/env bash
# On a GPU machine: builds draftwise in Release with Ninja for sm_90a and runs the whole
# test suite, GPU tests included. Logs go to $OUT (or /tmp/draftwise-gpu).
# Used with the device tool: run `scripts/gpu_build_and_test.sh` in the repository root.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -n 2
  cmake --version | head -n 1
  g++ --version | head -n 1
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

if ! cmake -G Ninja -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_CUDA_ARCHITECTURES=90a > "$out/configure.log" 2>&1; then
  tail -n 40 "$out/configure.log"
  exit 1
fi
if ! ninja -C build-gpu -j16 -k 0 > "$out/build.log" 2>&1; then
  grep -E "error|FAILED" -A6 "$out/build.log" | head -n 120
  exit 1
fi
build-gpu/draftwise version | tee "$out/version.txt"
(cd build-gpu && ctest --output-on-failure -j16) > "$out/ctest.log" 2>&1
status=$?
grep -E "tests passed|tests failed|Skipped|Failed|\*\*\*" "$out/ctest.log" | head -n 40
exit $status
