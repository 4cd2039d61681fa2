#!/usr/bin/python3
"""gpt-oss: mount the real Megatron-written checkpoint tests/data/megatron/head_gptoss_tp2ep2_torch
(tp2 ep2 etp1: only mp_rank_00_000 and mp_rank_01_001 exist, pitfalls.md 12) and check every
HF tensor GptOssForCausalLM expects against values computed here from the rank files with
torch, following Megatron-Bridge's gpt-oss mapping (not the C code), and config.json against
values derived here from the args (transformers' GptOssConfig keys). Then round trips of
checkpoints written by tests/fixtures/mcore_gen.py (HF -> Megatron, independent of the C code)
in several layouts, and of tests/fixtures/dist_gen.py (torch_dist: layers stacked on a leading
axis, pitfalls.md 13) against the reference and the legacy twin, bit-identical.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

NAME = "head_gptoss_tp2ep2_torch"


def rank_files():
    it = os.path.join(T.MEGATRON_FIXTURES, NAME, "iter_0000010")
    r0 = T.load_rank_file(os.path.join(it, "mp_rank_00_000", "model_optim_rng.pt"))
    r1 = T.load_rank_file(os.path.join(it, "mp_rank_01_001", "model_optim_rng.pt"))
    return r0, r1


def raw(t):
    import torch
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return ("BF16", list(t.shape), t.view(torch.int16).numpy().tobytes())
    return ({torch.float32: "F32", torch.float16: "F16"}[t.dtype], list(t.shape), t.numpy().tobytes())


def expected_tensors(r0, r1):
    """HF tensors from the two rank files: TP rank k = file k for dense tensors, EP rank k =
    file k for whole (ETP1) experts; Megatron-Bridge's gpt-oss mapping."""
    import torch
    a = vars(r0["args"])
    m0, m1 = r0["model"], r1["model"]
    heads, groups, d = a["num_attention_heads"], a["num_query_groups"], a["kv_channels"]
    vocab, L, E, ep = a["vocab_size"], a["num_layers"], a["num_experts"], a["expert_model_parallel_size"]
    local = E // ep

    def tp_cat(key, dim):
        return torch.cat([m0[key], m1[key]], dim=dim)

    out = {
        "model.embed_tokens.weight": tp_cat("embedding.word_embeddings.weight", 0)[:vocab],
        "lm_head.weight": tp_cat("output_layer.weight", 0)[:vocab],
        "model.norm.weight": m0["decoder.final_layernorm.weight"],
    }
    per_group = heads // groups
    for l in range(L):
        p, h = "decoder.layers.%d." % l, "model.layers.%d." % l
        out[h + "input_layernorm.weight"] = m0[p + "input_layernorm.weight"]
        for kind in ("weight", "bias"):
            qkv = tp_cat(p + "self_attention.linear_qkv." + kind, 0)
            qkv = qkv.reshape((groups, per_group + 2, d) + tuple(qkv.shape[1:]))
            rest = tuple(qkv.shape[3:])
            out[h + "self_attn.q_proj." + kind] = qkv[:, :per_group].reshape((heads * d,) + rest)
            out[h + "self_attn.k_proj." + kind] = qkv[:, per_group].reshape((groups * d,) + rest)
            out[h + "self_attn.v_proj." + kind] = qkv[:, per_group + 1].reshape((groups * d,) + rest)
        out[h + "self_attn.o_proj.weight"] = tp_cat(p + "self_attention.linear_proj.weight", 1)
        out[h + "self_attn.o_proj.bias"] = m0[p + "self_attention.linear_proj.bias"]
        out[h + "self_attn.sinks"] = tp_cat(p + "self_attention.core_attention.softmax_offset", 0)
        out[h + "post_attention_layernorm.weight"] = m0[p + "pre_mlp_layernorm.weight"]
        out[h + "mlp.router.weight"] = m0[p + "mlp.router.weight"]
        out[h + "mlp.router.bias"] = m0[p + "mlp.router.bias"]
        gu, gub, dn, dnb = [], [], [], []
        for e in range(E):
            src = (m0, m1)[e // local]
            xp = p + "mlp.experts.local_experts.%d." % (e % local)
            fc1, fc1b = src[xp + "linear_fc1.weight"], src[xp + "linear_fc1.bias"]
            f = fc1.shape[0] // 2
            w = torch.empty((fc1.shape[1], 2 * f), dtype=fc1.dtype)
            w[:, 0::2], w[:, 1::2] = fc1[:f].t(), fc1[f:].t()      # gate even, up odd columns
            b = torch.empty((2 * f,), dtype=fc1b.dtype)
            b[0::2], b[1::2] = fc1b[:f], fc1b[f:]
            gu.append(w)
            gub.append(b)
            dn.append(src[xp + "linear_fc2.weight"].t())
            dnb.append(src[xp + "linear_fc2.bias"])
        out[h + "mlp.experts.gate_up_proj"] = torch.stack(gu)
        out[h + "mlp.experts.gate_up_proj_bias"] = torch.stack(gub)
        out[h + "mlp.experts.down_proj"] = torch.stack(dn)
        out[h + "mlp.experts.down_proj_bias"] = torch.stack(dnb)
    return {k: raw(v) for k, v in out.items()}


def expected_config(a):
    """GptOssConfig keys (transformers v4.57) from Megatron's args."""
    win = a["window_size"]
    freq = a["window_attn_skip_freq"]
    types = ["full_attention" if (l + 1) % freq == 0 else "sliding_attention" for l in range(a["num_layers"])]
    return {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "vocab_size": a["vocab_size"], "hidden_size": a["hidden_size"],
        "intermediate_size": a["moe_ffn_hidden_size"], "num_hidden_layers": a["num_layers"],
        "num_attention_heads": a["num_attention_heads"], "num_key_value_heads": a["num_query_groups"],
        "head_dim": a["kv_channels"], "num_local_experts": a["num_experts"],
        "num_experts_per_tok": a["moe_router_topk"], "router_aux_loss_coef": a["moe_aux_loss_coeff"],
        "sliding_window": win[0] + 1, "layer_types": types, "attention_bias": True,
        "swiglu_limit": a["activation_func_clamp_value"], "rope_theta": float(a["rotary_base"]),
        "tie_word_embeddings": not a["untie_embeddings_and_output_weights"],
        "rms_norm_eps": a["norm_epsilon"] if "norm_epsilon" in a else a["layernorm_epsilon"],
        "max_position_embeddings": int(a["rotary_scaling_factor"] * a["yarn_original_max_position_embeddings"]),
        "rope_scaling": {"rope_type": "yarn", "factor": a["rotary_scaling_factor"],
                         "beta_fast": a["yarn_beta_fast"], "beta_slow": a["yarn_beta_slow"],
                         "truncate": a["yarn_correction_range_round_to_int"],
                         "original_max_position_embeddings": a["yarn_original_max_position_embeddings"]},
        "hidden_act": "silu", "output_router_logits": False, "use_cache": True,
        "initializer_range": a["init_method_std"], "attention_dropout": a["attention_dropout"],
    }


def mount_matches():
    r0, r1 = rank_files()
    want = expected_tensors(r0, r1)
    cfg = expected_config(vars(r0["args"]))
    with T.Mount(os.path.join(T.MEGATRON_FIXTURES, NAME), []) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, want, "mount", "from rank files")
        T.assert_config(v.config_text, cfg, sorted(cfg))
        T.cp_r_compare(m.path, v)


