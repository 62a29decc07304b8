#!/usr/bin/env bash
# The sampleattn program's errors and exit codes (0 success, 1 failure, 2 no or unknown command):
# bad and hostile inputs, mismatched shapes, unwritable outputs, failing writes and allocations.
# A failing command must say why on stderr, never crash or report an internal error, and never
# write or damage its output file.
#
# usage: tests/cli_test.sh path/to/sampleattn path/to/tests/data
# Prints one line per case and a last line "N passed, M failed"; exits 1 if any case failed.
set -uo pipefail

if [[ $# -ne 2 || ! -x $1 || ! -d $2 ]]; then
  echo "usage: $0 path/to/sampleattn path/to/tests/data" >&2
  exit 2
fi
bin=$1
data=$2
export SAMPLEATTN_NUM_THREADS=${SAMPLEATTN_NUM_THREADS:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sampleattn_cli_test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
report() {  # name, why it failed ("" when it passed)
  if [[ -z $2 ]]; then
    passed=$((passed + 1))
    echo "PASS  $1"
  else
    failed=$((failed + 1))
    echo "FAIL  $1: $2"
    sed 's/^/      stderr: /' "$tmp/stderr" | head -n 5
  fi
}

# expect NAME WANT_RC STDERR_REGEX COMMAND...: runs the command and checks its exit status, that
# stderr matches the (case-insensitive, extended) regex when one is given, and, for a failure,
# that it was neither a crash nor an "internal" error.
expect() {
  local name=$1 want=$2 pattern=$3 rc=0 why=""
  shift 3
  "$@" >"$tmp/stdout" 2>"$tmp/stderr" || rc=$?
  if [[ $rc -ne $want ]]; then
    why="exit $rc, expected $want"
  elif [[ -n $pattern ]] && ! grep -qiE -- "$pattern" "$tmp/stderr"; then
    why="stderr does not match /$pattern/"
  elif [[ $want -ne 0 ]] && grep -qiE 'internal|terminate called|abort|segmentation' "$tmp/stderr"; then
    why="stderr reports an internal error or a crash"
  elif [[ $want -ne 0 && ! -s $tmp/stderr ]]; then
    why="failed without a message on stderr"
  fi
  report "$name" "$why"
}

# expect_absent NAME PATH: the failing command before it wrote nothing at PATH.
expect_absent() {
  if [[ -e $2 ]]; then report "$1" "'$2' was written"; else report "$1" ""; fi
}

# expect_same NAME FILE COPY: FILE is byte for byte its copy, and its folder holds no temporary
# files (anything named FILE.*).
expect_same() {
  local why=""
  if ! cmp -s "$2" "$3"; then
    why="'$2' changed"
  elif compgen -G "$2.*" >/dev/null; then
    why="temporary files left: $(echo "$2".*)"
  fi
  report "$1" "$why"
}

# Runs a command with the file size limit at 1 KiB: its writes fail part way (EFBIG; the program
# ignores SIGXFSZ), as on a full disk.
with_small_file_limit() { (ulimit -f 1 && exec "$@"); }
# Runs a command with about 400 MB of address space.
with_small_address_space() { (ulimit -v 400000 && exec "$@"); }

small=(--seq 256 --heads 4 --kv-heads 2 --head-dim 64)

# ---- The command line.
expect "no arguments: usage error" 2 "usage" "$bin"
expect "unknown command: usage error" 2 "unknown command" "$bin" frobnicate
expect "--help: success" 0 "" "$bin" --help
for command in bench run mask profile generate info; do
  expect "$command --help: success" 0 "" "$bin" "$command" --help
  if ! grep -q "usage: sampleattn $command" "$tmp/stdout"; then
    report "$command --help prints its usage" "stdout has no 'usage: sampleattn $command'"
  fi
  expect "$command with an unknown option fails" 1 "unknown option" "$bin" "$command" --no-such-option
done
expect "run with a bad number fails" 1 "threads" "$bin" run "${small[@]}" --threads many --out "$tmp/x.npy"

# ---- Inputs: one good set, and sets whose shapes disagree with it.
expect "generate small inputs" 0 "" "$bin" generate "${small[@]}" --out "$tmp"
mkdir -p "$tmp/short" "$tmp/dim128" "$tmp/kv4" "$tmp/h3"
expect "generate fewer tokens" 0 "" "$bin" generate --seq 128 --heads 4 --kv-heads 2 --head-dim 64 --out "$tmp/short"
expect "generate a larger head dim" 0 "" "$bin" generate --seq 256 --heads 4 --kv-heads 2 --head-dim 128 --out "$tmp/dim128"
expect "generate more kv heads" 0 "" "$bin" generate --seq 256 --heads 4 --kv-heads 4 --head-dim 64 --out "$tmp/kv4"
expect "generate three query heads" 0 "" "$bin" generate --seq 256 --heads 3 --kv-heads 3 --head-dim 64 --out "$tmp/h3"
good=(--q "$tmp/q.npy" --k "$tmp/k.npy" --v "$tmp/v.npy")
# name | --q --k --v | what stderr says
mismatched=(
  "v with fewer tokens than k|$tmp/q.npy $tmp/k.npy $tmp/short/v.npy|same number of tokens"
  "k with a smaller head dim than q|$tmp/dim128/q.npy $tmp/k.npy $tmp/v.npy|same head dim"
  "v with more heads than k|$tmp/q.npy $tmp/k.npy $tmp/kv4/v.npy|same number of heads"
  "q heads not a multiple of kv heads|$tmp/h3/q.npy $tmp/k.npy $tmp/v.npy|multiple of the kv heads"
)

# ---- run
out=$tmp/out/o.npy
mkdir -p "$tmp/out"
expect "run without --out fails" 1 "--out" "$bin" run "${good[@]}"
expect "run with a missing input file fails" 1 "cannot open.*missing\.npy" \
  "$bin" run --q "$tmp/missing.npy" --k "$tmp/k.npy" --v "$tmp/v.npy" --out "$out"
expect_absent "run with a missing input file writes nothing" "$out"
expect "run with only --q fails" 1 "go together" "$bin" run --q "$tmp/q.npy" --out "$out"
for hostile in "$data"/npy/*.npy; do
  name=$(basename "$hostile")
  expect "run with hostile --q $name fails" 1 "$name" "$bin" run --q "$hostile" --k "$tmp/k.npy" --v "$tmp/v.npy" --out "$out"
done
expect_absent "run with hostile inputs writes nothing" "$out"
for m in "${mismatched[@]}"; do
  IFS='|' read -r name files message <<<"$m"
  read -r q k v <<<"$files"
  expect "run, $name, fails" 1 "$message" "$bin" run --q "$q" --k "$k" --v "$v" --out "$out"
  expect_absent "run, $name, writes nothing" "$out"
done
touch "$tmp/file"
expect "run into a path inside a regular file fails" 1 "cannot create.*file/o\.npy" \
  "$bin" run "${good[@]}" --out "$tmp/file/o.npy"
expect "run onto a folder fails" 1 "cannot write.*out" "$bin" run "${good[@]}" --out "$tmp/out"
expect "run into a missing folder fails" 1 "cannot create" "$bin" run "${good[@]}" --out "$tmp/no/such/o.npy"
expect "run --max-workspace 1K fails naming the workspace" 1 "workspace" \
  "$bin" run "${good[@]}" --max-workspace 1K --out "$out"
expect "run --max-workspace 12X is a clear error" 1 "--max-workspace.*12X" \
  "$bin" run "${good[@]}" --max-workspace 12X --out "$out"
expect_absent "run with a workspace error writes nothing" "$out"
expect "run --out-dtype f64 fails" 1 "out-dtype" "$bin" run "${good[@]}" --out-dtype f64 --out "$out"

# A failing run leaves an existing output as it was.
expect "run writes o.npy" 0 "" "$bin" run "${good[@]}" --out "$out"
cp "$out" "$tmp/o.npy.before"
m=${mismatched[0]}
IFS='|' read -r name files message <<<"$m"
read -r q k v <<<"$files"
expect "run over o.npy with bad inputs fails" 1 "$message" "$bin" run --q "$q" --k "$k" --v "$v" --out "$out"
expect_same "run with bad inputs keeps o.npy" "$out" "$tmp/o.npy.before"
expect "run over o.npy with a write failing part way fails" 1 "cannot write.*o\.npy" \
  with_small_file_limit "$bin" run "${good[@]}" --out-dtype f32 --method dense --out "$out"
expect_same "run with a failing write keeps o.npy" "$out" "$tmp/o.npy.before"

# ---- mask
png=$tmp/out/mask.png
expect "mask without --q/--k/--v of the same call fails" 1 "go together" "$bin" mask --k "$tmp/k.npy" --out "$png"
expect "mask with a missing input file fails" 1 "cannot open" \
  "$bin" mask --q "$tmp/missing.npy" --k "$tmp/k.npy" --v "$tmp/v.npy" --out "$png"
expect "mask with hostile --q fails" 1 "short_1gib" \
  "$bin" mask --q "$data/npy/short_1gib.npy" --k "$tmp/k.npy" --v "$tmp/v.npy" --out "$png"
for m in "${mismatched[@]}"; do
  IFS='|' read -r name files message <<<"$m"
  read -r q k v <<<"$files"
  expect "mask, $name, fails" 1 "$message" "$bin" mask --q "$q" --k "$k" --v "$v" --out "$png"
done
expect_absent "mask with bad inputs writes nothing" "$png"
expect "mask --head out of range fails" 1 "head" "$bin" mask "${good[@]}" --head 4 --out "$png"
expect "mask into a path inside a regular file fails" 1 "cannot create.*file/mask\.png" \
  "$bin" mask "${good[@]}" --pixels 64 --out "$tmp/file/mask.png"
expect "mask writes a picture" 0 "" "$bin" mask "${good[@]}" --head 1 --pixels 64 --out "$png"
cp "$png" "$tmp/mask.png.before"
expect "mask over a picture with a write failing part way fails" 1 "cannot write.*mask\.png" \
  with_small_file_limit "$bin" mask "${good[@]}" --head 1 --pixels 256 --out "$png"
expect_same "mask with a failing write keeps the picture" "$png" "$tmp/mask.png.before"

# ---- profile
expect "profile with hostile --q fails" 1 "magic_only" \
  "$bin" profile --q "$data/npy/magic_only.npy" --k "$tmp/k.npy" --v "$tmp/v.npy"
expect "profile, k with a smaller head dim than q, fails" 1 "same head dim" \
  "$bin" profile --q "$tmp/dim128/q.npy" --k "$tmp/k.npy" --v "$tmp/v.npy"
expect "profile --rows 0 fails" 1 "rows" "$bin" profile "${good[@]}" --rows 0

# ---- bench
bench=(--repeat 1 --quiet)
mkdir -p "$tmp/mixed"
cp "$tmp/dim128/q.npy" "$tmp/mixed/q.npy"
cp "$tmp/k.npy" "$tmp/mixed/k.npy"
cp "$tmp/v.npy" "$tmp/mixed/v.npy"
expect "bench --data npy:DIR with mismatched files fails" 1 "same head dim" \
  "$bin" bench "${bench[@]}" --data "npy:$tmp/mixed"
expect "bench --data npy:DIR without files fails" 1 "cannot open" "$bin" bench "${bench[@]}" --data "npy:$tmp/none"
expect "bench --data bogus fails" 1 "--data" "$bin" bench "${bench[@]}" --data bogus
expect "bench --alpha 0 fails" 1 "alpha" "$bin" bench "${bench[@]}" "${small[@]}" --alpha 0
expect "bench --head-dim 100 fails" 1 "head.dim" "$bin" bench "${bench[@]}" --seq 256 --heads 4 --head-dim 100
expect "bench --kv-heads 3 --heads 8 fails" 1 "heads" "$bin" bench "${bench[@]}" --seq 256 --heads 8 --kv-heads 3
expect "bench --max-workspace 1K fails naming the workspace" 1 "workspace" \
  "$bin" bench "${bench[@]}" "${small[@]}" --max-workspace 1K

# ---- generate
mkdir -p "$tmp/gen"
expect "generate without --out fails" 1 "--out" "$bin" generate --seq 256
expect "generate --seq 0 fails" 1 "seq" "$bin" generate --seq 0 --out "$tmp/gen"
expect "generate --seq above the maximum fails" 1 "seq" "$bin" generate --seq 99999999999 --out "$tmp/gen"
expect "generate --dtype f64 fails" 1 "dtype" "$bin" generate "${small[@]}" --dtype f64 --out "$tmp/gen"
expect "generate into a missing folder fails" 1 "cannot create" "$bin" generate "${small[@]}" --out "$tmp/no/such"
expect_absent "failed generate calls write nothing" "$tmp/gen/q.npy"
# AddressSanitizer reserves terabytes of address space: under ulimit -v it cannot start.
if grep -qa __asan_init "$bin"; then
  echo "SKIP  generate out of memory: a sanitizer build cannot run under ulimit -v"
else
  expect "generate out of memory fails cleanly" 1 "out of memory" \
    with_small_address_space "$bin" generate --seq 131072 --heads 64 --out "$tmp/gen"
  expect_absent "generate out of memory writes nothing" "$tmp/gen/q.npy"
fi

# ---- info
expect "info" 0 "" "$bin" info

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
