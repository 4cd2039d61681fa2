#!/usr/bin/python3
"""Bad inputs must fail cleanly, and a good mount must be strictly read-only.

Every bad case: the daemon exits non-zero within the timeout, prints exactly one stderr
line `mcorefs: ...` naming the offending file (where there is one), leaves no mount and no
process behind; mcorefs-inspect on the same input exits 1 with one `mcorefs-inspect: ...`
line.  Damaged checkpoints are made from copies of the real fixtures (independent of the
fixture generator).
"""
import errno
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"
DSV3 = "head_dsv3_tp2ep2_torch"
IT = "iter_0000010"
RF = "model_optim_rng.pt"


def rank(ckpt, d):
    return os.path.join(ckpt, IT, d, RF)


def both(ckpt, names=(), options=None, inspect_names=None):
    """The daemon and inspect both reject the input."""
    T.expect_mount_failure(ckpt, options, names)
    args = [ckpt] + (["-o", ",".join(options)] if options else [])
    T.expect_inspect_failure(args, names if inspect_names is None else inspect_names)


# ---- damaged rank files -------------------------------------------------------------

def truncated(keep):
    """keep: a fraction of the file (float) or a byte count (int)."""
    ck = T.copy_fixture(GPT)
    p = rank(ck, "mp_rank_01_001")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(int(size * keep) if isinstance(keep, float) else keep)
    both(ck, ["mp_rank_01_001"])


def truncated_tail(nbytes):
    """Cut off only the end (EOCD survives partially or not at all)."""
    ck = T.copy_fixture(GPT)
    p = rank(ck, "mp_rank_00_001")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - nbytes)
    both(ck, ["mp_rank_00_001"])


def zeroed_central_directory():
    ck = T.copy_fixture(GPT)
    p = rank(ck, "mp_rank_00_001")
    data = bytearray(open(p, "rb").read())
    cd_off, cd_size, _, _ = T.zip_layout(bytes(data))
    data[cd_off:cd_off + cd_size] = bytes(cd_size)
    open(p, "wb").write(data)
    both(ck, ["mp_rank_00_001"])


def zeroed_eocd():
    ck = T.copy_fixture(GPT)
    p = rank(ck, "mp_rank_01_000")
    data = bytearray(open(p, "rb").read())
    eocd = bytes(data).rfind(b"PK\x05\x06")
    data[eocd:] = bytes(len(data) - eocd)
    open(p, "wb").write(data)
    both(ck, ["mp_rank_01_000"])


def corrupt_pickle(fix_crc, where):
    ck = T.copy_fixture(GPT)
    p = rank(ck, "mp_rank_01_000")
    data = bytearray(open(p, "rb").read())
    _, _, _, ents = T.zip_layout(bytes(data))
    e = [x for x in ents if x["name"].endswith("/data.pkl")][0]
    start, size = e["data_offset"], e["size"]
    if where == "start":
        # right after PROTO 2: 0xff is not a pickle opcode
        data[start + 2:start + 34] = b"\xff" * 32
    elif where == "middle":
        mid = start + size // 2
        for i in range(mid, mid + 64):
            data[i] ^= 0xA5
    else:  # "end": drop the STOP opcode and the bytes before it
        data[start + size - 16:start + size] = b"\xff" * 16
    if fix_crc:
        T.zip_fix_crc(data, e)
    open(p, "wb").write(data)
    both(ck, ["mp_rank_01_000"])


def missing_rank_file(remove_dir):
    ck = T.copy_fixture(GPT)
    d = os.path.join(ck, IT, "mp_rank_01_001")
    if remove_dir:
        shutil.rmtree(d)
    else:
        os.unlink(os.path.join(d, RF))
    # the file the user will look for, by its path under the iteration folder
    both(ck, [os.path.join(IT, "mp_rank_01_001", RF)])


def args_disagree(key, value, victim="mp_rank_01_001"):
    ck = T.copy_fixture(GPT)
    T.rewrite_rank_file(rank(ck, victim), lambda sd: setattr(sd["args"], key, value))
    both(ck, [victim])


def unknown_family_layernorm():
    ck = T.copy_fixture(GPT)
    for d in sorted(os.listdir(os.path.join(ck, IT))):
        T.rewrite_rank_file(rank(ck, d), lambda sd: setattr(sd["args"], "normalization",
                                                            "LayerNorm"))
    both(ck, [])


def unknown_family_mla_dense():
    ck = T.copy_fixture(DSV3)

    def mut(sd):
        sd["args"].num_experts = None
        sd["args"].moe_layer_freq = 1
    for d in sorted(os.listdir(os.path.join(ck, IT))):
        T.rewrite_rank_file(rank(ck, d), mut)
    both(ck, [])


def empty_dir():
    d = T.scratch("empty")
    both(d, [d])


def nonexistent_dir():
    d = os.path.join(T.scratch("gone"), "no-such-checkpoint")
    both(d, [d])


