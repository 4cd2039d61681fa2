"""Concurrent readers: 8 processes each reading a different shard file at once, as
tensor-parallel loaders (vLLM TP=8) do, on a fresh mcorefs mount and on the ceiling file system
(ceilingfs, same file sizes, same readahead), interleaved run by run.

bench.py calls measure() after the read rows and report() to add the rows; `B` is the bench
module itself (its Mount, ceiling, warm, drop_caches, add, R helpers)."""
import math
import subprocess
import time

READERS = 8


def _read_parallel(B, files):
    """Wall seconds from starting READERS `benchtool read` processes (1 MiB read()s, one file
    each) to the last one's end; and the bytes they read."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen([B.BENCHTOOL, "read", str(B.MiB), str(f)], stdout=subprocess.PIPE, text=True)
             for f in files]
    total = 0
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise RuntimeError("benchtool read failed (%d)" % p.returncode)
        total += int(out.split()[0])
    return time.perf_counter() - t0, total


def _shard_size(m):
    """A shard size that splits the model into more than READERS virtual files."""
    return "%dMB" % max(1, math.floor(m["st_bytes"] / (READERS + 1) / 1e6))


def measure(B, m, ra, runs):
    """Samples '<name>/conc/ceiling', '<name>/conc/mcorefs' (seconds) and '<name>/conc/bytes'."""
    shard = _shard_size(m)
    mnt = B.WORK / "mcorefs-conc"
    opts = "true_vocab_size=%d,shard_size=%s" % (m["vocab"], shard)
    argv = [B.MCOREFS, str(m["ckpt"]), str(mnt), "-f", "-o", opts]
    B.warm(m["warm"])
    with B.Mount(argv, mnt, "config.json", ra) as mt:
        names = sorted(p.name for p in mt.mnt.iterdir() if p.name.endswith(".safetensors"))[:READERS]
        sizes = [(mt.mnt / n).stat().st_size for n in names]
    if len(names) < READERS:
        B.log("concurrent readers: only %d shard files with shard_size=%s; row skipped" % (len(names), shard))
        return
    for r in range(runs):
        B.drop_caches()
        B.warm(m["warm"])
        with B.ceiling(sizes, ra) as c:
            t, n = _read_parallel(B, [c.mnt / ("f%d.bin" % i) for i in range(READERS)])
            B.add(m["name"] + "/conc/ceiling", t)
        B.warm(m["warm"])
        with B.Mount(argv, mnt, "config.json", ra) as mt:
            t, n = _read_parallel(B, [mt.mnt / f for f in names])
            B.add(m["name"] + "/conc/mcorefs", t)
            B.add(m["name"] + "/conc/daemon_cpu", mt.cpu_s())
        B.add(m["name"] + "/conc/bytes", n)
        B.log("%s concurrent readers run %d/%d done" % (m["name"], r + 1, runs))
    B.META.setdefault("conc", {})[m["name"]] = dict(shard=shard, ra=ra)


def report(B, T, m):
    """Rows and the ratio (target >= 0.85) for model m, if measured."""
    n = m["name"]
    if not B.R.get(n + "/conc/mcorefs"):
        return
    meta = B.META["conc"][n]
    nbytes = B.R[n + "/conc/bytes"][0]
    T.sub("%s: %d readers at once, each on its own shard file (shard_size=%s, %.2f GB in all), read_ahead_kb %s"
          % (n, READERS, meta["shard"], nbytes / 1e9, meta["ra"]))
    T.row("ceiling: %d concurrent readers" % READERS, B.R[n + "/conc/ceiling"], nbytes=nbytes)
    T.row("mcorefs: %d concurrent readers, fresh mount" % READERS, B.R[n + "/conc/mcorefs"], nbytes=nbytes,
          note="daemon CPU: %.2f s" % B.med(n + "/conc/daemon_cpu"))
    r = B.med(n + "/conc/ceiling") / B.med(n + "/conc/mcorefs")
    T.ratio("%s %d concurrent readers / ceiling" % (n, READERS), r, ">= 0.85", r >= 0.85, "%.2f" % r)
