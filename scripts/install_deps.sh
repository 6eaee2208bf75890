#!/usr/bin/env bash
# Installs the Debian 12 packages draftwise needs to build and test, skipping those present.
# CUDA (nvcc, cuBLAS, NCCL) is used when installed; it is not installed here.
set -euo pipefail

packages=(build-essential cmake ninja-build python3 libboost-dev libfmt-dev libgtest-dev
          nlohmann-json3-dev ca-certificates curl)
python3 -m pip --version > /dev/null 2>&1 || packages+=(python3-pip)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2> /dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
