#!/usr/bin/env bash
# On a GPU machine: builds draftwise in Release with Ninja for sm_90a, runs the whole test
# suite, GPU tests included, then a short generation benchmark. Logs go to $OUT (or
# /tmp/draftwise-gpu).
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

scripts/gpu_build.sh || exit 1
build-gpu/draftwise version | tee "$out/version.txt"
(cd build-gpu && ctest --output-on-failure -j16) > "$out/ctest.log" 2>&1
status=$?
grep -E "tests passed|tests failed|Skipped|Failed|\*\*\*" "$out/ctest.log" | head -n 40

# Benchmark: batch-1 greedy generation on the GPU (prefill 512 random tokens, decode 256),
# on the default model when present and on random weights in the Llama-3.2-1B shape.
bench() {
  build-gpu/draftwise generate "$@" --random-prompt 512 --max-tokens 256 --ignore-eos \
    --temperature 0 --seed 1 --device cuda --json 2> /dev/null |
    python3 -c 'import json, sys; s = json.load(sys.stdin)["stats"]; print("prefill %.0f tokens/s, decode %.1f tokens/s" % (s["prefill_tokens_per_second"], s["decode_tokens_per_second"]))'
}
{
  model=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$model" ] && echo "default model: $(bench --model "$model")"
  echo "Llama-3.2-1B shape, random weights: $(bench --random-weights configs/llama-3.2-1b.json)"
} | tee "$out/bench.txt"
exit $status