def rank_file_as_ckpt():
    ck = T.copy_fixture(GPT)
    p = rank(ck, "mp_rank_00_000")
    both(p, [p])


def latest_points_nowhere():
    ck = T.copy_fixture(GPT)
    with open(os.path.join(ck, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("99\n")
    T.expect_mount_failure(ck, None, [])
    r = T.expect_inspect_failure([ck], [])
    # the message must say what is missing
    for res in (r,):
        T.check("99" in res.stderr, "message does not mention iteration 99: %r" % res.stderr)


def garbage_latest_file():
    ck = T.copy_fixture(GPT)
    with open(os.path.join(ck, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("not a number\n")
    both(ck, ["latest_checkpointed_iteration.txt"])


def bad_option(opt, name):
    ck = os.path.join(T.MEGATRON_FIXTURES, GPT)
    both(ck, [name], options=[opt])


def hf_config_missing():
    ck = os.path.join(T.MEGATRON_FIXTURES, GPT)
    f = os.path.join(T.scratch("cfg"), "nope.json")
    both(ck, [f], options=["hf_config=" + f])


def hf_config_not_json():
    ck = os.path.join(T.MEGATRON_FIXTURES, GPT)
    f = os.path.join(T.scratch("cfg"), "bad.json")
    open(f, "w").write("{ not json")
    both(ck, [f], options=["hf_config=" + f])


def mountpoint_missing():
    ck = os.path.join(T.MEGATRON_FIXTURES, GPT)
    mnt = os.path.join(T.scratch("nomnt"), "missing")
    r = T.run_cmd([T.MCOREFS_BIN, ck, mnt])
    T.check(r.rc not in (0, None), "mount on a missing mountpoint: %r" % r)
    T.check(not T.is_mounted(mnt), "mounted anyway")
    T.check_sanitizer_logs()


# ---- read-only behaviour of a good mount ----------------------------------------------

def read_only():
    ck = T.copy_fixture(GPT)
    before = T.tree_snapshot(ck)
    golden = T.load_golden_dir(os.path.join(T.MEGATRON_FIXTURES, GPT, "golden"))
    probs = []
    with T.Mount(ck, ["true_vocab_size=1000"]) as m:
        v = T.read_view(m.path)
        f = os.path.join(m.path, v.st_files[0])
        cfg = os.path.join(m.path, "config.json")
        new = os.path.join(m.path, "new-file")

        def expect_erofs(what, fn, allowed=(errno.EROFS,)):
            try:
                fn()
            except OSError as e:
                if e.errno not in allowed:
                    probs.append("%s: errno %d (%s), expected %s" % (
                        what, e.errno, errno.errorcode.get(e.errno), "/".join(
                            errno.errorcode[a] for a in allowed)))
                return
            probs.append("%s: succeeded, expected EROFS" % what)

        def open_close(path, flags):
            os.close(os.open(path, flags, 0o644))
        expect_erofs("open O_WRONLY", lambda: open_close(f, os.O_WRONLY))
        expect_erofs("open O_RDWR", lambda: open_close(cfg, os.O_RDWR))
        expect_erofs("open O_WRONLY|O_TRUNC", lambda: open_close(cfg, os.O_WRONLY | os.O_TRUNC))
        expect_erofs("open O_APPEND", lambda: open_close(cfg, os.O_WRONLY | os.O_APPEND))
        expect_erofs("create", lambda: open_close(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        expect_erofs("create over existing", lambda: open_close(cfg, os.O_WRONLY | os.O_CREAT))
        expect_erofs("mknod", lambda: os.mknod(new, 0o644))
        expect_erofs("unlink", lambda: os.unlink(f))
        expect_erofs("mkdir", lambda: os.mkdir(os.path.join(m.path, "d")))
        expect_erofs("rmdir of root entry", lambda: os.rmdir(cfg), (errno.EROFS, errno.ENOTDIR))
        expect_erofs("rename", lambda: os.rename(cfg, new))
        expect_erofs("rename over", lambda: os.rename(cfg, f))
        expect_erofs("chmod file", lambda: os.chmod(f, 0o644))
        expect_erofs("chmod root", lambda: os.chmod(m.path, 0o755))
        expect_erofs("chown", lambda: os.chown(f, 1, 1))
        expect_erofs("truncate", lambda: os.truncate(f, 0))
        expect_erofs("utime", lambda: os.utime(f, (1, 1)))
        expect_erofs("symlink", lambda: os.symlink("config.json", new))
        expect_erofs("link", lambda: os.link(cfg, new))
        if v.meta_dir:
            mf = [os.path.join(v.meta_dir, n) for n in sorted(os.listdir(v.meta_dir))]
            expect_erofs("create in .mcorefs/",
                         lambda: open_close(os.path.join(v.meta_dir, "x"),
                                            os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            expect_erofs("mkdir in .mcorefs/", lambda: os.mkdir(os.path.join(v.meta_dir, "d")))
            expect_erofs("rmdir .mcorefs/", lambda: os.rmdir(v.meta_dir))
            for q in mf:
                if os.path.isfile(q):
                    expect_erofs("open %s O_WRONLY" % os.path.basename(q),
                                 lambda q=q: open_close(q, os.O_WRONLY))
                    expect_erofs("unlink %s" % os.path.basename(q), lambda q=q: os.unlink(q))
        expect_erofs("setxattr", lambda: os.setxattr(f, "user.x", b"1"),
                     (errno.EROFS, errno.ENOTSUP))
        for what, fn in (("stat of a missing name", lambda: os.stat(new)),
                         ("open of a missing name", lambda: open_close(new, os.O_RDONLY))):
            try:
                fn()
                probs.append("%s succeeded" % what)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    probs.append("%s: errno %d, expected ENOENT" % (what, e.errno))
        st = os.statvfs(m.path)
        if not st.f_flag & os.ST_RDONLY:
            probs.append("statvfs f_flag lacks ST_RDONLY (mount not flagged read-only)")
        # nothing changed in the view
        v2 = T.read_view(m.path)
        T.check(v2.files == v.files, "the view changed after write attempts")
        T.check(not os.path.exists(new), "new-file exists after failed create")
        T.assert_same_tensors(v.tensors, golden, "mount", "golden")
    after = T.tree_snapshot(ck)
    probs += ["checkpoint dir: " + p for p in T.snapshot_diff(before, after)]
    T.check(not probs, "read-only violations:\n  " + "\n  ".join(probs))


def sigterm_unmounts():
    """SIGTERM to the daemon: it unmounts and exits (no stale mount, no sanitizer report)."""
    import signal
    import time
    ck = os.path.join(T.MEGATRON_FIXTURES, GPT)
    m = T.Mount(ck, ["true_vocab_size=1000"])
    with m:
        T.check(m.pids, "could not find the daemon's pid for %s" % m.path)
        for p in m.pids:
            os.kill(p, signal.SIGTERM)
        end = time.monotonic() + 20
        while time.monotonic() < end and (T.is_mounted(m.path) or T.daemon_pids(m.path)):
            time.sleep(0.05)
        T.check(not T.daemon_pids(m.path), "daemon still running 20s after SIGTERM")
        T.check(not T.is_mounted(m.path), "mount still present after the daemon exited on SIGTERM")


def main():
    r = T.Runner("bad-inputs")
    r.run("truncated-half", truncated, 0.5)
    r.run("truncated-10-bytes", truncated, 10)
    r.run("truncated-empty", truncated, 0)
    r.run("truncated-tail-10", truncated_tail, 10)
    r.run("truncated-tail-1", truncated_tail, 1)
    r.run("zeroed-central-directory", zeroed_central_directory)
    r.run("zeroed-eocd", zeroed_eocd)
    r.run("corrupt-pickle-start-crc-fixed", corrupt_pickle, True, "start")
    r.run("corrupt-pickle-middle-crc-fixed", corrupt_pickle, True, "middle")
    r.run("corrupt-pickle-end-crc-fixed", corrupt_pickle, True, "end")
    r.run("corrupt-pickle-stale-crc", corrupt_pickle, False, "start")
    r.run("missing-rank-file", missing_rank_file, False)
    r.run("missing-rank-dir", missing_rank_file, True)
    r.run("args-disagree-hidden_size", args_disagree, "hidden_size", 96)
    r.run("args-disagree-num_layers", args_disagree, "num_layers", 6)
    r.run("args-disagree-first-file", args_disagree, "hidden_size", 96, "mp_rank_00_000")
    r.run("unknown-family-layernorm", unknown_family_layernorm)
    r.run("unknown-family-mla-dense", unknown_family_mla_dense)
    r.run("empty-dir", empty_dir)
    r.run("nonexistent-dir", nonexistent_dir)
    r.run("rank-file-as-ckpt", rank_file_as_ckpt)
    r.run("latest-points-nowhere", latest_points_nowhere)
    r.run("latest-garbage", garbage_latest_file)
    for opt, name in (("shard_size=abc", "shard_size"), ("shard_size=", "shard_size"),
                      ("shard_size=10XB", "shard_size"), ("shard_size=-5", "shard_size"),
                      ("dtype=int4", "dtype"), ("iteration=abc", "iteration"),
                      ("iteration=7", "7"),
                      ("true_vocab_size=abc", "true_vocab_size"),
                      ("true_vocab_size=0", "true_vocab_size"),
                      ("true_vocab_size=5000", "true_vocab_size"),
                      ("arch=NoSuchForCausalLM", "NoSuchForCausalLM")):
        r.run("bad-option:%s" % opt, bad_option, opt, name)
    r.run("hf_config-missing", hf_config_missing)
    r.run("hf_config-not-json", hf_config_not_json)
    r.run("mountpoint-missing", mountpoint_missing)
    r.run("read-only", read_only)
    r.run("sigterm-unmounts", sigterm_unmounts)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
