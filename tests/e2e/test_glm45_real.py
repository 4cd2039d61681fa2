#!/usr/bin/python3
"""The real GLM-4.5-like Megatron checkpoint (tests/data/megatron/head_glm45_tp2ep2_torch, tp2
ep2 etp2, written by Megatron-Core's own save code) mounted as Glm4MoeForCausalLM.

The expected view is computed here, independently of the C mapping, from the rank files
(torch.load) following Megatron-Bridge's GLM45Bridge: every tensor name, dtype, shape and
byte, and config.json's keys as transformers' Glm4MoeConfig (v4.57) reads them, derived from
the args. No golden folder exists for this fixture.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

NAME = "head_glm45_tp2ep2_torch"
ST_DTYPE = {"torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float16": "F16"}


def fixture():
    return T.real_fixture(NAME)


def load_ranks(d):
    return T.load_tp_ep_ranks(d)


def expected_view(ranks, args, with_mtp=True):
    """HF name -> torch tensor, following Megatron-Bridge's GLM45Bridge mapping (QKVMapping,
    GatedMLPMapping, AutoMapping with column/row TP merges)."""
    import torch
    tp, ep = args.tensor_model_parallel_size, args.expert_model_parallel_size
    etp = args.expert_tensor_parallel_size
    heads, groups, hd = args.num_attention_heads, args.num_query_groups, args.kv_channels
    n_local = args.num_experts // ep
    L = args.num_layers

    merge = T.TPMerge(ranks, tp)
    model, cat, gated = merge.model, merge.cat, merge.gated

    def qkv(key):
        full = cat(key, 0)
        per = heads // groups
        g = full.reshape(groups, (per + 2) * hd, *full.shape[1:])
        q = g[:, :per * hd].reshape(heads * hd, *full.shape[1:])
        k = g[:, per * hd:(per + 1) * hd].reshape(groups * hd, *full.shape[1:])
        v = g[:, (per + 1) * hd:].reshape(groups * hd, *full.shape[1:])
        return q, k, v

    def layer(out, mp, hf, moe):
        out[hf + "input_layernorm.weight"] = model(0)[mp + "input_layernorm.weight"]
        for suffix in ("weight", "bias"):
            q, k, v = qkv(mp + "self_attention.linear_qkv." + suffix)
            out[hf + "self_attn.q_proj." + suffix] = q
            out[hf + "self_attn.k_proj." + suffix] = k
            out[hf + "self_attn.v_proj." + suffix] = v
        out[hf + "self_attn.q_norm.weight"] = model(0)[mp + "self_attention.q_layernorm.weight"]
        out[hf + "self_attn.k_norm.weight"] = model(0)[mp + "self_attention.k_layernorm.weight"]
        out[hf + "self_attn.o_proj.weight"] = cat(mp + "self_attention.linear_proj.weight", 1)
        out[hf + "post_attention_layernorm.weight"] = model(0)[mp + "pre_mlp_layernorm.weight"]
        if not moe:
            g, u = gated(mp + "mlp.linear_fc1.weight")
            out[hf + "mlp.gate_proj.weight"], out[hf + "mlp.up_proj.weight"] = g, u
            out[hf + "mlp.down_proj.weight"] = cat(mp + "mlp.linear_fc2.weight", 1)
            return
        out[hf + "mlp.gate.weight"] = model(0)[mp + "mlp.router.weight"]
        out[hf + "mlp.gate.e_score_correction_bias"] = model(0)[mp + "mlp.router.expert_bias"]
        g, u = gated(mp + "mlp.shared_experts.linear_fc1.weight")
        out[hf + "mlp.shared_experts.gate_proj.weight"] = g
        out[hf + "mlp.shared_experts.up_proj.weight"] = u
        out[hf + "mlp.shared_experts.down_proj.weight"] = cat(mp + "mlp.shared_experts.linear_fc2.weight", 1)
        for e in range(ep):
            for j in range(n_local):
                x = mp + "mlp.experts.local_experts.%d." % j
                h = hf + "mlp.experts.%d." % (e * n_local + j)
                g, u = gated(x + "linear_fc1.weight", e, etp)
                out[h + "gate_proj.weight"], out[h + "up_proj.weight"] = g, u
                out[h + "down_proj.weight"] = cat(x + "linear_fc2.weight", 1, e, etp)

    freq = args.moe_layer_freq
    out = {}
    vocab = args.vocab_size
    out["model.embed_tokens.weight"] = cat("embedding.word_embeddings.weight", 0)[:vocab]
    out["lm_head.weight"] = cat("output_layer.weight", 0)[:vocab]
    out["model.norm.weight"] = model(0)["decoder.final_layernorm.weight"]
    for i in range(L):
        layer(out, "decoder.layers.%d." % i, "model.layers.%d." % i, freq[i] == 1)
    if with_mtp:
        for k in range(args.mtp_num_layers):
            mp, hf = "mtp.layers.%d." % k, "model.layers.%d." % (L + k)
            layer(out, mp + "mtp_model_layer.", hf, True)
            out[hf + "enorm.weight"] = model(0)[mp + "enorm.weight"]
            out[hf + "hnorm.weight"] = model(0)[mp + "hnorm.weight"]
            out[hf + "eh_proj.weight"] = cat(mp + "eh_proj.weight", 0)
            out[hf + "shared_head.norm.weight"] = model(0)[mp + "final_layernorm.weight"]
    return out


def as_view_tensors(tensors):
    import torch
    res = {}
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        res[name] = (ST_DTYPE[str(t.dtype)], list(t.shape), raw.numpy().tobytes())
    return res


def expected_config(args, with_mtp=True):
    """Glm4MoeConfig's keys (transformers v4.57) and the values the args give them."""
    freq = list(args.moe_layer_freq)
    first_dense = freq.index(1)
    return {
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe",
        "vocab_size": args.vocab_size, "hidden_size": args.hidden_size,
        "intermediate_size": args.ffn_hidden_size, "num_hidden_layers": args.num_layers,
        "num_attention_heads": args.num_attention_heads,
        "num_key_value_heads": args.num_query_groups, "head_dim": args.kv_channels,
        "partial_rotary_factor": args.rotary_percent, "hidden_act": "silu",
        "max_position_embeddings": args.max_position_embeddings,
        "initializer_range": args.init_method_std, "rms_norm_eps": args.norm_epsilon
        if getattr(args, "layernorm_epsilon", None) is None else args.layernorm_epsilon,
        "use_cache": True, "tie_word_embeddings": not args.untie_embeddings_and_output_weights,
        "rope_theta": args.rotary_base, "rope_scaling": None,
        "attention_bias": args.add_qkv_bias or args.add_bias_linear,
        "attention_dropout": args.attention_dropout,
        "moe_intermediate_size": args.moe_ffn_hidden_size,
        "num_experts_per_tok": args.moe_router_topk,
        "n_shared_experts": args.moe_shared_expert_intermediate_size // args.moe_ffn_hidden_size,
        "n_routed_experts": args.num_experts,
        "routed_scaling_factor": args.moe_router_topk_scaling_factor,
        "n_group": args.moe_router_num_groups or 1, "topk_group": args.moe_router_group_topk or 1,
        "first_k_dense_replace": first_dense,
        "norm_topk_prob": args.moe_router_topk > 1,   # Megatron's sigmoid router: pitfalls #2
        "use_qk_norm": args.qk_layernorm,
        "num_nextn_predict_layers": args.mtp_num_layers if with_mtp else 0,
        "torch_dtype": "bfloat16",
    }


