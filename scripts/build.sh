#!/usr/bin/env bash
# Configures and builds draftwise in Release with Ninja: scripts/build.sh [BUILD_DIR]
# (default build/). CUDA code is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
cmake -G Ninja -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release > /dev/null
ninja -C "$build_dir"
