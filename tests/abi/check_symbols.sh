#!/usr/bin/env bash
# The shared library exports exactly the committed symbol list, each under its version node
# (docs/ABI.md). A new function adds a line here on purpose; a removed or renamed one fails.
# Usage: check_symbols.sh <libsampleattn.so> <exported_symbols.txt>
set -euo pipefail
lib="$1"
expected="$2"
actual=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort)
if ! diff -u "$expected" <(echo "$actual"); then
  echo "check_symbols: $lib exports a different list than $expected (above: - expected, + actual)"
  exit 1
fi
echo "check_symbols: $(echo "$actual" | wc -l) symbols, as committed"
