#!/usr/bin/env bash
# On a GPU machine: builds draftwise (scripts/gpu_build.sh), runs the TTT tests on the GPU and
# `draftwise context-bench` on random weights in the 1.3B TTT-Linear shape, a hybrid of it (every
# sixth layer attention) and a Llama of the same shape: per-token decode latency after 1k, 4k,
# 16k and 32k tokens and prefill at 2k and 16k (docs/ttt.md). Writes ctest_ttt.log and
# context_bench.{json,md,log} under $OUT (or /tmp/draftwise-gpu). Extra arguments go to
# context-bench.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
scripts/gpu_build.sh || exit 1
(cd build-gpu && ctest -R "Ttt" --output-on-failure > "$out/ctest_ttt.log" 2>&1)
echo "TTT tests: exit $? ($(grep -Eo '[0-9]+% tests passed.*' "$out/ctest_ttt.log"))"
build-gpu/draftwise context-bench --device cuda --random-weights configs/ttt-linear-1.3b.json \
  --random-weights configs/ttt-linear-1.3b-hybrid.json --random-weights configs/llama-1.3b-ttt-shape.json \
  --contexts 1024,4096,16384,32768 --prefill 2048,16384 \
  --steps 32 --repeats 3 --json "$out/context_bench.json" --markdown "$out/context_bench.md" "$@" \
  2> "$out/context_bench.log"
status=$?
cat "$out/context_bench.md"
exit $status
