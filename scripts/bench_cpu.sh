#!/usr/bin/env bash
# Speed of the CPU reference on the default model: batch-1 prefill and decode tokens/s for
# several prompt lengths, the median of REPEATS runs of `draftwise generate`, printed as a
# Markdown table (the figures in docs/cpu-reference.md come from here).
#
#   scripts/bench_cpu.sh [--threads N] [--repeats R] [--model PATH]
#
# Prompts are random token ids (--random-prompt, seeded); 64 tokens are generated greedily
# with --ignore-eos so every run decodes the same number of tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=0
repeats=3
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -x build/draftwise ] || scripts/build.sh
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; threads=${threads}"
echo
echo "| prompt tokens | prefill tokens/s | decode tokens/s (64 tokens) |"
echo "|---:|---:|---:|"
for prompt in 32 128 512; do
  runs=()
  for _ in $(seq "$repeats"); do
    runs+=("$(build/draftwise generate --model "$model" --random-prompt "$prompt" --max-tokens 64 \
      --ignore-eos --temperature 0 --seed 1 --threads "$threads" --json)")
  done
  printf '%s\n' "${runs[@]}" | python3 -c '
import json, statistics, sys
stats = [json.loads(line)["stats"] for line in sys.stdin]
prefill = statistics.median(s["prefill_tokens_per_second"] for s in stats)
decode = statistics.median(s["decode_tokens_per_second"] for s in stats)
prompt = stats[0]["prompt_tokens"]
print(f"| {prompt} | {prefill:.0f} | {decode:.1f} |")'
done
