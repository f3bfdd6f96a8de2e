#!/usr/bin/env bash
# Installs the Debian 12 packages NanoFlow builds and tests with (as root, or with sudo).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git curl unzip python3 python3-pip python3-venv
      libopenblas-dev libpcre2-dev nlohmann-json3-dev libcli11-dev libfmt-dev
      libgtest-dev libgmock-dev libbenchmark-dev libboost1.81-dev liburing-dev libxxhash-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
