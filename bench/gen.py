#!/usr/bin/python3
"""Generate (once) and cache the benchmark checkpoints under bench/cache/<scale>/<name>/.

usage: /usr/bin/python3 bench/gen.py CACHE_DIR SCALE NAME
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


def main():
    cache, scale, name = sys.argv[1], sys.argv[2], sys.argv[3]
    spec = dict(SPECS[scale][name])
    spec.setdefault("save_optim", True)
    out = pathlib.Path(cache) / ("dsv3" if name == "dsv3" else scale + "-" + name)
    stamp = out / "stamp.json"
    want = json.dumps(spec, sort_keys=True)
    if stamp.exists() and stamp.read_text() == want and (out / "reference.json").exists():
        print(out)
        return
    sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))
    import mcore_gen  # torch: imported only when something must be generated
    t0 = time.time()
    kw = dict(spec)
    family = kw.pop("family")
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
