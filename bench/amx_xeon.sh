#!/usr/bin/env bash
# The AMX figures of docs/PERF.md (issue 12) in one run, on a Xeon with AMX tiles (the lent GPU
# machine's 16-core host): the amx kernel on one core against the avx512 f32 kernel, dense bf16
# inputs on 2 threads (precision auto, i.e. AMX tiles) against the f32 path and the tile products'
# peak, 1 -> 16 threads, SampleAttention at 32K with its stages, and PyTorch's CPU SDPA beside us.
# Usage: bench/amx_xeon.sh [dir with sampleattn, kernels_bench, libsampleattn.so.1]
# (on the lent machine, LD_LIBRARY_PATH must hold the libraries bench/carry_libs.sh copies; the
# PyTorch comparison needs python3 with torch and numpy). Each line is a JSON object or a note.
set -euo pipefail
dir=${1:-build}
S=$dir/sampleattn; [[ -x $S ]] || S=$dir/src/cli/sampleattn
K=$dir/kernels_bench; [[ -x $K ]] || K=$dir/bench/kernels_bench
L=$dir/libsampleattn.so.1; [[ -f $L ]] || L=$dir/src/libsampleattn.so.1
date -u +%FT%TZ; nproc; grep -m1 "model name" /proc/cpuinfo
"$S" info | grep "cpu tables"
# One core: the tile kernel against the f32 kernel, each on its table's own tile (1024 rows x 512
# keys on amx, x 256 on avx512) and a causal diagonal tile of 1024 x 1024.
taskset -c 3 "$K" --benchmark_min_time=0.2 \
  --benchmark_filter='^attend(_causal)?/(amx/bf16|avx512/f32)/m:1024/n:(256|512|1024)/d:128$'
# 2 threads: precision auto (bf16 tiles) with the peaks of this run, then f32, three times.
two="bench --method dense --seq 8192 --heads 8 --dtype bf16 --threads 2 --json --quiet --repeat 5"
for _ in 1 2 3; do
  taskset -c 0,1 "$S" $two --peak
  taskset -c 0,1 "$S" $two --precision f32
done
# 1 -> 16 threads, twice.
for t in 1 16 1 16; do
  "$S" bench --method dense --seq 8192 --heads 32 --dtype bf16 --threads $t --json --quiet --repeat 3
done
# SampleAttention at 32K against our dense (overhead_s: stages 1 + 2), with accuracy.
"$S" bench --method both --seq 32768 --heads 32 --dtype bf16 --threads 16 --json --quiet --repeat 3
# PyTorch's CPU SDPA (bf16 and f32) beside our dense and sample, one table.
python3 "$(dirname "$0")/cpu_vs_torch.py" --lib "$L" --cli "$S" --seqs 16384,32768 --heads 32 --threads 16 --repeat 3
