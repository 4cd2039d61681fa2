#!/usr/bin/python3
"""mcorefs-inspect export on each of its write paths gives the mount's bytes, and stays atomic:

- kernel copies (copy_file_range) of plain rank-file ranges plus pwrites of gathered ones, with
  several threads on ranges that cut tensors (the export says how many bytes went each way);
- the pread/pwrite fallback, forced (MCOREFS_EXPORT_NO_KERNEL_COPY=1) and real (an OUTDIR on
  tmpfs: copy_file_range across file systems is refused);
- --no-sync (no syncfs) writes the same bytes;
- a rank file rewritten in place during the export fails it, naming the file, and leaves no
  file under the target's names (on the kernel-copy path and on the fallback);
- SIGTERM on the fallback path removes the partial files, as on the default path
  (test_inspect_cli covers that one).
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

SHARD = "40MB"            # several output files, each cut into many 256 KiB export ranges
NO_KERNEL = {"MCOREFS_EXPORT_NO_KERNEL_COPY": "1"}
REPORT = re.compile(r"export: (\d+) files, ([\d.]+) MB in [\d.]+ s with (\d+) threads?: ([\d.]+) MB copied by the "
                    r"kernel \(copy_file_range\), ([\d.]+) MB written from memory; (.*)")


def opts(g):
    return "true_vocab_size=%d,shard_size=%s" % (g.true_vocab, SHARD)


def export(g, out, extra=(), env=None):
    r = T.run_cmd([T.MCOREFS_INSPECT, "export", g.ckpt, out, "-o", opts(g)] + list(extra),
                  env=T.sut_env(env))
    T.check(r.rc == 0, "export failed: %r" % r)
    m = REPORT.search(r.stderr)
    T.check(m, "no report line: %r" % r.stderr[-1000:])
    T.check_sanitizer_logs("export")
    return dict(files=int(m.group(1)), mb=float(m.group(2)), threads=int(m.group(3)), kernel_mb=float(m.group(4)),
                user_mb=float(m.group(5)), synced=m.group(6))


def mounted_files(g):
    """name -> bytes of every file the mount shows (the hidden .mcorefs/ left out)."""
    with T.Mount(g.ckpt, opts(g).split(",")) as m:
        out = {}
        for fn in sorted(os.listdir(m.path)):
            if not fn.startswith("."):
                with open(os.path.join(m.path, fn), "rb") as f:
                    out[fn] = f.read()
        return out


def assert_same_as_mount(out, want, label):
    got = sorted(os.listdir(out))
    T.check(got == sorted(want), "%s: export has %r, mount has %r" % (label, got, sorted(want)))
    for fn, data in want.items():
        with open(os.path.join(out, fn), "rb") as f:
            T.check(f.read() == data, "%s: %s differs from the mount's" % (label, fn))


def kernel_copy_path(g, want):
    out = T.scratch("kernel")
    shutil.rmtree(out)
    r = export(g, out, ["--threads", "3"])
    print("    %r" % r, flush=True)
    assert_same_as_mount(out, want, "kernel copies")
    T.check(r["threads"] == 3 and r["files"] == len(want), "report: %r" % r)
    T.check(r["kernel_mb"] > r["mb"] / 2, "the kernel copied too little: %r" % r)
    T.check(r["user_mb"] > 0, "nothing gathered (row-split tensors are): %r" % r)
    T.check(r["synced"].startswith("synced to disk"), "default export not synced: %r" % r)


def forced_fallback(g, want):
    out = T.scratch("fallback")
    shutil.rmtree(out)
    r = export(g, out, ["--threads", "2"], env=NO_KERNEL)
    print("    %r" % r, flush=True)
    assert_same_as_mount(out, want, "forced fallback")
    T.check(r["kernel_mb"] == 0 and r["user_mb"] == r["mb"], "fallback still used the kernel: %r" % r)


def tmpfs_fallback(g, want):
    if not os.path.isdir("/dev/shm") or os.statvfs("/dev/shm").f_fsid == os.statvfs(g.ckpt).f_fsid:
        print("    no separate /dev/shm: skipped", flush=True)
        return
    out = "/dev/shm/mcorefs-export-test-%d" % os.getpid()
    shutil.rmtree(out, ignore_errors=True)
    try:
        r = export(g, out)
        print("    %r" % r, flush=True)
        assert_same_as_mount(out, want, "tmpfs OUTDIR")
        T.check(r["kernel_mb"] + r["user_mb"] == r["mb"] or abs(r["kernel_mb"] + r["user_mb"] - r["mb"]) < 0.2,
                "bytes unaccounted: %r" % r)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def no_sync(g, want):
    out = T.scratch("nosync")
    shutil.rmtree(out)
    r = export(g, out, ["--no-sync"])
    assert_same_as_mount(out, want, "--no-sync")
    T.check("not synced" in r["synced"], "report: %r" % r)


def partials(d):
    return sorted(n for n in os.listdir(d) if "partial" in n) if os.path.isdir(d) else []


def stopped_export(g, out, env, act):
    """Start an export, freeze it (SIGSTOP) at its first progress line, run act(pid), let it go on.
    Returns (returncode, stderr), or None when it had already finished (no partial file)."""
    argv = [T.MCOREFS_INSPECT, "export", g.ckpt, out, "-o", opts(g), "--threads", "1"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=T.sut_env(env), start_new_session=True)
    try:
        line = p.stderr.readline().decode()
        os.kill(p.pid, signal.SIGSTOP)
        T.check(line.startswith("export:"), "no progress line: %r" % line)
        running = bool(partials(out))
        if running:
            act(p.pid)
        os.kill(p.pid, signal.SIGCONT)
        err = line + p.communicate(timeout=T.DEFAULT_TIMEOUT)[1].decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    print("    partial files while running: %r; exit %r; stderr: %s" % (running, p.returncode, err.strip()[-400:]),
          flush=True)
    return (p.returncode, err) if running else None


def rewrite_in_place(path):
    with open(path, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(b)                 # the same byte: a rewrite all the same (mtime, ctime)


def changed_during_export(g, env):
    # a private copy of the checkpoint: the test rewrites one of its rank files
    ckpt = T.scratch("changed-ckpt")
    shutil.rmtree(ckpt)
    shutil.copytree(g.ckpt, ckpt)
    h = type("G", (), {"ckpt": ckpt, "true_vocab": g.true_vocab})
    victim = sorted(glob.glob(os.path.join(ckpt, "iter_*", "mp_rank_*", "*.pt")))[-1]
    for attempt in range(3):
        out = os.path.join(T.scratch("changed"), "out")
        got = stopped_export(h, out, env, lambda pid: rewrite_in_place(victim))
        if got:
            break
        shutil.copytree(g.ckpt, ckpt, dirs_exist_ok=True)
    T.check(got, "the export finished before the rank file could be changed, 3 times")
    rc, err = got
    T.check(rc == 1, "export of a changing checkpoint: exit %r, expected 1" % rc)
    T.check(victim in err and "changed" in err, "the error does not name the changed file: %r" % err[-600:])
    T.check(not os.listdir(out), "a failed export left files: %r" % os.listdir(out))
    T.check_sanitizer_logs("changed during export")


def sigterm_on_fallback(g):
    for attempt in range(3):
        out = os.path.join(T.scratch("sigterm"), "out")
        got = stopped_export(g, out, NO_KERNEL, lambda pid: os.kill(pid, signal.SIGTERM))
        if got:
            break
    T.check(got, "the export finished before it could be interrupted, 3 times")
    T.check(got[0] == -signal.SIGTERM, "exit %r, expected death by SIGTERM" % got[0])
    T.check(not os.listdir(out), "an interrupted export left files: %r" % os.listdir(out))
    T.check_sanitizer_logs("interrupted fallback export")


def bad_threads():
    for v in ("0", "65", "x"):
        T.expect_inspect_failure(["export", os.path.join(T.MEGATRON_FIXTURES, "head_gpt_tp2pp2_torch"),
                                  T.scratch("bad") + "/out", "--threads", v], ["--threads needs a number", v])


def main():
    r = T.Runner("export-paths")
    r.run("bad-threads", bad_threads)
    g, want = [], {}

    def gen():
        g.append(T.generate("llama", "export-paths", tp=2, pp=2, seed=21,
                            dims=dict(hidden=512, heads=8, groups=4, ffn=1408, layers=4, vocab=32000)))
        want.update(mounted_files(g[0]))
        T.check(len([n for n in want if n.endswith(".safetensors")]) >= 2, "one shard only: %r" % sorted(want))
    r.run("generate-model", gen)
    if g:
        r.run("kernel-copy-path", kernel_copy_path, g[0], want)
        r.run("forced-fallback-path", forced_fallback, g[0], want)
        r.run("tmpfs-outdir-fallback", tmpfs_fallback, g[0], want)
        r.run("no-sync", no_sync, g[0], want)
        r.run("rank-file-changed-kernel-path", changed_during_export, g[0], None)
        r.run("rank-file-changed-fallback", changed_during_export, g[0], NO_KERNEL)
        r.run("sigterm-on-fallback", sigterm_on_fallback, g[0])
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
