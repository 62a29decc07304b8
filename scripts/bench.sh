#!/usr/bin/env bash
# The main job: set up (Debian packages, build) and run `sampleattn bench`. With arguments, they
# go to `sampleattn bench` as they are. Without, two tables: dense against SampleAttention on the
# generated structured inputs at 4K-32K tokens (the default head mix), then at 8K and 16K with the
# "real" mix, where one head in 8 is a copy (induction) head and one a retrieval head, whose
# queries each need far keys of their own (docs/ACCURACY.md; slower to generate).
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
exec "$bench" bench --mix real --seq 8192,16384
