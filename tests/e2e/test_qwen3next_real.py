#!/usr/bin/python3
"""The real Qwen3-Next-like Megatron checkpoint (tests/data/megatron/head_qwen3next_tp2ep2_torch,
tp2 ep2 etp2, written by Megatron-Core's own save code: layers 1-3 gated delta net, layer 4 gated
attention, every layer MoE with a gated shared expert) mounted as Qwen3NextForCausalLM.

The expected view is computed here from the rank files (torch.load), independently of the C
mapping, following Megatron-Bridge's Qwen3NextBridge (GDNLinearMapping, GDNConv1dMapping,
QKVMapping with the output gate, RMSNorm2ZeroCenteredRMSNormMapping) and transformers' (v4.57)
modeling_qwen3_next.py: every tensor name, dtype, shape and byte, and config.json's keys as
Qwen3NextConfig reads them. Megatron's GatedDeltaNet splits in_proj per TP rank as
[q|k|v|z|beta|alpha] of that rank's heads; HF regroups it per key head
(fix_query_key_value_ordering). The fixture's norms are plain x * w (no
layernorm_zero_centered_gamma) while HF's Qwen3NextRMSNorm computes x * (1 + w): HF = w - 1,
except the gated norm inside the linear attention, which is plain in HF (pitfalls.md 14-16).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

NAME = "head_qwen3next_tp2ep2_torch"
ST_DTYPE = {"torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float16": "F16"}


def fixture():
    return T.real_fixture(NAME)


def load_ranks(d):
    return T.load_tp_ep_ranks(d)


def is_linear(args, i):
    """Megatron's linear-attention pattern: every linear_attention_freq-th layer (1-based) is
    full attention."""
    return (i + 1) % args.linear_attention_freq != 0


def expected_view(ranks, args, zero_centered=False):
    """HF name -> torch tensor, following Megatron-Bridge's Qwen3NextBridge."""
    import torch
    tp, ep, etp = args.tensor_model_parallel_size, args.expert_model_parallel_size, args.expert_tensor_parallel_size
    heads, groups, hd = args.num_attention_heads, args.num_query_groups, args.kv_channels
    nk, nv = args.linear_num_key_heads, args.linear_num_value_heads
    dk, dv = args.linear_key_head_dim, args.linear_value_head_dim
    n_local = args.num_experts // ep
    H = args.hidden_size

    merge = T.TPMerge(ranks, tp)
    model, cat, gated = merge.model, merge.cat, merge.gated

    def norm_1p(w):     # HF Qwen3NextRMSNorm: x * (1 + w)
        return w.clone() if zero_centered else w - 1

    def norm_plain(w):  # HF Qwen3NextRMSNormGated: x * w
        return w + 1 if zero_centered else w.clone()

    def sections(key, sizes):
        """The global sections of a per-rank sectioned tensor: rank r holds size/tp of each."""
        per_rank = [torch.split(model(t)[key], [s // tp for s in sizes], 0) for t in range(tp)]
        return [torch.cat([per_rank[t][i] for t in range(tp)], 0) for i in range(len(sizes))]

    def linear_attn(out, mp, hf):
        a = mp + "self_attention."
        q, k, v, z, b, al = sections(a + "in_proj.weight", [nk * dk, nk * dk, nv * dv, nv * dv, nv, nv])
        vpg = nv // nk
        out[hf + "linear_attn.in_proj_qkvz.weight"] = torch.cat(
            [q.reshape(nk, dk, H), k.reshape(nk, dk, H), v.reshape(nk, vpg * dv, H), z.reshape(nk, vpg * dv, H)],
            1).reshape(-1, H)
        out[hf + "linear_attn.in_proj_ba.weight"] = torch.cat(
            [b.reshape(nk, vpg, H), al.reshape(nk, vpg, H)], 1).reshape(-1, H)
        out[hf + "linear_attn.conv1d.weight"] = torch.cat(
            sections(a + "conv1d.weight", [nk * dk, nk * dk, nv * dv]), 0)
        out[hf + "linear_attn.dt_bias"] = cat(a + "dt_bias", 0)
        out[hf + "linear_attn.A_log"] = cat(a + "A_log", 0)
        out[hf + "linear_attn.norm.weight"] = norm_plain(model(0)[a + "out_norm.weight"])
        out[hf + "linear_attn.out_proj.weight"] = cat(a + "out_proj.weight", 1)

    def gated_attention(out, mp, hf):
        a = mp + "self_attention."
        per = heads // groups
        full = cat(a + "linear_qkv.weight", 0)
        g = full.reshape(groups, (2 * per + 2) * hd, H)   # per group [q heads | gate heads | k | v]
        q = g[:, :per * hd].reshape(groups, per, 1, hd, H)
        gate = g[:, per * hd:2 * per * hd].reshape(groups, per, 1, hd, H)
        out[hf + "self_attn.q_proj.weight"] = torch.cat([q, gate], 2).reshape(heads * 2 * hd, H)
        out[hf + "self_attn.k_proj.weight"] = g[:, 2 * per * hd:(2 * per + 1) * hd].reshape(groups * hd, H)
        out[hf + "self_attn.v_proj.weight"] = g[:, (2 * per + 1) * hd:].reshape(groups * hd, H)
        out[hf + "self_attn.o_proj.weight"] = cat(a + "linear_proj.weight", 1)
        out[hf + "self_attn.q_norm.weight"] = norm_1p(model(0)[a + "q_layernorm.weight"])
        out[hf + "self_attn.k_norm.weight"] = norm_1p(model(0)[a + "k_layernorm.weight"])

    def moe(out, mp, hf):
        out[hf + "post_attention_layernorm.weight"] = norm_1p(model(0)[mp + "pre_mlp_layernorm.weight"])
        out[hf + "mlp.gate.weight"] = model(0)[mp + "mlp.router.weight"]
        g, u = gated(mp + "mlp.shared_experts.linear_fc1.weight")
        out[hf + "mlp.shared_expert.gate_proj.weight"] = g
        out[hf + "mlp.shared_expert.up_proj.weight"] = u
        out[hf + "mlp.shared_expert.down_proj.weight"] = cat(mp + "mlp.shared_experts.linear_fc2.weight", 1)
        out[hf + "mlp.shared_expert_gate.weight"] = model(0)[mp + "mlp.shared_experts.gate_weight"]
        for e in range(ep):
            for j in range(n_local):
                x = mp + "mlp.experts.local_experts.%d." % j
                h = hf + "mlp.experts.%d." % (e * n_local + j)
                g, u = gated(x + "linear_fc1.weight", e, etp)
                out[h + "gate_proj.weight"], out[h + "up_proj.weight"] = g, u
                out[h + "down_proj.weight"] = cat(x + "linear_fc2.weight", 1, e, etp)

    out = {}
    vocab = args.vocab_size
    out["model.embed_tokens.weight"] = cat("embedding.word_embeddings.weight", 0)[:vocab]
    out["lm_head.weight"] = cat("output_layer.weight", 0)[:vocab]
    out["model.norm.weight"] = norm_1p(model(0)["decoder.final_layernorm.weight"])
    for i in range(args.num_layers):
        mp, hf = "decoder.layers.%d." % i, "model.layers.%d." % i
        out[hf + "input_layernorm.weight"] = norm_1p(model(0)[mp + "input_layernorm.weight"])
        (linear_attn if is_linear(args, i) else gated_attention)(out, mp, hf)
        moe(out, mp, hf)
    return out


def as_view_tensors(tensors, dtype=None):
    import torch
    res = {}
    for name, t in tensors.items():
        t = t.contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        res[name] = (ST_DTYPE[str(t.dtype)], list(t.shape), raw.numpy().tobytes())
    return res


def expected_config(args):
    """Qwen3NextConfig's keys (transformers v4.57) and the values the args give them."""
    L = args.num_layers
    return {
        "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
        "vocab_size": args.vocab_size, "hidden_size": args.hidden_size,
        "intermediate_size": args.ffn_hidden_size, "num_hidden_layers": L,
        "num_attention_heads": args.num_attention_heads,
        "num_key_value_heads": args.num_query_groups, "head_dim": args.kv_channels,
        "hidden_act": "silu", "max_position_embeddings": args.max_position_embeddings,
        "initializer_range": args.init_method_std, "rms_norm_eps": args.layernorm_epsilon,
        "use_cache": True, "tie_word_embeddings": not args.untie_embeddings_and_output_weights,
        "rope_theta": args.rotary_base, "rope_scaling": None,
        "partial_rotary_factor": args.rotary_percent,
        "attention_bias": False, "attention_dropout": args.attention_dropout,
        "linear_conv_kernel_dim": args.linear_conv_kernel_dim,
        "linear_key_head_dim": args.linear_key_head_dim, "linear_value_head_dim": args.linear_value_head_dim,
        "linear_num_key_heads": args.linear_num_key_heads,
        "linear_num_value_heads": args.linear_num_value_heads,
        "decoder_sparse_step": 1, "moe_intermediate_size": args.moe_ffn_hidden_size,
        "shared_expert_intermediate_size": args.moe_shared_expert_intermediate_size,
        "num_experts_per_tok": args.moe_router_topk, "num_experts": args.num_experts,
        "norm_topk_prob": not args.moe_router_pre_softmax, "output_router_logits": False,
        "router_aux_loss_coef": args.moe_aux_loss_coeff, "mlp_only_layers": [],
        "layer_types": ["linear_attention" if is_linear(args, i) else "full_attention" for i in range(L)],
        "full_attention_interval": args.linear_attention_freq,
        "torch_dtype": "bfloat16",
    }


def transformers_state_dict_shapes(cfg):
    """Name -> shape of every parameter Qwen3NextForCausalLM (transformers v4.57,
    modeling_qwen3_next.py) builds from this config: what from_pretrained will look for."""
    H, nh, nkv, hd = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                      cfg["head_dim"])
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    kd, vd = nk * cfg["linear_key_head_dim"], nv * cfg["linear_value_head_dim"]
    E, Fm, Fs = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["shared_expert_intermediate_size"]
    out = {"model.embed_tokens.weight": [cfg["vocab_size"], H], "model.norm.weight": [H]}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = [cfg["vocab_size"], H]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out[p + "input_layernorm.weight"] = out[p + "post_attention_layernorm.weight"] = [H]
        if cfg["layer_types"][i] == "linear_attention":
            a = p + "linear_attn."
            out[a + "in_proj_qkvz.weight"] = [2 * kd + 2 * vd, H]
            out[a + "in_proj_ba.weight"] = [2 * nv, H]
            out[a + "conv1d.weight"] = [2 * kd + vd, 1, cfg["linear_conv_kernel_dim"]]
            out[a + "dt_bias"] = out[a + "A_log"] = [nv]
            out[a + "norm.weight"] = [cfg["linear_value_head_dim"]]
            out[a + "out_proj.weight"] = [H, vd]
        else:
            a = p + "self_attn."
            out[a + "q_proj.weight"] = [nh * hd * 2, H]   # [q_j; gate_j] per head
            out[a + "k_proj.weight"] = out[a + "v_proj.weight"] = [nkv * hd, H]
            out[a + "o_proj.weight"] = [H, nh * hd]
            out[a + "q_norm.weight"] = out[a + "k_norm.weight"] = [hd]

        def mlp(q, inter):
            out[q + "gate_proj.weight"] = out[q + "up_proj.weight"] = [inter, H]
            out[q + "down_proj.weight"] = [H, inter]
        if i in cfg["mlp_only_layers"]:
            mlp(p + "mlp.", cfg["intermediate_size"])
            continue
        out[p + "mlp.gate.weight"] = [E, H]
        for e in range(E):
            mlp(p + "mlp.experts.%d." % e, Fm)
        mlp(p + "mlp.shared_expert.", Fs)
        out[p + "mlp.shared_expert_gate.weight"] = [1, H]
    return out


def check_transformers_shapes(tensors, cfg):
    want = transformers_state_dict_shapes(cfg)
    got = {k: list(v[1]) for k, v in tensors.items()}
    T.check(set(got) == set(want), "names differ from Qwen3NextForCausalLM's: missing %r, extra %r"
            % (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]))
    bad = [(k, got[k], want[k]) for k in want if got[k] != want[k]]
    T.check(not bad, "shapes differ from Qwen3NextForCausalLM's: %r" % bad[:5])


def check_config(cfg, exp):
    for k, v in exp.items():
        T.check(k in cfg, "config.json lacks %r" % k)
        got = cfg[k]
        if isinstance(v, float) or isinstance(got, float):
            T.check(isinstance(got, (int, float)) and abs(got - v) <= 1e-12 * max(1.0, abs(v)),
                    "config.json %s = %r, expected %r" % (k, got, v))
        else:
            T.check(got == v and type(got) == type(v), "config.json %s = %r, expected %r" % (k, got, v))


def fixture_features(args):
    T.check(args.experimental_attention_variant == "gated_delta_net" and args.attention_output_gate and
            args.qk_layernorm and args.moe_shared_expert_gate and not args.layernorm_zero_centered_gamma and
            args.rotary_percent < 1 and args.linear_num_value_heads > args.linear_num_key_heads and
            args.tensor_model_parallel_size == 2,
            "fixture no longer has the Qwen3-Next features this test is about")


def mount_case(dtype_opt):
    import torch
    d = fixture()
    ranks, args = load_ranks(d)
    fixture_features(args)
    dtype = {None: None, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_opt]
    expected = as_view_tensors(expected_view(ranks, args), dtype)
    with T.Mount(d, ["dtype=" + dtype_opt] if dtype_opt else []) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, expected, "mount", "from rank files")
        exp_cfg = expected_config(args)
        if dtype_opt:
            exp_cfg["torch_dtype"] = str(dtype).replace("torch.", "")
        check_config(v.config, exp_cfg)
        check_transformers_shapes(v.tensors, v.config)


