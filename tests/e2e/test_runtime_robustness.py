#!/usr/bin/python3
"""A long-lived mount under load and under damage:
- 16 concurrent readers (sequential reads, random preads, mmap) over the same and different
  virtual files for a bounded time, every byte checked against the generator's reference,
  daemon memory flat;
- a rank file truncated after mount: EIO for the affected reads, every other file still right,
  the daemon alive;
- a reader killed mid-read, fusermount3 -u while reading, SIGTERM to the daemon: clean unmount,
  no stale mount;
- the export command writes the same bytes as `cp -r` of the mount;
- the hidden .mcorefs/ folder: manifest names every tensor's sources, stats count reads.
"""
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

STRESS_SECONDS = float(os.environ.get("MCOREFS_STRESS_SECONDS", "8"))
READERS = 16


def expected_files(mnt, tensors):
    """Expected bytes of every safetensors file: the header as read (validated by the strict
    parser) followed by the reference tensors at the offsets the header gives."""
    out = {}
    for fn in sorted(os.listdir(mnt)):
        if not fn.endswith(".safetensors"):
            continue
        with open(os.path.join(mnt, fn), "rb") as f:
            data = f.read()
        info = T.parse_safetensors(data, fn)[1]
        hdr_len = info["data_start"]
        buf = bytearray(data[:hdr_len])
        hdr = json.loads(data[8:hdr_len])
        body = bytearray(len(data) - hdr_len)
        for name, meta in hdr.items():
            if name == "__metadata__":
                continue
            b, e = meta["data_offsets"]
            body[b:e] = tensors[name][2]
        out[fn] = bytes(buf + body)
    return out


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_concurrent_readers():
    g = T.generate("mixtral", tp=2, ep=2, etp=1, seed=7)
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab, "shard_size=300KB"]) as m:
        exp = expected_files(m.path, g.tensors)
        T.check(len(exp) >= 2, "expected several shards, got %r" % list(exp))
        names = sorted(exp)
        errors, checked = [], [0]
        lock = threading.Lock()
        stop = time.monotonic() + STRESS_SECONDS

        def fail(msg):
            with lock:
                errors.append(msg)

        def reader(i):
            rng = random.Random(i)
            while time.monotonic() < stop and not errors:
                fn = names[rng.randrange(len(names))] if i % 2 else names[i % len(names)]
                path, want = os.path.join(m.path, fn), exp[fn]
                kind = i % 3
                try:
                    if kind == 0:                       # sequential, odd buffer size
                        with open(path, "rb", buffering=0) as f:
                            got = bytearray()
                            while True:
                                b = f.read(65536 + 37)
                                if not b:
                                    break
                                got += b
                        if bytes(got) != want:
                            fail("%s: sequential read differs" % fn)
                        n = len(got)
                    elif kind == 1:                     # random preads
                        fd = os.open(path, os.O_RDONLY)
                        n = 0
                        try:
                            for _ in range(64):
                                off = rng.randrange(len(want))
                                ln = rng.randrange(1, 200000)
                                b = os.pread(fd, ln, off)
                                if b != want[off:off + ln]:
                                    fail("%s: pread(%d, %d) differs" % (fn, off, ln))
                                    break
                                n += len(b)
                        finally:
                            os.close(fd)
                    else:                               # mmap, touch pages out of order
                        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                            for _ in range(32):
                                off = rng.randrange(len(want))
                                if mm[off:off + 4096] != want[off:off + 4096]:
                                    fail("%s: mmap bytes at %d differ" % (fn, off))
                                    break
                            n = 32 * 4096
                    with lock:
                        checked[0] += n
                except OSError as e:
                    fail("%s: %s" % (fn, e))

        pid = m.pids[0]
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
        rss0 = rss_kb(pid)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss1 = rss_kb(pid)
        T.check(not errors, "; ".join(errors[:5]))
        T.check(checked[0] > 0, "nothing was read")
        # per-thread scratch buffers (a few MiB each) are allowed; growth with bytes read is not
        T.check(rss1 - rss0 < 200 * 1024, "daemon RSS grew from %d kB to %d kB" % (rss0, rss1))
        print("    %d readers x %.0fs: %.1f MB verified, daemon RSS %d -> %d kB"
              % (READERS, STRESS_SECONDS, checked[0] / 1e6, rss0, rss1))


def copy_ckpt(g):
    dst = T.scratch("ckpt-copy")
    shutil.rmtree(dst)
    shutil.copytree(g.ckpt, dst)
    return dst


def rank_files(ckpt):
    out = []
    for root, _, files in os.walk(ckpt):
        out += [os.path.join(root, f) for f in files if f == "model_optim_rng.pt"]
    return sorted(out)


