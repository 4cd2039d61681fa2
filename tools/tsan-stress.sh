#!/usr/bin/env bash
# Build the daemon with ThreadSanitizer and run the concurrency tests against it
# (16-reader stress, concurrent preads with the page cache dropped, two mounts at once,
# torch_dist chunk archives first read by 8 threads at once, a training-run mount whose iterations
# are saved, deleted and re-saved under readers (the watcher thread against request threads), FP8
# views read by 8 threads (the block caches)).
# Any data race report fails the run.   Usage: tools/tsan-stress.sh [SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="$ROOT/build-tsan"
LOGS="$(mktemp -d /tmp/mcorefs-tsan.XXXXXX)"
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMCOREFS_TESTS=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread >/dev/null
cmake --build "$B" -j"$(nproc)" --target mcorefs mcorefs-inspect >/dev/null
export TSAN_OPTIONS="log_path=$LOGS/tsan halt_on_error=0"
export MCOREFS_BIN="$B/mcorefs" MCOREFS_INSPECT="$B/mcorefs-inspect" MCOREFS_STRESS_SECONDS="${1:-10}"
MCOREFS_WORK="$LOGS/work"
/usr/bin/python3 "$ROOT/tests/e2e/test_runtime_robustness.py" -k concurrent -k manifest
/usr/bin/python3 "$ROOT/tests/e2e/test_real_fixtures.py" -k concurrent -k two-mounts
/usr/bin/python3 "$ROOT/tests/e2e/test_torch_dist.py" -k concurrent
/usr/bin/python3 "$ROOT/tests/e2e/test_training_run.py" -k legacy -k torch_dist
/usr/bin/python3 "$ROOT/tests/e2e/test_fp8_view.py" -k concurrent
if ls "$LOGS"/tsan* >/dev/null 2>&1; then
  echo "ThreadSanitizer reports:"; cat "$LOGS"/tsan*; exit 1
fi
echo "tsan-stress: no data race reported"
