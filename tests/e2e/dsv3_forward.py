"""A small numpy forward of a DeepseekV3ForCausalLM (float64), written from the HF model's
definition (MLA attention with interleaved RoPE, dense first layers, sigmoid-routed MoE with
e_score_correction_bias and shared experts), for the FP8 view's forward check: the logits of
the dequantized FP8 weights against those of the bf16 weights (and those against the Megatron
logits stored with the real fixture). MTP layers are not run (they do not feed the logits)."""
import numpy as np


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _rope(x, pos, theta):
    """x: [..., T, d] in the interleaved layout (rope_interleave): de-interleave, then rotate_half."""
    d = x.shape[-1]
    x = np.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    f = np.outer(pos, inv)
    emb = np.concatenate([f, f], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * cos + rot * sin


def forward(cfg, W, ids):
    """cfg: config.json dict; W: name -> float64 array; ids: [B, T] ints -> logits [B, T, V]."""
    H, eps = cfg["num_attention_heads"], cfg["rms_norm_eps"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvr = cfg["kv_lora_rank"]
    ids = np.asarray(ids)
    B, T = ids.shape
    pos = np.arange(T)
    h = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        x = _rms(h, W[p + "input_layernorm.weight"], eps)
        if cfg.get("q_lora_rank"):
            qa = _rms(x @ W[p + "self_attn.q_a_proj.weight"].T, W[p + "self_attn.q_a_layernorm.weight"], eps)
            q = qa @ W[p + "self_attn.q_b_proj.weight"].T
        else:
            q = x @ W[p + "self_attn.q_proj.weight"].T
        q = q.reshape(B, T, H, nope + rope).transpose(0, 2, 1, 3)
        ckv = x @ W[p + "self_attn.kv_a_proj_with_mqa.weight"].T
        c, k_pe = ckv[..., :kvr], ckv[..., kvr:]
        kv = _rms(c, W[p + "self_attn.kv_a_layernorm.weight"], eps) @ W[p + "self_attn.kv_b_proj.weight"].T
        kv = kv.reshape(B, T, H, nope + vd).transpose(0, 2, 1, 3)
        k_nope, v = kv[..., :nope], kv[..., nope:]
        q_pe = _rope(q[..., nope:], pos, cfg["rope_theta"])
        k_pe = _rope(k_pe[:, None, :, :], pos, cfg["rope_theta"])
        qq = np.concatenate([q[..., :nope], q_pe], axis=-1)
        kk = np.concatenate([k_nope, np.broadcast_to(k_pe, k_nope.shape[:-1] + (rope,))], axis=-1)
        s = qq @ kk.transpose(0, 1, 3, 2) / np.sqrt(nope + rope) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        h = h + a.transpose(0, 2, 1, 3).reshape(B, T, H * vd) @ W[p + "self_attn.o_proj.weight"].T
        x = _rms(h, W[p + "post_attention_layernorm.weight"], eps)

        def mlp(pre, x):
            return (_silu(x @ W[pre + "gate_proj.weight"].T) * (x @ W[pre + "up_proj.weight"].T)) @ W[pre + "down_proj.weight"].T

        if layer < cfg.get("first_k_dense_replace", 0) or p + "mlp.gate.weight" not in W:
            h = h + mlp(p + "mlp.", x)
            continue
        scores = 1.0 / (1.0 + np.exp(-(x @ W[p + "mlp.gate.weight"].T)))
        choice = scores + W[p + "mlp.gate.e_score_correction_bias"]
        k = cfg["num_experts_per_tok"]
        top = np.argsort(-choice, axis=-1, kind="stable")[..., :k]
        wts = np.take_along_axis(scores, top, -1)
        if cfg.get("norm_topk_prob"):
            wts = wts / (wts.sum(-1, keepdims=True) + 1e-20)
        wts = wts * cfg.get("routed_scaling_factor", 1.0)
        out = mlp(p + "mlp.shared_experts.", x)
        for e in range(cfg["n_routed_experts"]):
            sel = (top == e)
            if not sel.any():
                continue
            w_e = (wts * sel).sum(-1, keepdims=True)
            out = out + w_e * mlp(p + "mlp.experts.%d." % e, x)
        h = h + out
    h = _rms(h, W["model.norm.weight"], eps)
    return h @ W["lm_head.weight"].T