def transformers_state_dict_shapes(cfg):
    """Name -> shape of every parameter / persistent buffer Glm4MoeForCausalLM (transformers
    v4.57, modeling_glm4_moe.py) builds from this config: what from_pretrained will look for."""
    H, nh, nkv, hd = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                      cfg["head_dim"])
    E, Fm = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    out = {"model.embed_tokens.weight": [cfg["vocab_size"], H], "model.norm.weight": [H]}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = [cfg["vocab_size"], H]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out[p + "input_layernorm.weight"] = [H]
        out[p + "post_attention_layernorm.weight"] = [H]
        a = p + "self_attn."
        out[a + "q_proj.weight"], out[a + "o_proj.weight"] = [nh * hd, H], [H, nh * hd]
        out[a + "k_proj.weight"] = out[a + "v_proj.weight"] = [nkv * hd, H]
        if cfg["attention_bias"]:
            out[a + "q_proj.bias"] = [nh * hd]
            out[a + "k_proj.bias"] = out[a + "v_proj.bias"] = [nkv * hd]
        if cfg["use_qk_norm"]:
            out[a + "q_norm.weight"] = out[a + "k_norm.weight"] = [hd]

        def mlp(q, inter):
            out[q + "gate_proj.weight"] = out[q + "up_proj.weight"] = [inter, H]
            out[q + "down_proj.weight"] = [H, inter]
        if i < cfg["first_k_dense_replace"]:
            mlp(p + "mlp.", cfg["intermediate_size"])
            continue
        out[p + "mlp.gate.weight"] = [E, H]
        out[p + "mlp.gate.e_score_correction_bias"] = [E]
        for e in range(E):
            mlp(p + "mlp.experts.%d." % e, Fm)
        mlp(p + "mlp.shared_experts.", Fm * cfg["n_shared_experts"])
    return out


