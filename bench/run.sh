#!/bin/sh
# mcorefs benchmark suite: bench/run.sh   (BENCH_SCALE=smoke bench/run.sh for a < 2 min CI run)
# Builds the daemon (Release) and the suite's helpers under bench/cache/, generates and caches the
# checkpoints, runs every measurement next to its baseline and prints one table; the table is also
# written to bench/results.md (bench/results-smoke.md at smoke scale).  See bench/README.md.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=${BENCH_CACHE:-$HERE/cache}
PY=${BENCH_PYTHON:-/usr/bin/python3}      # needs torch + numpy (generator, Python converter)
mkdir -p "$CACHE/bin"

"$PY" -c 'import torch, numpy' 2>/dev/null || { echo "bench: $PY lacks torch/numpy" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "bench: fusermount3 not found" >&2; exit 1; }
[ -c /dev/fuse ] || { echo "bench: /dev/fuse missing" >&2; exit 1; }

if [ -z "${MCOREFS_BIN:-}" ]; then
    # Release build of the current tree; warnings are not errors here (a benchmark, not a lint).
    if ! { cmake -S "$ROOT" -B "$CACHE/build-rel" -DCMAKE_BUILD_TYPE=Release -DMCOREFS_TESTS=OFF \
               -DMCOREFS_WERROR=OFF && cmake --build "$CACHE/build-rel" -j"$(nproc)"; } >"$CACHE/build.log" 2>&1
    then
        tail -30 "$CACHE/build.log" >&2
        echo "bench: building mcorefs failed (log: $CACHE/build.log)" >&2
        exit 1
    fi
    MCOREFS_BIN=$CACHE/build-rel/mcorefs
fi
cc -O2 -Wall -o "$CACHE/bin/ceilingfs" "$HERE/ceilingfs.c" $(pkg-config --cflags --libs fuse3)
cc -O2 -Wall -o "$CACHE/bin/benchtool" "$HERE/benchtool.c"

export MCOREFS_BIN BENCH_CACHE="$CACHE"
export CEILINGFS_BIN="$CACHE/bin/ceilingfs" BENCHTOOL_BIN="$CACHE/bin/benchtool"
exec "$PY" "$HERE/bench.py" "$@"
