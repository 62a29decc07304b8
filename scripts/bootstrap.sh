#!/usr/bin/env bash
# Installs the Debian 12 packages sampleattn builds with (when missing) and builds it.
# Usage: scripts/bootstrap.sh [build-dir] [extra cmake args...]
# SAMPLEATTN_BUILD_TARGETS (space-separated) builds only those targets (default: all);
# SAMPLEATTN_EXTRA_PACKAGES (space-separated Debian packages) are installed too when missing (the
# sanitizer and fuzzing builds' clang: clang libclang-rt-14-dev).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
shift || true

packages=(build-essential cmake ninja-build pkg-config libomp-dev libopenblas-dev libxsimd-dev
          libhwloc-dev libbenchmark-dev libgtest-dev libpng-dev libopenmpi-dev openmpi-bin
          python3-numpy python3-pytest python3-pip python3-setuptools ${SAMPLEATTN_EXTRA_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >&2
fi

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >&2
targets=()
[[ -n ${SAMPLEATTN_BUILD_TARGETS:-} ]] && targets=(--target ${SAMPLEATTN_BUILD_TARGETS})
cmake --build "$build" --parallel "$(nproc)" "${targets[@]}" >&2
