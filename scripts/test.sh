#!/usr/bin/env bash
# Installs what is missing, fetches the default model, builds and runs the test suite.
#   scripts/test.sh          every test except those labelled slow
#   scripts/test.sh --slow   every test, slow ones included
# Tests needing a GPU skip (with a message) where there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/fetch_model.sh
scripts/build.sh
exclude=(-LE slow)
[ "${1:-}" = "--slow" ] && exclude=()
# The model was just fetched: tests that need it must not skip.
cd build
DRAFTWISE_REQUIRE_MODEL=1 ctest --output-on-failure --no-tests=error -j "$(nproc)" "${exclude[@]}"
