#!/usr/bin/env bash
# The test suite: set up (Debian packages, build) and run every test with CTest.
# Extra arguments go to cmake, e.g. -DSAMPLEATTN_SANITIZE=address,undefined; SAMPLEATTN_BUILD_DIR
# picks the build directory (default build/); SAMPLEATTN_CTEST_EXCLUDE, a regular expression, leaves
# matching tests out (ctest -E; .ci/run's sanitizer build uses it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SAMPLEATTN_BUILD_DIR:-$root/build}"
"$root/scripts/bootstrap.sh" "$build" "$@"
exclude=()
[[ -n ${SAMPLEATTN_CTEST_EXCLUDE:-} ]] && exclude=(-E "$SAMPLEATTN_CTEST_EXCLUDE")
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" "${exclude[@]}"
