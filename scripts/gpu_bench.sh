#!/usr/bin/env bash
# On a GPU machine: builds draftwise (scripts/gpu_build.sh) and runs the acceptance-rate
# benchmark on the default model over every Spec-Bench dev prompt, greedy, 128 new tokens a
# turn, with the modes of docs/speculative-decoding.md (or the modes given as $1). Writes
# results.json, the table (bench.md) and the progress log under $OUT/bench (or
# /tmp/draftwise-gpu/bench). Extra arguments go to draftwise bench.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out/bench"
scripts/gpu_build.sh || exit 1
modes=${1:-ngram:3@4,self:8@4,self:8@8}
[ $# -gt 0 ] && shift
build-gpu/draftwise bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --prompts data/spec_bench/question_dev.jsonl --modes "$modes" --max-tokens 128 --device cuda \
  --out "$out/bench" "$@" > "$out/bench/bench.md" 2> "$out/bench/bench.log"
status=$?
cat "$out/bench/bench.md"
tail -n 3 "$out/bench/bench.log"
exit $status
