#!/usr/bin/env bash
# CPU against GPU prefill on the structured inputs of the accuracy issue, in one call on a GPU
# machine (bf16, 32 heads, d=128, causal).
#
#   bench/gpu_prefill.sh prepare [build-dir]   here: copies the CUDA-enabled `sampleattn`, the shared
#                                              library and the libraries they need into .carry/
#                                              (git-ignored; shared with bench/cuda_bench.sh)
#   bench/gpu_prefill.sh run                   on the GPU machine (carry .carry): generates the
#                                              inputs, runs bench/gpu_compare.py (PyTorch flash,
#                                              cuDNN, FlexAttention) and `sampleattn bench` on the
#                                              GPU and the CPU, prints one table; logs in $OUT
set -uo pipefail
mode=${1:-run}
root=$(cd "$(dirname "$0")/.." && pwd)
carry=$root/.carry
if [[ $mode == prepare ]]; then
  build=${2:-$root/build}
  mkdir -p "$carry/bin" "$carry/lib"
  cp "$build/src/cli/sampleattn" "$carry/bin/"
  cp -L "$build/src/libsampleattn.so" "$carry/lib/libsampleattn.so.1"
  cp "$build/src/libsampleattn_cuda.so" "$carry/lib/"  # the CUDA backend module (docs/ABI.md)
  source "$root/bench/carry_libs.sh"
  copy_system_libs "$carry/lib" libhwloc.so.15 libgomp.so.1 libpng16.so.16 libudev.so.1 libz.so.1 \
    libgfortran.so.5 libquadmath.so.0 libopenblas.so.0
  du -sh "$carry"
  exit 0
fi
out=${OUT:-/tmp/sampleattn-prefill}
mkdir -p "$out"
export LD_LIBRARY_PATH=$carry/lib:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1
B=$carry/bin/sampleattn
seqs=${SEQS:-32768,65536,131072}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; date -u +%FT%TZ
for n in ${seqs//,/ }; do
  mkdir -p /tmp/inputs/n$n
  $B generate --seq $n --heads 32 --kv-heads 32 --dtype bf16 --out /tmp/inputs/n$n || exit 1
done
timeout 300 python3 "$root/bench/gpu_compare.py" --lib "$carry/lib/libsampleattn.so.1" --seqs "$seqs" \
  --data /tmp/inputs --json "$out/torch.json" 2>&1 | grep -v -i warning | tee "$out/torch.log"
$B bench --backend cuda --seq "$seqs" --heads 32 --kv-heads 32 --dtype bf16 --repeat 3 --json --quiet \
  | tee "$out/cuda.jsonl" | cut -c1-400
$B bench --backend cpu --seq 32768 --heads 32 --kv-heads 32 --dtype bf16 --repeat 1 --warmup 0 --json --quiet \
  | tee "$out/cpu.jsonl" | cut -c1-400
python3 "$root/bench/prefill_table.py" "$out/cpu.jsonl" "$out/cuda.jsonl" "$out/torch.json" | tee "$out/table.txt"
