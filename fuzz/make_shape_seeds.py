#!/usr/bin/python3
"""Derive fuzz/corpus/checkpoint/refuse-shape-*.pt from the seed-*.pt rank files: one source
tensor each with a shape the args do not imply (rows moved out of a gated fc1, a reshaped
row-parallel weight, a reshaped norm). The corpus test requires every refuse-* input to be
refused by the shape check, and the fuzzer starts from them next to the good seeds.
Usage: /usr/bin/python3 fuzz/make_shape_seeds.py"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))
import mcorefs_testlib as T  # noqa: E402  (torch.load/save with Megatron's classes stubbed)

corpus = os.path.join(here, "corpus", "checkpoint")
CASES = [
    ("llama", "fc1-rows", "decoder.layers.0.mlp.linear_fc1.weight", lambda t: t[8:]),
    ("qwen3", "fc2-reshaped", "decoder.layers.1.mlp.linear_fc2.weight",
     lambda t: t.reshape(t.shape[0] // 2, t.shape[1] * 2)),
    ("mixtral", "norm-reshaped", "decoder.final_layernorm.weight", lambda t: t.reshape(2, -1)),
]
for family, tag, key, change in CASES:
    src = os.path.join(corpus, "seed-%s.pt" % family)
    dst = os.path.join(corpus, "refuse-shape-%s-%s.pt" % (family, tag))
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())

    def mutate(sd, key=key, change=change):
        sd["model"][key] = change(sd["model"][key]).clone()
    T.rewrite_rank_file(dst, mutate)
    print(dst)
