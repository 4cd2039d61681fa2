"""`cp -r` of the mount against plain `cp -r` of the same bytes (issue 15's "cp -r of the mount /
plain cp" row), with `cp -r` of the ceiling file system (ceilingfs, same file sizes, same readahead)
as the same-run bound for any FUSE file system. Each run starts from the same state: the previous
copy removed and synced (its writeback would land in the next run otherwise), caches dropped, rank
files and the plain copy warm. No sync after the copy: all three leave their bytes in the page cache.

bench.py calls measure() after the concurrent-readers row and report() with the model's rows; `B` is
the bench module itself (its Mount, ceiling, warm, drop_caches, sync, add, R, OUT helpers)."""
import shutil
import subprocess
import time

TARGET = 0.8


def _cp(B, src, out):
    shutil.rmtree(out, ignore_errors=True)
    B.sync()
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(out)], check=True)
    return time.perf_counter() - t0


def measure(B, m, ra, runs):
    """Samples '<name>/cpr/plain', '<name>/cpr/ceiling', '<name>/cpr/mcorefs' (seconds)."""
    out = B.OUT / "cpr"
    B.OUT.mkdir(parents=True, exist_ok=True)
    sizes = m["st_sizes"]
    plain_files = sorted(m["plain"].iterdir())
    for r in range(runs):
        B.drop_caches()
        B.warm(m["warm"])
        B.warm(plain_files)
        B.add(m["name"] + "/cpr/plain", _cp(B, m["plain"], out))
        with B.ceiling(sizes, ra) as c:
            B.add(m["name"] + "/cpr/ceiling", _cp(B, c.mnt, out))
        B.warm(m["warm"])
        with B.mcorefs(m, ra) as mt:   # the mount the plain copy was made from
            B.add(m["name"] + "/cpr/mcorefs", _cp(B, mt.mnt, out))
        B.log("%s cp -r run %d/%d done" % (m["name"], r + 1, runs))
    shutil.rmtree(out, ignore_errors=True)
    B.sync()
    B.META.setdefault("cpr", {})[m["name"]] = dict(ra=ra, bytes=sum(sizes))


def report(B, T, m):
    n = m["name"]
    if not B.R.get(n + "/cpr/mcorefs"):
        return
    meta = B.META["cpr"][n]
    nb = meta["bytes"]
    T.sub("%s: cp -r to local disk, sources warm, no sync, read_ahead_kb %s (each run after the previous "
          "copy was removed and synced)" % (n, meta["ra"]))
    T.row("plain cp -r of the same safetensors files", B.R[n + "/cpr/plain"], nbytes=nb)
    T.row("cp -r of the ceiling FUSE fs (same sizes)", B.R[n + "/cpr/ceiling"], nbytes=nb)
    T.row("cp -r of the mcorefs mount (fresh mount)", B.R[n + "/cpr/mcorefs"], nbytes=nb)
    plain, ceil, mine = B.med(n + "/cpr/plain"), B.med(n + "/cpr/ceiling"), B.med(n + "/cpr/mcorefs")
    T.ratio("%s cp -r of the mount / plain cp -r" % n, plain / mine, ">= %.1f" % TARGET, plain / mine >= TARGET,
            "%.2f" % (plain / mine))
    T.info("%s cp -r of the ceiling fs / plain cp -r (the bound for any FUSE fs)" % n, "%.2f" % (plain / ceil))
    T.info("%s cp -r of the mount / cp -r of the ceiling fs" % n, "%.2f" % (ceil / mine))
