#!/usr/bin/env bash
# The main job: set up (Debian packages, build) and run `sampleattn bench`. With arguments, they
# go to `sampleattn bench` as they are. Without, six tables: dense against SampleAttention on the
# generated structured inputs at 4K-32K tokens (the default head mix), then at 8K and 16K with the
# "real" mix, where one head in 8 is a copy (induction) head and one a retrieval head, whose
# queries each need far keys of their own (docs/ACCURACY.md; slower to generate); the same with
# rare far rows (--mix far: 0.5% of the other heads' rows fetch one key far back; validation
# cannot see them: the line under the table says what they lose), then the same with the look at
# every row that sends such rows dense (--look 4, docs/ALGORITHM.md step 5; off by default);
# then two model variants (ABI 1.3) on inputs generated for them: a 4K sliding window at 32K
# tokens (Mistral-style local attention; needle recall counts the needles the window shows), and
# Gemma 2's logit softcap of 50 at 16K (the generator calibrates under the cap, so it bends the
# logits the kernels see).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" "$root/build"
bench="$root/build/src/cli/sampleattn"
if [[ $# -gt 0 ]]; then
  exec "$bench" bench "$@"
fi
"$bench" bench
echo
echo "With copy and retrieval heads (--mix real):"
"$bench" bench --mix real --seq 8192,16384
echo
echo "With rare rows that fetch one far key as well (--mix far, docs/ACCURACY.md):"
"$bench" bench --mix far --seq 8192,16384
echo
echo "The same with the look at every row (--look 4: rows whose far key comes within 4 nats of their band run dense):"
"$bench" bench --mix far --seq 8192,16384 --look 4
echo
echo "A model with a 4K sliding window (--window-left 4096):"
"$bench" bench --window-left 4096 --seq 32768
echo
echo "A model with a logit softcap (--softcap 50, Gemma 2):"
exec "$bench" bench --softcap 50 --seq 16384
