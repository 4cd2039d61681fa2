#!/usr/bin/python3
"""Qwen3-Next (Qwen3NextForCausalLM) round trips: tests/fixtures/mcore_gen.py writes a Megatron
checkpoint from random HF-layout weights (HF -> Megatron as Megatron-Bridge's Qwen3NextBridge and
Megatron's GatedDeltaNet lay them out: per-rank [q|k|v|z|beta|alpha] in_proj and [q|k|v] conv1d
sections, linear_qkv with the output gate per query group, norms in Megatron's convention),
independently of the C mapping; the mount must show exactly the HF tensors and config keys of the
generator's reference across TP / PP / VPP / EP / ETP layouts, the local and TE specs, both expert
storages, plain and zero-centred norms. The generator's layout is checked key by key against the
real Megatron-written fixture.

torch_dist: tests/fixtures/dist_gen.py writes the same weights as Megatron's GatedDeltaNet
sharded_state_dict lays them out (in_proj and conv1d as one key per section, `.query`, `.key`,
`.value`, `.z`, `.beta`, `.alpha`, each a global tensor split over TP; per-layer keys, the layers
being of two kinds); the view must equal the HF reference and the legacy twin's view byte for byte.

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


# torch_dist layouts (label, dist_gen kwargs, shard_size option or None)
DIST_LAYOUTS = [
    ("tp1", dict(tp=1), None),
    ("tp2ep2", dict(tp=2, ep=2), "150KiB"),
    ("tp2pp2ep2:te:zero-centred:8-layers", dict(tp=2, pp=2, ep=2, spec="te", dims=dict(layers=8, zero_centered=True)),
     None),
]


def dist_case(kw, shard):
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
    if fixtures not in sys.path:
        sys.path.insert(0, fixtures)
    import dist_gen as D  # noqa: WPS433
    out = T.scratch("qwen3_next-dist")
    D.generate(out, "qwen3_next", keep_legacy=True, **kw)
    g = T.Generated(out)
    T.check(g.ref.get("ckpt_format") == "torch_dist", "generator did not write torch_dist")
    sections = [k for k in g.ref["dist_keys"] if k.endswith(".in_proj.weight.alpha") or k.endswith(".conv1d.weight.value")]
    T.check(len(sections) >= 2, "generator wrote no per-section gated delta net keys")
    opts = ["true_vocab_size=%d" % g.true_vocab] + (["shard_size=" + shard] if shard else [])
    size = T.parse_size(shard) if shard else None
    legacy = os.path.join(g.dir, g.ref["legacy_checkpoint_dir"])
    with T.Mount(g.ckpt, opts) as m, T.Mount(legacy, opts) as m2:
        v, w = T.read_view(m.path, shard_size=size), T.read_view(m2.path, shard_size=size)
        T.assert_same_tensors(v.tensors, g.tensors, "torch_dist mount", "reference")
        T.assert_same_tensors(v.tensors, w.tensors, "torch_dist mount", "legacy twin mount")
        T.assert_config(v.config_text, g.ref["config"], g.ref["derivable_config_keys"])
        T.check(v.config_text == w.config_text, "config.json differs from the legacy twin's")


def dist_conv_split_kernel():
    """A conv1d section key whose chunks split the kernel dim (DCP can say so, Megatron never
    writes it) is refused at mount naming the key, never read as channel rows."""
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
    if fixtures not in sys.path:
        sys.path.insert(0, fixtures)
    import dist_gen as D  # noqa: WPS433
    out = T.scratch("qwen3_next-dist-damaged")
    D.generate(out, "qwen3_next", tp=2, damage="conv-split-kernel")
    g = T.Generated(out)
    T.expect_mount_failure(g.ckpt, ["true_vocab_size=%d" % g.true_vocab],
                           name_in_msg=[".metadata", g.ref["damaged"]["key"], "a chunk splits a 3-D tensor"])


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
    T.check_same_rank_layout(gen_it, real_it)


def main():
    r = T.Runner("qwen3next-roundtrip")
    if os.environ.get("MCOREFS_E2E_SKIP_MOE") == "1":
        print("SKIP: MCOREFS_E2E_SKIP_MOE=1")
        return 0
    r.run("qwen3_next:generator-layout-equals-real-megatron", generator_matches_real)
    for label, kw, shard in LAYOUTS:
        r.run("qwen3_next:" + label, case, kw, shard)
    for label, kw, shard in DIST_LAYOUTS:
        r.run("qwen3_next:torch_dist:" + label, dist_case, kw, shard)
    r.run("qwen3_next:torch_dist:conv1d-chunked-along-kernel-refused", dist_conv_split_kernel)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
