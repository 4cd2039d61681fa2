#!/usr/bin/env bash
# Build and test mcorefs.  Run from anywhere:  tools/test.sh [options]
#
#   1. ASan+UBSan build in build-asan/ (-DMCOREFS_SANITIZE=ON, warnings are errors)
#   2. ctest --output-on-failure -j2 there (unit tests + e2e FUSE tests)
#   3. plain Release build in build/ (must build without sanitizers, warnings are errors)
#   then a summary; exit status 0 only if every step passed.
#
# Options:
#   -R REGEX      only ctest tests matching REGEX (passed to ctest -R)
#   -E REGEX      exclude ctest tests matching REGEX
#   --no-release  skip step 3
#   --no-asan     skip steps 1-2 (and test the Release build instead)
#   -j N          build jobs (default: nproc)
# Environment:
#   MCOREFS_E2E_SKIP_MOE=1, MCOREFS_TEST_TORCH_DIST=1   forwarded to the e2e tests
#   CC                   compiler (default: cmake's choice, gcc on Debian)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

JOBS="$(nproc 2>/dev/null || echo 2)"
CTEST_JOBS=2
CTEST_FILTER=()
DO_ASAN=1
DO_RELEASE=1
while [ $# -gt 0 ]; do
  case "$1" in
    -R|-E) CTEST_FILTER+=("$1" "$2"); shift 2 ;;
    --no-release) DO_RELEASE=0; shift ;;
    --no-asan) DO_ASAN=0; shift ;;
    -j) JOBS="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "tools/test.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

# Tests are always built (tools/demo.sh caches BUILD_TESTING=OFF in build/).
CMAKE_EXTRA=(-DBUILD_TESTING=ON)

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

T0=$(date +%s)
SUMMARY=()
FAILED=0

step() {  # step NAME CMD...  -> runs CMD, records PASS/FAIL and the time
  local name="$1"; shift
  local t=$(date +%s)
  echo
  echo "==== $name: $*"
  if "$@"; then
    SUMMARY+=("$(printf 'PASS  %-28s %4ss' "$name" $(( $(date +%s) - t )))")
    return 0
  else
    local rc=$?
    SUMMARY+=("$(printf 'FAIL  %-28s %4ss  (exit %d)' "$name" $(( $(date +%s) - t )) "$rc")")
    FAILED=1
    return $rc
  fi
}

skip() { SUMMARY+=("$(printf 'SKIP  %-28s        (%s)' "$1" "$2")"); }

CTEST_LOG="$(mktemp -t mcorefs-ctest.XXXXXX)"
trap 'rm -f "$CTEST_LOG"' EXIT

run_ctest() {  # run_ctest BUILD_DIR
  ( cd "$1" && ctest --output-on-failure --no-tests=error -j"$CTEST_JOBS" "${CTEST_FILTER[@]}" ) 2>&1 | tee "$CTEST_LOG"
  return "${PIPESTATUS[0]}"
}

memcheck_units() {  # every cmocka unit test under valgrind: no invalid access, no leak
  local rc=0 t n=0
  for t in "$1"/tests/test_*; do
    [ -x "$t" ] || continue
    n=$((n + 1))
    echo "-- valgrind $t"
    MCOREFS_PYTHON=/usr/bin/python3 valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --error-exitcode=99 "$t" || rc=1
  done
  if [ "$n" = 0 ]; then
    echo "memcheck: no unit test programs in $1/tests: nothing was checked" >&2
    return 1
  fi
  return $rc
}

if [ ! -e /dev/fuse ]; then
  echo "tools/test.sh: warning: /dev/fuse is missing; the e2e tests cannot mount" >&2
fi

if [ "$DO_ASAN" = 1 ]; then
  if step "configure (asan)" cmake -S . -B build-asan -DMCOREFS_SANITIZE=ON -DMCOREFS_WERROR=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo "${CMAKE_EXTRA[@]}" &&
     step "build (asan)" cmake --build build-asan -j"$JOBS"; then
    step "ctest (asan)" run_ctest build-asan || true
  else
    skip "ctest (asan)" "build failed"
  fi
fi

if [ "$DO_RELEASE" = 1 ]; then
  if step "configure (release)" cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMCOREFS_WERROR=ON -DMCOREFS_SANITIZE=OFF \
        "${CMAKE_EXTRA[@]}" &&
     step "build (release)" cmake --build build -j"$JOBS"; then
    if [ "$DO_ASAN" = 0 ]; then
      step "ctest (release)" run_ctest build || true
    fi
    if command -v valgrind >/dev/null 2>&1; then
      step "memcheck (valgrind, unit)" memcheck_units build || true
    else
      skip "memcheck (valgrind, unit)" "valgrind not installed"
    fi
  fi
fi

echo
echo "==== summary ($(( $(date +%s) - T0 ))s)"
for l in "${SUMMARY[@]}"; do echo "  $l"; done
if [ -s "$CTEST_LOG" ]; then
  grep -E "tests passed|tests failed out of" "$CTEST_LOG" | sed 's/^/  ctest: /' | tail -1
  grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Not Run|Exception)" "$CTEST_LOG" \
    | sed 's/^\s*/  failed: /' || true
fi
if [ "$FAILED" = 0 ]; then
  echo "  RESULT: all steps passed"
else
  echo "  RESULT: FAILED"
fi
exit "$FAILED"