def rewritten(change=None, mutate=None):
    """A copy of the real fixture with args changed (and the state dict mutated) in every rank file."""
    ckpt = T.copy_fixture(NAME)
    it = os.path.join(ckpt, "iter_0000010")
    for sub in sorted(os.listdir(it)):
        def edit(sd, sub=sub):
            for k, v in (change or {}).items():
                setattr(sd["args"], k, v)
            if mutate:
                mutate(sd, sub)
        T.rewrite_rank_file(os.path.join(it, sub, "model_optim_rng.pt"), edit)
    return ckpt


def zero_centered_case():
    """With layernorm_zero_centered_gamma Megatron's norms compute x * (1 + w), as HF's
    Qwen3NextRMSNorm does: those weights are shown as stored, and the gated norm (plain in HF)
    as w + 1 (Megatron-Bridge's RMSNorm2ZeroCenteredRMSNormMapping)."""
    ckpt = rewritten(dict(layernorm_zero_centered_gamma=True))
    ranks, args = load_ranks(ckpt)
    expected = as_view_tensors(expected_view(ranks, args, zero_centered=True))
    with T.Mount(ckpt, []) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, expected, "mount", "from rank files")


def refused(change, words, mutate=None, arch=None):
    """The real fixture made into a Qwen3-Next-like model with a mixer or feature the view does
    not express: the mount fails with one line naming it, never half-mapped."""
    ckpt = rewritten(change, mutate)
    T.expect_mount_failure(ckpt, [], name_in_msg=words)
    T.expect_mount_failure(ckpt, ["arch=" + (arch or "qwen3_next")], name_in_msg=words)


