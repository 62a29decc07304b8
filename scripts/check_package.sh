#!/usr/bin/env bash
# Checks that a build of sampleattn is consumable the normal ways (docs/PACKAGING.md). Installs the
# build into a temporary prefix, then builds and runs the consumers of tests/package/:
#   cmake-c-static     find_package from a C-only project, sampleattn::sampleattn_static
#   cmake-cxx-shared   find_package from C++ with sampleattn.hpp, sampleattn::sampleattn
#   pkgconfig-shared   cc with `pkg-config --cflags --libs sampleattn`
#   pkgconfig-static   cc with `pkg-config --static --cflags --libs sampleattn`, the archive named
#                      instead of the shared library
#   add_subdirectory   a parent project that builds this source tree (again, with CUDA off: the
#                      longest step) and links both libraries by their package names
#   fetchcontent       the same through FetchContent_Declare(SOURCE_DIR) + FetchContent_MakeAvailable
# Each consumer checks one attention call against its own double-precision attention, and that it
# links the library the way it asked for (static: no libsampleattn.so needed).
#
# Usage: scripts/check_package.sh <build-dir>     (CTest runs it as the test `package`)
# Prints one PASS/FAIL line per consumer (and the end of the log of a failure); exits 1 when
# any fails. Environment: CC for the pkg-config consumers; SAMPLEATTN_PACKAGE_JOBS (default nproc)
# for the embedded builds; SAMPLEATTN_PACKAGE_KEEP=1 keeps the temporary directory.
set -uo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 <build-dir>" >&2
  exit 2
fi
build=$(cd "$1" && pwd) || exit 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
consumers=$root/tests/package
jobs=${SAMPLEATTN_PACKAGE_JOBS:-$(nproc)}
cc=${CC:-cc}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

work=$(mktemp -d "${TMPDIR:-/tmp}/sampleattn-package.XXXXXX") || exit 2
if [[ ${SAMPLEATTN_PACKAGE_KEEP:-0} == 1 ]]; then
  echo "check_package: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
prefix=$work/prefix
failures=0

# step LOG COMMAND...: runs the command, its output going to LOG.
step() {
  local log=$1
  shift
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1 || { echo "    failed (exit $?): $*" >>"$log"; return 1; }
}

# linked_as LOG static|shared EXE: the executable needs libsampleattn.so exactly when shared.
linked_as() {
  local actual=static
  readelf -d "$3" | grep -q 'NEEDED.*libsampleattn\.so' && actual=shared
  [[ $actual == "$2" ]] || { echo "    $3 links libsampleattn $actual, not $2" >>"$1"; return 1; }
}

# check NAME "LINK:EXE ..." BUILD-FUNCTION ARGS...: builds with BUILD-FUNCTION LOG ARGS..., then
# runs each EXE and checks its link (static or shared); prints one line.
check() {
  local name=$1 programs=$2 build_function=$3 log=$work/$1.log start=$SECONDS ok=1 program
  shift 3
  if [[ $programs == *static:* && ! -f $libdir/libsampleattn.a ]]; then
    printf 'FAIL %-18s (no libsampleattn.a installed)\n' "$name"
    failures=$((failures + 1))
    return
  fi
  "$build_function" "$log" "$@" || ok=0
  for program in $programs; do
    [[ $ok == 1 ]] || break
    step "$log" "${program#*:}" && linked_as "$log" "${program%%:*}" "${program#*:}" || ok=0
  done
  if [[ $ok == 1 ]]; then
    printf 'PASS %-18s (%ds)\n' "$name" $((SECONDS - start))
  else
    printf 'FAIL %-18s (%ds, log: %s)\n' "$name" $((SECONDS - start)) "$log"
    tail -n 30 "$log" | sed 's/^/    | /'
    failures=$((failures + 1))
  fi
}

# cmake_project LOG SOURCE-DIR BINARY-DIR [cmake args...]: configures and builds.
cmake_project() {
  local log=$1 src=$2 bin=$3
  shift 3
  step "$log" cmake -S "$src" -B "$bin" "${generator[@]}" "$@" &&
    step "$log" cmake --build "$bin" --parallel "$jobs"
}

# find_package_project LOG SOURCE-DIR BINARY-DIR [cmake args...]: against the temporary prefix,
# which must be where the package was found.
find_package_project() {
  local log=$1 src=$2 bin=$3
  shift 3
  cmake_project "$log" "$src" "$bin" -DCMAKE_PREFIX_PATH="$prefix" "$@" &&
    step "$log" grep "^sampleattn_DIR:PATH=$prefix/" "$bin/CMakeCache.txt"
}

