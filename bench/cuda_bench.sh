#!/usr/bin/env bash
# The CUDA backend on a GPU machine in one call: its tests, the CPU suites on the machine's host
# CPU (there an AVX-512 / AVX512_BF16 Xeon: the tables this project's 2-core machine may lack),
# then bench/gpu_compare.py (skipped with SAMPLEATTN_NO_COMPARE=1).
#
#   bench/cuda_bench.sh prepare [build-dir]   on a machine with nvcc and the -dev packages: builds,
#                                             then copies cuda_test, libsampleattn.so and the few
#                                             shared libraries they need into .carry/ (git-ignored;
#                                             shared with bench/gpu_prefill.sh)
#   bench/cuda_bench.sh run [bench args...]   on the GPU machine, from the repository root, with
#                                             .carry/ beside it: logs and JSON go to $OUT (or /tmp)
#
# The GPU image has nvcc, PyTorch and CMake but not our Debian -dev packages, so the binaries are
# built where those are and carried (they need glibc >= the build machine's).
set -uo pipefail
mode=${1:-run}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
carry=$root/.carry

if [[ $mode == prepare ]]; then
  build=${1:-$root/build-cuda}
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMPLEATTN_CUDA=ON || exit 1
  cpu_suites=(kernels_test attention_test sample_test hardening_test dispatch_test)
  cmake --build "$build" --target cuda_test sampleattn sampleattn_cuda "${cpu_suites[@]}" || exit 1
  mkdir -p "$carry/bin" "$carry/lib"
  cp "$build/tests/cuda_test" "$carry/bin/"
  for t in "${cpu_suites[@]}"; do cp "$build/tests/$t" "$carry/bin/"; done
  cp -L "$build/src/libsampleattn.so" "$carry/lib/libsampleattn.so.1"
  cp "$build/src/libsampleattn_cuda.so" "$carry/lib/"  # the CUDA backend module (docs/ABI.md)
  source "$root/bench/carry_libs.sh"
  copy_system_libs "$carry/lib" libhwloc.so.15 libudev.so.1 libgomp.so.1
  du -sh "$carry"
  exit 0
fi

out=${OUT:-/tmp/sampleattn-cuda}
mkdir -p "$out"
export LD_LIBRARY_PATH=$carry/lib:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
date -u +"%Y-%m-%dT%H:%M:%SZ"

timeout 300 "$carry/bin/cuda_test" >"$out/test.log" 2>&1
echo "cuda_test exit status $?"
grep -E "^\[  (FAILED|PASSED) |^\[ info|Failure|Expected|Which is|GPU vs|naive" "$out/test.log" | head -80
# On Hopper the run above used the sm_90a kernels for head dim 128; the portable ones too:
SAMPLEATTN_CUDA_MMA_SYNC=1 timeout 300 "$carry/bin/cuda_test" >"$out/test_mma_sync.log" 2>&1
echo "cuda_test (SAMPLEATTN_CUDA_MMA_SYNC=1) exit status $?"
grep -E "^\[  (FAILED|PASSED) |Failure" "$out/test_mma_sync.log" | head -20
for t in kernels_test attention_test sample_test hardening_test dispatch_test; do
  [[ -x $carry/bin/$t ]] || continue
  timeout 240 "$carry/bin/$t" >"$out/$t.log" 2>&1
  echo "$t (host CPU) exit status $?: $(grep -cE '^\[       OK \]' "$out/$t.log") ok, $(grep -cE '^\[  SKIPPED \] [A-Z]' "$out/$t.log") skipped"
  grep -E "^\[  FAILED  \] [A-Z]|Failure" "$out/$t.log" | head -10
done
if [[ ${SAMPLEATTN_NO_COMPARE:-0} == 1 ]]; then exit 0; fi
if grep -q "FAILED.*CudaDense\." "$out/test.log"; then
  echo "dense attention fails its tests: no benchmark"
  exit 1
fi
timeout 400 python3 "$root/bench/gpu_compare.py" --lib "$carry/lib/libsampleattn.so.1" --json "$out/bench.json" "$@" \
  2>&1 | tee "$out/bench.log" | grep -v -i warning
