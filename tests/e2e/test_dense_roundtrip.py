#!/usr/bin/python3
"""Dense families (llama, mistral, qwen2, qwen3) across parallel layouts: generate a
synthetic Megatron checkpoint with tests/fixtures/mcore_gen.py, mount it, and compare the
whole view bit-for-bit with the generator's reference.safetensors, config.json with the
reference config, and a `cp -r` copy with the mounted bytes.  Plus: vocab padding without
true_vocab_size, dtype conversion, iteration / release / iter-dir selection, inspect.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]

# (label, generator kwargs, shard_size option or None).  spec/tied are rotated per family
# below so every family sees te+local and tied+untied in single- and multi-stage layouts.
LAYOUTS = [
    ("tp1", dict(tp=1), None),
    ("tp2", dict(tp=2), "100KB"),
    ("tp4-gqa2", dict(tp=4), None),                       # 2 KV groups < TP 4
    ("tp4-gqa4", dict(tp=4, dims={"groups": 4}), "200KiB"),
    ("tp2pp2", dict(tp=2, pp=2), None),
    ("tp2pp4-uneven", dict(tp=2, pp=4, pp_first=1, pp_last=1, dims={"layers": 6}), "100000"),
    ("tp2pp2vpp2", dict(tp=2, pp=2, vpp=2), None),
    ("tp1pp4vpp2-uneven", dict(tp=1, pp=4, vpp=2, pp_first=2, pp_last=2, dims={"layers": 8}),
     "150KB"),
    ("tp4pp2", dict(tp=4, pp=2), "90KiB"),
]


def mount_opts(g, shard=None, extra=()):
    opts = ["true_vocab_size=%d" % g.true_vocab]
    if shard is not None:
        opts.append("shard_size=" + shard)
    return opts + list(extra)


def check_view(mnt, expected_tensors, ref, shard=None, config_override=None):
    shard_bytes = T.parse_size(shard) if shard is not None else None
    v = T.read_view(mnt, shard_size=shard_bytes)
    T.assert_same_tensors(v.tensors, expected_tensors, "mount", "reference")
    cfg = dict(ref["config"])
    cfg.update(config_override or {})
    T.assert_config(v.config_text, cfg, ref["derivable_config_keys"])
    if shard is None:
        T.check(v.st_files == ["model.safetensors"],
                "default shard size on a %d-byte model gave %r" % (v.total_bytes, v.st_files))
    return v


def roundtrip(family, kw, shard, cp=True, foreground=False):
    g = T.generate(family, **kw)
    with T.Mount(g.ckpt, mount_opts(g, shard), foreground=foreground) as m:
        v = check_view(m.path, g.tensors, g.ref, shard)
        if cp:
            T.cp_r_compare(m.path, v)


# ---- vocab ----------------------------------------------------------------------------

def padded_rows_from_rank_files(g, key):
    """The full padded [Vp, H] matrix of `key`, concatenated from the TP shards of the rank
    files with torch (independent of the daemon)."""
    import torch
    lay = g.ref["layout"]
    tp, pp = lay["tp"], lay["pp"]
    stage = 0 if key.startswith("embedding") else pp - 1
    parts = []
    for t in range(tp):
        d = "mp_rank_%02d" % t + ("_%03d" % stage if pp > 1 else "")
        it = "release" if lay.get("release") else "iter_%07d" % lay["iteration"]
        sd = T.load_rank_file(os.path.join(g.ckpt, it, d, "model_optim_rng.pt"))
        model = sd["model"] if "model" in sd else sd["model0" if stage == 0 else
                                                     "model%d" % (lay["vpp"] - 1)]
        parts.append(model[key])
    full = torch.cat(parts, 0).contiguous()
    return "BF16", tuple(full.shape), full.view(torch.int16).numpy().tobytes()


def vocab_padded(tied):
    g = T.generate("llama", tp=2, pp=2, tied=tied, args_vocab_size=False)
    Vp, V = g.ref["padded_vocab_size"], g.true_vocab
    T.check(Vp > V, "test needs a padded vocab (%d vs %d)" % (Vp, V))
    with T.Mount(g.ckpt, []) as m:
        v = T.read_view(m.path)
        exp = dict(g.tensors)
        names = ["model.embed_tokens.weight"] + ([] if tied else ["lm_head.weight"])
        keys = {"model.embed_tokens.weight": "embedding.word_embeddings.weight",
                "lm_head.weight": "output_layer.weight"}
        for n in names:
            full = padded_rows_from_rank_files(g, keys[n])
            dt, shape, b = exp[n]
            T.check(full[1] == (Vp, shape[1]), "rank files give %r" % (full[1],))
            T.check(full[2][:len(b)] == b, "generator reference is not a prefix of the rank files"
                    " (test data problem)")
            exp[n] = full
        T.assert_same_tensors(v.tensors, exp, "mount", "padded reference")
        T.assert_config(v.config_text, dict(g.ref["config"], vocab_size=Vp),
                        g.ref["derivable_config_keys"])


def vocab_from_args():
    """Without the option but with args.vocab_size recorded, the view must be consistent:
    either the true vocab (from args) or the padded one, in config and tensors alike."""
    g = T.generate("qwen2", tp=2)
    with T.Mount(g.ckpt, []) as m:
        v = T.read_view(m.path)
        rows = v.tensors["model.embed_tokens.weight"][1][0]
        T.check(rows in (g.true_vocab, g.ref["padded_vocab_size"]), "embedding rows %d" % rows)
        T.check(v.config.get("vocab_size") == rows,
                "config vocab_size %r but embedding has %d rows" % (v.config.get("vocab_size"), rows))
        if rows == g.true_vocab:
            T.assert_same_tensors(v.tensors, g.tensors, "mount", "reference")


def true_vocab_smaller(n):
    """true_vocab_size below args.vocab_size trims to exactly n rows."""
    g = T.generate("llama", tp=2, tied=False)
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % n]) as m:
        v = T.read_view(m.path)
        exp = dict(g.tensors)
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            dt, shape, b = exp[name]
            row = shape[1] * T.DTYPE_SIZES[dt]
            exp[name] = (dt, (n, shape[1]), b[:n * row])
        T.assert_same_tensors(v.tensors, exp, "mount", "reference trimmed to %d" % n)
        T.assert_config(v.config_text, dict(g.ref["config"], vocab_size=n),
                        g.ref["derivable_config_keys"])


# ---- dtype -----------------------------------------------------------------------------

def _convert(dt, shape, b, target):
    import numpy as np
    if dt == "BF16":
        f = (np.frombuffer(b, dtype="<u2").astype("<u4") << 16).view("<f4")
    elif dt == "F16":
        f = np.frombuffer(b, dtype="<f2").astype("<f4")
    elif dt == "F32":
        f = np.frombuffer(b, dtype="<f4")
    else:
        return dt, shape, b
    if target == "F32":
        return "F32", shape, f.astype("<f4").tobytes()
    if target == "F16":
        return "F16", shape, f.astype("<f2").tobytes()
    if target == "BF16":
        if dt == "BF16":
            return dt, shape, b
        u = f.astype("<f4").view("<u4").astype(np.uint64)
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16          # round to nearest even
        return "BF16", shape, r.astype("<u2").tobytes()
    raise ValueError(target)


def dtype_case(target_opt):
    target = {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}[target_opt]
    torch_dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[target_opt]
    g = T.generate("qwen3", tp=2, pp=2)
    with T.Mount(g.ckpt, mount_opts(g, extra=["dtype=" + target_opt])) as m:
        v = T.read_view(m.path)
        # weights: BF16 -> target exactly (numpy; round-to-nearest-even where it narrows);
        # fp32 norms either stay F32 or are converted, but the same way for all of them
        exp = {}
        for k, (dt, shape, b) in g.tensors.items():
            if dt == "F32" and v.tensors.get(k, ("F32",))[0] == "F32":
                exp[k] = (dt, shape, b)
            else:
                exp[k] = _convert(dt, shape, b, target)
        f32_kept = {k for k, t in g.tensors.items() if t[0] == "F32" and exp[k][0] == "F32"}
        f32_all = {k for k, t in g.tensors.items() if t[0] == "F32"}
        T.check(not f32_kept or f32_kept == f32_all,
                "dtype=%s converted some fp32 norms but not others" % target_opt)
        T.assert_same_tensors(v.tensors, exp, "mount", "reference converted to %s" % target)
        T.assert_config(v.config_text, dict(g.ref["config"], torch_dtype=torch_dtype),
                        g.ref["derivable_config_keys"])


def fp16_checkpoint():
    """A checkpoint trained in fp16 (params_dtype fp16) shows F16 tensors, torch_dtype float16."""
    g = T.generate("qwen2", tp=2, params_dtype="fp16")
    with T.Mount(g.ckpt, mount_opts(g)) as m:
        check_view(m.path, g.tensors, g.ref)


# ---- iteration selection ---------------------------------------------------------------

def two_iterations():
    a = T.generate("llama", "iterA", tp=2, pp=2, iteration=10, seed=1)
    b = T.generate("llama", "iterB", tp=2, pp=2, iteration=20, seed=2)
    T.check(a.tensors["model.norm.weight"] != b.tensors["model.norm.weight"] or
            a.tensors["lm_head.weight"] != b.tensors["lm_head.weight"],
            "seeds give equal weights (test data problem)")
    root = os.path.join(T.scratch("two-iters"), "ckpt")
    shutil.copytree(a.ckpt, root)
    shutil.copytree(os.path.join(b.ckpt, "iter_0000020"), os.path.join(root, "iter_0000020"))
    with open(os.path.join(root, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("20\n")
    return a, b, root


def iteration_selection():
    a, b, root = two_iterations()
    cases = [("root (latest=20)", root, [], b),
             ("iteration=10", root, ["iteration=10"], a),
             ("iteration=20", root, ["iteration=20"], b),
             ("iter_0000010 dir", os.path.join(root, "iter_0000010"), [], a),
             ("iter_0000020 dir", os.path.join(root, "iter_0000020") + "/", [], b)]
    for label, ck, extra, g in cases:
        with T.Mount(ck, mount_opts(g, extra=extra)) as m:
            try:
                check_view(m.path, g.tensors, g.ref)
            except T.TestFailure as e:
                raise T.TestFailure("%s: %s" % (label, e))
    T.expect_mount_failure(root, mount_opts(a, extra=["iteration=30"]), ["30"])


def iteration_without_latest():
    """No latest_checkpointed_iteration.txt: the root alone is ambiguous unless iteration=
    is given (or there is only one iteration)."""
    a, b, root = two_iterations()
    os.unlink(os.path.join(root, "latest_checkpointed_iteration.txt"))
    with T.Mount(root, mount_opts(a, extra=["iteration=10"])) as m:
        check_view(m.path, a.tensors, a.ref)


def release_dir():
    g = T.generate("qwen2", tp=2, pp=2, release=True)
    T.check(os.path.isdir(os.path.join(g.ckpt, "release")), "generator did not write release/")
    for ck in (g.ckpt, os.path.join(g.ckpt, "release")):
        with T.Mount(ck, mount_opts(g)) as m:
            check_view(m.path, g.tensors, g.ref)


# ---- inspect ---------------------------------------------------------------------------

def inspect_case(family, kw):
    g = T.generate(family, **kw)
    r = T.run_inspect([g.ckpt, "--json", "--tensors", "-o", "true_vocab_size=%d" % g.true_vocab])
    T.check(r.rc == 0, "mcorefs-inspect failed: %r" % r)
    try:
        j = json.loads(r.stdout)
    except ValueError as e:
        raise T.TestFailure("inspect --json is not JSON: %s\n%s" % (e, r.stdout[:2000]))
    lay = g.ref["layout"]
    probs = []
    want = {"iteration": lay["iteration"], "family": family,
            "architecture": g.ref["architectures"][0], "tp": lay["tp"], "pp": lay["pp"],
            "ep": 1, "num_tensors": len(g.tensors)}
    for k, val in want.items():
        if j.get(k) != val:
            probs.append("%s = %r, expected %r" % (k, j.get(k), val))
    vpp = lay["vpp"]
    if not (j.get("vpp") == vpp or (vpp is None and j.get("vpp") in (None, 1))):
        probs.append("vpp = %r, expected %r" % (j.get("vpp"), vpp))
    nparams = 0
    for dt, shape, b in g.tensors.values():
        nparams += len(b) // T.DTYPE_SIZES[dt]
    if j.get("num_params") != nparams:
        probs.append("num_params = %r, expected %d" % (j.get("num_params"), nparams))
    rf = sorted(os.path.basename(os.path.dirname(p)) for p in g.ref["rank_files"])
    got = j.get("rank_files") or []
    got_dirs = T.rank_file_dirs(got)
    if got_dirs != rf:
        probs.append("rank_files %r, expected files in %r" % (got, rf))
    listed = {t.get("name"): (t.get("dtype"), list(t.get("shape", []))) for t in j.get("tensors", [])}
    exp = {k: (dt, list(s)) for k, (dt, s, _) in g.tensors.items()}
    if listed != exp:
        probs.append("--tensors differs: missing %r, extra %r, different %r" % (
            sorted(set(exp) - set(listed))[:4], sorted(set(listed) - set(exp))[:4],
            [(k, listed[k], exp[k]) for k in sorted(set(exp) & set(listed))
             if listed[k] != exp[k]][:4]))
    T.check(not probs, "mcorefs-inspect --json:\n  " + "\n  ".join(probs))
    # the plain summary works too
    r2 = T.run_inspect([g.ckpt])
    T.check(r2.rc == 0 and r2.stdout.strip(), "mcorefs-inspect (text) failed: %r" % r2)


def main():
    r = T.Runner("dense-roundtrip")
    for fi, fam in enumerate(FAMILIES):
        for li, (label, kw, shard) in enumerate(LAYOUTS):
            kw = dict(kw)
            kw["spec"] = "te" if (fi + li) % 2 else "local"
            kw["tied"] = (fi + li) % 3 == 1
            name = "%s:%s:%s:%s%s" % (fam, label, kw["spec"], "tied" if kw["tied"] else "untied",
                                      (":shard=" + shard) if shard else "")
            r.run(name, roundtrip, fam, kw, shard, cp=(li % 3 == 0 or shard is not None))
    r.run("llama:tp2pp2:foreground", roundtrip, "llama", dict(tp=2, pp=2), None, True, True)
    r.run("vocab:padded-untied", vocab_padded, False)
    r.run("vocab:padded-tied", vocab_padded, True)
    r.run("vocab:args-vocab-no-option", vocab_from_args)
    r.run("vocab:true_vocab_size=999", true_vocab_smaller, 999)
    r.run("dtype:fp32", dtype_case, "fp32")
    r.run("dtype:bf16-identity", dtype_case, "bf16")
    r.run("dtype:fp16", dtype_case, "fp16")
    r.run("dtype:fp16-checkpoint", fp16_checkpoint)
    r.run("iteration:selection", iteration_selection)
    r.run("iteration:no-latest-file", iteration_without_latest)
    r.run("iteration:release", release_dir)
    r.run("inspect:llama:tp2pp2", inspect_case, "llama", dict(tp=2, pp=2))
    r.run("inspect:qwen3:tp2pp2vpp2", inspect_case, "qwen3", dict(tp=2, pp=2, vpp=2))
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
