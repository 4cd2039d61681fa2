#!/usr/bin/python3
"""Generate (once) and cache the benchmark checkpoints under bench/cache/<scale>-<name>/
(bench/cache/dsv3/ and bench/cache/dsv3-dist/ for the DSv3 shape, which is the same at both scales).

usage: /usr/bin/python3 bench/gen.py CACHE_DIR SCALE NAME
NAME: dense, moe, dsv3 (legacy --ckpt-format torch, tests/fixtures/mcore_gen.py) or dense-dist,
dsv3-dist (the same model, same seed, as --ckpt-format torch_dist, tests/fixtures/dist_gen.py).
Prints the model's directory; regenerates only when the spec (stamp.json) changed.
"""
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

# Dense: Llama-like, GQA, tp4 pp2.  Full ~3.1 GB bf16 (1.56 G params).
# MoE:   Mixtral-like, 8 experts, tp2 ep4 (etp=tp=2).  Full ~2.0 GB bf16.
# DSv3:  DeepSeek-V3 shape (61 layers, 256 experts, first 3 dense, MTP 1) with tiny dims, ep 8.
SPECS = {
    "full": {
        "dense": dict(family="llama", tp=4, pp=2,
                      dims=dict(hidden=2048, heads=16, groups=4, ffn=5632, layers=32, vocab=32000,
                                max_pos=4096, seq=4096)),
        "moe": dict(family="mixtral", tp=2, ep=4,
                    dims=dict(hidden=1024, heads=16, groups=4, ffn=3072, moe_ffn=3072, experts=8,
                              layers=12, vocab=32000, max_pos=4096, seq=4096)),
    },
    "smoke": {
        "dense": dict(family="llama", tp=4, pp=2,
                      dims=dict(hidden=512, heads=8, groups=4, ffn=1408, layers=8, vocab=8000)),
        "moe": dict(family="mixtral", tp=2, ep=4,
                    dims=dict(hidden=256, heads=8, groups=4, ffn=768, moe_ffn=768, experts=8,
                              layers=8, vocab=8000)),
    },
}
DSV3 = dict(family="deepseek_v3", tp=1, ep=8, mtp=1, first_k_dense=3,
            dims=dict(hidden=32, heads=4, ffn=64, moe_ffn=16, shared_ffn=16, experts=256, layers=61,
                      vocab=1024, q_lora_rank=24, kv_lora_rank=16, qk_head_dim=8,
                      qk_pos_emb_head_dim=8, v_head_dim=8, topk=8, router_groups=8,
                      router_group_topk=4))
for s in SPECS.values():
    s["dsv3"] = DSV3
DIST = ("dense", "dsv3")         # models also generated in torch_dist format, as "<name>-dist"


def out_dir(cache, scale, name):
    base = name[:-len("-dist")] if name.endswith("-dist") else name
    return pathlib.Path(cache) / (name if base == "dsv3" else scale + "-" + name)


def main():
    cache, scale, name = sys.argv[1], sys.argv[2], sys.argv[3]
    dist = name.endswith("-dist")
    base = name[:-len("-dist")] if dist else name
    if dist and base not in DIST:
        sys.exit("gen.py: no torch_dist variant of %s" % base)
    spec = dict(SPECS[scale][base])
    spec.setdefault("save_optim", True)      # legacy only (dist_gen accepts and ignores it)
    if dist:
        spec["ckpt_format"] = "torch_dist"
    out = out_dir(cache, scale, name)
    stamp = out / "stamp.json"
    want = json.dumps(spec, sort_keys=True)
    if stamp.exists() and stamp.read_text() == want and (out / "reference.json").exists():
        print(out)
        return
    sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))
    t0 = time.time()
    kw = dict(spec)
    family = kw.pop("family")
    if stamp.exists():
        stamp.unlink()          # an interrupted regeneration must not look finished
    if dist:
        # dist_gen runs mcore_gen for the reference (and the legacy twin, deleted here), redraws
        # the same model and writes it as a DCP checkpoint.  verify=False skips its two in-memory
        # cross-checks (re-serialising the whole HF model and the legacy split): at full size they
        # take ~1/3 of the time and push the peak RSS from ~2x to ~3x the model (~10 GB for the
        # 3.15 GB dense).  bench.py checks the result instead: the torch_dist mount must show the
        # legacy mount's files byte for byte (sha256), or the suite stops.
        import dist_gen  # torch: imported only when something must be generated
        kw.pop("ckpt_format")
        ref = dist_gen.generate(out, family, seed=1234, verify=False, **kw)
    else:
        import mcore_gen
        ref = mcore_gen.generate(out, family, seed=1234, **kw)
    # the HF reference is not needed by the suite; drop it to save disk space
    try:
        os.unlink(out / "reference.safetensors")
    except FileNotFoundError:
        pass
    sys.stderr.write("generated %s: %d rank files, %d tensors, %.2f GB in %.1f s\n"
                     % (out, len(ref["rank_files"]), ref["num_tensors"], ref["total_bytes"] / 1e9,
                        time.time() - t0))
    stamp.write_text(want)
    print(out)


if __name__ == "__main__":
    main()
