#!/usr/bin/python3
"""-o arch= must fit the checkpoint: a forced family whose HF class needs a feature the args
lack (experts, q/k norms, q/k/v biases, MLA, sigmoid routing), or cannot express one they have,
refuses the mount and inspect with one line naming the family and the feature; the right
forced family (by name or architecture) still mounts and shows the checkpoint's bytes.
Pairs come from the real fixtures (dense GQA, MoE, DeepSeek-V3-like) and generated Qwen2 /
Qwen3 / Qwen3-MoE checkpoints.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"      # dense, GQA, no biases, no q/k norms: llama
MOE = "head_moe_tp2ep2_torch"      # 4 experts, softmax router: mixtral
DSV3 = "head_dsv3_tp2ep2_torch"    # MLA, shared expert, sigmoid router, MTP: deepseek_v3

_generated = {}


def generated(family):
    """A tp2 checkpoint of the family from the fixture generator (made once per run)."""
    if family not in _generated:
        _generated[family] = T.generate(family, "arch-" + family, tp=2, seed=31)
    return _generated[family]


def source(what):
    """(checkpoint dir, mount options, reference tensors or None, expected config or None)."""
    if what in (GPT, MOE, DSV3):
        d = os.path.join(T.MEGATRON_FIXTURES, what)
        exp = json.load(open(os.path.join(d, "golden", "expected.json")))
        opts = [o for o in exp.get("mount_options", "").split(",") if o]
        return d, opts, lambda: T.load_golden_dir(os.path.join(d, "golden")), exp
    g = generated(what)
    return g.ckpt, ["true_vocab_size=%d" % g.true_vocab], lambda: g.tensors, None


def misfit(what, arch, feature, args_name):
    ckpt, opts, _, _ = source(what)
    opts = opts + ["arch=" + arch]
    names = ["arch=" + arch, feature, args_name]
    T.expect_mount_failure(ckpt, opts, names)
    T.expect_inspect_failure([ckpt, "-o", ",".join(opts)], names)


def fits(what, arch, architecture):
    ckpt, opts, ref, exp = source(what)
    with T.Mount(ckpt, opts + ["arch=" + arch]) as m:
        v = T.read_view(m.path)
        cfg = json.loads(v.config_text)
        T.check(cfg.get("architectures") == [architecture], "config architectures %r, expected %r"
                % (cfg.get("architectures"), architecture))
        T.assert_same_tensors(v.tensors, ref(), "mount", "reference")
        if exp is not None:
            T.assert_config(v.config_text, exp["config"], exp["derivable_config_keys"])


# (checkpoint, forced arch, feature named in the error, args named in the error)
MISFITS = [
    # dense <-> MoE (the issue: mixtral on a dense Llama mounted with num_local_experts: 0)
    (GPT, "mixtral", "needs experts", "num_experts"),
    (GPT, "qwen3_moe", "needs experts", "num_experts"),
    (GPT, "Qwen2MoeForCausalLM", "needs experts", "num_experts"),
    (MOE, "llama", "cannot express experts", "num_experts"),
    (MOE, "qwen2", "cannot express experts", "num_experts"),
    # q/k norms (the issue: qwen3 on a checkpoint without them loaded random norms)
    (GPT, "qwen3", "needs q/k layer norms", "qk_layernorm"),
    (MOE, "qwen3_moe", "needs q/k layer norms", "qk_layernorm"),
    ("qwen3", "llama", "cannot express q/k layer norms", "qk_layernorm"),
    ("qwen3", "mistral", "cannot express q/k layer norms", "qk_layernorm"),
    ("qwen3_moe", "mixtral", "cannot express q/k layer norms", "qk_layernorm"),
    # q/k/v biases
    (GPT, "qwen2", "needs q/k/v biases", "add_qkv_bias"),
    ("qwen2", "llama", "cannot express q/k/v biases", "add_qkv_bias"),
    ("qwen2", "qwen3", "needs q/k layer norms", "qk_layernorm"),
    # multi-latent attention
    (GPT, "deepseek_v3", "needs experts", "num_experts"),
    (MOE, "deepseek_v3", "needs multi-latent attention", "multi_latent_attention"),
    (DSV3, "mixtral", "cannot express multi-latent attention", "multi_latent_attention"),
    (DSV3, "qwen2_moe", "cannot express multi-latent attention", "multi_latent_attention"),
    ("qwen3_moe", "deepseek_v2", "needs multi-latent attention", "multi_latent_attention"),
    # routing: DeepSeek-V2 has softmax scores and no expert bias
    (DSV3, "deepseek_v2", "cannot express a router expert bias", "moe_router_enable_expert_bias"),
]

FITS = [
    (GPT, "llama", "LlamaForCausalLM"),
    (GPT, "LlamaForCausalLM", "LlamaForCausalLM"),
    (MOE, "mixtral", "MixtralForCausalLM"),
    (DSV3, "deepseek_v3", "DeepseekV3ForCausalLM"),
    ("qwen2", "qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "Qwen3ForCausalLM", "Qwen3ForCausalLM"),
    ("qwen3_moe", "qwen3_moe", "Qwen3MoeForCausalLM"),
]


def main():
    r = T.Runner("forced-arch")
    for what, arch, feature, args_name in MISFITS:
        r.run("misfit:%s:arch=%s" % (what, arch), misfit, what, arch, feature, args_name)
    for what, arch, architecture in FITS:
        r.run("fits:%s:arch=%s" % (what, arch), fits, what, arch, architecture)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
