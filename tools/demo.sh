#!/usr/bin/env bash
# Set up, build, and mount a sample Megatron checkpoint as a Hugging Face model directory.
#   tools/demo.sh            # generated Llama-like tp2 pp2 checkpoint (needs /usr/bin/python3 + torch)
#   tools/demo.sh CKPT_DIR   # your own checkpoint (add mount options with MCOREFS_OPTS=...)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMCOREFS_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

WORK="$(mktemp -d /tmp/mcorefs-demo.XXXXXX)"
if [ $# -ge 1 ]; then
  CKPT="$1"
  OPTS="${MCOREFS_OPTS:-}"
else
  CKPT="$WORK/sample/ckpt"
  echo "== generating a sample checkpoint (Llama-like, tp2 pp2, written with torch.save) in $WORK/sample"
  /usr/bin/python3 tests/fixtures/mcore_gen.py --family llama --tp 2 --pp 2 --out "$WORK/sample" >/dev/null
  OPTS="true_vocab_size=$(/usr/bin/python3 -c "import json;print(json.load(open('$WORK/sample/reference.json'))['true_vocab_size'])")"
fi
MNT="$WORK/mnt"
mkdir -p "$MNT"
trap 'fusermount3 -u "$MNT" 2>/dev/null || true' EXIT

echo "== mcorefs-inspect $CKPT"
build/mcorefs-inspect "$CKPT" ${OPTS:+-o "$OPTS"}
echo
echo "== mcorefs $CKPT $MNT ${OPTS:+-o $OPTS}"
build/mcorefs "$CKPT" "$MNT" ${OPTS:+-o "$OPTS"}
ls -la "$MNT"
echo
echo "== $MNT/config.json"
cat "$MNT/config.json"
echo
echo "== first tensors of the safetensors header"
/usr/bin/python3 - "$MNT" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
f = sorted(x for x in os.listdir(d) if x.endswith(".safetensors"))[0]
with open(os.path.join(d, f), "rb") as fh:
    n = struct.unpack("<Q", fh.read(8))[0]
    hdr = json.loads(fh.read(n))
for name in [k for k in hdr if k != "__metadata__"][:8]:
    print(f"{f}: {name} {hdr[name]['dtype']} {hdr[name]['shape']}")
PY
echo
echo "== cp -r $MNT $WORK/export  (a real HF export)"
cp -r "$MNT" "$WORK/export"
du -sh "$WORK/export"
echo "done: the mount is removed on exit; the export stays in $WORK/export"
