#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs them.
#
#   scripts/fuzz.sh [HARNESS...] [--seconds N]
#
# HARNESS: gguf_reader_fuzz, safetensors_reader_fuzz, tokenizer_fuzz, model_config_fuzz,
# request_lines_fuzz (default: all five, one after the other). Each runs N seconds (default
# 600) from the seeds in
# tests/fuzz/seeds/ plus whatever it found before (fuzz-corpus/, git-ignored). A crash
# leaves its input in fuzz-corpus/<harness>-crash-* and makes the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
harnesses=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) harnesses+=("$1"); shift ;;
  esac
done
[ ${#harnesses[@]} -gt 0 ] || harnesses=(gguf_reader_fuzz safetensors_reader_fuzz tokenizer_fuzz model_config_fuzz request_lines_fuzz)

declare -A seeds=([gguf_reader_fuzz]=gguf [safetensors_reader_fuzz]=safetensors [tokenizer_fuzz]=tokenizer
  [model_config_fuzz]=model_config [request_lines_fuzz]=request_lines)
for harness in "${harnesses[@]}"; do
  [ -n "${seeds[$harness]:-}" ] || { echo "unknown harness '$harness'" >&2; exit 2; }
done

CC=clang CXX=clang++ cmake -G Ninja -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDRAFTWISE_FUZZ=ON -DDRAFTWISE_TESTS=OFF -DDRAFTWISE_CUDA=OFF > /dev/null
ninja -C build-fuzz "${harnesses[@]}"

for harness in "${harnesses[@]}"; do
  corpus="fuzz-corpus/$harness"
  mkdir -p "$corpus"
  echo "== $harness for ${seconds}s (corpus $corpus)"
  "build-fuzz/tests/fuzz/$harness" "$corpus" "tests/fuzz/seeds/${seeds[$harness]}" \
    -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
    -artifact_prefix="fuzz-corpus/$harness-crash-" -print_final_stats=1 2>&1 | tail -n 25
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ]; then
    echo "$harness failed (exit $status); see fuzz-corpus/$harness-crash-*" >&2
    exit 1
  fi
done
