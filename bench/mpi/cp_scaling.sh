#!/usr/bin/env bash
# Context-parallel scaling on one host: the same prefill as 1 rank x C threads, 2 ranks x C/2
# and 4 ranks x C/4 (C = the cores used, 16 by default), each rank on its own cores. The
# configurations run back to back, in alternating order from round to round (1 2 4, then 4 2 1,
# ...), so that drift of the host (clock, neighbours) falls on all of them alike. One JSON line per
# run on stdout (sampleattn_cp_bench --json, with "round", "config", "cores" and "pe" added), then
# a summary table: per configuration the median time over the rounds and its ratio to the 1-rank
# run of the same round. Progress and errors go to stderr.
#
# Usage: bench/mpi/cp_scaling.sh [options] [-- more sampleattn_cp_bench options]
#   --bin PATH       the benchmark (env CP_BENCH; default build-cpu/, else build/ bench/mpi/sampleattn_cp_bench)
#   --mpirun PATH    mpirun (env MPIRUN; default mpirun)
#   --mpi-args ARGS  more mpirun arguments, e.g. "--use-hwthread-cpus" (env MPIRUN_ARGS)
#   --seq N          sequence length (65536)
#   --dtypes LIST    input dtypes, comma- or space-separated ("bf16,f32")
#   --ranks LIST     rank counts ("1,2,4"); a count above the cores is skipped
#   --cores C        cores to use (16), capped at the CPUs this script may run on (nproc)
#   --rounds R       rounds (2)
#   --method M       dense (the ring) or sample (SampleAttention across ranks); for sample give
#                    structured inputs after --: --inputs DIR (sampleattn generate's q/k/v.npy)
# e.g. bench/mpi/cp_scaling.sh --seq 32768 --rounds 3 -- --repeat 5 --warmup 1
#      bench/mpi/cp_scaling.sh --method sample --dtypes bf16 -- --inputs /tmp/in64k --split contiguous
# (GFLOP/s are dense-equivalent: the dense attention's FLOPs over the time.)
#
# Environment: runs as root (OMPI_ALLOW_RUN_AS_ROOT*) and in containers (OMPI_MCA_btl=self,vader:
# shared memory, no network probing); set either yourself to override. Where ptrace is not allowed
# (docker's default profile) the vader single-copy (CMA) transfers can fail: then also set
# OMPI_MCA_btl_vader_single_copy_mechanism=none.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${CP_BENCH:-}
mpirun=${MPIRUN:-mpirun}
mpi_args=${MPIRUN_ARGS:-}
seq=65536 dtypes="bf16,f32" ranks="1,2,4" cores=16 rounds=2 method=dense
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --mpirun) mpirun=$2; shift 2 ;;
    --mpi-args) mpi_args=$2; shift 2 ;;
    --seq) seq=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cp_scaling.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
done
extra=("$@")
if [ "$method" != dense ] && [ "$method" != sample ]; then
  echo "cp_scaling.sh: --method $method: dense or sample" >&2
  exit 2
fi
if [ -z "$bin" ]; then
  for b in "$repo/build-cpu" "$repo/build"; do
    [ -x "$b/bench/mpi/sampleattn_cp_bench" ] && { bin=$b/bench/mpi/sampleattn_cp_bench; break; }
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "cp_scaling.sh: no benchmark binary '$bin' (--bin or CP_BENCH)" >&2
  exit 2
fi
command -v "$mpirun" >/dev/null || { echo "cp_scaling.sh: $mpirun not found (--mpirun or MPIRUN)" >&2; exit 2; }

export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}

# mpirun's PE counts cores, not hardware threads (unless --use-hwthread-cpus): with SMT, the
# cores this script may use are nproc / threads per core.
avail=$(nproc)
smt=$(lscpu 2>/dev/null | sed -n 's/^Thread(s) per core: *\([0-9]*\).*/\1/p')
if [ -n "$smt" ] && [ "$smt" -gt 1 ] && [[ " $mpi_args " != *" --use-hwthread-cpus "* ]]; then
  avail=$((avail / smt))
