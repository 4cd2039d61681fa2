#!/usr/bin/python3
"""mcorefs benchmark suite: every figure next to its baseline, measured in the same run.

Run it through bench/run.sh (builds the daemon and the helpers first).  Environment:
  BENCH_SCALE=full|smoke   model sizes (full: ~3.1 GB dense, ~2 GB MoE; smoke: ~60-90 MB)
  BENCH_RUNS=N             runs per figure (default 3 at full, 1 at smoke)
  BENCH_PY_RUNS=N          runs of the Python converter (default min(RUNS, 2): ~90 s each at full)
  BENCH_RA=default,1024    read_ahead_kb settings to measure the read paths under ("default" =
                           leave the kernel's value); each is applied equally to ceilingfs and mcorefs
  BENCH_SKIP=export,...    skip sections: read, load, export, mount, dist (the torch_dist twins), k2, fp8, cpr (cp -r rows);
                           within export: inspect (mcorefs-inspect export vs cp), py (Python converter)
  BENCH_OUT=DIR            where exports are written (default bench/cache/out, on local disk)
  BENCH_TAG=NAME           write results-NAME.md (e.g. for a patched daemon via MCOREFS_BIN)
"""
import atexit
import collections
import concurrent.futures
import datetime
import hashlib
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_k2  # noqa: E402
import gen  # noqa: E402
import bench_concurrent  # noqa: E402
import bench_cpr  # noqa: E402
import bench_fp8  # noqa: E402
import bench_export  # noqa: E402

SCALE = os.environ.get("BENCH_SCALE", "full")
if SCALE not in gen.SPECS:
    sys.exit("BENCH_SCALE must be one of " + ", ".join(gen.SPECS))
RUNS = int(os.environ.get("BENCH_RUNS", "3" if SCALE == "full" else "1"))
PY_RUNS = int(os.environ.get("BENCH_PY_RUNS", str(min(RUNS, 2))))
RAS = [x.strip() for x in os.environ.get("BENCH_RA", "default,1024").split(",") if x.strip()]
SKIP = set(x.strip() for x in os.environ.get("BENCH_SKIP", "").split(",") if x.strip())
CACHE = pathlib.Path(os.environ.get("BENCH_CACHE", HERE / "cache"))
OUT = pathlib.Path(os.environ.get("BENCH_OUT", CACHE / "out"))
MCOREFS = os.environ["MCOREFS_BIN"]
CEILINGFS = os.environ["CEILINGFS_BIN"]
BENCHTOOL = os.environ["BENCHTOOL_BIN"]
SHARD = "1GB" if SCALE == "full" else "20MB"      # several virtual shards per model
SHARD_BYTES = 10 ** 9 if SCALE == "full" else 20 * 10 ** 6
MiB = 1 << 20

WORK = CACHE / "mnt"
K2 = None             # bench_k2.run()'s figures
_live = []            # (mountpoint, Popen) still mounted


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------------
# mounts

def _cleanup():
    for mnt, p in list(_live):
        _unmount(mnt, p)


def _on_signal(sig, frame):
    _cleanup()
    sys.exit(128 + sig)


atexit.register(_cleanup)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGTERM, _on_signal)


def _unmount(mnt, p):
    for _ in range(50):
        r = subprocess.run(["fusermount3", "-u", str(mnt)], stderr=subprocess.DEVNULL)
        if r.returncode == 0 or not os.path.ismount(mnt):
            break
        time.sleep(0.1)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if (mnt, p) in _live:
        _live.remove((mnt, p))


