#!/usr/bin/python3
"""The FP8 view (-o quant=fp8 / fp8_ue8m0), through real mounts, against an independent numpy
reference quantizer (fp8_reference.py, written from the rule, not from the C code):

- every quantized tensor's bytes and scale_inv bit-equal to the reference, every other tensor
  byte-equal to the plain view; the rule picks exactly the expected names; config.json gains
  quantization_config and keeps every other key;
- dequantized FP8 within half an e4m3 step of the source per element (so per block);
  no NaN code, |q| <= 448 (by construction; asserted);
- the real DeepSeek-V3-like fixture (with and without skip_mtp), generated dense / MLA+MoE /
  Mixtral layouts in both formats, fp32 sources, dtype=fp32 for the rest, edge blocks
  (rows/cols not multiples of 128), all-zero blocks;
- NaN / Inf in a source block: EIO for the weight and its scale_inv, one log line naming
  the tensor, every other tensor still right;
- cp -r of the FP8 view equals its reads; mcorefs-inspect export writes the same bytes;
- a numpy DeepSeek-V3 forward: Megatron's logits from bf16, within 3% of them from FP8;
- 8 threads reading at random on a fresh mount get the bytes of a sequential read.
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402
import fp8_reference as R  # noqa: E402
import dsv3_forward as F  # noqa: E402

DSV3 = "head_dsv3_tp2ep2_torch"


def expected_qc(ue8m0):
    qc = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
          "weight_block_size": [128, 128]}
    if ue8m0:
        qc["scale_fmt"] = "ue8m0"
    return qc


def check_fp8_view(view_tensors, plain, ue8m0, label, plain_dtype_of=None):
    """view_tensors: the FP8 mount's tensors; plain: the same checkpoint's plain view (or the
    generator's reference). Returns the number of quantized tensors."""
    want_names = set(plain)
    n_q = 0
    for name, (dt, shape, raw) in plain.items():
        if R.is_quantized(name, shape):
            want_names.add(name + "_scale_inv")
    got_names = set(view_tensors)
    T.check(got_names == want_names, "%s: tensor names differ: missing %s, extra %s"
            % (label, sorted(want_names - got_names)[:6], sorted(got_names - want_names)[:6]))
    for name, (dt, shape, raw) in sorted(plain.items()):
        vdt, vshape, vraw = view_tensors[name]
        if not R.is_quantized(name, shape):
            if plain_dtype_of is None:
                T.check((vdt, vshape, vraw) == (dt, shape, raw), "%s: %s differs from the plain view" % (label, name))
            else:
                plain_dtype_of(name, (dt, shape, raw), (vdt, vshape, vraw))
            continue
        n_q += 1
        x = R.to_f32(dt, raw, shape)
        q, s = R.quantize(x, ue8m0)
        T.check(vdt == "F8_E4M3" and vshape == shape, "%s: %s is %s %r, want F8_E4M3 %r" % (label, name, vdt, vshape, shape))
        got_q = np.frombuffer(vraw, np.uint8).reshape(shape)
        if not np.array_equal(got_q, q):
            idx = tuple(int(i) for i in np.argwhere(got_q != q)[0])
            raise T.TestFailure("%s: %s: FP8 byte at %r is 0x%02x, reference 0x%02x (source %r)"
                                % (label, name, idx, got_q[idx], q[idx], float(x[idx])))
        sdt, sshape, sraw = view_tensors[name + "_scale_inv"]
        T.check(sdt == "F32" and sshape == s.shape, "%s: %s_scale_inv is %s %r, want F32 %r"
                % (label, name, sdt, sshape, s.shape))
        got_s = np.frombuffer(sraw, "<f4").reshape(s.shape)
        T.check(got_s.tobytes() == s.tobytes(), "%s: %s_scale_inv %r != reference %r"
                % (label, name, got_s.ravel()[:4], s.ravel()[:4]))
        # no NaN code; |q| <= 448; dequantized within half an e4m3 step of the source
        T.check(not np.any((got_q & 0x7f) == 0x7f), "%s: %s has an FP8 NaN" % (label, name))
        deq = R.dequantize(got_q, got_s)
        T.check(np.all(np.abs(R.e4m3_decode(got_q)) <= 448), "%s: %s beyond 448" % (label, name))
        err = np.abs(deq - x.astype(np.float64))
        bound = R.half_ulp_bound(x, got_s) * (1 + 1e-5) + np.abs(x) * 2.0 ** -22
        if np.any(err > bound):
            idx = tuple(int(i) for i in np.argwhere(err > bound)[0])
            raise T.TestFailure("%s: %s: dequantized %r vs source %r at %r: error %g > half step %g"
                                % (label, name, deq[idx], float(x[idx]), idx, err[idx], bound[idx]))
    T.check(n_q > 0, "%s: nothing was quantized" % label)
    return n_q


def check_config(cfg_text, plain_cfg, ue8m0, label, override=None):
    cfg = json.loads(cfg_text)
    T.check(cfg.get("quantization_config") == expected_qc(ue8m0),
            "%s: quantization_config %r" % (label, cfg.get("quantization_config")))
    rest = {k: v for k, v in cfg.items() if k != "quantization_config"}
    want = dict(plain_cfg)
    want.update(override or {})
    for k, v in want.items():
        T.check(rest.get(k) == v, "%s: config %s = %r, plain view has %r" % (label, k, rest.get(k), v))


def test_real_dsv3():
    d = os.path.join(T.MEGATRON_FIXTURES, DSV3)
    for golden, extra, ue8m0 in (("golden", [], False), ("golden.skip_mtp", ["skip_mtp"], True)):
        gd = os.path.join(d, golden)
        plain = T.load_golden_dir(gd)
        exp = json.load(open(os.path.join(gd, "expected.json")))
        opts = [o for o in exp["mount_options"].split(",") if o] + extra
        opts.append("quant=fp8_ue8m0" if ue8m0 else "quant=fp8")
        with T.Mount(d, opts) as m:
            v = T.read_view(m.path)
            n = check_fp8_view(v.tensors, plain, ue8m0, golden)
            check_config(v.config_text, exp["config"], ue8m0, golden)
            T.cp_r_compare(m.path, v)
            if not ue8m0:   # export writes the same files as the mount
                out = os.path.join(T.scratch("export"), "out")
                r = T.run_inspect(["export", d, out, "-o", ",".join(opts)])
                T.check(r.rc == 0, "export failed: %r" % r)
                for fn, data in v.files.items():
                    with open(os.path.join(out, fn), "rb") as f:
                        T.check(f.read() == data, "export: %s differs from the mount" % fn)
                r = T.run_inspect(["verify", d, "--hash", "-o", ",".join(opts)])
                T.check(r.rc == 0, "verify --hash failed: %r" % r)
                plain_r = T.run_inspect(["verify", d, "--hash", "-o", exp["mount_options"]])
                q_name = "model.layers.0.mlp.down_proj.weight"
                h = [line.split()[0] for line in r.stdout.splitlines() if line.endswith("  " + q_name)]
                hp = [line.split()[0] for line in plain_r.stdout.splitlines() if line.endswith("  " + q_name)]
                T.check(h and hp and h != hp, "verify --hash does not hash the FP8 bytes of %s: %r vs %r" % (q_name, h, hp))
        print("    %s: %d FP8 tensors bit-equal to the reference (%s)" % (golden, n, "ue8m0" if ue8m0 else "fp8"))


def dist_gen():
    T.generator()
    import dist_gen as D  # noqa: WPS433
    return D


def generated(kind, family, **kw):
    if kind == "torch":
        return T.generate(family, **kw)
    out = T.scratch(family + "-dist")
    dist_gen().generate(out, family, **kw)
    return T.Generated(out)


def exact_widening(name, plain, got):
    dt, shape, raw = plain
    vdt, vshape, vraw = got
    if dt in ("BF16", "F16", "F32"):
        want = R.to_f32(dt, raw, shape).astype("<f4").tobytes()
        T.check(vdt == "F32" and vshape == shape and vraw == want, "dtype=fp32: %s is not the widened source" % name)
    else:
        T.check((vdt, vshape, vraw) == plain, "%s differs" % name)


def test_generated_layouts():
    big = {"hidden": 192, "ffn": 320}
    cases = [
        # kind, family, generator kwargs, extra mount options, ue8m0
        ("torch", "llama", dict(tp=2, dims=big), [], False),
        ("torch", "llama", dict(tp=2, dims=big, params_dtype="fp32", seed=3), ["dtype=fp32"], True),
        ("torch", "mixtral", dict(tp=2, ep=2, etp=1, dims=dict(big, moe_ffn=136)), [], False),
        ("torch_dist", "deepseek_v3", dict(tp=2, ep=2, mtp=1, dims=dict(big, moe_ffn=136, shared_ffn=136)),
         ["skip_mtp"], True),
        ("torch_dist", "llama", dict(tp=2, pp=2, dims=big), ["dtype=fp32"], False),
    ]
    for kind, family, kw, extra, ue8m0 in cases:
        g = generated(kind, family, **kw)
        plain, override = g.tensors, None
        if "skip_mtp" in extra:
            names = set(g.ref["mtp_tensor_names"])
            plain = {k: v for k, v in plain.items() if k not in names}
            override = {"num_nextn_predict_layers": 0}
        opts = ["true_vocab_size=%d" % g.true_vocab, "quant=" + ("fp8_ue8m0" if ue8m0 else "fp8")] + extra
        label = "%s %s %s" % (kind, family, ",".join(opts))
        with T.Mount(g.ckpt, opts) as m:
            v = T.read_view(m.path)
            widen = exact_widening if "dtype=fp32" in extra else None
            n = check_fp8_view(v.tensors, plain, ue8m0, label, widen)
            cfg = dict(g.ref["config"])
            if "dtype=fp32" in extra:
                cfg["torch_dtype"] = "float32"
            check_config(v.config_text, {k: cfg[k] for k in g.ref["derivable_config_keys"] if k in cfg},
                         ue8m0, label, override)
            edge = [k for k, (dt, shape, _) in plain.items() if R.is_quantized(k, shape)
                    and (shape[0] % 128 or shape[1] % 128) and max(shape) > 128]
            T.check(edge, "%s: no multi-block weight with an edge block (test data problem)" % label)
        print("    %s: %d FP8 tensors bit-equal (%d with edge blocks)" % (label, n, len(edge)))


def damage_copy():
    """A copy of the real fixture where o_proj of layer 0 is all zeros (all-zero blocks), down_proj
    of layer 0 has a NaN (tp rank 0's half) and the gate half of layer 0's fc1 an Inf (tp rank 1)."""
    ckpt = T.copy_fixture(DSV3)
    it = os.path.join(ckpt, "iter_0000010")
    pre = "decoder.layers.0."

    for rank in sorted(os.listdir(it)):
        tp = int(rank.split("_")[2])

        def mutate(sd, tp=tp):
            mod = sd["model"]
            mod[pre + "self_attention.linear_proj.weight"].zero_()
            if tp == 0:
                mod[pre + "mlp.linear_fc2.weight"][3, 5] = float("nan")
            else:
                mod[pre + "mlp.linear_fc1.weight"][1, 2] = float("inf")
        T.rewrite_rank_file(os.path.join(it, rank, "model_optim_rng.pt"), mutate)
    return ckpt


def pages(n, b, e):
    return set(range((8 + n + b) // 4096, (8 + n + e - 1) // 4096 + 1)) if e > b else set()


def test_zero_nan_inf_blocks():
    ckpt = damage_copy()
    opts = ["true_vocab_size=1000"]
    with T.Mount(ckpt, opts) as m:
        plain = T.read_view(m.path).tensors
    o = plain["model.layers.0.self_attn.o_proj.weight"]
    T.check(not any(o[2]), "test data: o_proj is not all zeros")
    bad = {"model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.gate_proj.weight"}
    want_eio = bad | {n + "_scale_inv" for n in bad}
    # the layout does not depend on the values: headers from the undamaged fixture (the damaged
    # mount cannot read a header whose page holds a damaged tensor's bytes)
    with T.Mount(os.path.join(T.MEGATRON_FIXTURES, DSV3), opts + ["quant=fp8"]) as m:
        headers = T.safetensors_headers(m.path)
    expected = {}
    for name, (dt, shape, raw) in plain.items():
        if R.is_quantized(name, shape) and name not in bad:
            q, s = R.quantize(R.to_f32(dt, raw, shape))
            expected[name] = ("F8_E4M3", shape, q.tobytes())
            expected[name + "_scale_inv"] = ("F32", s.shape, s.tobytes())
        elif R.is_quantized(name, shape):
            expected[name] = expected[name + "_scale_inv"] = (None, None, b"?")
        else:
            expected[name] = (dt, shape, raw)
    # tensors sharing no page with a damaged one must read back right (the kernel reads pages)
    (fn, (n, header)), = headers.items()
    bad_pages = set().union(*(pages(n, *header[k]["data_offsets"]) for k in want_eio))
    clean = {k for k, t in header.items() if k != "__metadata__" and not pages(n, *t["data_offsets"]) & bad_pages}
    T.check(len(clean) > 50, "test data: only %d tensors away from the damaged pages" % len(clean))
    with T.Mount(ckpt, opts + ["quant=fp8"], foreground=True) as m:
        eio, good = T.read_tensors_expect_eio(m.path, headers, expected)
        T.check(want_eio <= set(eio), "no EIO for %s" % sorted(want_eio - set(eio)))
        T.check(not clean & set(eio), "EIO for undamaged %s" % sorted(clean & set(eio)))
        zero = expected["model.layers.0.self_attn.o_proj.weight_scale_inv"][2]
        T.check(np.frombuffer(zero, "<f4")[0] == np.float32(np.float32(1e-4) / np.float32(448)),
                "all-zero block: scale_inv is not 1e-4/448")
        log = m._fg_result().stderr
    for name in bad:
        lines = [ln for ln in log.splitlines() if name in ln and ("NaN" in ln or "infinity" in ln)]
        T.check(lines, "no log line names %s:\n%s" % (name, log[-2000:]))
    # the tools refuse the same way, naming the tensor
    r = T.run_inspect(["export", ckpt, os.path.join(T.scratch("export"), "out"), "-o", ",".join(opts + ["quant=fp8"])])
    T.check(r.rc != 0 and "NaN or infinity" in r.stderr and "model.layers.0.mlp." in r.stderr,
            "export of a NaN source: %r" % r)
    print("    NaN/Inf: EIO for %s; %d tensors right (%d away from damaged pages); zero blocks ok"
          % (sorted(want_eio), good, len(clean)))


def weights_of(tensors):
    """float64 weights of a view: FP8 ones dequantized with their scale_inv (weight_dequant)."""
    W = {}
    for name, (dt, shape, raw) in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        if dt == "F8_E4M3":
            sdt, sshape, sraw = tensors[name + "_scale_inv"]
            W[name] = R.dequantize(np.frombuffer(raw, np.uint8).reshape(shape), np.frombuffer(sraw, "<f4").reshape(sshape))
        else:
            W[name] = R.to_f32(dt, raw, shape).astype(np.float64)
    return W


# the forward check's tolerances: the logits of the dequantized FP8 weights against the bf16
# weights' (relative Frobenius error of the whole [2, 16, 1000] logits; top-1 agreement)
FWD_REL_TOL = 0.03
FWD_TOP1_MIN = 0.9


def test_forward_dequantized():
    """A numpy DeepSeek-V3 forward (dsv3_forward.py) of the real fixture: with the bf16 weights it
    reproduces the Megatron logits stored with the fixture (checks the forward itself); with the
    dequantized FP8 view (fp8 and ue8m0) it stays within FWD_REL_TOL of the bf16 logits."""
    try:
        import torch
    except ImportError:
        raise T.Skip("torch is not installed (megatron_logits.pt)")
    d = os.path.join(T.MEGATRON_FIXTURES, DSV3)
    gd = os.path.join(d, "golden")
    cfg = json.load(open(os.path.join(gd, "config.json")))
    ml = torch.load(os.path.join(gd, "megatron_logits.pt"), map_location="cpu")
    ids = np.array(ml["tokens"])
    meg = ml["logits"].double().numpy()
    bf16 = F.forward(cfg, weights_of(T.load_golden_dir(gd)), ids)
    err = np.linalg.norm(bf16 - meg) / np.linalg.norm(meg)
    T.check(err < 1e-5, "the numpy forward of the bf16 weights is not Megatron's (relative error %g)" % err)
    for q in ("fp8", "fp8_ue8m0"):
        with T.Mount(d, ["true_vocab_size=1000", "quant=" + q]) as m:
            v = T.read_view(m.path)
        lg = F.forward(cfg, weights_of(v.tensors), ids)
        rel = np.linalg.norm(lg - bf16) / np.linalg.norm(bf16)
        top1 = float((lg.argmax(-1) == bf16.argmax(-1)).mean())
        maxd = float(np.abs(lg - bf16).max())
        print("    %s: logits vs bf16: relative error %.4f, max abs diff %.4f (max |logit| %.3f), top-1 agreement %.3f"
              % (q, rel, maxd, float(np.abs(bf16).max()), top1))
        T.check(rel <= FWD_REL_TOL and top1 >= FWD_TOP1_MIN,
                "%s: dequantized forward too far from bf16: relative error %.4f (<= %g), top-1 %.3f (>= %g)"
                % (q, rel, FWD_REL_TOL, top1, FWD_TOP1_MIN))
    print("    bf16 forward vs Megatron logits: relative error %.2g" % err)


def test_concurrent_reads():
    """8 threads of random preads on a fresh FP8 mount (caches empty: block rows computed by
    racing threads) give the bytes of a sequential read."""
    import random
    g = T.generate("deepseek_v3", "fp8-conc", tp=2, ep=2, dims={"hidden": 192, "ffn": 320, "moe_ffn": 136,
                                                                 "shared_ffn": 136})
    opts = ["true_vocab_size=%d" % g.true_vocab, "quant=fp8", "shard_size=2MB"]
    with T.Mount(g.ckpt, opts) as m:
        files = T.read_view(m.path).files
    names = sorted(n for n in files if n.endswith(".safetensors"))
    bad = []
    with T.Mount(g.ckpt, opts) as m:
        def reader(i):
            rng = random.Random(i)
            fds = {n: os.open(os.path.join(m.path, n), os.O_RDONLY) for n in names}
            try:
                for _ in range(300):
                    n = rng.choice(names)
                    size = len(files[n])
                    off = rng.randrange(size)
                    ln = rng.randrange(1, min(300000, size - off) + 1)
                    if os.pread(fds[n], ln, off) != files[n][off:off + ln]:
                        bad.append((n, off, ln))
            finally:
                for fd in fds.values():
                    os.close(fd)
        T.run_threads(reader, 8)
    T.check(not bad, "%d concurrent reads differ, first %r" % (len(bad), bad[:1]))
    print("    8 threads x 300 random reads over %d shards: all equal" % len(names))


def test_reference_matches_torch():
    ok = R.torch_agrees()
    if ok is None:
        raise T.Skip("torch is not installed")
    T.check(ok, "the reference's block factors differ from torch's evaluation of DeepGEMM's expressions")


def test_bad_option():
    r = T.run_inspect([os.path.join(T.MEGATRON_FIXTURES, DSV3), "-o", "quant=fp4"])
    T.check(r.rc != 0 and "quant" in r.stderr, "quant=fp4 accepted: %r" % r)


def main():
    r = T.Runner("fp8 view")
    for fn in (test_reference_matches_torch, test_real_dsv3, test_forward_dequantized, test_generated_layouts,
               test_zero_nan_inf_blocks, test_concurrent_reads, test_bad_option):
        r.run(fn.__name__, fn)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
