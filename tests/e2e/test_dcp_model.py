#!/usr/bin/python3
"""torch_dcp and fsdp_dtensor round trips, and saves without Megatron's args.

tests/fixtures/dcp_model_gen.py writes Megatron's --ckpt-format torch_dcp (Torch FSDP2) and
fsdp_dtensor (Megatron-FSDP) saves of the model mcore_gen draws: a DCP save of the plain state
dict under "model." / "model.module.", per-layer and per-expert keys with global ids, DTensor
chunks over the DP (and TP / expert-TP) ranks, Megatron-FSDP's gated fc1 split into _w / _v.
Each mount must show the reference bit for bit, the same bytes and config.json as the legacy twin
of the same weights (and, for one layout, as the torch_dist twin). Broken saves fail at mount
with one line naming the key. A megatron.core-only torch_dist save (no args in its common state)
is refused with a message naming -o hf_config, and mounts with an HF config that describes it;
a config that disagrees with the tensors is refused naming the tensor and both shapes. Per family
(DeepSeek-V3 with MTP, GLM-4.5 with MTP, gpt-oss), the args-less save shows the bytes and
config.json of the save with args (Qwen3-Next's refusal: tests/unit/test_hf_describe.c).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402


def gens():
    T.generator()                        # puts tests/fixtures on sys.path (Skip if absent)
    try:
        import dcp_model_gen as M        # noqa: WPS433
        import dist_gen as D             # noqa: WPS433
    except ImportError as e:
        raise T.Skip("tests/fixtures generators not importable: %s" % e)
    return M, D


def generate(family, name, **kw):
    M, _ = gens()
    out = T.scratch(name)
    M.generate_model_dcp(out, family, **kw)
    g = T.Generated(out)
    T.check(g.ref.get("ckpt_format") == kw.get("flavor", "fsdp_dtensor"), "generator wrote %r" % g.ref.get("ckpt_format"))
    return g


def opts(g, extra=()):
    return ["true_vocab_size=%d" % g.true_vocab] + list(extra)


def same_as_twins(g, extra=(), dist_twin=None):
    """The mount equals the reference, and the legacy twin's view (bytes and config.json)."""
    legacy = os.path.join(g.dir, g.ref["legacy_checkpoint_dir"])
    with T.Mount(g.ckpt, opts(g, extra)) as m, T.Mount(legacy, opts(g, extra)) as m2:
        v, w = T.read_view(m.path), T.read_view(m2.path)
        T.assert_same_tensors(v.tensors, g.tensors, g.ref["ckpt_format"] + " mount", "reference")
        T.assert_same_tensors(v.tensors, w.tensors, g.ref["ckpt_format"] + " mount", "legacy twin mount")
        T.check(v.config_text == w.config_text, "config.json differs from the legacy twin's")
        T.assert_config(v.config_text, g.ref["config"], g.ref["derivable_config_keys"])
        if dist_twin:
            with T.Mount(dist_twin, opts(g, extra)) as m3:
                u = T.read_view(m3.path)
                T.assert_same_tensors(v.tensors, u.tensors, g.ref["ckpt_format"] + " mount", "torch_dist twin")
                T.check(v.config_text == u.config_text, "config.json differs from the torch_dist twin's")
    return v


def keys_of(g):
    return list(g.ref["dcp_keys"])


# ---- torch_dcp (Torch FSDP2: tp = pp = ep = 1) ----------------------------------------------

def t_torch_dcp_dense():
    g = generate("llama", "dcp-llama", flavor="torch_dcp", dp=4, spec="te")
    T.check(all(k.startswith("model.") and not k.startswith("model.module.") for k in keys_of(g)), "keys are not model.*")
    _, D = gens()
    twin = T.scratch("dcp-llama-dist")
    D.generate(twin, "llama", dp=4, spec="te")
    same_as_twins(g, dist_twin=os.path.join(twin, "ckpt"))


def t_torch_dcp_moe():
    g = generate("qwen3_moe", "dcp-qwen3moe", flavor="torch_dcp", dp=2, spec="te")
    same_as_twins(g)


# ---- fsdp_dtensor (Megatron-FSDP) ---------------------------------------------------------

