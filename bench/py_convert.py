#!/usr/bin/python3
"""py_convert: the straightforward Megatron -> Hugging Face converter a user runs today.

usage: /usr/bin/python3 bench/py_convert.py CKPT_ITER_DIR OUT_DIR --true-vocab-size N [--shard-size BYTES]

`torch.load`s every mp_rank_* file, merges TP/PP/EP shards by Megatron's rules (local spec,
Llama-like GQA attention with a fused group-interleaved QKV, SwiGLU fc1 = [gate_t; up_t] per
rank, row-parallel linear_proj/fc2 split on dim 1, vocab-parallel embedding/output with padding,
Mixtral-style sequential experts), and writes model-XXXXX-of-YYYYY.safetensors + index.json.
Covers the llama and mixtral layouts the benchmark generates; it is a baseline, not a tool.
"""
import argparse
import collections
import json
import os
import pathlib
import re
import struct
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
import mcore_gen  # noqa: E402  (only for its fake `megatron` modules, needed by torch.load)

ST_DT = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
RANK_RE = re.compile(r"mp_rank_(\d+)(?:_(\d{3}))?(?:_(\d{3}))?$")


def load_all(it_dir):
    """{(tp, pp, ep): state dict} and the args of the first file."""
    dirs = sorted(p for p in pathlib.Path(it_dir).iterdir() if RANK_RE.match(p.name))
    shards, args = {}, None
    with mcore_gen._registered(mcore_gen._fake_megatron_enums()[0]):
        for d in dirs:
            top = torch.load(str(d / "model_optim_rng.pt"), map_location="cpu")
            a = top["args"]
            args = args or a
            m = RANK_RE.match(d.name)
            tp = int(m.group(1))
            rest = [int(g) for g in m.groups()[1:] if g is not None]
            pp = rest.pop(0) if a.pipeline_model_parallel_size > 1 else 0
            ep = rest.pop(0) if a.expert_model_parallel_size > 1 else 0
            shards[(tp, pp, ep)] = top["model"]
    return shards, args


