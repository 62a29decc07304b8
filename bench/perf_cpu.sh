#!/usr/bin/env bash
# The CPU figures of docs/PERF.md in one run (2 threads unless THREADS is set): dense f32 against
# OpenBLAS SGEMM, the bf16 path, 1 -> 2 thread scaling, peak RSS at N=32768 and SampleAttention
# at 32K. Usage: bench/perf_cpu.sh [build-dir]   (each line is one JSON object or a note)
set -euo pipefail
build=${1:-build}
B=$build/src/cli/sampleattn
T=${THREADS:-2}
common="--heads 8 --kv-heads 8 --head-dim 128 --json --quiet"
date -u +%FT%TZ; nproc; grep -m1 "model name" /proc/cpuinfo
$B bench --method dense --seq 8192 $common --threads "$T" --repeat 5 --peak --check
$B bench --method dense --seq 8192 $common --threads "$T" --repeat 5 --precision bf16 --peak
$B bench --method dense --seq 8192 $common --threads 1 --repeat 3 --peak
for n in 16384 32768; do
  kib=$( { /usr/bin/time -f "%M" $B bench --method dense --seq $n $common --threads "$T" --repeat 1 \
          --data random >/dev/null; } 2>&1 | tail -1 )
  inputs_mb=$(( n * 8 * 128 * 4 * 4 / 1048576 ))  # q, k, v and o in f32
  echo "{\"seq\":$n,\"peak_rss_mb\":$(( kib / 1024 )),\"qkvo_mb\":$inputs_mb}"
done
$B bench --seq 32768 $common --threads "$T" --repeat 3 --peak