def refused_when(mutate, words):
    ck = T.copy_fixture(NAME)
    for dp, _, fns in os.walk(ck):
        for fn in fns:
            if fn == "model_optim_rng.pt":
                T.rewrite_rank_file(os.path.join(dp, fn), mutate)
    T.expect_mount_failure(ck, name_in_msg=words)


def set_arg(name, value):
    def mutate(sd):
        setattr(sd["args"], name, value)
    return mutate


# (label, generator kwargs): ETP is 1 throughout (Megatron refuses expert biases otherwise)
LAYOUTS = [
    ("tp1ep1", dict(tp=1, ep=1, etp=1)),
    ("tp2ep2etp1", dict(tp=2, ep=2, etp=1)),
    ("tp4ep2etp1:te", dict(tp=4, ep=2, etp=1, spec="te")),
    ("tp2pp2ep4etp1:tied", dict(tp=2, pp=2, ep=4, etp=1, tied=True)),
    ("tp2pp2vpp2ep2etp1", dict(tp=2, pp=2, vpp=2, ep=2, etp=1)),
]


def roundtrip(kw):
    g = T.generate("gpt_oss", **kw)
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab]) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, g.tensors, "mount", "reference")
        T.assert_config(v.config_text, g.ref["config"], g.ref["derivable_config_keys"])


def dist_roundtrip(kw):
    """torch_dist: the view equals the reference and the legacy twin's view, config included."""
    T.generator()                        # puts tests/fixtures on sys.path
    import dist_gen as D                 # noqa: WPS433
    out = T.scratch("gpt_oss-dist")
    D.generate(out, "gpt_oss", keep_legacy=True, **kw)
    g = T.Generated(out)
    T.check(g.ref.get("ckpt_format") == "torch_dist", "generator did not write torch_dist")
    legacy = os.path.join(g.dir, g.ref["legacy_checkpoint_dir"])
    opts = ["true_vocab_size=%d" % g.true_vocab]
    with T.Mount(g.ckpt, opts) as m, T.Mount(legacy, opts) as m2:
        v, w = T.read_view(m.path), T.read_view(m2.path)
        T.assert_same_tensors(v.tensors, g.tensors, "torch_dist mount", "reference")
        T.assert_same_tensors(v.tensors, w.tensors, "torch_dist mount", "legacy twin mount")
        T.assert_config(v.config_text, g.ref["config"], g.ref["derivable_config_keys"])
        T.check(v.config_text == w.config_text, "config.json differs from the legacy twin's")


DIST_LAYOUTS = [
    ("tp2ep2etp1:local:common_state", dict(tp=2, ep=2, etp=1, spec="local", args_style="common_state")),
    ("tp2pp2ep2etp1:te:common_pt:2files", dict(tp=2, pp=2, ep=2, etp=1, spec="te", args_style="common_pt",
                                               files_per_rank=2)),
]


def main():
    r = T.Runner("gptoss")
    r.run("mount:%s" % NAME, mount_matches)
    for label, kw in LAYOUTS:
        r.run("roundtrip:gpt_oss:%s" % label, roundtrip, kw)
    for label, kw in DIST_LAYOUTS:
        r.run("dist-roundtrip:gpt_oss:%s" % label, dist_roundtrip, kw)
    # HF's GptOssExperts fixes the clamp at 7 and the up offset at 1: never show other values
    r.run("refused:clamp=5", refused_when, set_arg("activation_func_clamp_value", 5.0),
          ("clamped quick-GeGLU",))
    r.run("refused:glu_offset=0", refused_when, set_arg("glu_linear_offset", 0.0),
          ("clamped quick-GeGLU",))
    # sinks are what tells gpt-oss apart; without them no family may show it half-mapped
    r.run("refused:arch=mixtral", lambda: T.expect_mount_failure(
        os.path.join(T.MEGATRON_FIXTURES, NAME), ["arch=mixtral"], name_in_msg=("MixtralForCausalLM",)))
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