# pkgconfig_program LOG static|shared EXE: consumer.c, compiled as strict C11, with pkg-config's flags.
pkgconfig_program() {
  local log=$1 link=$2 exe=$3 flags word args=()
  if [[ $link == shared ]]; then
    flags=$(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs sampleattn) || return 1
    args=("-Wl,-rpath,$libdir")
  else
    flags=$(PKG_CONFIG_PATH=$pcdir pkg-config --static --cflags --libs sampleattn) || return 1
  fi
  echo "pkg-config: $flags" >>"$log"
  for word in $flags; do
    # With the shared library beside the archive, -lsampleattn would link the former: -l: names
    # the archive (GNU ld, gold, lld).
    [[ $link == static && $word == -lsampleattn ]] && word=-l:libsampleattn.a
    args+=("$word")
  done
  step "$log" "$cc" -std=c11 -Wall -Wextra -Werror -pedantic -o "$exe" "$consumers/consumer.c" \
    -DSAMPLEATTN_EXPECTED_VERSION="\"$version\"" "${args[@]}" -lm
}

# --- install --------------------------------------------------------------------------------------
start=$SECONDS
log=$work/install.log
if step "$log" cmake --install "$build" --prefix "$prefix" &&
   pc=$(find "$prefix" -name sampleattn.pc -print -quit) && [[ -n $pc ]] &&
   [[ -n $(find "$prefix" -name sampleattnConfig.cmake -print -quit) ]]; then
  printf 'PASS %-18s (%ds)\n' install $((SECONDS - start))
else
  echo "    no sampleattn.pc or sampleattnConfig.cmake: is $build configured with SAMPLEATTN_INSTALL=ON?" >>"$log"
  printf 'FAIL %-18s\n' install
  tail -n 30 "$log" | sed 's/^/    | /'
  exit 1
fi
pcdir=$(dirname "$pc")
libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir sampleattn)
version=$(PKG_CONFIG_PATH=$pcdir pkg-config --modversion sampleattn)

# --- the CUDA module, in a CUDA build: the installed program finds the installed module ----------
# (beside <prefix>/bin/../<libdir>, docs/ABI.md rule 2), whether or not a device exists.
if [[ -f $libdir/libsampleattn_cuda.so && -x $prefix/bin/sampleattn ]]; then
  if info=$("$prefix/bin/sampleattn" info 2>&1) && grep -q "$libdir/libsampleattn_cuda.so" <<<"$info"; then
    printf 'PASS %-18s\n' cuda-module
  else
    printf 'FAIL %-18s (the installed sampleattn does not report %s)\n' cuda-module "$libdir/libsampleattn_cuda.so"
    sed 's/^/    | /' <<<"$info"
    failures=$((failures + 1))
  fi
fi

# --- the consumers --------------------------------------------------------------------------------
check cmake-c-static "static:$work/cmake-c-static/consumer_c_static" \
  find_package_project "$consumers/find_package_c_static" "$work/cmake-c-static"
# The version file: a request for this major.minor must be accepted.
check cmake-cxx-shared "shared:$work/cmake-cxx-shared/consumer_cxx_shared" \
  find_package_project "$consumers/find_package_cxx_shared" "$work/cmake-cxx-shared" \
  -DSAMPLEATTN_REQUEST_VERSION="${version%.*}"
check pkgconfig-shared "shared:$work/pkgconfig_shared" pkgconfig_program shared "$work/pkgconfig_shared"
check pkgconfig-static "static:$work/pkgconfig_static" pkgconfig_program static "$work/pkgconfig_static"
# The embedded builds: the parent's defaults, except CUDA (not needed to be right, but nvcc takes
# minutes). Between them, C and C++ each link both libraries.
embedded=$work/add_subdirectory
check add_subdirectory "static:$embedded/consumer_c_static shared:$embedded/consumer_cxx_shared" \
  cmake_project "$consumers/add_subdirectory" "$embedded" -DSAMPLEATTN_SOURCE_DIR="$root" -DSAMPLEATTN_CUDA=OFF
fetched=$work/fetchcontent
check fetchcontent "shared:$fetched/consumer_c_shared static:$fetched/consumer_cxx_static" \
  cmake_project "$consumers/fetchcontent" "$fetched" -DSAMPLEATTN_SOURCE_DIR="$root" -DSAMPLEATTN_CUDA=OFF

if [[ $failures -gt 0 ]]; then
  echo "check_package: $failures consumer(s) failed"
  exit 1
fi
echo "check_package: all consumers passed"
