#!/bin/bash
# The decode step of issue 14 (1 query, 32K keys, 32 query / 8 kv heads, f16 Q) with f16, int8 and
# fp8 K/V, for two builds of the CLI run back to back, in rounds: on a shared machine only figures
# taken side by side compare (docs/PERF.md, 2026-12-03).
#
#   bench/decode_compare.sh OLD_CLI NEW_CLI [ROUNDS] [THREADS...]
#   e.g. bench/decode_compare.sh /tmp/old/build/src/cli/sampleattn build/src/cli/sampleattn 2 2 16
#
# 2 threads run under `taskset -c 0,1` when taskset exists. One line per run: build, K/V dtype,
# threads, time, the K/V read rate and the plain read rate of the same bytes (--peak).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n 2,10p "$0"; exit 2; }
old=$1 new=$2 rounds=${3:-2}
shift $(( $# >= 3 ? 3 : 2 ))
threads=("$@")
[[ ${#threads[@]} -gt 0 ]] || threads=(2)
line() {
  python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
print(j["kv_dtype"], "threads", j["threads"], "time_ms %.2f" % (j["time_s"] * 1e3), "kv_gbs %.1f" % j["kv_gbs"],
      "read_gbs %.1f" % j["read_gbs"], "kv/read %.2f" % (j["kv_gbs"] / j["read_gbs"]))'
}
for ((round = 1; round <= rounds; ++round)); do
  for th in "${threads[@]}"; do
    pin=()
    if [[ $th == 2 ]] && command -v taskset >/dev/null; then pin=(taskset -c 0,1); fi
    for build in old new; do
      cli=$old
      [[ $build == new ]] && cli=$new
      for dt in same int8 fp8; do
        echo -n "$build "
        "${pin[@]}" "$cli" bench --method dense --seq 32768 --q-len 1 --heads 32 --kv-heads 8 --dtype f16 \
          --kv-dtype "$dt" --repeat 31 --warmup 3 --peak --threads "$th" --json --quiet | line
      done
    done
  done
done
