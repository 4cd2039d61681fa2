#!/usr/bin/python3
"""torch_dist round trips: tests/fixtures/dist_gen.py writes a PyTorch Distributed Checkpoint of
the same model mcore_gen draws (same reference.safetensors / reference.json), laid out like the
real Megatron files (checked against tests/data/megatron/*_torch_dist first).  Each one is
mounted with true_vocab_size (and skip_mtp where relevant) and compared bit for bit with the
reference and the config; a legacy twin must give the same view; damaged checkpoints (a .distcp
named by .metadata is missing, overlapping chunks, a chunk missing) fail at mount with one line
naming the file; a broken chunk archive (read on first use) fails only the reads that need it.
"""
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402


def dist_gen():
    T.generator()                        # puts tests/fixtures on sys.path (Skip if absent)
    try:
        import dist_gen as D             # noqa: WPS433
    except ImportError as e:
        raise T.Skip("tests/fixtures/dist_gen.py not importable: %s" % e)
    return D


def generate(family, name=None, **kw):
    D = dist_gen()
    out = T.scratch(name or family)
    try:
        D.generate(out, family, **kw)
    except TypeError as e:
        raise T.TestFailure("dist_gen.generate(%r, %r) rejected the arguments: %s" % (family, kw, e))
    g = T.Generated(out)
    T.check(g.ref.get("ckpt_format") == "torch_dist", "generator did not write torch_dist")
    return g


def mount_opts(g, extra=()):
    return ["true_vocab_size=%d" % g.true_vocab] + list(extra)


def check_view(mnt, expected, ref, config_override=None):
    v = T.read_view(mnt)
    T.assert_same_tensors(v.tensors, expected, "mount", "reference")
    cfg = dict(ref["config"])
    cfg.update(config_override or {})
    T.assert_config(v.config_text, cfg, ref["derivable_config_keys"])
    return v


def roundtrip(family, kw, skip_mtp=False):
    g = generate(family, **kw)
    exp, override, extra = g.tensors, None, []
    if skip_mtp:
        names = set(g.ref["mtp_tensor_names"])
        T.check(names, "generator wrote no MTP tensors (test data problem)")
        exp = {k: v for k, v in g.tensors.items() if k not in names}
        override, extra = {"num_nextn_predict_layers": 0}, ["skip_mtp"]
    with T.Mount(g.ckpt, mount_opts(g, extra)) as m:
        v = check_view(m.path, exp, g.ref, override)
        if skip_mtp:
            nl = g.ref["config"]["num_hidden_layers"]
            bad = [k for k in v.tensors if re.match(r"model\.layers\.(\d+)\.", k)
                   and int(re.match(r"model\.layers\.(\d+)\.", k).group(1)) >= nl]
            T.check(not bad, "skip_mtp view still has layers >= %d: %r" % (nl, bad[:5]))


def legacy_twin(family, kw):
    """The legacy twin (same model, same layout, --ckpt-format torch) gives the same view."""
    g = generate(family, keep_legacy=True, **kw)
    legacy = os.path.join(g.dir, g.ref["legacy_checkpoint_dir"])
    with T.Mount(g.ckpt, mount_opts(g)) as m, T.Mount(legacy, mount_opts(g)) as m2:
        v, w = T.read_view(m.path), T.read_view(m2.path)
        T.assert_same_tensors(v.tensors, w.tensors, "torch_dist mount", "legacy twin mount")
        T.assert_same_tensors(v.tensors, g.tensors, "torch_dist mount", "reference")
        T.check(v.config_text == w.config_text, "config.json differs from the legacy twin's")


def real_layout(name):
    """The generator's layout equals the real Megatron file of the same model and layout:
    keys, global shapes, dtypes, chunks and their order, item placement per .distcp file,
    the .metadata object model and globals, and the zip/pickle layout of every item."""
    D = dist_gen()
    real = os.path.join(T.MEGATRON_FIXTURES, name, "iter_0000010")
    if not os.path.isdir(real):
        raise T.Skip("%s not found" % real)
    fam, kw = D.REAL_TWINS[name]
    out = T.scratch("real-" + name)
    D.generate(out, fam, **kw)
    probs = D.compare(real, os.path.join(out, "ckpt", "iter_0000010"))
    T.check(not probs, "generated layout differs from %s:\n  %s" % (name, "\n  ".join(probs[:10])))


