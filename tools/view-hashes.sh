#!/usr/bin/env bash
# Hashes of every virtual file of every view the test fixtures give, to check that a refactor
# keeps each view byte-identical:  tools/view-hashes.sh [BUILD_DIR] > before.txt; ...; diff.
# Exports (mcorefs-inspect export, no FUSE) the real checkpoints in tests/data/megatron (with
# and without skip_mtp) and generated layouts (tests/fixtures/*_gen.py, cached in
# $VIEW_HASHES_CACHE, default /tmp/mcorefs-view-hashes-$USER), then prints "LAYOUT FILE SHA256".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
INSPECT="$BUILD/mcorefs-inspect"
CACHE="${VIEW_HASHES_CACHE:-/tmp/mcorefs-view-hashes-${USER:-$(id -u)}}"
PY=/usr/bin/python3
mkdir -p "$CACHE"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

gen() {  # gen NAME GENERATOR ARGS...: generate once into the cache
  local name="$1" script="$2"; shift 2
  [ -e "$CACHE/$name/.done" ] && return 0
  rm -rf "$CACHE/$name"
  "$PY" "$ROOT/tests/fixtures/$script" --out "$CACHE/$name" "$@" >/dev/null
  touch "$CACHE/$name/.done"
}

view() {  # view LABEL CHECKPOINT [OPTS]: export and hash every file
  local label="$1" ckpt="$2" opts="${3:-}"
  local dir="$OUT/$label"
  if ! "$INSPECT" export "$ckpt" "$dir" ${opts:+-o "$opts"} >"$OUT/log" 2>&1; then
    echo "export of $ckpt ($opts) failed:" >&2; cat "$OUT/log" >&2; exit 1
  fi
  (cd "$dir" && find . -type f | LC_ALL=C sort | while read -r f; do
     printf '%s %s %s\n' "$label" "${f#./}" "$(sha256sum "$f" | cut -d' ' -f1)"; done)
}

for d in "$ROOT"/tests/data/megatron/*/; do
  n="$(basename "$d")"
  view "real-$n" "$d"
  view "real-$n-skipmtp" "$d" skip_mtp
done

gen dense-tp2pp2 mcore_gen.py --family llama --tp 2 --pp 2
gen dense-tp4-qwen2 mcore_gen.py --family qwen2 --tp 4 --dims '{"groups": 4}'
gen dense-tp2-qwen3-local mcore_gen.py --family qwen3 --tp 2 --spec local --tied
gen moe-ep2-etp mcore_gen.py --family mixtral --tp 2 --ep 2 --etp 1
gen moe-qwen3-ep2-tp2 mcore_gen.py --family qwen3_moe --tp 2 --ep 2
gen moe-legacy-grouped mcore_gen.py --family qwen2_moe --tp 2 --ep 2 --experts-impl legacy_grouped
gen dsv3-mtp mcore_gen.py --family deepseek_v3 --tp 2 --ep 2 --mtp 1
gen dsv3-mla-split mcore_gen.py --family deepseek_v3 --tp 2 --mla-down-split split --no-q-lora
gen dist-dense-tp2pp2 dist_gen.py --family llama --tp 2 --pp 2
gen dist-moe-ep2-etp dist_gen.py --family mixtral --tp 2 --ep 2 --etp 1
gen dist-dsv3-mtp dist_gen.py --family deepseek_v3 --tp 2 --ep 2 --mtp 1

for n in dense-tp2pp2 dense-tp4-qwen2 dense-tp2-qwen3-local moe-ep2-etp moe-qwen3-ep2-tp2 \
         moe-legacy-grouped dsv3-mla-split dist-dense-tp2pp2 dist-moe-ep2-etp; do
  view "gen-$n" "$CACHE/$n/ckpt" shard_size=100KB
done
view gen-dense-tp2pp2-fp32 "$CACHE/dense-tp2pp2/ckpt" dtype=fp32,true_vocab_size=1000
view gen-dist-dense-tp2pp2-fp32 "$CACHE/dist-dense-tp2pp2/ckpt" dtype=fp32,true_vocab_size=1000
for n in dsv3-mtp dist-dsv3-mtp; do
  view "gen-$n" "$CACHE/$n/ckpt"
  view "gen-$n-skipmtp" "$CACHE/$n/ckpt" skip_mtp
  view "gen-$n-copies" "$CACHE/$n/ckpt" mtp_head_copies,dtype=bf16
done
