#!/usr/bin/env bash
# Hash every virtual file of every view the tests' checkpoints give, so a refactor can show its
# views are byte-identical:  tools/view-hashes.sh INSPECT_BINARY OUT.txt
#
# Views: each real fixture in tests/data/megatron (plain, skip_mtp, dtype=fp32, true_vocab_size)
# and generated layouts (tests/fixtures/mcore_gen.py / dist_gen.py: every family, dense tp2pp2,
# MoE ep2 etp1, DeepSeek-V3 with MTP and mtp_head_copies, torch_dist twins). Each view is
# exported (mcorefs-inspect export) and every file's sha256 is written to OUT.txt; a mount
# that fails is recorded with its error line. Generated checkpoints are cached in
# ${VIEW_HASHES_CACHE:-/tmp/mcorefs-view-hashes} (delete it to regenerate).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INSPECT="$(realpath "$1")"
OUT="$(realpath -m "$2")"
CACHE="${VIEW_HASHES_CACHE:-/tmp/mcorefs-view-hashes}"
PY=/usr/bin/python3
mkdir -p "$CACHE"
: > "$OUT"

gen() {  # gen NAME GENERATOR ARGS...  -> $CACHE/NAME/ckpt
  local name="$1" g="$2"; shift 2
  [ -d "$CACHE/$name/ckpt" ] && return 0
  rm -rf "$CACHE/$name"
  "$PY" "$ROOT/tests/fixtures/$g" --out "$CACHE/$name" "$@" >/dev/null 2>&1 ||
    echo "view-hashes: generating $name failed" >&2
}

view() {  # view LABEL CKPT [OPTS]
  local label="$1" ckpt="$2" opts="${3:-}" tmp
  tmp="$(mktemp -d)"
  echo "== $label ${opts}" >> "$OUT"
  if "$INSPECT" export "$ckpt" "$tmp/out" ${opts:+-o "$opts"} > /dev/null 2> "$tmp/err"; then
    (cd "$tmp/out" && find . -type f | LC_ALL=C sort | xargs sha256sum) >> "$OUT"
  else
    echo "FAILED: $(tail -1 "$tmp/err" | sed "s|$tmp|TMP|g")" >> "$OUT"
  fi
  rm -rf "$tmp"
}

for d in "$ROOT"/tests/data/megatron/*/; do
  n="$(basename "$d")"
  for o in "" skip_mtp dtype=fp32 true_vocab_size=999 shard_size=100KB; do
    view "$n" "$d" "$o"
  done
done

for fam in llama mistral qwen2 qwen3; do
  gen "$fam-tp2pp2" mcore_gen.py --family "$fam" --tp 2 --pp 2
  gen "$fam-tp2pp2-dist" dist_gen.py --family "$fam" --tp 2 --pp 2
  view "$fam-tp2pp2" "$CACHE/$fam-tp2pp2/ckpt"
  view "$fam-tp2pp2-dist" "$CACHE/$fam-tp2pp2-dist/ckpt"
done
for fam in mixtral qwen2_moe qwen3_moe; do
  gen "$fam-ep2etp1" mcore_gen.py --family "$fam" --tp 2 --ep 2 --etp 1
  gen "$fam-ep2etp1-dist" dist_gen.py --family "$fam" --tp 2 --ep 2 --etp 1
  view "$fam-ep2etp1" "$CACHE/$fam-ep2etp1/ckpt"
  view "$fam-ep2etp1-dist" "$CACHE/$fam-ep2etp1-dist/ckpt"
done
gen qwen3_next-tp2ep2 mcore_gen.py --family qwen3_next --tp 2 --ep 2
gen qwen3_next-tp2ep2-dist dist_gen.py --family qwen3_next --tp 2 --ep 2
view qwen3_next-tp2ep2 "$CACHE/qwen3_next-tp2ep2/ckpt" true_vocab_size=1000
view qwen3_next-tp2ep2-dist "$CACHE/qwen3_next-tp2ep2-dist/ckpt" true_vocab_size=1000
gen dsv3-mtp mcore_gen.py --family deepseek_v3 --tp 2 --ep 2 --mtp 1
gen dsv3-mtp-dist dist_gen.py --family deepseek_v3 --tp 2 --ep 2 --mtp 1
for c in dsv3-mtp dsv3-mtp-dist; do
  for o in "" skip_mtp mtp_head_copies dtype=fp16 arch=deepseek_v2 arch=llama; do
    view "$c" "$CACHE/$c/ckpt" "$o"
  done
done
echo "view-hashes: $(grep -c '^==' "$OUT") views, $(grep -c '^[0-9a-f]\{64\} ' "$OUT") files, $(grep -c '^FAILED' "$OUT") refused -> $OUT"
