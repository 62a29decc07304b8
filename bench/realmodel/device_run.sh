#!/bin/bash
# Runs on the lent GPU machine from the carried folder .model (see README.md):
#   bash .model/realmodel/device_run.sh smoke|real [train minutes]
#   bash .model/realmodel/device_run.sh look [RUNS]
#       the trained weights in .model/weights on 8 held-out windows of 16K: both backends, the look
#       off and at 4 (RUNS: a comma-separated subset of cuda0,cuda4,cpu4,cpu0, the default)
# .model/lib holds libsampleattn.so.1 and the system libraries it needs, .model/python the
# sampleattn package. Everything that must come back is written under $OUT (at most 8 files).
set -u
mode=${1:-smoke}
minutes=${2:-6}
here=$(cd "$(dirname "$0")" && pwd)
m=$(dirname "$here")
export LD_LIBRARY_PATH=$m/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PYTHONPATH=$m/python PYTHONUNBUFFERED=1
export SAMPLEATTN_LIBRARY=$m/lib/libsampleattn.so.1
out=${OUT:-/tmp/out}
mkdir -p "$out"
cd "$here"
nvidia-smi -L; python3 -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'
if [[ $mode == look ]]; then
  e=(python3 eval.py --weights "$m/weights" --windows 8 --window 16384 --threads 16 --no-copy --methods dense,sample)
  IFS=, read -ra runs <<< "${2:-cuda0,cuda4,cpu4,cpu0}"
  for run in "${runs[@]}"; do
    backend=${run%?}; look=${run: -1}
    timeout 200 "${e[@]}" --backend "$backend" --sample-param look=$look --out "$out/$run.json" > "$out/$run.log" 2>&1
    echo "$run: exit status $?"
    grep -E "^window " "$out/$run.log"
  done
  exit 0
fi
if [[ $mode == smoke ]]; then
  python3 train.py --out /tmp/w --minutes "$minutes" --max-mb 20 --long-frac 0.3 --eval-windows 2 \
    --eval-every-s 5 --compile 2>&1 | tee "$out/train.log"
  python3 eval.py --weights /tmp/w --out "$out/eval.json" --windows 1 --window 2048 --threads 16 \
    --dump-layer auto --dump-dir /tmp/dump 2>&1 | tee "$out/eval.log"
  ls -la /tmp/w /tmp/dump
else
  python3 train.py --out "$out/weights" --minutes "$minutes" 2>&1 | tee "$out/log.txt"
  timeout 150 python3 eval.py --weights "$out/weights" --out "$out/eval.json" --windows 2 --window 8192 \
    --threads 16 --dump-layer auto --dump-dir /tmp/dump 2>&1 | tee -a "$out/log.txt"
  tar -C /tmp -cf "$out/dump.tar" dump
  ls -la "$out" "$out/weights"
fi
