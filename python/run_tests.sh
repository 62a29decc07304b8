#!/usr/bin/env bash
# The Python package's tests: installs python/ offline (Debian's pip and setuptools, no network)
# into a temporary directory and runs its pytest suite against a built library.
#
#   python/run_tests.sh BUILD_DIR|LIBRARY [pytest args...]
#
# pytest args: options (-k EXPR, -x, -rs...) and, to run part of the suite, test paths relative to
# the repository root (python/tests/test_sample.py).
# BUILD_DIR: a CMake build directory (its src/libsampleattn.so is used), or LIBRARY: the path of
# libsampleattn.so itself (a CUDA backend module, libsampleattn_cuda.so, is found beside it). SAMPLEATTN_PYTHON picks the interpreter (default /usr/bin/python3,
# Debian's, which has python3-numpy and python3-pytest). SAMPLEATTN_PYTHON_TESTS=0 skips (exit 0);
# otherwise a missing numpy, pytest or pip is a failure that names the packages to install.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
if [[ $# -lt 1 ]]; then
  echo "usage: python/run_tests.sh BUILD_DIR|LIBRARY [pytest args...]" >&2
  exit 2
fi
target=$1
shift
if [[ ${SAMPLEATTN_PYTHON_TESTS:-1} == 0 ]]; then
  echo "python tests: skipped (SAMPLEATTN_PYTHON_TESTS=0)"
  exit 0
fi

if [[ -f $target ]]; then
  library=$target
elif [[ -e $target/src/libsampleattn.so ]]; then
  library=$target/src/libsampleattn.so
else
  library=$(find "$target" -maxdepth 3 -name libsampleattn.so -print -quit 2>/dev/null || true)
fi
if [[ -z ${library:-} || ! -e $library ]]; then
  echo "python tests: no libsampleattn.so under $target (build the 'sampleattn' target first)" >&2
  exit 1
fi
library=$(cd "$(dirname "$library")" && pwd)/$(basename "$library")

python=${SAMPLEATTN_PYTHON:-/usr/bin/python3}
missing=()
for module in numpy pytest pip setuptools; do
  "$python" -c "import $module" 2>/dev/null || missing+=("python3-$module")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "python tests: $python lacks ${missing[*]}: apt-get install -y ${missing[*]}" \
       "(or SAMPLEATTN_PYTHON_TESTS=0 to skip)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sampleattn-python.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Build from a copy, so that pip's in-tree build leaves nothing in the source tree.
mkdir "$work/src"
cp -r "$here/pyproject.toml" "$here/README.md" "$here/sampleattn" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m pip install --quiet --no-build-isolation --no-index --no-deps --no-cache-dir \
  --disable-pip-version-check --root-user-action=ignore --target "$work/site" "$work/src"

cd "$root"
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export SAMPLEATTN_LIBRARY=$library
export SAMPLEATTN_EXPECT_PACKAGE_DIR="$work/site/sampleattn"
# The whole suite, unless the arguments name test files or directories (relative to the root).
suite=("$here/tests")
for argument in "$@"; do
  [[ $argument != -* && -e $argument ]] && suite=()
done
"$python" -m pytest -q -p no:cacheprovider "${suite[@]}" "$@"
