#!/usr/bin/env bash
# The server's load test: starts `draftwise serve` on the default model, answers every prompt
# one at a time (the reference), then runs CLIENTS concurrent streaming clients for SECONDS
# (in two halves) and checks: no request failed or hung (the run ends, nothing is left running
# or waiting), the resident memory at the start, between the halves and at the end (stable:
# the second half grows it by at most 5%; the first half takes the allocations a full batch
# needs), and every greedy answer equal to the one-at-a-time
# answer (on the CPU token for token; on a GPU, batched rounding may flip a near-tie, so there
# the count of differing answers is reported, not failed on, with the largest top-1/top-2
# log-probability gap of the reference where one first differs: DESIGN.md, Numerics).
#   scripts/serve_load.sh [--device cpu|cuda] [--clients 64] [--seconds 60] [--prompts N]
#                         [--max-tokens 32] [--out DIR] [-- extra serve flags]
# Prints one JSON object; exit 1 when a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cpu clients=64 seconds=60 prompts=64 max_tokens=32 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --prompts) prompts=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "serve_load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=${DRAFTWISE_BIN:-build/draftwise}
work=$(mktemp -d)
trap 'kill $server 2> /dev/null; rm -rf "$work"' EXIT
[ -n "$out" ] && mkdir -p "$out"
head -n "$prompts" data/spec_bench/question_dev.jsonl > "$work/prompts.jsonl"
"$bin" serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device "$device" --port 0 "$@" \
  > "$work/serve.out" 2> "$work/serve.log" &
server=$!
for _ in $(seq 600); do grep -q "listening on" "$work/serve.out" 2> /dev/null && break; sleep 0.1; done
url=$(grep -o "http://[0-9.:]*" "$work/serve.out" | head -n 1)
for _ in $(seq 1200); do curl -sf "$url/health" > /dev/null && break; sleep 0.1; done
curl -sf "$url/health" > /dev/null || { echo "serve_load.sh: the server did not come up" >&2; cat "$work/serve.log" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' /proc/$server/status; }
"$bin" loadgen --url "$url" --prompts "$work/prompts.jsonl" --clients 1 --requests "$prompts" \
  --max-tokens "$max_tokens" --logprobs --outputs "$work/reference.json" > "$work/reference.summary.json"
reference_status=$?
rss_before=$(rss)
half=$(python3 -c "print($seconds / 2)")
"$bin" loadgen --url "$url" --prompts "$work/prompts.jsonl" --clients "$clients" --duration "$half" \
  --max-tokens "$max_tokens" --logprobs --expect-outputs "$work/reference.json" > "$work/load.summary.json"
rss_middle=$(rss)
"$bin" loadgen --url "$url" --prompts "$work/prompts.jsonl" --clients "$clients" --duration "$half" \
  --max-tokens "$max_tokens" --logprobs --expect-outputs "$work/reference.json" > "$work/load2.summary.json"
rss_after=$(rss)
metrics=$(curl -sf "$url/metrics")
running=$(echo "$metrics" | awk '$1 == "draftwise:num_requests_running" {print $2}')
waiting=$(echo "$metrics" | awk '$1 == "draftwise:num_requests_waiting" {print $2}')
blocks=$(echo "$metrics" | awk '$1 == "draftwise:kv_cache_used_blocks" {print $2}')
kill -TERM $server; wait $server; server_status=$?
python3 - "$work" "$device" "$reference_status" "$rss_before" "$rss_middle" "$rss_after" "$running" "$waiting" \
  "$blocks" "$server_status" "$out" << 'PY'
import json, sys
(work, device, reference_status, rss_before, rss_middle, rss_after, running, waiting, blocks, server_status,
 out) = sys.argv[1:]
reference = json.load(open(f"{work}/reference.summary.json"))
halves = [json.load(open(f"{work}/load.summary.json")), json.load(open(f"{work}/load2.summary.json"))]
load = {key: halves[0][key] + halves[1][key] for key in
        ("requests", "errors", "completion_tokens", "seconds", "answers_inconsistent_across_repeats",
         "answers_differing_from_expected")}
load["tokens_per_second"] = load["completion_tokens"] / load["seconds"]
load["error_samples"] = halves[0]["error_samples"] + halves[1]["error_samples"]
# Where answers differ (from the reference, or between repeats): the largest top-1/top-2
# log-probability gap of the reference at the first differing token (small: a near-tie).
load["first_difference_gap_max"] = max(h["first_difference_gaps"]["max"] for h in halves)
load["first_differences"] = sum(h["first_difference_gaps"]["count"] for h in halves)
result = {"device": device, "reference": reference, "load": load, "halves": halves,
          "rss_kib_before": int(rss_before), "rss_kib_middle": int(rss_middle), "rss_kib_after": int(rss_after),
          "left_running": float(running), "left_waiting": float(waiting), "left_cache_blocks": float(blocks),
          "server_exit": int(server_status)}
checks = {"reference ran": int(reference_status) == 0 and reference["errors"] == 0,
          "no failed request": load["errors"] == 0,
          "nothing left running or waiting": float(running) == 0 and float(waiting) == 0 and float(blocks) == 0,
          "clean shutdown": int(server_status) == 0,
          "memory stable": int(rss_after) <= 1.05 * int(rss_middle),
          "answers stable across repeats": load["answers_inconsistent_across_repeats"] == 0 or device != "cpu"}
if device == "cpu":
    checks["answers equal one at a time"] = load["answers_differing_from_expected"] == 0
result["checks"] = checks
print(json.dumps(result, indent=1))
if out:
    json.dump(result, open(f"{out}/serve_load.json", "w"), indent=1)
sys.exit(0 if all(checks.values()) else 1)
PY
