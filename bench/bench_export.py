"""Export section of the benchmark (called from bench.py; B is the bench module).

Per model and run, each from dropped caches, interleaved:
  - `cp -r` of the mount vs the Python torch.load converter (rank files warm), as before;
  - `mcorefs-inspect export` vs a plain `cp -r` of the same bytes (the plain copy made by
    make_plain): sources warm (rank files / plain files in the page cache) and cold (nothing
    cached), without sync (both end in the page cache: export --no-sync vs cp), and synced
    (export's one syncfs vs cp followed by `sync -f`, a syncfs of the same file system).
Ratios are plain cp time / export time (1.0: as fast as cp); the target is >= 0.9.
"""
import filecmp
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

EXPORT_TARGET = 0.9
# (key, sources warm, synced, label)
VARIANTS = [
    ("warm", True, False, "sources warm, no sync (export --no-sync / cp -r)"),
    ("warm_sync", True, True, "sources warm, synced (export / cp -r + sync -f)"),
    ("cold", False, False, "sources cold, no sync (export --no-sync / cp -r)"),
]


def inspect_bin():
    return os.environ.get("MCOREFS_INSPECT_BIN") or str(pathlib.Path(os.environ["MCOREFS_BIN"]).parent / "mcorefs-inspect")


def _timed_cpu(argv):
    """Run argv under /usr/bin/time; (wall s, user+system CPU s of it and its children, max RSS bytes).
    CPU time is the steadier figure on a shared machine: wall time there is mostly waiting for a CPU."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "mcorefs-bench-time %S %U %M"] + [str(a) for a in argv],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    m = re.search(r"mcorefs-bench-time ([\d.]+) ([\d.]+) (\d+)", r.stderr)
    if r.returncode or not m:
        raise RuntimeError("%s failed:\n%s" % (argv, r.stderr[-3000:]))
    return wall, float(m.group(1)) + float(m.group(2)), int(m.group(3)) * 1024


def _rm(*dirs):
    for o in dirs:
        if o.exists():
            shutil.rmtree(o)


def _same_dir(a, b):
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False
    return all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)


def _export_vs_cp(B, m, r):
    out_x, out_c = B.OUT / "inspect", B.OUT / "plaincp"
    argv = [inspect_bin(), "export", m["ckpt"], out_x, "-o", "true_vocab_size=%d,shard_size=%s" % (m["vocab"], B.SHARD)]
    plain_files = sorted(m["plain"].iterdir())
    for key, warm, synced, _ in VARIANTS:
        # alternate which goes first, run by run (writeback of the first can slow the second)
        for what in (("export", "cp") if r % 2 == 0 else ("cp", "export")):
            _rm(out_x, out_c)
            B.drop_caches()
            if what == "export":
                if warm:
                    B.warm(m["warm"])
                t, cpu, rss = _timed_cpu(argv + ([] if synced else ["--no-sync"]))
                B.add("%s/xport_%s_s" % (m["name"], key), t)
                B.add("%s/xport_%s_cpu" % (m["name"], key), cpu)
                B.add("%s/xport_rss" % m["name"], rss)
                if "verified_export_" + m["name"] not in B.META:
                    ok = _same_dir(out_x, m["plain"])
                    B.META["verified_export_" + m["name"]] = ok
                    if not ok:
                        B.log("WARNING: mcorefs-inspect export output differs from the mount (%s)" % m["name"])
            else:
                if warm:
                    B.warm(plain_files)
                cmd = ["cp", "-r", m["plain"], out_c]
                if synced:
                    cmd = ["sh", "-c", 'cp -r "$0" "$1" && sync -f "$1"', m["plain"], out_c]
                t, cpu, _ = _timed_cpu(cmd)
                B.add("%s/xport_%s_cp_s" % (m["name"], key), t)
                B.add("%s/xport_%s_cp_cpu" % (m["name"], key), cpu)
    _rm(out_x, out_c)


def bench_export(B, m):
    B.OUT.mkdir(parents=True, exist_ok=True)
    out_cp, out_py = B.OUT / "cp", B.OUT / "py"
    verified = None
    for r in range(max(B.RUNS, B.PY_RUNS)):
        if r < B.RUNS and "inspect" not in B.SKIP:
            _export_vs_cp(B, m, r)
            B.log("%s export: mcorefs-inspect vs cp run %d done" % (m["name"], r + 1))
        for what in ("cp", "py"):
            if what == "py" and (r >= B.PY_RUNS or "py" in B.SKIP) or what == "cp" and r >= B.RUNS:
                continue
            _rm(out_cp, out_py)
            B.drop_caches()
            B.warm(m["warm"])
            if what == "cp":
                t0 = time.perf_counter()
                with B.mcorefs(m) as mt:
                    wall, rss = B.timed_v(["cp", "-r", mt.mnt, out_cp])
                    t = time.perf_counter() - t0
                    hwm = mt.status()["VmHWM"]
                B.add(m["name"] + "/export_cp_s", t)
                B.add(m["name"] + "/export_cp_rss", rss + hwm)
                B.add(m["name"] + "/export_cp_rss_cp", rss)
                B.add(m["name"] + "/export_cp_rss_daemon", hwm)
            else:
                t, rss = B.timed_v([sys.executable, B.HERE / "py_convert.py", m["ckpt"], out_py,
                                    "--true-vocab-size", m["vocab"], "--shard-size", B.SHARD_BYTES])
                B.add(m["name"] + "/export_py_s", t)
                B.add(m["name"] + "/export_py_rss", rss)
                if verified is None:
                    verified = B.same_tensors(out_py, m["plain"])
                    B.META["verified_" + m["name"]] = verified
                    if not verified:
                        B.log("WARNING: py_convert output differs from the mount (%s)" % m["name"])
            B.log("%s export %s run %d done (%.1f s)" % (m["name"], what, r + 1, t))
    _rm(out_cp, out_py)
    B.sync()


def report(B, T, n, nbytes):
    """The export rows of model n into table T."""
    R, med, fmt_mb = B.R, B.med, B.fmt_mb
    if n + "/xport_warm_s" in R:
        T.sub("mcorefs-inspect export (no FUSE) vs plain cp -r of the same bytes, same run, each from dropped caches")
        for key, _, _, label in VARIANTS:
            if n + "/xport_%s_s" % key not in R:
                continue
            T.row("plain cp -r, %s" % label.split(" (")[0], R[n + "/xport_%s_cp_s" % key], nbytes=nbytes)
            T.row("mcorefs-inspect export, %s" % label.split(" (")[0], R[n + "/xport_%s_s" % key], nbytes=nbytes,
                  note="" if B.META.get("verified_export_" + n) else "OUTPUT DIFFERS")
            x = med(n + "/xport_%s_cp_s" % key) / med(n + "/xport_%s_s" % key)
            T.ratio("export / plain cp, %s" % label, x, ">= %.1f" % EXPORT_TARGET, x >= EXPORT_TARGET, "%.2f" % x)
            c, e = med(n + "/xport_%s_cp_cpu" % key), med(n + "/xport_%s_cpu" % key)
            T.info("CPU time, plain cp / export (%s)" % label.split(" (")[0], "%.2f s / %.2f s = %.2f" % (c, e, c / e))
        T.row("mcorefs-inspect export peak RSS", R[n + "/xport_rss"], unit="B")
    if n + "/export_cp_s" in R:
        T.sub("export to local disk (rank files warm; both write the same safetensors bytes)")
        T.row("export: mount + cp -r (wall)", R[n + "/export_cp_s"], nbytes=nbytes)
        if R.get(n + "/export_py_s"):
            T.row("export: Python torch.load converter (wall)", R[n + "/export_py_s"], nbytes=nbytes,
                  note="" if B.META.get("verified_" + n) else "OUTPUT DIFFERS")
        T.row("export: cp + daemon peak RSS", R[n + "/export_cp_rss"], unit="B",
              note="cp %s + daemon %s" % (fmt_mb(med(n + "/export_cp_rss_cp")), fmt_mb(med(n + "/export_cp_rss_daemon"))))
        if R.get(n + "/export_py_s"):
            T.row("export: Python converter peak RSS", R[n + "/export_py_rss"], unit="B")
            sp = med(n + "/export_py_s") / med(n + "/export_cp_s")
            T.ratio("export speedup vs Python", sp, ">= 5x", sp >= 5, "%.1fx" % sp)
            mr = med(n + "/export_cp_rss") / med(n + "/export_py_rss")
            T.ratio("export memory, cp+daemon / Python", mr, "<= 0.10", mr <= 0.1, "%.3f (1/%.0f)" % (mr, 1 / mr))
