#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs what is missing, fetches the default
# model, builds in Release and serves it: the OpenAI-compatible server on 127.0.0.1:8080
# (DRAFTWISE_PORT), on the CPU, speculating with early-exit drafting (self:8, four tokens a
# step) whose draft head learns online from every request (DVI). The learned adapter is
# saved to models/draft-adapter.safetensors on shutdown (Ctrl-C) and picked up next time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/fetch_model.sh
scripts/build.sh
adapter=models/draft-adapter.safetensors
resume=()
[ -f "$adapter" ] && resume=(--adapter "$adapter")
exec build/draftwise serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --served-model-name SmolLM2-135M-Instruct --port "${DRAFTWISE_PORT:-8080}" \
  --draft self:8 --draft-len 4 --learn global --save-adapter "$adapter" "${resume[@]}" "$@"