def check_transformers_shapes(tensors, cfg):
    want = transformers_state_dict_shapes(cfg)
    nl = cfg["num_hidden_layers"]
    # MTP layers (model.layers.N+k) are the checkpoint's extra keys, as in GLM-4.5's release
    got = {k: list(v[1]) for k, v in tensors.items()
           if not (k.startswith("model.layers.") and int(k.split(".")[2]) >= nl)}
    T.check(set(got) == set(want), "names differ from Glm4MoeForCausalLM's: missing %r, extra %r"
            % (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]))
    bad = [(k, got[k], want[k]) for k in want if got[k] != want[k]]
    T.check(not bad, "shapes differ from Glm4MoeForCausalLM's: %r" % bad[:5])
    T.check(all(tensors[k][0] == "F32" for k in tensors if k.endswith("e_score_correction_bias")),
            "e_score_correction_bias must stay F32 (a float32 buffer in transformers)")


def check_config(cfg, exp):
    for k, v in exp.items():
        T.check(k in cfg, "config.json lacks %r" % k)
        got = cfg[k]
        if isinstance(v, float) or isinstance(got, float):
            T.check(isinstance(got, (int, float)) and abs(got - v) <= 1e-12 * max(1.0, abs(v)),
                    "config.json %s = %r, expected %r" % (k, got, v))
        else:
            T.check(got == v and type(got) == type(v), "config.json %s = %r, expected %r" % (k, got, v))


def mount_case(with_mtp):
    d = fixture()
    ranks, args = load_ranks(d)
    T.check(args.rotary_percent < 1 and args.add_qkv_bias and args.qk_layernorm and
            args.mtp_num_layers == 1 and args.moe_layer_freq[0] == 0,
            "fixture no longer has the GLM-4.5 features this test is about")
    expected = as_view_tensors(expected_view(ranks, args, with_mtp))
    opts = [] if with_mtp else ["skip_mtp"]
    with T.Mount(d, opts) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, expected, "mount", "from rank files")
        check_config(v.config, expected_config(args, with_mtp))
        check_transformers_shapes(v.tensors, v.config)
    if with_mtp:
        T.check("model.layers.4.eh_proj.weight" in expected, "MTP layer missing from expectation")


def refused(change, words, detected=True):
    """The real fixture with args changed in every rank file to a GLM-like model the HF class
    cannot express: the mount fails with one line naming the feature, never half-mapped."""
    ckpt = T.copy_fixture(NAME)
    it = os.path.join(ckpt, "iter_0000010")
    for sub in sorted(os.listdir(it)):
        T.rewrite_rank_file(os.path.join(it, sub, "model_optim_rng.pt"),
                            lambda sd: [setattr(sd["args"], k, v) for k, v in change.items()])
    if detected:   # still detected as GLM-4.5, then refused by what its class cannot express
        T.expect_mount_failure(ckpt, [], name_in_msg=words)
    T.expect_mount_failure(ckpt, ["arch=glm4_moe"], name_in_msg=words)


def main():
    r = T.Runner("glm45-real")
    r.run("glm45:real:mtp", mount_case, True)
    r.run("glm45:real:skip_mtp", mount_case, False)
    r.run("glm45:refused:no-expert-bias", refused,
          dict(moe_router_enable_expert_bias=False), ("Glm4MoeForCausalLM", "moe_router_enable_expert_bias"))
    r.run("glm45:refused:dense-after-moe", refused,
          dict(moe_layer_freq=[0, 1, 0, 1]), ("Glm4MoeForCausalLM", "dense layers after MoE layers"))
    r.run("glm45:refused:softmax-router", refused,
          dict(moe_router_score_function="softmax"), ("Glm4MoeForCausalLM", "moe_router_score_function"),
          False)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
