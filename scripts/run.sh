#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs what is missing, fetches the default
# model, builds in Release and runs draftwise on the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/fetch_model.sh
scripts/build.sh
build/draftwise inspect models/SmolLM2-135M-Instruct.Q4_1.gguf