def test_truncated_after_mount():
    g = T.generate("llama", tp=2, pp=2, seed=3)
    ckpt = copy_ckpt(g)
    with T.Mount(ckpt, ["true_vocab_size=%d" % g.true_vocab, "shard_size=150KB"]) as m:
        layout = T.safetensors_headers(m.path)   # before the damage
        victim = rank_files(ckpt)[-1]            # mp_rank_01_001: the last stage's tp 1
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 3)
        eio, good = T.read_tensors_expect_eio(m.path, layout, g.tensors)
        T.check(eio, "no read failed although %s was truncated" % victim)
        T.check(good > 0, "every read failed")
        with open(os.path.join(m.path, "config.json")) as f:
            json.load(f)                          # the daemon is still alive
        print("    %d tensors EIO, %d tensors still correct" % (len(eio), good))


def test_kill_reader_and_unmount_while_reading():
    g = T.generate("qwen2", tp=2, seed=5)
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab]) as m:
        path = os.path.join(m.path, "model.safetensors")
        p = subprocess.Popen(["sh", "-c", "while :; do cat '%s' > /dev/null; done" % path])
        time.sleep(0.5)
        p.kill()
        p.wait()
        with open(path, "rb") as f:
            T.check(f.read() == expected_files(m.path, g.tensors)["model.safetensors"], "bytes differ after a killed reader")
    # fusermount3 -u while a reader holds the file: unmount must not leave a stale mount
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab]) as m:
        path = os.path.join(m.path, "model.safetensors")
        p = subprocess.Popen(["sh", "-c", "while :; do cat '%s' > /dev/null 2>&1 || exit 0; done" % path])
        time.sleep(0.3)
        r = subprocess.run(["fusermount3", "-u", "-z", m.path], capture_output=True, text=True)
        T.check(r.returncode == 0, "lazy unmount failed: %s" % r.stderr)
        p.kill()
        p.wait()
        deadline = time.monotonic() + 10
        while T.is_mounted(m.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        T.check(not T.is_mounted(m.path), "stale mount after fusermount3 -u -z")


def test_sigterm_unmounts():
    g = T.generate("llama", tp=1, seed=9)
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab]) as m:
        for pid in m.pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while T.is_mounted(m.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        T.check(not T.is_mounted(m.path), "still mounted 10 s after SIGTERM")


def test_export_equals_cp():
    g = T.generate("qwen3_moe", tp=2, ep=2, seed=11)
    out = T.scratch("export")
    shutil.rmtree(out)
    opts = "true_vocab_size=%d,shard_size=200KB" % g.true_vocab
    r = T.run_cmd([T.MCOREFS_INSPECT, "export", g.ckpt, out, "-o", opts])
    T.check(r.rc == 0, "export failed: %s" % r.stderr)
    T.check(not [f for f in os.listdir(out) if f.startswith(".")], "temp files left: %r" % os.listdir(out))
    with T.Mount(g.ckpt, opts.split(",")) as m:
        mounted = sorted(f for f in os.listdir(m.path) if not f.startswith("."))
        T.check(sorted(os.listdir(out)) == mounted, "export has %r, mount has %r" % (sorted(os.listdir(out)), mounted))
        for fn in mounted:
            with open(os.path.join(m.path, fn), "rb") as a, open(os.path.join(out, fn), "rb") as b:
                T.check(a.read() == b.read(), "%s differs between export and mount" % fn)
    v = T.read_view(out, shard_size=200000, check_modes=False)
    T.assert_same_tensors(v.tensors, g.tensors, "export", "reference")
    r = T.run_cmd([T.MCOREFS_INSPECT, "export", g.ckpt, out, "-o", opts])
    T.check(r.rc == 1 and "exists" in r.stderr, "a second export must refuse to overwrite: rc=%r %s" % (r.rc, r.stderr))


def test_manifest_and_stats():
    g = T.generate("deepseek_v3", tp=2, ep=2, mtp=1, seed=13)
    with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab]) as m:
        meta = os.path.join(m.path, ".mcorefs")
        T.check(sorted(os.listdir(meta)) == ["manifest.json", "stats"], "%r" % os.listdir(meta))
        man = json.load(open(os.path.join(meta, "manifest.json")))
        T.check(set(man["tensors"]) == set(g.tensors), "manifest names differ from the reference")
        ranks = set(man["rank_files"])
        for name, t in man["tensors"].items():
            T.check(t["pieces"], "%s has no pieces" % name)
            for p in t["pieces"]:
                T.check(man["rank_files"][p[0]] in ranks, "%s: bad rank file index" % name)
        with open(os.path.join(m.path, "model.safetensors"), "rb") as f:
            n = len(f.read())
        stats = dict(l.split(" ", 1) for l in open(os.path.join(meta, "stats")).read().splitlines())
        T.check(int(stats["bytes_served"]) >= n, "stats bytes_served %s < %d read" % (stats["bytes_served"], n))


def main():
    r = T.Runner("runtime robustness")
    r.run("concurrent_readers", test_concurrent_readers)
    r.run("truncated_after_mount", test_truncated_after_mount)
    r.run("kill_reader_and_unmount_while_reading", test_kill_reader_and_unmount_while_reading)
    r.run("sigterm_unmounts", test_sigterm_unmounts)
    r.run("export_equals_cp", test_export_equals_cp)
    r.run("manifest_and_stats", test_manifest_and_stats)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