class Mount:
    """A foreground FUSE daemon; `ready_s` is spawn -> first successful read of `probe`."""

    def __init__(self, argv, mnt, probe, ra=None):
        self.mnt = pathlib.Path(mnt)
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)])
        self.mnt.mkdir(parents=True, exist_ok=True)
        logf = open(CACHE / "daemon.log", "ab")
        t0 = time.perf_counter()
        self.p = subprocess.Popen(argv, stdout=logf, stderr=logf)
        logf.close()
        path = self.mnt / probe
        while True:
            try:
                with open(path, "rb") as f:
                    f.read()
                break
            except OSError:
                if self.p.poll() is not None:
                    raise RuntimeError("%s exited with %d (see %s)" % (argv[0], self.p.returncode,
                                                                     CACHE / "daemon.log"))
                time.sleep(0.0005)
        self.ready_s = time.perf_counter() - t0
        _live.append((self.mnt, self.p))
        self.rss_mount = self.status()
        if ra is not None and ra not in ("default", "daemon"):
            set_ra(self.mnt, int(ra))

    def cpu_s(self):
        """User + system CPU seconds of the daemon so far."""
        with open("/proc/%d/stat" % self.p.pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")

    def status(self):
        """VmRSS and VmHWM of the daemon, in bytes."""
        out = {}
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
        return out

    def close(self):
        _unmount(self.mnt, self.p)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def bdi_of(mnt):
    d = os.stat(mnt).st_dev
    return pathlib.Path("/sys/class/bdi/%d:%d" % (os.major(d), os.minor(d)))


def set_ra(mnt, kb):
    (bdi_of(mnt) / "read_ahead_kb").write_text(str(kb))


def mcorefs(model, ra=None, mnt="mcorefs"):
    # mcorefs raises its own mount's readahead to 1024 by default; the "default" rows compare
    # both file systems at the kernel's 128 KiB, so tell it to leave the kernel value there.
    # ra="daemon": the daemon's own setting (only for the correctness check).
    keep = ",read_ahead_kb=-1" if ra is None or ra == "default" else ""
    return Mount([MCOREFS, str(model["ckpt"]), str(WORK / mnt), "-f", "-o",
                  "true_vocab_size=%d,shard_size=%s%s" % (model["vocab"], SHARD, keep)],
                 WORK / mnt, "config.json", ra)


def ceiling(sizes, ra=None):
    return Mount([CEILINGFS, str(WORK / "ceiling"), "-f", "-o",
                  "sizes=" + ":".join(str(s) for s in sizes)], WORK / "ceiling", "f0.bin", ra)


# ------------------------------------------------------------------------------------------------
# measurement helpers

def tool(*args):
    out = subprocess.run([BENCHTOOL] + [str(a) for a in args], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.split()
    return int(out[0]), float(out[1])


def read_files(files, bs=MiB):
    return tool("read", bs, *files)


def warm(files):
    """Read files once so that they sit in the page cache (like `cat f > /dev/null`)."""
    read_files(files)


def timed_v(argv):
    """Run argv under /usr/bin/time -v; return (wall seconds, max RSS bytes)."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v"] + [str(a) for a in argv], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError("%s failed:\n%s" % (argv, r.stderr[-3000:]))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, int(m.group(1)) * 1024


def sync():
    subprocess.run(["sync"])


def drop_caches():
    """Start a run from the same page-cache state: with 24 GB of RAM and ~20 GB of benchmark
    files, a full page cache makes the kernel evict the mount's own just-read pages (they sit on
    the inactive list) and the 'second read' goes back to the daemon.  Needs root."""
    sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
    except OSError:
        pass


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return 8 + n, json.loads(f.read(n))


def touch_list(d, index_order=True):
    """(file, offset, length) of every tensor of the safetensors files in d, in index order."""
    d = pathlib.Path(d)
    idx = d / "model.safetensors.index.json"
    if idx.exists():
        weight_map = json.loads(idx.read_text())["weight_map"]
    else:
        weight_map = {n: "model.safetensors" for n in st_header(d / "model.safetensors")[1]
                      if n != "__metadata__"}
    heads = {f: st_header(d / f) for f in set(weight_map.values())}
    rows = []
    for name, f in weight_map.items():
        base, h = heads[f]
        a, b = h[name]["data_offsets"]
        rows.append((f, base + a, b - a))
    return rows


def write_touch(rows, d, path):
    with open(path, "w") as f:
        for fn, off, n in rows:
            f.write("%s %d %d\n" % (pathlib.Path(d) / fn, off, n))


def same_tensors(a, b):
    """True when the safetensors files in dirs a and b hold the same tensors, byte for byte."""
    ra, rb = touch_list(a), touch_list(b)
    ha = {}
    for f in set(x[0] for x in ra):
        for n, v in st_header(pathlib.Path(a) / f)[1].items():
            if n != "__metadata__":
                ha[n] = (f, v)
    hb = {}
    for f in set(x[0] for x in rb):
        for n, v in st_header(pathlib.Path(b) / f)[1].items():
            if n != "__metadata__":
                hb[n] = (f, v)
    if set(ha) != set(hb):
        return False
    files = {}

    def fh(p):
        if p not in files:
            files[p] = open(p, "rb")
        return files[p]
    try:
        for n in ha:
            (fa, va), (fb, vb) = ha[n], hb[n]
            if va["dtype"] != vb["dtype"] or va["shape"] != vb["shape"]:
                return False
            oa = st_header(pathlib.Path(a) / fa)[0] + va["data_offsets"][0]
            ob = st_header(pathlib.Path(b) / fb)[0] + vb["data_offsets"][0]
            ln = va["data_offsets"][1] - va["data_offsets"][0]
            x, y = fh(pathlib.Path(a) / fa), fh(pathlib.Path(b) / fb)
            x.seek(oa)
            y.seek(ob)
            left = ln
            while left:
                k = min(left, 64 * MiB)
                if x.read(k) != y.read(k):
                    return False
                left -= k
        return True
    finally:
        for f in files.values():
            f.close()


# ------------------------------------------------------------------------------------------------
# results

R = collections.OrderedDict()      # key -> list of samples
META = {}


def add(key, v):
    R.setdefault(key, []).append(v)


def mmm(xs):
    return min(xs), statistics.median(xs), max(xs)


# ------------------------------------------------------------------------------------------------
# sections

def prepare(name):
    d = pathlib.Path(subprocess.run([sys.executable, str(HERE / "gen.py"), str(CACHE), SCALE, name],
                                    check=True, stdout=subprocess.PIPE, text=True).stdout.strip())
    ref = json.loads((d / "reference.json").read_text())
    ranks = [d / p for p in ref["rank_files"]]
    m = dict(name=name, dir=d, ckpt=d / "ckpt", vocab=ref["true_vocab_size"], ranks=ranks,
             rank_bytes=sum(p.stat().st_size for p in ranks), hf_bytes=ref["total_bytes"],
             ntensors=ref["num_tensors"], layout=ref["layout"], nlayers=ref["num_layers"],
             dist=ref.get("ckpt_format") == "torch_dist")
    # what a mount reads: the rank files, plus for torch_dist the .metadata index (22 MB for the
    # DSv3 shape) and metadata.json; all of it is warmed before each mount
    m["warm"] = list(ranks)
    if m["dist"]:
        it = ranks[0].parent
        m["meta_bytes"] = (it / ".metadata").stat().st_size
        m["warm"] += [it / ".metadata", it / "metadata.json"]
    return m


def files_desc(m):
    if m["dist"]:
        return "%d .distcp files (%.2f GB) + .metadata (%s)" % (len(m["ranks"]), m["rank_bytes"] / 1e9,
                                                               fmt_mb(m["meta_bytes"]))
    return "%d rank files (%.2f GB)" % (len(m["ranks"]), m["rank_bytes"] / 1e9)


def _sha256_dir(d):
    out = {}
    for p in sorted(pathlib.Path(d).iterdir()):
        h = hashlib.sha256()
        n = 0
        with open(p, "rb") as f:
            while True:
                b = f.read(4 * MiB)
                if not b:
                    break
                h.update(b)
                n += len(b)
        out[p.name] = (n, h.hexdigest())
    return out


def verify_dist(leg, dist):
    """The torch_dist mount must show exactly the legacy mount's files, byte for byte: same names,
    same sha256 (config.json, index and every safetensors shard).  Both mounts at once, hashed in
    two threads (hashlib releases the GIL).  Stops the suite on any difference."""
    t0 = time.time()
    warm(leg["warm"])
    warm(dist["warm"])
    with mcorefs(leg, "daemon") as a, mcorefs(dist, "daemon", mnt="mcorefs-dist") as b:
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            fa, fb = ex.submit(_sha256_dir, a.mnt), ex.submit(_sha256_dir, b.mnt)
            ha, hb = fa.result(), fb.result()
    bad = sorted(n for n in set(ha) | set(hb) if ha.get(n) != hb.get(n))
    if bad or not ha:
        for n in bad:
            log("  %s: legacy %s, torch_dist %s" % (n, ha.get(n), hb.get(n)))
        raise SystemExit("bench: FAILED: the torch_dist mount of %s differs from the legacy mount "
                         "(%d of %d files differ: %s)" % (dist["dir"], len(bad), len(set(ha) | set(hb)),
                                                          ", ".join(bad[:6])))
    dist["st_files"] = sorted(n for n in hb if n.endswith(".safetensors"))
    dist["st_bytes"] = sum(hb[n][0] for n in dist["st_files"])
    META["identical_" + dist["name"]] = dict(files=len(hb), bytes=sum(v[0] for v in hb.values()))
    log("%s: torch_dist view == legacy view (sha256 of %d files, %.2f GB, %.1f s)"
        % (dist["name"], len(hb), sum(v[0] for v in hb.values()) / 1e9, time.time() - t0))


def make_plain(m):
    """Copy the mount once to local disk: the plain-file baseline (same bytes)."""
    plain = CACHE / ("plain-%s-%s" % (SCALE, m["name"]))
    if plain.exists():
        shutil.rmtree(plain)
    drop_caches()
    warm(m["warm"])
    with mcorefs(m) as mt:
        subprocess.run(["cp", "-r", str(mt.mnt), str(plain)], check=True)
        files = sorted(p.name for p in mt.mnt.iterdir() if p.name.endswith(".safetensors"))
    sync()
    m["plain"] = plain
    m["st_files"] = files
    m["st_sizes"] = [(plain / f).stat().st_size for f in files]
    m["st_bytes"] = sum(m["st_sizes"])


def bench_read(m, dist=None):
    """dist: the same model as torch_dist; measured right after the legacy mount, in each run and
    under each read_ahead_kb setting (same files, same ceiling)."""
    files = m["st_files"]
    plain_files = [m["plain"] / f for f in files]
    for r in range(RUNS):
        drop_caches()
        for ra in RAS:
            tag = "%s/ra=%s" % (m["name"], ra)
            with ceiling(m["st_sizes"], ra) as c:
                if r == 0:
                    META.setdefault("ra_kb", {})[ra] = int((bdi_of(c.mnt) / "read_ahead_kb").read_text())
                cf = [c.mnt / ("f%d.bin" % i) for i in range(len(files))]
                n, t = read_files(cf)
                add(tag + "/ceiling", t)
                n, t = read_files(cf)
                add(tag + "/ceiling_second", t)
            order = [(m, ""), (dist, "dist_")] if r % 2 == 0 else [(dist, "dist_"), (m, "")]
            for x, pre in order:      # alternate which format goes first, run by run
                if x is None:
                    continue
                warm(x["warm"])
                with mcorefs(x, ra) as mt:
                    add(x["name"] + "/mount_s", mt.ready_s)
                    n1, t1 = read_files([mt.mnt / f for f in files])
                    c1 = mt.cpu_s()
                    n2, t2 = read_files([mt.mnt / f for f in files])
                    add(tag + "/%ssecond_daemon_cpu" % pre, mt.cpu_s() - c1)
                    s2 = mt.status()
                    assert n1 == n2 == m["st_bytes"], (x["name"], n1, n2, m["st_bytes"])
                    add(tag + "/%sfirst" % pre, t1)
                    add(tag + "/%ssecond" % pre, t2)
                    add(x["name"] + "/rss_mount", mt.rss_mount["VmRSS"])
                    add(x["name"] + "/hwm_mount", mt.rss_mount["VmHWM"])
                    add(x["name"] + "/rss_after_read", s2["VmRSS"])
                    add(x["name"] + "/hwm_after_read", s2["VmHWM"])
            warm(plain_files)
            n, t = read_files(plain_files)
            add(tag + "/plain", t)
        log("%s read run %d/%d done" % (m["name"], r + 1, RUNS))


def bench_load(m):
    rows = touch_list(m["plain"])
    pl, ml = CACHE / "touch-plain.txt", CACHE / "touch-mcorefs.txt"
    write_touch(rows, m["plain"], pl)
    write_touch(rows, WORK / "mcorefs", ml)
    plain_files = [m["plain"] / f for f in m["st_files"]]
    for r in range(RUNS):
        drop_caches()
        for ra in RAS:
            tag = "%s/ra=%s" % (m["name"], ra)
            warm(m["warm"])
            with mcorefs(m, ra) as mt:
                n, t = tool("touch", ml)
                add(tag + "/load_first", t)
                n, t = tool("touch", ml)
                add(tag + "/load_second", t)
            warm(plain_files)
            n, t = tool("touch", pl)
            add(tag + "/load_plain", t)
        log("%s load run %d/%d done" % (m["name"], r + 1, RUNS))


def bench_mount(ms, read_all=False):
    """Mount cost of each model of ms, interleaved run by run (legacy, then its torch_dist twin)."""
    for r in range(RUNS):
        for m in ms:
            warm(m["warm"])
            with mcorefs(m) as mt:
                add(m["name"] + "/mount_s", mt.ready_s)
                add(m["name"] + "/rss_mount", mt.rss_mount["VmRSS"])
                add(m["name"] + "/hwm_mount", mt.rss_mount["VmHWM"])
                if read_all:
                    files = sorted(p for p in mt.mnt.iterdir() if p.is_file())
                    n, t = read_files(files)
                    s = mt.status()
                    add(m["name"] + "/rss_after_read", s["VmRSS"])
                    add(m["name"] + "/hwm_after_read", s["VmHWM"])
                    m["st_bytes"] = n
    log("%s mount runs done" % ", ".join(m["name"] for m in ms))


# ------------------------------------------------------------------------------------------------
# report

def fmt_s(x):
    return "%.3f s" % x if x < 10 else "%.1f s" % x


def fmt_mb(x):
    return "%.0f MB" % (x / 1e6) if x >= 10e6 else "%.1f MB" % (x / 1e6)


class Table:
    def __init__(self):
        self.rows = []
        self.targets = []

    def section(self, title):
        self.rows.append(("##", title))

    def row(self, label, xs, unit="s", nbytes=None, note=""):
        if not xs:
            return
        lo, md, hi = mmm(xs)
        f = fmt_s if unit == "s" else fmt_mb
        rate = ""
        if nbytes and unit == "s":
            rate = "%.0f" % (nbytes / md / 1e6)
            if len(xs) > 1:
                rate += " (%.0f-%.0f)" % (nbytes / hi / 1e6, nbytes / lo / 1e6)
        self.rows.append((label, f(lo), f(md), f(hi), rate, note))

    def sub(self, title):
        self.rows.append(("#", title))

    def ratio(self, label, value, target, ok, shown):
        self.rows.append(("=>", label, shown, target, "PASS" if ok else "MISS"))
        self.targets.append((label, shown, target, "PASS" if ok else "MISS"))

    def info(self, label, shown):
        self.rows.append(("=>", label, shown, "", ""))

    def markdown(self):
        out = []
        head = "| figure | min | median | max | MB/s median (range) | note |\n|---|---:|---:|---:|---:|---|"
        in_table = False
        for r in self.rows:
            if r[0] == "##":
                out.append("\n**%s**\n" % r[1])
                out.append(head)
                in_table = True
            elif r[0] == "#":
                out.append("| *%s* | | | | | |" % r[1])
            elif r[0] == "=>":
                status = (" **%s**" % r[4]) if r[4] else ""
                tgt = (" (target %s)" % r[3]) if r[3] else ""
                out.append("| → %s | | **%s** | | | %s%s |" % (r[1], r[2], tgt.strip(), status))
            else:
                out.append("| %s | %s | %s | %s | %s | %s |" % r)
        return "\n".join(out)

    def text(self):
        out = []
        for r in self.rows:
            if r[0] == "##":
                out.append("")
                out.append(r[1])
                out.append("  %-52s %10s %10s %10s  %-18s" % ("", "min", "median", "max", "MB/s med (range)"))
            elif r[0] == "#":
                out.append(" " + r[1])
            elif r[0] == "=>":
                out.append("  => %-49s %s%s%s" % (r[1], r[2], ("   target " + r[3]) if r[3] else "",
                                                   ("   " + r[4]) if r[4] else ""))
            else:
                out.append("  %-52s %10s %10s %10s  %-18s %s" % r)
        return "\n".join(out)


def tag_any(n, what):
    return any(k.startswith(n + "/ra=") and k.endswith("/" + what) for k in R)


def med(key):
    return statistics.median(R[key]) if R.get(key) else None


FP8 = {}              # model name -> bench_fp8.measure() figures


def report(models, total_s):
    T = Table()
    for m in models:
        if m["name"] == "dsv3" or m["dist"] or m.get("st_files") is None:
            continue
        n = m["name"]
        lay = m["layout"]
        desc = "%s: %s, %.2f GB bf16, %d tensors, tp%d pp%d ep%d, %s, %d virtual shards" % (
            n, "Llama-like" if n == "dense" else "Mixtral-like 8 experts", m["st_bytes"] / 1e9, m["ntensors"],
            lay["tp"], lay["pp"], lay["ep"], files_desc(m), len(m["st_files"]))
        twin = [x for x in models if x["dist"] and x["name"] == n + "-dist"]
        if twin and tag_any(n, "dist_first"):
            desc += "; torch_dist twin `%s`: %s" % (twin[0]["name"], files_desc(twin[0]))
        T.section(desc)
        B = m["st_bytes"]
        for ra in RAS:
            tag = "%s/ra=%s" % (n, ra)
            kb = META.get("ra_kb", {}).get(ra)
            rl = "RA%s" % (kb if kb is not None else ra)
            T.sub("%s: mount's read_ahead_kb = %s%s" % (rl, kb if kb is not None else ra,
                                                       " (kernel default)" if ra == "default" else
                                                       ", set on ceilingfs and mcorefs alike"))
            if tag + "/ceiling" in R:
                T.row("ceiling: trivial FUSE fs, 1 MiB read()s", R[tag + "/ceiling"], nbytes=B)
                T.row("mcorefs first read (fresh mount, via daemon)", R[tag + "/first"], nbytes=B)
                T.row("mcorefs second read (mount's page cache)", R[tag + "/second"], nbytes=B,
                      note="daemon CPU during it: %.2f s" % med(tag + "/second_daemon_cpu"))
                T.row("ceiling second read (its page cache)", R[tag + "/ceiling_second"], nbytes=B)
                T.row("plain copy on local disk, warm", R[tag + "/plain"], nbytes=B)
                r1 = med(tag + "/ceiling") / med(tag + "/first")
                T.ratio("%s first read / ceiling" % rl, r1, ">= 0.85", r1 >= 0.85, "%.2f" % r1)
                r2 = med(tag + "/plain") / med(tag + "/second")
                T.ratio("%s second read / plain file" % rl, r2, ">= 0.5", r2 >= 0.5, "%.2f" % r2)
                T.info("%s second read / ceiling second read" % rl,
                       "%.2f" % (med(tag + "/ceiling_second") / med(tag + "/second")))
            if tag + "/dist_first" in R:
                T.row("torch_dist: mcorefs first read (fresh mount)", R[tag + "/dist_first"], nbytes=B)
                T.row("torch_dist: mcorefs second read (page cache)", R[tag + "/dist_second"], nbytes=B,
                      note="daemon CPU during it: %.2f s" % med(tag + "/dist_second_daemon_cpu"))
                r4 = med(tag + "/ceiling") / med(tag + "/dist_first")
                T.ratio("%s %s torch_dist first read / ceiling" % (rl, n), r4, ">= 0.85", r4 >= 0.85, "%.2f" % r4)
                r5 = med(tag + "/first") / med(tag + "/dist_first")
                T.ratio("%s %s torch_dist / legacy first-read speed" % (rl, n), r5, ">= 0.9", r5 >= 0.9,
                        "%.2f" % r5)
            if tag + "/load_first" in R:
                T.row("load: mmap, touch tensors, mcorefs fresh mount", R[tag + "/load_first"], nbytes=B)
                T.row("load: mmap, touch tensors, mcorefs page cache", R[tag + "/load_second"], nbytes=B)
                T.row("load: mmap, touch tensors, plain copy, warm", R[tag + "/load_plain"], nbytes=B)
                r3 = med(tag + "/load_plain") / med(tag + "/load_first")
                T.info("%s load: plain time / mcorefs first time" % rl, "%.2f" % r3)
                r3 = med(tag + "/load_plain") / med(tag + "/load_second")
                T.info("%s load: plain time / mcorefs page-cache time" % rl, "%.2f" % r3)
        bench_concurrent.report(sys.modules[__name__], T, m)
        bench_cpr.report(sys.modules[__name__], T, m)
        bench_export.report(sys.modules[__name__], T, n, B)
    T.section("mount cost (spawn -> config.json readable; daemon RSS from /proc)")
    order = ["dense", "dense-dist", "moe", "dsv3", "dsv3-dist"]     # each torch_dist twin after its legacy model
    models = sorted(models, key=lambda m: order.index(m["name"]) if m["name"] in order else len(order))
    for m in models:
        n = m["name"]
        if n + "/mount_s" not in R:
            continue
        lay = m["layout"]
        T.sub("%s: %s%d HF tensors, %d layers, tp%d pp%d ep%d, %s, %s in the mount" % (
            n, "torch_dist, " if m["dist"] else "", m["ntensors"], m["nlayers"], lay["tp"], lay["pp"],
            lay["ep"], files_desc(m), fmt_mb(m.get("st_bytes", 0))))
        T.row("mount time", R[n + "/mount_s"])
        T.row("daemon VmRSS after mount", R[n + "/rss_mount"], unit="B")
        T.row("daemon VmHWM after mount (peak while mounting)", R.get(n + "/hwm_mount"), unit="B")
        if R.get(n + "/hwm_after_read"):
            T.row("daemon VmRSS after reading every file", R[n + "/rss_after_read"], unit="B")
            T.row("daemon VmHWM after reading every file", R[n + "/hwm_after_read"], unit="B")
    for n, lim in (("dense", 0.5), ("dense-dist", 0.5), ("dsv3", 3.0), ("dsv3-dist", 3.0)):
        if R.get(n + "/mount_s"):
            x = med(n + "/mount_s")
            T.ratio("%s mount time (median)" % n, x, "<= %.1f s" % lim, x <= lim, fmt_s(x))
    for n in ("dense", "dsv3"):
        if R.get(n + "/mount_s") and R.get(n + "-dist/mount_s"):
            x = med(n + "-dist/mount_s") / med(n + "/mount_s")
            T.ratio("%s mount time, torch_dist / legacy (medians)" % n, x, "<= 1.1", x <= 1.1, "%.2f" % x)
    for n in ("dsv3", "dsv3-dist"):
        if R.get(n + "/hwm_after_read"):
            x = max(R[n + "/hwm_after_read"])
            T.ratio("%s daemon peak RSS (VmHWM, max of runs)" % n, x, "<= 128 MB", x <= 128e6, fmt_mb(x))
    for n in ("dense", "dsv3"):
        if R.get(n + "/rss_mount") and R.get(n + "-dist/rss_mount"):
            T.info("%s VmRSS after mount, torch_dist / legacy (medians)" % n,
                   "%.2f" % (med(n + "-dist/rss_mount") / med(n + "/rss_mount")))
    for m in models:
        if META.get("identical_" + m["name"]):
            v = META["identical_" + m["name"]]
            T.info("%s view == legacy view (sha256 of all %d files, %s)" % (m["name"], v["files"], fmt_mb(v["bytes"])),
                   "identical")
    for m in models:
        n = m["name"]
        if R.get(n + "/hwm_after_read") and R.get(n + "/rss_mount"):
            g = max(R[n + "/hwm_after_read"]) - min(R[n + "/rss_mount"])
            T.ratio("%s RSS growth reading %s (HWM - mount RSS)" % (n, fmt_mb(m["st_bytes"])), g,
                    "<= 64 MB", g <= 64e6, fmt_mb(g))

    if K2:
        bench_k2.rows(T, K2, fmt_s, fmt_mb)
    for n, res in FP8.items():
        bench_fp8.report(T, n, res, statistics.median)

    env = "%s, %s, kernel %s, %d CPUs, %.0f GiB RAM, fuse3 %s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpu_model(), platform.release(), os.cpu_count(),
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30,
        subprocess.run(["pkg-config", "--modversion", "fuse3"], stdout=subprocess.PIPE, text=True).stdout.strip())
    head = ("mcorefs benchmark, scale=%s, %d runs per figure (Python converter: %d), suite time %.0f s\n%s"
            % (SCALE, RUNS, PY_RUNS, total_s, env))
    print("\n" + head)
    print(T.text())
    print("\ntargets: %d PASS, %d MISS" % (sum(t[3] == "PASS" for t in T.targets), sum(t[3] == "MISS" for t in T.targets)))
    md = ["# mcorefs benchmark results", "",
          "- scale: `%s`, %d runs per figure (Python converter: %d runs), whole suite %.0f s" % (SCALE, RUNS, PY_RUNS, total_s),
          "- machine: %s" % env,
          "- rank files warm in the page cache before every run; first reads on a fresh mount; "
          "ratios are of medians; MB/s = virtual safetensors bytes / time", "",
          T.markdown(), "",
          "**Targets**", "", "| target | value | wanted | status |", "|---|---:|---|---|"]
    for t in T.targets:
        md.append("| %s | %s | %s | %s |" % t)
    name = "results.md" if SCALE == "full" else "results-%s.md" % SCALE
    if os.environ.get("BENCH_TAG"):
        name = name[:-3] + "-" + os.environ["BENCH_TAG"] + ".md"
    (HERE / name).write_text("\n".join(md) + "\n")
    (CACHE / ("raw-%s.json" % SCALE)).write_text(json.dumps({"R": R, "META": META}, indent=1, default=str))
    log("wrote %s" % (HERE / name))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    t0 = time.time()
    global RAS, K2
    CACHE.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 and RAS != ["default"]:
        log("not root: cannot write /sys/class/bdi/*/read_ahead_kb; measuring the default only")
        RAS = ["default"]
    models = []
    names = ["dense", "moe", "dsv3"] + ([] if "dist" in SKIP else ["dense-dist", "dsv3-dist"])
    for name in names:
        t = time.time()
        models.append(prepare(name))
        log("%s ready (%.1f s)" % (name, time.time() - t))
    dense, moe, dsv3 = models[:3]
    dense_d, dsv3_d = models[3:] or (None, None)
    if dense_d:
        # correctness first: each torch_dist mount must equal its legacy twin's mount byte for byte
        drop_caches()
        verify_dist(dense, dense_d)
        verify_dist(dsv3, dsv3_d)
    for m in (dense, moe):
        d = dense_d if m is dense else None
        make_plain(m)
        log("%s: %d virtual shards, %.2f GB" % (m["name"], len(m["st_files"]), m["st_bytes"] / 1e9))
        if "read" not in SKIP:
            bench_read(m, d)
            if m is dense and "concurrent" not in SKIP:
                bench_concurrent.measure(sys.modules[__name__], m, "1024" if "1024" in RAS else RAS[-1], RUNS)
            if "cpr" not in SKIP:
                bench_cpr.measure(sys.modules[__name__], m, "1024" if "1024" in RAS else RAS[-1], RUNS)
        elif "mount" not in SKIP:
            bench_mount([m] + ([d] if d else []))
        if "load" not in SKIP:
            bench_load(m)
        if "export" not in SKIP:
            bench_export.bench_export(sys.modules[__name__], m)
        if "fp8" not in SKIP and m is dense:
            FP8[m["name"]] = bench_fp8.measure(m, RUNS, Mount, bench_fp8.argv_maker(MCOREFS, SHARD, WORK),
                                                 read_files, warm, drop_caches, log)
    if "mount" not in SKIP:
        drop_caches()
        bench_mount([dsv3] + ([dsv3_d] if dsv3_d else []), read_all=True)
    if "k2" not in SKIP:
        K2 = bench_k2.run(CACHE, MCOREFS, RUNS, log)
    report(models, time.time() - t0)


if __name__ == "__main__":
    main()
