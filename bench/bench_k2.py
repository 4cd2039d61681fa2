"""Kimi-K2-shaped mount (issue 14 item 4, issue 15 item 5): CPU time and peak RSS of the daemon
mounting a checkpoint of Kimi-K2's shape (DeepSeek-V3 architecture, 61 layers x 384 experts,
MTP, tiny dims: ~71k HF tensors, ~70k torch_dist chunks; tests/fixtures mcore_gen.SHAPES), as
torch_dist and as its legacy torch twin (the same-run baseline), and one full bit-exact read of
both views against the generator's reference.

run() measures and returns the figures; rows() adds them to bench.py's table. Targets: torch_dist
mount <= 1 s of daemon CPU and <= 128 MB (10^6 bytes) peak RSS, medians of the runs.
"""
import json
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"
CPU_TARGET_S = 1.0
HWM_TARGET = 128e6


def _generate(cache, log):
    out = cache / "k2"
    if (out / "reference.safetensors").exists() and (out / "legacy_ckpt").is_dir():
        return out
    sys.path.insert(0, str(FIXTURES))
    import dist_gen  # noqa: WPS433
    import mcore_gen  # noqa: WPS433
    t = time.time()
    tmp = cache / "k2.tmp"
    subprocess.run(["rm", "-rf", str(tmp), str(out)], check=True)
    dist_gen.generate(tmp, **mcore_gen.shape_args("kimi_k2", seed=3, verify=False, keep_legacy=True))
    tmp.rename(out)
    log("k2: generated the Kimi-K2-shaped checkpoint in %.0f s" % (time.time() - t))
    return out


class _Daemon:
    """mcorefs -f on mnt; ready when config.json reads."""

    def __init__(self, binary, ckpt, mnt, logf):
        mnt.mkdir(parents=True, exist_ok=True)
        self.mnt = mnt
        t0 = time.perf_counter()
        self.p = subprocess.Popen([binary, str(ckpt), str(mnt), "-f", "-o", "true_vocab_size=1024"],
                                  stdout=logf, stderr=logf)
        while True:
            try:
                (mnt / "config.json").read_bytes()
                break
            except OSError:
                if self.p.poll() is not None:
                    raise RuntimeError("mcorefs exited with %d on %s" % (self.p.returncode, ckpt))
                time.sleep(0.001)
        self.wall = time.perf_counter() - t0
        with open("/proc/%d/stat" % self.p.pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        self.cpu = (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
        st = {}
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                k, _, val = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    st[k] = int(val.split()[0]) * 1024
        self.rss, self.hwm = st["VmRSS"], st["VmHWM"]

    def close(self):
        for _ in range(50):
            if subprocess.run(["fusermount3", "-u", str(self.mnt)], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        self.p.wait(timeout=30)


def _read_all_exact(mnt, ref, hdr, base):
    """Every tensor of the view, read file by file in offset order, equal to the reference."""
    n = bad = nbytes = 0
    for fn in sorted(os.listdir(mnt)):
        if not fn.endswith(".safetensors"):
            continue
        data = (mnt / fn).read_bytes()
        hl = struct.unpack_from("<Q", data, 0)[0]
        h = json.loads(data[8:8 + hl])
        h.pop("__metadata__", None)
        for name, e in h.items():
            lo, hi = e["data_offsets"]
            r = hdr.get(name)
            rlo, rhi = r["data_offsets"] if r else (0, -1)
            n += 1
            nbytes += hi - lo
            bad += r is None or data[8 + hl + lo:8 + hl + hi] != ref[base + rlo:base + rhi]
    return n, bad, nbytes


def run(cache, binary, runs, log):
    """Figures of the K2 rows: per format, lists of mount CPU s / wall s / peak and after-mount
    RSS bytes, the tensor count, and the full read's result."""
    cache = pathlib.Path(cache)
    out = _generate(cache, log)
    ref = (out / "reference.safetensors").read_bytes()
    hl = struct.unpack_from("<Q", ref, 0)[0]
    hdr = json.loads(ref[8:8 + hl])
    hdr.pop("__metadata__", None)
    md = out / "ckpt" / "iter_0000010" / ".metadata"
    figs = {"tensors": len(hdr), "metadata_bytes": md.stat().st_size, "formats": {}}
    mnt = cache / "mnt" / "k2"
    with open(cache / "daemon.log", "ab") as logf:
        for fmt, sub in (("torch_dist", "ckpt"), ("torch", "legacy_ckpt")):
            f = figs["formats"].setdefault(fmt, {"cpu": [], "wall": [], "hwm": [], "rss": []})
            for _ in range(max(runs, 3)):
                d = _Daemon(binary, out / sub, mnt, logf)
                d.close()
                for k in ("cpu", "wall", "hwm", "rss"):
                    f[k].append(getattr(d, k))
            d = _Daemon(binary, out / sub, mnt, logf)
            try:
                t = time.perf_counter()
                f["read_tensors"], f["read_bad"], f["read_bytes"] = _read_all_exact(mnt, ref, hdr, 8 + hl)
                f["read_s"] = time.perf_counter() - t
            finally:
                d.close()
            log("k2 %s: CPU %.2f s, peak %.0f MB (medians of %d); %d tensors read, %d differ"
                % (fmt, statistics.median(f["cpu"]), statistics.median(f["hwm"]) / 1e6, len(f["cpu"]),
                   f["read_tensors"], f["read_bad"]))
    return figs


def rows(T, figs, fmt_s, fmt_mb):
    """The K2 section of bench.py's table: each format's rows, then the targets (torch_dist)."""
    T.section("Kimi-K2-shaped mount: DeepSeek-V3 architecture, 61 layers x 384 experts, MTP, tiny dims; "
              "%d HF tensors; .metadata %s; ep8 (8 rank files per format)" % (figs["tensors"],
                                                                            fmt_mb(figs["metadata_bytes"])))
    for fmt in ("torch_dist", "torch"):
        f = figs["formats"][fmt]
        T.sub("%s%s" % (fmt, " (same-run baseline: the legacy twin of the same weights)" if fmt == "torch" else ""))
        T.row("daemon CPU, spawn -> config.json readable", f["cpu"])
        T.row("mount wall time", f["wall"])
        T.row("daemon VmHWM after mount (peak while mounting)", f["hwm"], unit="B")
        T.row("daemon VmRSS after mount", f["rss"], unit="B",
              note="%.0f bytes per HF tensor" % (statistics.median(f["rss"]) / figs["tensors"]))
        T.info("%s K2 full read, every tensor vs reference (%s in %.1f s)" % (fmt, fmt_mb(f["read_bytes"]), f["read_s"]),
               "%d of %d bit-exact" % (f["read_tensors"] - f["read_bad"], f["read_tensors"]))
    f = figs["formats"]["torch_dist"]
    cpu, hwm = statistics.median(f["cpu"]), statistics.median(f["hwm"])
    T.ratio("K2-shaped torch_dist mount: daemon CPU (median)", cpu, "<= 1 s", cpu <= CPU_TARGET_S, fmt_s(cpu))
    T.ratio("K2-shaped torch_dist mount: peak RSS (median)", hwm, "<= 128 MB", hwm <= HWM_TARGET, fmt_mb(hwm))
    ok = all(g["read_bad"] == 0 and g["read_tensors"] == figs["tensors"] for g in figs["formats"].values())
    T.ratio("K2-shaped views bit-exact (both formats, every tensor)", ok, "all", ok, "yes" if ok else "NO")