def t_fsdp_dense_tp2_local_tied():
    g = generate("llama", "fsdp-llama", flavor="fsdp_dtensor", tp=2, dp=2, spec="local", tied=True)
    ks = keys_of(g)
    T.check(any(k.endswith("linear_fc1.weight_w") for k in ks) and any(k.endswith("linear_fc1.weight_v") for k in ks),
            "generator did not split fc1 into _w / _v")
    same_as_twins(g)


def t_fsdp_moe_tp2_ep2_grouped():
    g = generate("mixtral", "fsdp-mixtral", flavor="fsdp_dtensor", tp=2, ep=2, etp=1, dp=2, spec="te",
                 experts_impl="te_grouped")
    T.check(any(k.endswith("mlp.experts.linear_fc1.weight7_v") for k in keys_of(g)), "no TEGroupedMLP expert keys")
    same_as_twins(g)


def t_fsdp_shared_experts_etp2():
    g = generate("qwen2_moe", "fsdp-qwen2moe", flavor="fsdp_dtensor", tp=2, ep=2, etp=2, dp=2, spec="te")
    T.check(any("shared_experts.linear_fc1.weight_w" in k for k in keys_of(g)), "no shared expert _w key")
    same_as_twins(g)


def t_fsdp_deepseek_mtp():
    g = generate("deepseek_v3", "fsdp-dsv3", flavor="fsdp_dtensor", tp=2, ep=2, dp=2, spec="te", mtp=1)
    same_as_twins(g)


# ---- broken saves ------------------------------------------------------------------------

def t_fsdp_missing_half_refused():
    victim = "model.module.decoder.layers.1.mlp.linear_fc1.weight_v"
    g = generate("llama", "fsdp-nohalf", flavor="fsdp_dtensor", tp=2, dp=2, damage=("drop", victim))
    T.expect_mount_failure(g.ckpt, opts(g), ["decoder.layers.1.mlp.linear_fc1.weight_w", victim, "gated fc1"])


def t_fsdp_layer_out_of_range_refused():
    key = "model.module.decoder.layers.3.self_attention.linear_proj.weight"
    bad = key.replace("layers.3.", "layers.9.")
    g = generate("llama", "fsdp-badlayer", flavor="fsdp_dtensor", tp=1, dp=2, damage=("rename", key, bad))
    T.expect_mount_failure(g.ckpt, opts(g), ["fsdp_dtensor key '%s'" % bad, "does not fit 4 layers"])


def t_fsdp_one_tensor_two_keys_refused():
    key = "model.module.decoder.layers.0.mlp.experts.local_experts.1.linear_fc2.weight"
    other = "model.module.decoder.layers.0.mlp.experts.linear_fc2.weight1"     # its TEGroupedMLP spelling
    g = generate("mixtral", "fsdp-twokeys", flavor="fsdp_dtensor", tp=1, ep=2, dp=2, damage=("copy", key, other))
    T.expect_mount_failure(g.ckpt, opts(g), ["holds weights another key holds too",
                                             "decoder.layers.0.mlp.experts.1.linear_fc2.weight"])


def t_fsdp_fused_beside_halves_refused():
    g = generate("llama", "fsdp-fused", flavor="fsdp_dtensor", tp=1, dp=2,
                 damage=("copy", "model.module.decoder.layers.2.mlp.linear_fc1.weight_w",
                         "model.module.decoder.layers.2.mlp.linear_fc1.weight"))
    T.expect_mount_failure(g.ckpt, opts(g), ["model.module.decoder.layers.2.mlp.linear_fc1.weight",
                                             ("holds weights another key holds too", "different global shapes")])


def t_pipeline_refused():
    g = generate("llama", "fsdp-pp", flavor="fsdp_dtensor", tp=1, dp=2,
                 args_overrides=dict(pipeline_model_parallel_size=2))
    T.expect_mount_failure(g.ckpt, opts(g), ["fsdp_dtensor save with pipeline parallelism", "pp=2"])


# ---- saves without Megatron's args --------------------------------------------------------

def _hf_config_file(g, name, **changes):
    cfg = dict(g.ref["config"])
    cfg.update(changes)
    p = os.path.join(g.dir, name)
    with open(p, "w") as f:
        json.dump(cfg, f)
    return p


