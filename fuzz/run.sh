#!/bin/sh
# Run each libFuzzer harness for N seconds (default 60) over fuzz/corpus/<name>/.
# Usage: fuzz/run.sh [SECONDS] [BUILD_DIR]   (builds BUILD_DIR with clang if needed)
# New inputs go to BUILD_DIR/fuzz-work/<name>/ (the committed seeds are only read);
# crashes are written to BUILD_DIR/fuzz-work/crash-<name>-* and make the script fail.
set -eu
secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
build=${2:-$here/../build-fuzz}
if [ ! -x "$build/fuzz/fuzz_torchfile" ]; then
    CC=${CC:-clang} cmake -S "$here/.." -B "$build" -DMCOREFS_FUZZ=ON -DMCOREFS_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target fuzz_zip fuzz_pickle fuzz_torchfile fuzz_dcp fuzz_checkpoint fuzz_describe -j"$(nproc)" >/dev/null
status=0
for name in zip pickle torchfile dcp checkpoint describe; do
    work="$build/fuzz-work/$name"
    mkdir -p "$work"
    echo "== fuzz_$name for ${secs}s"
    if ! "$build/fuzz/fuzz_$name" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$build/fuzz-work/crash-$name-" "$work" "$here/corpus/$name" 2>"$work.log"; then
        status=1
        echo "fuzz_$name FAILED, see $work.log"
    fi
    grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|cov:' "$work.log" | tail -3
done
exit $status
