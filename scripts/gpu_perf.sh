#!/usr/bin/env bash
# On a GPU machine: builds draftwise (scripts/gpu_build.sh) and runs `draftwise perf` on the
# default model (when models/ has it) and random weights in the Llama-3.2-1B and
# Llama-3.1-8B shapes: decode at batch 1/8/32 and context 512/4096, prefill of 2048, against
# the copy bandwidth and bf16 GEMM rate measured in the same run. Then, for the record of
# what each technique buys (docs/kernel-notes.md), batch-1 and batch-4 decode at context 512
# with everything on, without programmatic dependent launch, without the fused gemv kernels
# and without the attention's cluster merge, one after the other. Writes perf.json / perf.md and the ablations under $OUT (or /tmp/draftwise-gpu).
# Extra arguments go to every perf run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
scripts/gpu_build.sh || exit 1
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
models=()
[ -f "$model" ] && models+=(--model "$model")
models+=(--random-weights configs/llama-3.2-1b.json --random-weights configs/llama-3.1-8b.json)
build-gpu/draftwise perf "${models[@]}" --json "$out/perf.json" --markdown "$out/perf.md" "$@" \
  2> "$out/perf.log"
status=$?
tail -n 5 "$out/perf.log"
for variant in all-on no-programmatic-launch no-fused no-cluster-merge; do
  flags=()
  [ "$variant" != all-on ] && flags=(--"$variant")
  build-gpu/draftwise perf "${models[@]}" --batches 1,4 --contexts 512 --prefill 0 "${flags[@]}" \
    --json "$out/perf-$variant.json" --markdown "$out/perf-$variant.md" "$@" 2> "$out/perf-$variant.log" > /dev/null
done
grep -H "context 512" "$out"/perf*.log | grep -E "batch (1|4) "
# One archive, for tools that bring back only a few files.
tar czf "$out/perf-results.tgz" -C "$out" $(cd "$out" && ls perf*.json perf*.md perf*.log)
exit $status