def add_conv_bias(sd, sub):
    import torch
    sd["model"]["decoder.layers.0.self_attention.conv1d.bias"] = torch.zeros(64, dtype=torch.bfloat16)


def main():
    r = T.Runner("qwen3next-real")
    r.run("qwen3next:real", mount_case, None)
    r.run("qwen3next:real:dtype-bf16", mount_case, "bf16")
    r.run("qwen3next:real:dtype-fp32", mount_case, "fp32")
    r.run("qwen3next:zero-centered-norms", zero_centered_case)
    r.run("qwen3next:refused:other-attention-variant", refused,
          dict(experimental_attention_variant="dsa"), ("experimental_attention_variant=dsa",))
    r.run("qwen3next:refused:no-shared-gate", refused,
          dict(moe_shared_expert_gate=False), ("Qwen3NextForCausalLM", "moe_shared_expert_gate"))
    r.run("qwen3next:refused:linear-bias", refused,
          dict(add_bias_linear=True), ("Qwen3NextForCausalLM", "add_bias_linear"))
    r.run("qwen3next:refused:conv1d-bias", refused, None,
          ("decoder.layers.0.self_attention.conv1d.bias", "no place"), add_conv_bias)
    r.run("qwen3next:refused:mamba-pattern", refused,
          dict(hybrid_layer_pattern="M*M*"), ("hybrid_layer_pattern",))
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
