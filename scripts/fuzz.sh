#!/usr/bin/env bash
# Fuzzes the .npy reader and the C API with libFuzzer under AddressSanitizer +
# UndefinedBehaviorSanitizer (clang). Usage: scripts/fuzz.sh [seconds per target] [runs per target]
# (default 60 s, no run limit; with a run limit the campaign stops at whichever comes first).
# Seeds come from tests/data/npy and tests/fuzz/corpus/*; new inputs go to a scratch folder, so
# the tree is not changed. The targets run at the same time (a core each). A crash leaves its input
# in build-fuzz/ and fails the script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
runs="${2:--1}"
build="${SAMPLEATTN_FUZZ_BUILD_DIR:-$root/build-fuzz}"

SAMPLEATTN_EXTRA_PACKAGES="clang libclang-rt-14-dev" SAMPLEATTN_BUILD_TARGETS="npy_fuzz api_fuzz" \
  "$root/scripts/bootstrap.sh" "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DSAMPLEATTN_FUZZ=ON -DSAMPLEATTN_SANITIZE=address,undefined -DSAMPLEATTN_CUDA=OFF \
  -DSAMPLEATTN_BUILD_TESTS=OFF -DSAMPLEATTN_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# The targets run side by side (one core each), then report in order.
targets=(npy api)
pids=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  seeds=("$root/tests/fuzz/corpus/$target")
  [ "$target" = npy ] && seeds+=("$root/tests/data/npy")
  (cd "$build" && exec "$build/tests/fuzz/${target}_fuzz" -max_total_time="$seconds" -runs="$runs" \
      -max_len=16384 -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 "$work/$target" "${seeds[@]}") \
      >"$work/$target.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  rc=0
  wait "${pids[$i]}" || rc=$?
  echo "fuzz: ${target}_fuzz for ${seconds} s (runs: ${runs})"
  grep -E "(DONE|stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY|runtime error|Test unit written)" \
      "$work/$target.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$work/$target.log"
    status=1
  fi
done
exit "$status"