def corrupt_chunk_archive():
    """Chunk archives are read on first use, not at mount: a .distcp item whose embedded zip is
    broken must leave the mount up, fail exactly the reads that need it with EIO and one log
    line naming the file, and serve every other tensor bit-identically."""
    D = dist_gen()
    g = generate("llama", "corrupt-chunk", tp=2)
    ckpt = T.scratch("corrupt-chunk-copy")
    shutil.rmtree(ckpt)
    shutil.copytree(g.ckpt, ckpt)
    it = os.path.join(ckpt, "iter_0000010")
    meta = D.load_metadata(os.path.join(it, ".metadata"))
    victim_fqn = "decoder.final_layernorm.weight"
    items = [(k._state["fqn"], v._state) for k, v in meta._state["storage_data"].items()]
    hits = [s for fqn, s in items if fqn == victim_fqn]
    T.check(len(hits) == 1, "want one storage item for %s, got %d (test data problem)" % (victim_fqn, len(hits)))
    s = hits[0]
    path = os.path.join(it, s["relative_path"])
    with open(path, "r+b") as f:
        f.seek(s["offset"])
        item = bytearray(f.read(s["length"]))
        cd = item.find(b"PK\x01\x02")
        T.check(cd > 0, "no central directory in the %s item" % victim_fqn)
        item[cd:cd + 2] = b"XX"
        f.seek(s["offset"])
        f.write(item)
    victim_hf = "model.norm.weight"
    with T.Mount(ckpt, mount_opts(g), foreground=True) as m:
        eio, good = T.read_tensors_expect_eio(m.path, T.safetensors_headers(m.path), g.tensors)
        T.check(victim_hf in eio, "reading %s did not fail (EIO list: %r)" % (victim_hf, eio))
        T.check(good > len(g.tensors) // 2, "only %d of %d tensors read back" % (good, len(g.tensors)))
        log = [ln for ln in m._fg_result().stderr.splitlines() if s["relative_path"] in ln]
        T.check(log and victim_fqn in log[0], "no log line naming %s and %s:\n%s"
                % (s["relative_path"], victim_fqn, m._fg_result().stderr[-2000:]))
    r = T.run_cmd([T.MCOREFS_INSPECT, "verify", ckpt, "-o", "true_vocab_size=%d" % g.true_vocab])
    T.check(r.rc != 0 and s["relative_path"] in r.stdout + r.stderr,
            "inspect verify did not report the broken chunk: %r" % r)


def damaged(what):
    g = generate("llama", "damaged-" + what, tp=2, pp=2, damage=what)
    victim = g.ref["damaged"]["file"]
    T.expect_mount_failure(g.ckpt, mount_opts(g), name_in_msg=[victim])


# (family, label, kwargs); spec, args style, file count, chunk views and tying rotate below
DENSE = ["llama", "qwen2", "qwen3"]
DENSE_LAYOUTS = [
    ("tp1", dict(tp=1)),
    ("tp2", dict(tp=2)),
    ("tp4-gqa2", dict(tp=4)),                      # 2 KV groups < TP 4
    ("tp2pp2", dict(tp=2, pp=2)),
    ("tp2pp2vpp2", dict(tp=2, pp=2, vpp=2)),
]
MOE = ["mixtral", "qwen3_moe", "qwen2_moe"]
MOE_LAYOUTS = [
    ("tp2ep2", dict(tp=2, ep=2)),
    ("tp1ep4", dict(tp=1, ep=4)),
    ("tp4ep2etp1", dict(tp=4, ep=2, etp=1)),
]


def variant(i):
    return dict(spec="te" if i % 2 else "local",
                args_style="common_pt" if i % 3 == 1 else "common_state",
                files_per_rank=2 if i % 4 == 2 else 1,
                chunk_views=i % 5 == 3,
                tied=i % 4 == 3)


def label(fam, lab, kw):
    return "%s:%s:%s:%s%s%s%s" % (fam, lab, kw["spec"], kw["args_style"],
                                  ":2files" if kw["files_per_rank"] == 2 else "",
                                  ":views" if kw["chunk_views"] else "",
                                  ":tied" if kw.get("tied") else "")


def main():
    r = T.Runner("dist-roundtrip")
    D = None
    try:
        D = dist_gen()
    except T.Skip:
        pass
    for name in (D.REAL_TWINS if D else ["head_gpt_tp2pp2_torch_dist"]):
        r.run("real-layout:%s" % name, real_layout, name)
    i = 0
    for fam in DENSE:
        for lab, kw in DENSE_LAYOUTS:
            kw = dict(kw, **variant(i))
            r.run(label(fam, lab, kw), roundtrip, fam, kw)
            i += 1
    for fam in MOE:
        for lab, kw in MOE_LAYOUTS:
            kw = dict(kw, **variant(i))
            kw["tied"] = False
            if kw["spec"] == "te" and i % 3 == 0:
                kw["experts_impl"] = "te_grouped"
            r.run(label(fam, lab, kw), roundtrip, fam, kw)
            i += 1
    # DeepSeek-V3: per-layer keys (first layer dense), MLA, MTP as mtp.layers.0.transformer_layer
    for skip in (False, True):
        kw = dict(tp=2, ep=2, mtp=1, spec="local", args_style="common_state")
        r.run("deepseek_v3:tp2ep2:mtp1:%s" % ("skip_mtp" if skip else "with_mtp"), roundtrip,
              "deepseek_v3", kw, skip)
    r.run("deepseek_v3:tp2ep2:mtp1:no_q_lora:te:common_pt:2files", roundtrip, "deepseek_v3",
          dict(tp=2, ep=2, mtp=1, q_lora=False, spec="te", args_style="common_pt", files_per_rank=2))
    r.run("deepseek_v3:tp1ep4etp1:no_q_lora:skip_mtp:views", roundtrip, "deepseek_v3",
          dict(tp=1, ep=4, mtp=1, q_lora=False, chunk_views=True), True)
    r.run("legacy-twin:qwen3_moe:tp2pp2ep2", legacy_twin, "qwen3_moe", dict(tp=2, pp=2, ep=2))
    # chunks spanning several layers / experts of a stacked key (DCP allows it; Megatron writes
    # one per layer and expert): the reader must slice the stacked axes inside a chunk
    for fam, lab, kw in (("llama", "tp2pp2", dict(tp=2, pp=2)), ("mixtral", "tp1ep2", dict(tp=1, ep=2)),
                         ("deepseek_v3", "tp1ep2:mtp1", dict(tp=1, ep=2, mtp=1))):
        r.run("%s:%s:merged_chunks" % (fam, lab), roundtrip, fam, dict(kw, merged_chunks=True))
    for what in ("missing-distcp", "overlap", "uncovered"):
        r.run("damaged:%s" % what, damaged, what)
    r.run("damaged:chunk-archive-read-on-first-use", corrupt_chunk_archive)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
