#!/usr/bin/python3
"""GLM-4.5 (Glm4MoeForCausalLM) round trips: tests/fixtures/mcore_gen.py writes a Megatron
checkpoint from random HF-layout weights (HF -> Megatron, as Megatron-Bridge's GLM45Bridge lays
them out, independent of the C mapping); the mount must show exactly the HF tensors and the
config keys of the generator's reference, across TP / PP / VPP / EP / ETP layouts, both expert
storages of the local and TE specs, both MTP prefixes, MTP on and off, and skip_mtp; and the
torch_dist form (tests/fixtures/dist_gen.py: per-layer keys, since the first layer is dense, and
the MTP layer as mtp.layers.0.transformer_layer), byte-identical to its legacy twin.

Set MCOREFS_E2E_SKIP_MOE=1 to skip the whole script.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

# (label, generator kwargs, shard_size option or None)
LAYOUTS = [
    ("tp1ep1:no_mtp", dict(tp=1, ep=1), None),
    ("tp2ep2etp2:mtp1", dict(tp=2, ep=2, etp=2, mtp=1), "150KiB"),
    ("tp4ep2etp1:mtp1", dict(tp=4, ep=2, etp=1, mtp=1), None),
    ("tp2pp2ep4etp1:mtp1:first_k_dense2", dict(tp=2, pp=2, ep=4, etp=1, mtp=1, first_k_dense=2), None),
    ("tp2pp2vpp2ep2:mtp1", dict(tp=2, pp=2, vpp=2, ep=2, mtp=1), None),
    ("tp2:te_grouped:transformer_layer-prefix:mtp1",
     dict(tp=2, spec="te", experts_impl="te_grouped", mtp=1, mtp_prefix="transformer_layer"), None),
]


def case(kw, shard, skip_mtp=False):
    g = T.generate("glm4_moe", **kw)
    T.check(g.ref["config"]["partial_rotary_factor"] < 1, "generator lost the partial rotary")
    names = set(g.ref["mtp_tensor_names"])
    T.check(bool(names) == bool(kw.get("mtp")), "generator MTP tensors do not match mtp=%r" % kw.get("mtp"))
    exp = {k: v for k, v in g.tensors.items() if not (skip_mtp and k in names)}
    cfg = dict(g.ref["config"])
    if skip_mtp:
        cfg["num_nextn_predict_layers"] = 0
    opts = ["true_vocab_size=%d" % g.true_vocab] + (["shard_size=" + shard] if shard else [])
    opts += ["skip_mtp"] if skip_mtp else []
    with T.Mount(g.ckpt, opts) as m:
        v = T.read_view(m.path, shard_size=T.parse_size(shard) if shard else None)
        T.assert_same_tensors(v.tensors, exp, "mount", "reference")
        T.assert_config(v.config_text, cfg, g.ref["derivable_config_keys"])
        nl = cfg["num_hidden_layers"]
        deep = [k for k in v.tensors if re.match(r"model\.layers\.(\d+)\.", k)
                and int(re.match(r"model\.layers\.(\d+)\.", k).group(1)) >= nl]
        T.check(bool(deep) == bool(kw.get("mtp") and not skip_mtp),
                "MTP layers shown %r with mtp=%r skip_mtp=%r" % (deep[:3], kw.get("mtp"), skip_mtp))


def dist_gen():
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
    if fixtures not in sys.path:
        sys.path.insert(0, fixtures)
    import dist_gen as D  # noqa: WPS433
    return D


def dist_case(kw, skip_mtp=False):
    out = T.scratch("glm4_moe-dist")
    dist_gen().generate(out, "glm4_moe", keep_legacy=True, **kw)
    g = T.Generated(out)
    T.check(g.ref.get("ckpt_format") == "torch_dist", "generator did not write torch_dist")
    names = set(g.ref["mtp_tensor_names"])
    exp = {k: v for k, v in g.tensors.items() if not (skip_mtp and k in names)}
    cfg = dict(g.ref["config"])
    opts = ["true_vocab_size=%d" % g.true_vocab]
    if skip_mtp:
        cfg["num_nextn_predict_layers"] = 0
        opts.append("skip_mtp")
    legacy = os.path.join(g.dir, g.ref["legacy_checkpoint_dir"])
    with T.Mount(g.ckpt, opts) as m, T.Mount(legacy, opts) as m2:
        v, w = T.read_view(m.path), T.read_view(m2.path)
        T.assert_same_tensors(v.tensors, exp, "torch_dist mount", "reference")
        T.assert_same_tensors(v.tensors, w.tensors, "torch_dist mount", "legacy twin mount")
        T.assert_config(v.config_text, cfg, g.ref["derivable_config_keys"])
        T.check(v.config_text == w.config_text, "config.json differs from the legacy twin's")


REAL = "head_glm45_tp2ep2_torch"


def generator_matches_real():
    """The generator's Megatron layout for GLM-4.5 is the one Megatron itself wrote: the same
    rank files, and in each the same model keys with the same shapes and dtypes."""
    real_dir = os.path.join(T.MEGATRON_FIXTURES, REAL)
    if not os.path.isdir(real_dir):
        raise T.Skip("%s not found" % real_dir)
    g = T.generate("glm4_moe", "glm4_moe-real-dims", tp=2, ep=2, etp=2, mtp=1,
                   dims=dict(experts=4, moe_ffn=32, shared_ffn=32))
    real_it = os.path.join(real_dir, "iter_0000010")
    gen_it = os.path.join(g.ckpt, "iter_0000010")
    T.check_same_rank_layout(gen_it, real_it)


def main():
    r = T.Runner("glm45-roundtrip")
    if os.environ.get("MCOREFS_E2E_SKIP_MOE") == "1":
        print("SKIP: MCOREFS_E2E_SKIP_MOE=1")
        return 0
    r.run("glm4_moe:generator-layout-equals-real-megatron", generator_matches_real)
    for label, kw, shard in LAYOUTS:
        r.run("glm4_moe:" + label, case, kw, shard)
    r.run("glm4_moe:tp2ep2etp2:mtp1:skip_mtp", case, dict(tp=2, ep=2, etp=2, mtp=1), None, True)
    r.run("glm4_moe:torch_dist:tp2ep2:mtp1", dist_case, dict(tp=2, ep=2, mtp=1))
    r.run("glm4_moe:torch_dist:tp2ep2:mtp1:skip_mtp", dist_case, dict(tp=2, ep=2, mtp=1), True)
    r.run("glm4_moe:torch_dist:tp2pp2ep2etp1:te:common_pt:first_k_dense2:mtp1", dist_case,
          dict(tp=2, pp=2, ep=2, etp=1, mtp=1, first_k_dense=2, spec="te", args_style="common_pt"))
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
