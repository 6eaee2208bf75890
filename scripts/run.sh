#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs what is missing, fetches the default
# model, builds in Release and completes a chat prompt with the default model (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/fetch_model.sh
scripts/build.sh
build/draftwise generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --chat \
  --prompt "${DRAFTWISE_PROMPT:-Explain in three sentences why the sky is blue.}" \
  --temperature 0 --max-tokens 256
