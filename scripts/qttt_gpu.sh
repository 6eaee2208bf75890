#!/usr/bin/env bash
# qTTT on a GPU machine (docs/qttt.md), in the two calls that bring the default model there in
# halves (the device tool carries 64 MiB a call):
#   scripts/qttt_gpu.sh tests     builds draftwise and the GPU tests (build-gpu/), runs the qTTT
#                                 GPU tests and the CUDA decoder and speculation tests beside them
#   scripts/qttt_gpu.sh figures   with models/SmolLM2-135M-Instruct.Q4_1.gguf in place: the
#                                 default-model GPU tests, the needle-in-a-haystack benchmark at
#                                 every length up to the model's limit, and a sweep of qTTT
#                                 settings on the longest prompts (how the defaults were chosen)
# Logs and results go to $OUT (or /tmp/draftwise-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
model=models/SmolLM2-135M-Instruct.Q4_1.gguf

build() {
  cmake -G Ninja -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a > "$out/configure.log" 2>&1 ||
    { tail -n 30 "$out/configure.log"; return 1; }
  ninja -C build-gpu -j16 draftwise target_cuda_tests > "$out/build.log" 2>&1 ||
    { grep -E "error|FAILED" -A6 "$out/build.log" | head -n 80; return 1; }
}

case "${1:-}" in
  tests)
    build || exit 1
    (cd build-gpu && ctest -R "CudaQttt|CudaDecoder\.|SpeculationCuda" --output-on-failure -j4) > "$out/ctest_qttt.log" 2>&1
    status=$?
    grep -E "tests passed|tests failed|Failed|rank [0-9]|identical to the end" "$out/ctest_qttt.log" | head -n 60
    exit $status
    ;;
  figures)
    build || exit 1
    [ -f "$model" ] || { echo "no $model" >&2; exit 1; }
    (cd build-gpu && DRAFTWISE_REQUIRE_MODEL=1 ctest -R "CudaQttt|CudaDecoder\.DefaultModel|SpeculationCuda.DefaultModel" \
      --output-on-failure) > "$out/ctest_default_model.log" 2>&1
    echo "default-model GPU tests: exit $? ($(grep -Eo '[0-9]+% tests passed.*' "$out/ctest_default_model.log"))"
    # The sweep: accuracy and the answer's log-probability on the longest prompts, per setting.
    sweep="$out/qttt_sweep.md"
    echo "| qTTT | accuracy without | with | mean Δ log p(answer) | qTTT s per request |" > "$sweep"
    echo "|---|---:|---:|---:|---:|" >> "$sweep"
    for spec in steps=16,lr=1e-3 steps=16,lr=3e-3 steps=16,lr=1e-2 steps=32,lr=3e-3 steps=16,lr=3e-3,rank=16 \
                steps=16,lr=1e-2,rank=16 steps=8,span=256,lr=3e-3; do
      build-gpu/draftwise bench --niah --model "$model" --device cuda --lengths 4096,8184 --depths 0.1,0.5,0.9 \
        --trials 2 --qttt "$spec" --out "/tmp/sweep-$spec" > /dev/null 2> "/tmp/sweep-$spec.log" || { tail -n 3 "/tmp/sweep-$spec.log"; continue; }
      python3 - "$spec" "/tmp/sweep-$spec/niah.json" >> "$sweep" <<'PY'
import json, sys
spec, path = sys.argv[1:]
cases = json.load(open(path))["cases"]
n = len(cases)
without = sum(c["without_qttt"]["correct"] for c in cases)
adapted = sum(c["with_qttt"]["correct"] for c in cases)
delta = sum(c["with_qttt"]["answer_logprob"] - c["without_qttt"]["answer_logprob"] for c in cases) / n
seconds = sum(c["cost"]["adaptation_seconds"] for c in cases) / n
print(f"| {spec} | {without}/{n} | {adapted}/{n} | {delta:+.3f} | {seconds:.3f} |")
PY
    done
    cat "$sweep"
    # The figures: every length up to the limit, three depths, three needles each.
    build-gpu/draftwise bench --niah --model "$model" --device cuda --depths 0.1,0.5,0.9 --trials 3 \
      --out "$out/niah" 2> "$out/niah.log"
    status=$?
    [ $status -eq 0 ] && cat "$out/niah/niah.md" || tail -n 5 "$out/niah.log"
    exit $status
    ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
