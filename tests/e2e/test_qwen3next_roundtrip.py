#!/usr/bin/python3
"""Qwen3-Next (Qwen3NextForCausalLM) round trips: tests/fixtures/mcore_gen.py writes a Megatron
checkpoint from random HF-layout weights (HF -> Megatron as Megatron-Bridge's Qwen3NextBridge and
Megatron's GatedDeltaNet lay them out: per-rank [q|k|v|z|beta|alpha] in_proj and [q|k|v] conv1d
sections, linear_qkv with the output gate per query group, norms in Megatron's convention),
independently of the C mapping; the mount must show exactly the HF tensors and config keys of the
generator's reference across TP / PP / VPP / EP / ETP layouts, the local and TE specs, both expert
storages, plain and zero-centred norms. The generator's layout is checked key by key against the
real Megatron-written fixture.

Set MCOREFS_E2E_SKIP_MOE=1 to skip the whole script.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

# (label, generator kwargs, shard_size option or None); layers 1-3 linear attention, 4 and 8 full
LAYOUTS = [
    ("tp1ep1", dict(tp=1, ep=1), None),
    ("tp2ep2etp2", dict(tp=2, ep=2, etp=2), "150KiB"),
    ("tp2ep2etp1:zero-centred", dict(tp=2, ep=2, etp=1, dims=dict(zero_centered=True)), None),
    ("tp2pp2ep2:8-layers", dict(tp=2, pp=2, ep=2, dims=dict(layers=8)), None),
    ("tp2pp2vpp2:8-layers", dict(tp=2, pp=2, vpp=2, dims=dict(layers=8)), None),
    ("tp2ep2:te:te_grouped", dict(tp=2, ep=2, spec="te", experts_impl="te_grouped"), None),
    ("tp2:linear-freq-2:fp32-norms-in-bf16", dict(tp=2, dims=dict(linear_freq=2), norms_fp32=False), None),
]


def case(kw, shard):
    g = T.generate("qwen3_next", **kw)
    cfg = g.ref["config"]
    T.check("linear_attention" in cfg["layer_types"] and "full_attention" in cfg["layer_types"],
            "generator lost the hybrid layers")
    opts = ["true_vocab_size=%d" % g.true_vocab] + (["shard_size=" + shard] if shard else [])
    with T.Mount(g.ckpt, opts) as m:
        v = T.read_view(m.path, shard_size=T.parse_size(shard) if shard else None)
        T.assert_same_tensors(v.tensors, g.tensors, "mount", "reference")
        T.assert_config(v.config_text, cfg, g.ref["derivable_config_keys"])


REAL = "head_qwen3next_tp2ep2_torch"


def generator_matches_real():
    """The generator's Megatron layout for Qwen3-Next is the one Megatron itself wrote: the same
    rank files, and in each the same model keys with the same shapes and dtypes."""
    real_dir = os.path.join(T.MEGATRON_FIXTURES, REAL)
    if not os.path.isdir(real_dir):
        raise T.Skip("%s not found" % real_dir)
    g = T.generate("qwen3_next", "qwen3_next-real-dims", tp=2, ep=2, etp=2)   # the fixture's sizes
    real_it = os.path.join(real_dir, "iter_0000010")
    gen_it = os.path.join(g.ckpt, "iter_0000010")
    T.check(sorted(os.listdir(real_it)) == sorted(os.listdir(gen_it)),
            "rank files %r != real %r" % (sorted(os.listdir(gen_it)), sorted(os.listdir(real_it))))

    def layout(path):
        sd = T.load_rank_file(os.path.join(path, "model_optim_rng.pt"))["model"]
        return {k: (tuple(v.shape), str(v.dtype)) for k, v in sd.items()
                if not k.endswith("_extra_state") and hasattr(v, "shape")}
    for sub in sorted(os.listdir(real_it)):
        a, b = layout(os.path.join(gen_it, sub)), layout(os.path.join(real_it, sub))
        diff = sorted(set(a.items()) ^ set(b.items()))
        T.check(not diff, "%s: generated vs real Megatron keys differ: %r" % (sub, diff[:6]))


def main():
    r = T.Runner("qwen3next-roundtrip")
    if os.environ.get("MCOREFS_E2E_SKIP_MOE") == "1":
        print("SKIP: MCOREFS_E2E_SKIP_MOE=1")
        return 0
    r.run("qwen3_next:generator-layout-equals-real-megatron", generator_matches_real)
    for label, kw, shard in LAYOUTS:
        r.run("qwen3_next:" + label, case, kw, shard)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
