#!/usr/bin/env bash
# The Hopper kernels' code generation: compiles the sm_90a translation units with ptxas's report
# and fails if ptxas serializes their wgmma ("Potential Performance Loss", e.g. a wgmma in a branch
# it cannot prove warp-uniform, or too few registers) or spills. Either silently costs 1.5-2x on an
# H100 while every test still passes (docs/CUDA.md). Skips when nvcc is not installed. Reads the
# generated kernel_lists.h (cmake/KernelLists.cmake) from a configured build directory:
# SAMPLEATTN_BUILD_DIR, default build/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nvcc="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [[ ! -x $nvcc ]]; then
  echo "check_sm90: no nvcc, skipped"
  exit 0
fi
generated="${SAMPLEATTN_BUILD_DIR:-$root/build}/generated"
if [[ ! -f $generated/kernel_lists.h ]]; then
  echo "check_sm90: $generated/kernel_lists.h is missing: configure the build first (scripts/bootstrap.sh)"
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for tu in attention_sm90 columns_sm90; do
  "$nvcc" -I"$root/src" -I"$root/include" -I"$generated" -O3 -DNDEBUG -std=c++17 --expt-relaxed-constexpr -arch=sm_90a \
    -Xptxas=-v -cubin "$root/src/cuda/$tu.cu" -o "$tmp/$tu.cubin" >"$tmp/$tu.log" 2>&1 || { cat "$tmp/$tu.log"; exit 1; }
  regs=$(grep -o "Used [0-9]* registers" "$tmp/$tu.log" | sort -u | tr '\n' ' ')
  if grep -q "Performance Loss" "$tmp/$tu.log" || grep -E "[1-9][0-9]* bytes spill" "$tmp/$tu.log" >/dev/null; then
    echo "check_sm90: $tu.cu: wgmma serialized or registers spilled:"
    grep -E "Performance Loss|spill" "$tmp/$tu.log" | sort -u
    status=1
  else
    echo "check_sm90: $tu.cu: no serialization, no spills ($regs)"
  fi
done
exit $status