def t_argless_torch_dist():
    _, D = gens()
    out = T.scratch("argless")
    D.generate(out, "qwen3_moe", tp=2, ep=2, dp=2, spec="te", megatron_args=False)
    g = T.Generated(out)
    T.expect_mount_failure(g.ckpt, opts(g), ["has no 'args'", "-o hf_config=FILE"])
    hf = _hf_config_file(g, "hf.json")
    with T.Mount(g.ckpt, ["hf_config=" + hf]) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, g.tensors, "args-less mount", "reference")
        T.assert_config(v.config_text, g.ref["config"], g.ref["derivable_config_keys"])
    bad = _hf_config_file(g, "hf-bad.json", moe_intermediate_size=g.ref["config"]["moe_intermediate_size"] * 2)
    T.expect_mount_failure(g.ckpt, ["hf_config=" + bad], ["linear_fc1.weight", "has shape [64, 64]",
                                                           "hf_config %s implies [128, 64]" % bad])
    nothing = _hf_config_file(g, "hf-none.json", num_hidden_layers=None)
    T.expect_mount_failure(g.ckpt, ["hf_config=" + nothing], ["lacks 'num_hidden_layers'"])


def t_argless_fsdp_dtensor():
    g = generate("llama", "fsdp-argless", flavor="fsdp_dtensor", tp=2, dp=2, with_args=False)
    T.expect_mount_failure(g.ckpt, opts(g), ["no common.pt and no common_state or args item", "-o hf_config=FILE"])
    hf = _hf_config_file(g, "hf.json", vocab_size=g.true_vocab)
    with T.Mount(g.ckpt, ["hf_config=" + hf]) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, g.tensors, "args-less fsdp_dtensor mount", "reference")


def _argless_round_trip(family, mismatch, tensor, extra=None, **layout):
    """An args-less save of `family` described by its HF config shows the bytes of the save
    with args (the same weights) and its config.json (with the HF config merged over it, as
    -o hf_config does); a config whose `mismatch` size disagrees with the tensors is refused
    naming the tensor and the hf_config file."""
    _, D = gens()
    out, twin = T.scratch("argless-" + family), T.scratch("args-" + family)
    D.generate(out, family, megatron_args=False, **layout)
    D.generate(twin, family, **layout)
    g, t = T.Generated(out), T.Generated(twin)
    hf = _hf_config_file(g, "hf.json", **(extra or {}))
    with T.Mount(g.ckpt, ["hf_config=" + hf]) as m, T.Mount(t.ckpt, []) as m2:
        v, w = T.read_view(m.path), T.read_view(m2.path)
        T.assert_same_tensors(v.tensors, g.tensors, family + " args-less mount", "reference")
        T.assert_same_tensors(v.tensors, w.tensors, family + " args-less mount", "mount with args")
        want = json.loads(w.config_text)
        want.update(g.ref["config"], **(extra or {}))
        got = json.loads(v.config_text)
        diff = sorted(k for k in set(want) | set(got) if want.get(k, "absent") != got.get(k, "absent"))
        T.check(not diff, "%s config.json differs from the save with args in %s" % (family, diff))
    bad = _hf_config_file(g, "hf-bad.json", **{mismatch: g.ref["config"][mismatch] * 2})
    T.expect_mount_failure(g.ckpt, ["hf_config=" + bad], [tensor, "hf_config %s implies" % bad])


def t_argless_deepseek_v3():
    # aux_loss_alpha (Megatron's moe_aux_loss_coeff) is a training coefficient no tensor shows:
    # DeepSeek's released configs carry it, mcore_gen's reference config does not
    _argless_round_trip("deepseek_v3", "kv_lora_rank", "linear_kv_down_proj.weight", extra=dict(aux_loss_alpha=1e-4),
                        tp=2, ep=2, dp=2, spec="te", mtp=1)


def t_argless_glm4_moe():
    _argless_round_trip("glm4_moe", "head_dim", "linear_qkv.weight", tp=2, ep=2, dp=2, spec="te", mtp=1)


def t_argless_gpt_oss():
    _argless_round_trip("gpt_oss", "intermediate_size", "linear_fc1.weight", tp=2, ep=2, etp=1, dp=2)


def main():
    r = T.Runner("torch_dcp / fsdp_dtensor / args-less saves")
    for name, fn in list(globals().items()):
        if name.startswith("t_") and callable(fn):
            r.run(name, fn)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