fi
if [ "$cores" -gt "$avail" ]; then
  echo "cp_scaling.sh: $avail cores here: using $avail, not $cores" >&2
  cores=$avail
fi
read -r -a dtype_list <<< "${dtypes//,/ }"
read -r -a rank_list <<< "${ranks//,/ }"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
failed=0

run_one() {  # round dtype ranks
  local round=$1 dtype=$2 np=$3 pe threads line rc=0
  local -a cmd
  if [ "$np" -eq 1 ]; then
    pe=$cores threads=$cores
    cmd=("$mpirun" -np 1 --bind-to none)
  else
    pe=$((cores / np)) threads=$((cores / np))
    cmd=("$mpirun" -np "$np" --map-by "slot:PE=$pe" --bind-to core)
  fi
  # shellcheck disable=SC2206  # mpi_args is meant to split into words
  cmd+=($mpi_args "$bin" --seq "$seq" --dtype "$dtype" --threads "$threads" --method "$method" --json "${extra[@]}")
  echo "cp_scaling.sh: round $round: ${cmd[*]}" >&2
  line=$("${cmd[@]}") || rc=$?
  if [ "$rc" -ne 0 ] || [ "${line:0:1}" != "{" ]; then
    echo "cp_scaling.sh: round $round, $dtype, $np ranks: failed (exit $rc)" >&2
    failed=1
    return
  fi
  printf '{"round":%d,"config":"%dx%d","cores":%d,"pe":%d,%s\n' "$round" "$np" "$threads" "$cores" "$pe" "${line#\{}"
  local t flops
  t=$(sed -n 's/.*"time_s_median":\([-0-9.eE+]*\).*/\1/p' <<< "$line")
  flops=$(sed -n 's/.*"flops":\([-0-9.eE+]*\).*/\1/p' <<< "$line")
  echo "$dtype $np $threads $round $t $flops" >> "$results"
}

for ((round = 1; round <= rounds; ++round)); do
  for dtype in "${dtype_list[@]}"; do
    order=("${rank_list[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#rank_list[@]} - 1; i >= 0; --i)); do order+=("${rank_list[i]}"); done
    fi
    for np in "${order[@]}"; do
      if [ "$np" -gt "$cores" ]; then
        echo "cp_scaling.sh: $np ranks > $cores cores: skipped" >&2
        continue
      fi
      run_one "$round" "$dtype" "$np"
    done
  done
done

# Summary: per (dtype, ranks), the median over rounds of the time and of time / (1-rank time of
# the same round and dtype); speedup = 1 / that ratio.
echo
echo "seq $seq, $cores cores, $rounds round(s), method $method: $(basename "$bin")${extra[*]:+ ${extra[*]}}"
awk '
  function median(list,   n, a, i, j, x) {
    n = split(list, a, " ")
    for (i = 2; i <= n; ++i) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; --j) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { key = $1 " " $2; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key; thr[key] = $3 }
    times[key] = times[key] " " $5; flops[key] = $6; t[key, $4] = $5; if ($2 == 1) one[$1, $4] = $5; rounds[key] = rounds[key] " " $4 }
  END {
    printf "%-6s %-14s %10s %9s %10s %9s  %s\n", "dtype", "ranks x thr", "median s", "GFLOP/s", "t / t(1)", "speedup", "t / t(1) per round"
    for (k = 1; k <= nk; ++k) {
      key = keys[k]; split(key, f, " "); med = median(times[key]); ratios = ""; per = ""
      n = split(rounds[key], r, " ")
      for (i = 1; i <= n; ++i)
        if ((f[1], r[i]) in one) { x = t[key, r[i]] / one[f[1], r[i]]; ratios = ratios " " x; per = per sprintf(" %.3f", x) }
      rm = ratios == "" ? "" : median(ratios)
      printf "%-6s %-14s %10.4f %9.1f %10s %9s %s\n", f[1], f[2] " x " thr[key], med, flops[key] / med * 1e-9,
             rm == "" ? "-" : sprintf("%.3f", rm), rm == "" ? "-" : sprintf("%.2fx", 1 / rm), per == "" ? " -" : per
    }
  }' "$results"
exit $failed
