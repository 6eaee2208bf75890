#!/usr/bin/env bash
# Tensor parallelism on a machine with two or more GPUs (docs/tensor-parallel.md): builds
# draftwise and the GPU tests (build-gpu/), runs the tensor-parallel tests (random weights in
# the Llama-3.2-1B and Llama-3.1-8B shapes over GPUs 0 and 1 against GPU 0 alone; a rank that
# dies mid-step), the launcher end to end (`draftwise generate --tp 2` on the 1B shape, its
# greedy tokens printed beside --tp 1's), and the figures of docs/tensor-parallel.md: decode
# at batch 1 and 32 and prefill for the Llama-3.1-8B shape at tp 1 and tp 2, with the
# all-reduce time of a step (context-bench). NCCL runs with NVLink multicast off. Logs and
# figures go to $OUT (or /tmp/draftwise-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/draftwise-gpu}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0

gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "$gpus" -lt 2 ]; then
  echo "tensor parallelism needs two GPUs; $gpus visible" >&2
  exit 1
fi
cmake -G Ninja -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a > "$out/configure.log" 2>&1 ||
  { tail -n 30 "$out/configure.log"; exit 1; }
ninja -C build-gpu -j16 draftwise target_cuda_tests > "$out/build.log" 2>&1 ||
  { grep -E "error|FAILED" -A6 "$out/build.log" | head -n 80; exit 1; }

(cd build-gpu && ctest -R "TensorParallel" --output-on-failure) > "$out/ctest_tp.log" 2>&1
status=$?
grep -E "relative L2|greedy at tp|failed after|tests passed|tests failed|Failed" "$out/ctest_tp.log" | head -n 40

prompt=128000,791,6864,315,9822,374,12366,13
for tp in 1 2; do
  timeout 300 build-gpu/draftwise generate --random-weights configs/llama-3.2-1b.json --device cuda --tp "$tp" \
    --prompt-ids "$prompt" --max-tokens 24 --temperature 0 --json > "$out/generate_tp$tp.json" 2> "$out/generate_tp$tp.log"
  echo "generate --tp $tp: exit $? $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['token_ids'])" \
    "$out/generate_tp$tp.json" 2>/dev/null)"
done
for tp in 1 2; do
  timeout 600 build-gpu/draftwise context-bench --random-weights configs/llama-3.1-8b.json --device cuda --tp "$tp" \
    --contexts 512 --batches 1,32 --prefill 2048 --steps 32 --repeats 3 \
    --json "$out/tp${tp}_bench.json" --markdown "$out/tp${tp}_bench.md" 2> "$out/tp${tp}_bench.log"
  echo "context-bench --tp $tp: exit $?"
  cat "$out/tp${tp}_bench.md"
done
exit $status
