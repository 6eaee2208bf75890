#!/usr/bin/env bash
# The needle-in-a-haystack benchmark of qTTT (draftwise bench --niah, docs/qttt.md) on the
# default model: accuracy without and with qTTT at several prompt lengths and needle depths, the
# answer's log-probability before and after, and the cost per request. Writes niah.json,
# niah.md, niah.svg, niah_logprob.svg and the progress log niah.log into the output folder.
#
#   scripts/niah_bench.sh [--device cpu|cuda[:N]] [--lengths L1,L2,...] [--out DIR] [bench --niah options]
#
# cuda builds with scripts/gpu_build.sh and runs build-gpu/draftwise; its lengths default to the
# benchmark's own, powers of two from 1024 up to the model's limit and that limit (8184 tokens
# for the default model: 8192 positions less an answer of 8). cpu runs build/draftwise (built
# by scripts/build.sh when missing) at 512,1024,2048 unless --lengths says otherwise. The
# folder defaults to $OUT/niah-cpu or $OUT/niah-cuda ($OUT: /tmp/draftwise-gpu). Other
# arguments (--depths, --trials, --qttt, --seed, --max-tokens, --threads...) go to bench --niah.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cpu
lengths=
out=
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --lengths) lengths="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
case "$device" in
  cpu)
    bin=build/draftwise
    [ -x "$bin" ] || scripts/build.sh || exit 1
    lengths=${lengths:-512,1024,2048}
    ;;
  cuda|cuda:*)
    bin=build-gpu/draftwise
    scripts/gpu_build.sh || exit 1
    ;;
  *) echo "--device must be cpu, cuda or cuda:N, got '$device'" >&2; exit 2 ;;
esac
out=${out:-${OUT:-/tmp/draftwise-gpu}/niah-${device%%:*}}
mkdir -p "$out"
args=(bench --niah --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device "$device" --out "$out")
[ -n "$lengths" ] && args+=(--lengths "$lengths")
"$bin" "${args[@]}" "${extra[@]}" 2> "$out/niah.log"
status=$?
if [ $status -eq 0 ]; then cat "$out/niah.md"; else tail -n 5 "$out/niah.log"; fi
exit $status
