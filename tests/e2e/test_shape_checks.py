#!/usr/bin/python3
"""Every source tensor must have exactly the shape the args imply for its rank.

Megatron splits every parallel dimension evenly; a shard of another size (moved rows, a
reshaped tensor) would be cut at the wrong places.  Each case copies a real fixture, damages
one tensor with torch.save (or the args of a torch_dist checkpoint), and checks that the mount
and mcorefs-inspect both refuse with one line naming the file, the tensor, the shape seen and
the shape expected.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"          # tp2 pp2, hidden 64, ffn 128, 4 heads / 2 groups
MOE = "head_moe_tp2ep2_torch"          # tp2 ep2 (etp 2), 4 experts
GPT_DIST = "v014_gpt_tp2pp2_torch_dist"
IT = "iter_0000010"
RF = "model_optim_rng.pt"


def rank(ckpt, d):
    return os.path.join(ckpt, IT, d, RF)


def refused(ckpt, names):
    """The daemon and inspect both refuse, naming everything in names."""
    T.expect_mount_failure(ckpt, None, names)
    T.expect_inspect_failure([ckpt], names)


def move_rows(ckpt, key, src_dir, dst_dir, n):
    """Move the last n rows of key in src_dir's file to the front of dst_dir's (the total,
    and the concatenation of the two, stay the same)."""
    moved = {}

    def take(sd):
        t = sd["model"][key]
        moved["rows"] = t[-n:].clone()
        sd["model"][key] = t[:-n].clone()

    def give(sd):
        import torch
        sd["model"][key] = torch.cat([moved["rows"], sd["model"][key]], 0).contiguous()
    T.rewrite_rank_file(rank(ckpt, src_dir), take)
    T.rewrite_rank_file(rank(ckpt, dst_dir), give)


def unequal_fc1():
    """The issue's case: tp0's linear_fc1 at 120 rows, tp1's at 136 (the view showed gate/up of
    the right shapes, cut at the wrong rows)."""
    ck = T.copy_fixture(GPT)
    move_rows(ck, "decoder.layers.0.mlp.linear_fc1.weight", "mp_rank_00_000", "mp_rank_01_000", 8)
    refused(ck, ["mp_rank_00_000", "decoder.layers.0.mlp.linear_fc1.weight", "[120, 64]", "[128, 64]"])


def unequal_expert_fc1():
    """The same over expert-TP: expert 1's fc1 moved 4 rows from etp rank 0 to etp rank 1."""
    ck = T.copy_fixture(MOE)
    key = "decoder.layers.0.mlp.experts.local_experts.1.linear_fc1.weight"
    before = T.load_rank_file(rank(ck, "mp_rank_00_000"))["model"][key].shape
    move_rows(ck, key, "mp_rank_00_000", "mp_rank_01_000", 4)
    want = "[%d, %d]" % (before[0], before[1])
    seen = "[%d, %d]" % (before[0] - 4, before[1])
    refused(ck, ["mp_rank_00_000", "decoder.layers.0.mlp.experts.1.linear_fc1.weight", seen, want])


def reshaped_everywhere(key, new_shape, canon, want):
    """The same reshape in every rank file that has key: siblings agree, the args do not."""
    ck = T.copy_fixture(GPT)
    hit = []
    for d in sorted(os.listdir(os.path.join(ck, IT))):
        def mut(sd):
            if key in sd["model"]:
                sd["model"][key] = sd["model"][key].reshape(*new_shape).clone()
                hit.append(d)
        T.rewrite_rank_file(rank(ck, d), mut)
    T.check(len(hit) >= 2, "test data: %s found in %r" % (key, hit))
    seen = "[%s]" % ", ".join(str(x) for x in new_shape)
    refused(ck, [hit[0], canon, seen, want])


def dist_args_disagree(arg, value, canon, seen, want):
    """torch_dist: .metadata's global shapes checked against the args (here the args are
    changed in common.pt, so the tensors no longer fit them)."""
    ck = T.copy_fixture(GPT_DIST)
    T.rewrite_rank_file(os.path.join(ck, IT, "common.pt"), lambda sd: setattr(sd["args"], arg, value))
    refused(ck, [".metadata", canon, seen, want])


def good_checkpoints_still_mount():
    """The check refuses nothing Megatron wrote (replicated and split tensors of every kind)."""
    for name in (GPT, MOE, "head_dsv3_tp2ep2_torch", GPT_DIST, "head_moe_tp2ep2_torch_dist"):
        ck = os.path.join(T.MEGATRON_FIXTURES, name)
        r = T.run_inspect([ck])
        T.check(r.rc == 0, "inspect refuses the real fixture %s: %r" % (name, r.stderr))


def main():
    r = T.Runner("shape-checks")
    r.run("unequal-tp-fc1-rows", unequal_fc1)
    r.run("unequal-etp-expert-fc1-rows", unequal_expert_fc1)
    r.run("reshaped-fc2-every-rank", reshaped_everywhere, "decoder.layers.1.mlp.linear_fc2.weight",
          (128, 32), "decoder.layers.1.mlp.linear_fc2.weight", "[64, 64]")
    r.run("reshaped-proj-every-rank", reshaped_everywhere, "decoder.layers.0.self_attention.linear_proj.weight",
          (32, 64), "decoder.layers.0.self_attention.linear_proj.weight", "[64, 32]")
    r.run("short-final-norm-every-rank", reshaped_everywhere, "decoder.final_layernorm.weight",
          (2, 32), "decoder.final_layernorm.weight", "[64]")
    r.run("torch_dist-ffn-disagrees", dist_args_disagree, "ffn_hidden_size", 96,
          "decoder.layers.0.mlp.linear_fc1.weight", "[256, 64]", "[192, 64]")
    r.run("good-checkpoints-still-mount", good_checkpoints_still_mount)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
