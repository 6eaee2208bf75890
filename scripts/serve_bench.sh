#!/usr/bin/env bash
# Serving figures (docs/serving.md): `draftwise serve` on the default model, and the load
# generator over loopback at 1, 8, 32 and 64 concurrent streaming clients, each for SECONDS,
# without speculation and with each drafter setting given. Writes $OUT/serve_bench.json (every
# loadgen summary) and prints a Markdown table.
#   scripts/serve_bench.sh [--device cuda] [--seconds 20] [--max-tokens 128] [--clients "1 8 32 64"]
#                          [--setting "NAME=serve flags"]...
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda seconds=20 max_tokens=128 levels="1 8 32 64"
settings=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --clients) levels=$2; shift 2 ;;
    --setting) settings+=("$2"); shift 2 ;;
    *) echo "serve_bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#settings[@]} -gt 0 ] || settings=("none=" "ngram:3=--draft ngram:3")
bin=${DRAFTWISE_BIN:-build-gpu/draftwise}
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $server 2> /dev/null; rm -rf "$work"' EXIT
echo "[" > "$work/all.json"
first=1
for setting in "${settings[@]}"; do
  name=${setting%%=*}
  flags=${setting#*=}
  # shellcheck disable=SC2086
  "$bin" serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device "$device" --port 0 $flags \
    > "$work/serve.out" 2> "$work/serve-$name.log" &
  server=$!
  for _ in $(seq 600); do grep -q "listening on" "$work/serve.out" 2> /dev/null && break; sleep 0.1; done
  url=$(grep -o "http://[0-9.:]*" "$work/serve.out" | head -n 1)
  for _ in $(seq 1200); do curl -sf "$url/health" > /dev/null && break; sleep 0.1; done
  # A short warm-up (CUDA graphs, first allocations).
  "$bin" loadgen --url "$url" --prompts data/spec_bench/question_dev.jsonl --clients 4 --requests 8 \
    --max-tokens 32 > /dev/null
  for clients in $levels; do
    "$bin" loadgen --url "$url" --prompts data/spec_bench/question_dev.jsonl --clients "$clients" \
      --duration "$seconds" --max-tokens "$max_tokens" > "$work/run.json"
    python3 -c "import json,sys; d=json.load(open('$work/run.json')); d['setting']='$name'; d['flags']='$flags'; print(json.dumps(d))" \
      > "$work/tagged.json"
    [ $first -eq 1 ] || echo "," >> "$work/all.json"
    cat "$work/tagged.json" >> "$work/all.json"
    first=0
  done
  curl -sf "$url/metrics" > "$out/metrics-$name.txt"
  kill -TERM $server; wait $server
done
echo "]" >> "$work/all.json"
cp "$work/all.json" "$out/serve_bench.json"
python3 - "$out/serve_bench.json" << 'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
print("| setting | clients | requests | errors | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) | chunk gap p50 (ms) | chunk gap p99 (ms) | TPOT p50 (ms) | TPOT p99 (ms) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    ms = lambda key: f"{1000 * r[key]:.1f}"
    print(f"| {r['setting']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['tokens_per_second']:.0f} | "
          f"{ms('ttft_p50')} | {ms('ttft_p99')} | {ms('chunk_gap_p50')} | {ms('chunk_gap_p99')} | {ms('tpot_p50')} | {ms('tpot_p99')} |")
PY
