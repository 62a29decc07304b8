#!/usr/bin/env bash
# The main job: set up (Debian packages, build) and run `sampleattn bench` with any arguments,
# by default dense against SampleAttention on generated structured inputs at 4K-32K tokens.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" "$root/build"
exec "$root/build/src/cli/sampleattn" bench "$@"
