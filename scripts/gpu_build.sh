#!/usr/bin/env bash
# On a GPU machine: configures and builds draftwise in Release with Ninja for sm_90a into
# build-gpu/ (incremental when it is already there). Logs go to $OUT (or /tmp/draftwise-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
if ! cmake -G Ninja -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_CUDA_ARCHITECTURES=90a > "$out/configure.log" 2>&1; then
  tail -n 40 "$out/configure.log"
  exit 1
fi
if ! ninja -C build-gpu -j16 -k 0 > "$out/build.log" 2>&1; then
  grep -E "error|FAILED" -A6 "$out/build.log" | head -n 120
  exit 1
fi