def convert(it_dir, true_vocab):
    shards, a = load_all(it_dir)
    TP, PP, EP = a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.expert_model_parallel_size
    L, H, nh = a.num_layers, a.hidden_size, a.num_attention_heads
    ng = a.num_query_groups if a.group_query_attention else nh
    hd = a.kv_channels
    E = getattr(a, "num_experts", None) or 0
    per_stage = L // PP
    hf = collections.OrderedDict()

    def sd(tp, pp, ep=0):
        return shards[(tp, pp, ep)]

    def tp_cat(pp, key, dim, ep=0):
        return torch.cat([sd(t, pp, ep)[key] for t in range(TP)], dim)

    def glu(pp, key, ep=0):
        parts = [sd(t, pp, ep)[key] for t in range(TP)]
        gates = [p[: p.shape[0] // 2] for p in parts]
        ups = [p[p.shape[0] // 2:] for p in parts]
        return torch.cat(gates, 0), torch.cat(ups, 0)

    hf["model.embed_tokens.weight"] = tp_cat(0, "embedding.word_embeddings.weight", 0)[:true_vocab]
    for pp in range(PP):
        for i in range(per_stage):
            g = pp * per_stage + i
            src, dst = "decoder.layers.%d." % i, "model.layers.%d." % g
            s0 = sd(0, pp)
            hf[dst + "input_layernorm.weight"] = s0[src + "input_layernorm.weight"]
            qkv = tp_cat(pp, src + "self_attention.linear_qkv.weight", 0)
            qkv = qkv.reshape(ng, (nh // ng + 2) * hd, H)
            q, k, v = torch.split(qkv, [nh // ng * hd, hd, hd], 1)
            hf[dst + "self_attn.q_proj.weight"] = q.reshape(-1, H).contiguous()
            hf[dst + "self_attn.k_proj.weight"] = k.reshape(-1, H).contiguous()
            hf[dst + "self_attn.v_proj.weight"] = v.reshape(-1, H).contiguous()
            hf[dst + "self_attn.o_proj.weight"] = tp_cat(pp, src + "self_attention.linear_proj.weight", 1)
            hf[dst + "post_attention_layernorm.weight"] = s0[src + "pre_mlp_layernorm.weight"]
            if src + "mlp.router.weight" not in s0:
                gate, up = glu(pp, src + "mlp.linear_fc1.weight")
                hf[dst + "mlp.gate_proj.weight"] = gate
                hf[dst + "mlp.up_proj.weight"] = up
                hf[dst + "mlp.down_proj.weight"] = tp_cat(pp, src + "mlp.linear_fc2.weight", 1)
                continue
            b = dst + "block_sparse_moe."
            hf[b + "gate.weight"] = s0[src + "mlp.router.weight"]
            El = E // EP
            for ep in range(EP):
                for j in range(El):
                    e = ep * El + j
                    q = src + "mlp.experts.local_experts.%d." % j
                    gate, up = glu(pp, q + "linear_fc1.weight", ep)
                    hf[b + "experts.%d.w1.weight" % e] = gate
                    hf[b + "experts.%d.w2.weight" % e] = tp_cat(pp, q + "linear_fc2.weight", 1, ep)
                    hf[b + "experts.%d.w3.weight" % e] = up
    last = sd(0, PP - 1)
    hf["model.norm.weight"] = last["decoder.final_layernorm.weight"]
    if "output_layer.weight" in last:
        hf["lm_head.weight"] = tp_cat(PP - 1, "output_layer.weight", 0)[:true_vocab]
    return hf


def nbytes(t):
    return t.numel() * t.element_size()


def write_shards(hf, out, shard_size):
    """Greedy packing in HF order, whole layers together (like huggingface_hub)."""
    groups = collections.OrderedDict()
    for n in hf:
        m = re.match(r"model\.layers\.(\d+)\.", n)
        groups.setdefault(m.group(0) if m else n, []).append(n)
    files, cur, size = [], [], 0
    for names in groups.values():
        gsize = sum(nbytes(hf[n]) for n in names)
        if cur and size + gsize > shard_size:
            files.append(cur)
            cur, size = [], 0
        cur += names
        size += gsize
    if cur:
        files.append(cur)
    weight_map, total = {}, 0
    out.mkdir(parents=True, exist_ok=True)
    for i, names in enumerate(files):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(files)) if len(files) > 1 else "model.safetensors"
        names = sorted(names, key=lambda n: (-hf[n].element_size(), n))
        hdr = collections.OrderedDict([("__metadata__", {"format": "pt"})])
        off = 0
        for n in names:
            t = hf[n]
            hdr[n] = {"dtype": ST_DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + nbytes(t)]}
            off += nbytes(t)
            weight_map[n] = fname
        total += off
        h = json.dumps(hdr, separators=(",", ":")).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(out / fname, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for n in names:
                t = hf[n].contiguous()
                if t.dtype == torch.bfloat16:
                    t = t.view(torch.int16)
                f.write(t.numpy().data)
    if len(files) > 1:
        idx = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(out / "model.safetensors.index.json", "w") as f:
            json.dump(idx, f, indent=2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--true-vocab-size", type=int, required=True)
    p.add_argument("--shard-size", type=int, default=5 * 10 ** 9)
    a = p.parse_args()
    it = pathlib.Path(a.ckpt)
    if (it / "latest_checkpointed_iteration.txt").exists():
        tag = (it / "latest_checkpointed_iteration.txt").read_text().strip()
        it = it / ("release" if tag == "release" else "iter_%07d" % int(tag))
    hf = convert(it, a.true_vocab_size)
    write_shards(hf, pathlib.Path(a.out), a.shard_size)


if __name__ == "__main__":
    main()
