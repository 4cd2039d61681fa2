#!/usr/bin/env bash
# Hash every virtual file of every view the test fixtures give, so a refactor can show its
# views are byte-identical:   tools/view-hashes-readers.sh BUILD_DIR OUT.txt
# Views: tests/data/megatron/* (with and without -o skip_mtp) and generated layouts (dense
# tp2pp2, MoE ep2 etp2, DSv3 with MTP, and their torch_dist twins). Each view is written with
# `mcorefs-inspect export` (the same bytes as the mount) and every file's sha256 is listed.
# Generated checkpoints are cached in $VIEW_HASH_CACHE (default /tmp/mcorefs-view-hash-cache).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:?usage: $0 BUILD_DIR OUT.txt}"
OUT="${2:?usage: $0 BUILD_DIR OUT.txt}"
INSPECT="$(cd "$BUILD" && pwd)/mcorefs-inspect"
PY=/usr/bin/python3
CACHE="${VIEW_HASH_CACHE:-/tmp/mcorefs-view-hash-cache}"
mkdir -p "$CACHE"

gen() {  # gen NAME GENERATOR ARGS...: a generated checkpoint, made once
  local name="$1" g="$2"; shift 2
  [ -e "$CACHE/$name/done" ] && return 0
  rm -rf "$CACHE/$name"
  "$PY" "$ROOT/tests/fixtures/$g" --out "$CACHE/$name" "$@" >/dev/null
  touch "$CACHE/$name/done"
}
gen dense_tp2pp2 mcore_gen.py --family llama --tp 2 --pp 2
gen moe_ep2etp2 mcore_gen.py --family qwen3_moe --tp 2 --ep 2 --etp 2
gen dsv3_mtp mcore_gen.py --family deepseek_v3 --tp 2 --ep 2 --mtp 1
gen dist_dense_tp2pp2 dist_gen.py --family llama --tp 2 --pp 2
gen dist_moe_ep2etp2 dist_gen.py --family qwen3_moe --tp 2 --ep 2 --etp 2
gen dist_dsv3_mtp dist_gen.py --family deepseek_v3 --tp 2 --ep 2 --mtp 1

ckpt_of() {  # the folder to mount: a generator's checkpoint lives in OUT/ckpt when present
  if [ -d "$1/ckpt" ]; then echo "$1/ckpt"; else echo "$1"; fi
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
: >"$OUT"
for ck in "$ROOT"/tests/data/megatron/* "$CACHE"/*; do
  [ -d "$ck" ] || continue
  src="$(ckpt_of "$ck")"
  for opts in "" "skip_mtp"; do
    dir="$TMP/$(basename "$ck")${opts:+_$opts}"
    if ! "$INSPECT" export "$src" "$dir" ${opts:+-o "$opts"} >"$TMP/log" 2>&1; then
      echo "$(basename "$ck") ${opts:-default}: export failed: $(tail -1 "$TMP/log")" >>"$OUT"
      continue
    fi
    (cd "$dir" && find . -type f | LC_ALL=C sort | xargs sha256sum) |
      sed "s|^|$(basename "$ck") ${opts:-default} |" >>"$OUT"
    rm -rf "$dir"
  done
done
echo "$(wc -l <"$OUT") file hashes in $OUT"
