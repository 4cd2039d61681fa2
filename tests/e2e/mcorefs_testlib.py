"""Shared helpers for the mcorefs end-to-end tests.

Only the standard library, numpy and torch are used (the Debian /usr/bin/python3).
Nothing in here trusts the code under test: the safetensors reader is an independent,
strict implementation of the format, and every comparison is against an independent
expectation (generator reference, golden files, or a rule of the HF/safetensors spec).

Environment (set by ctest, defaults for running a script by hand from the repo):
  MCOREFS_BIN         the daemon            (default: build/mcorefs)
  MCOREFS_INSPECT     the inspect tool      (default: build/mcorefs-inspect)
  MCOREFS_TEST_DATA   real fixtures (default: tests/data in the repo)
  MCOREFS_WORK        scratch dir           (default: a fresh dir under /tmp)
  MCOREFS_E2E_KEEP=1  keep the scratch dir of this script even on success
"""

import atexit
import errno
import glob
import hashlib
import json
import mmap
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES_PY = os.path.join(REPO, "tests", "fixtures")

DEFAULT_TIMEOUT = 60          # seconds for any one subprocess of the code under test
UNMOUNT_TIMEOUT = 30
DAEMON_EXIT_TIMEOUT = 20      # after unmount, the daemon must go away within this


def _env_path(var, default):
    v = os.environ.get(var)
    return os.path.abspath(v) if v else os.path.abspath(default)


MCOREFS_BIN = _env_path("MCOREFS_BIN", os.path.join(REPO, "build", "mcorefs"))
MCOREFS_INSPECT = _env_path("MCOREFS_INSPECT", os.path.join(REPO, "build", "mcorefs-inspect"))
TEST_DATA = _env_path("MCOREFS_TEST_DATA", os.path.join(REPO, "tests", "data"))
MEGATRON_FIXTURES = os.path.join(TEST_DATA, "megatron")


# --------------------------------------------------------------------------------------
# scratch space: one private dir per test script (ctest -j runs scripts in parallel and
# they share MCOREFS_WORK), removed at exit unless something failed.
# --------------------------------------------------------------------------------------

_work_dir = None
_keep_work = os.environ.get("MCOREFS_E2E_KEEP") == "1"
_any_failure = False


def work_dir():
    global _work_dir
    if _work_dir is None:
        base = os.environ.get("MCOREFS_WORK")
        if base:
            base = os.path.abspath(base)
            os.makedirs(base, exist_ok=True)
        else:
            base = tempfile.gettempdir()
        script = os.path.splitext(os.path.basename(sys.argv[0] or "e2e"))[0] or "e2e"
        _work_dir = tempfile.mkdtemp(prefix="%s-%d-" % (script, os.getpid()), dir=base)
    return _work_dir


def scratch(prefix="tmp"):
    """A fresh directory inside this script's work dir."""
    return tempfile.mkdtemp(prefix=prefix + "-", dir=work_dir())


def _rmtree(path):
    def onerror(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)
        except OSError:
            pass
    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)


# --------------------------------------------------------------------------------------
# test runner
# --------------------------------------------------------------------------------------

class Skip(Exception):
    pass


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


class Runner:
    """Tiny test runner.  Usage:

        r = Runner("dense")
        r.run("name", fn, args...)
        sys.exit(r.finish())

    Command line of a test script: [-k SUBSTRING]... [--list] [-x] (stop at first failure).
    """

    def __init__(self, title, argv=None):
        self.title = title
        self.passed, self.failed, self.skipped = [], [], []
        argv = list(sys.argv[1:] if argv is None else argv)
        self.filters, self.list_only, self.stop_first = [], False, False
        while argv:
            a = argv.pop(0)
            if a == "-k" and argv:
                self.filters.append(argv.pop(0))
            elif a == "--list":
                self.list_only = True
            elif a == "-x":
                self.stop_first = True
        self.t0 = time.monotonic()
        self._stopped = False

    def selected(self, name):
        return not self.filters or any(f in name for f in self.filters)

    def run(self, name, fn, *args, **kwargs):
        global _any_failure
        if not self.selected(name) or self._stopped:
            return None
        if self.list_only:
            print(name)
            return None
        t = time.monotonic()
        print("RUN  %s" % name, flush=True)
        try:
            res = fn(*args, **kwargs)
        except Skip as e:
            self.skipped.append(name)
            print("SKIP %s: %s" % (name, e), flush=True)
            return None
        except BaseException as e:  # noqa: B902 - report everything, keep going
            if isinstance(e, KeyboardInterrupt):
                raise
            _any_failure = True
            self.failed.append(name)
            if isinstance(e, (TestFailure, MountFailed)):
                detail = str(e)
            else:
                detail = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
            print("FAIL %s (%.1fs)\n%s" % (name, time.monotonic() - t, _indent(detail)), flush=True)
            if self.stop_first:
                self._stopped = True
            return None
        self.passed.append(name)
        print("PASS %s (%.1fs)" % (name, time.monotonic() - t), flush=True)
        return res

    def finish(self):
        global _any_failure
        if self.list_only:
            return 0
        leftovers = cleanup_all()
        if leftovers:
            _any_failure = True
            self.failed.append("cleanup")
            print("FAIL cleanup: %s" % "; ".join(leftovers))
        dt = time.monotonic() - self.t0
        if self.failed:
            print("failed tests:\n  " + "\n  ".join(self.failed))
        line = "%d passed, %d failed" % (len(self.passed), len(self.failed))
        if self.skipped:
            line += ", %d skipped" % len(self.skipped)
        print("[%s] %.1fs" % (self.title, dt))
        print(line, flush=True)
        return 1 if self.failed else 0


def _indent(s, pfx="    "):
    return "\n".join(pfx + l for l in s.splitlines())


# --------------------------------------------------------------------------------------
# strict, independent safetensors reader
# --------------------------------------------------------------------------------------

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    pass


def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise SafetensorsError("duplicate key %r in header" % k)
        d[k] = v
    return d


def parse_safetensors(data, label="<buffer>"):
    """Parse and strictly validate a safetensors file held in `data` (bytes-like).

    Returns (tensors, info): tensors = {name: (dtype, shape_tuple, bytes)} in offset
    order, info = {"header_len", "data_start", "metadata", "order"}.
    Raises SafetensorsError with a readable message on any violation.
    """
    def err(msg):
        raise SafetensorsError("%s: %s" % (label, msg))

    size = len(data)
    if size < 8:
        err("file is %d bytes, shorter than the 8-byte header length" % size)
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > MAX_HEADER:
        err("header length %d > %d" % (n, MAX_HEADER))
    if 8 + n > size:
        err("header length %d runs past end of file (%d bytes)" % (n, size))
    if (8 + n) % 8 != 0:
        err("data section starts at %d, not 8-byte aligned (header length %d)" % (8 + n, n))
    raw = bytes(data[8:8 + n])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        err("header is not UTF-8: %s" % e)
    if not text.startswith("{"):
        err("header does not start with '{': %r" % text[:20])
    dec = json.JSONDecoder(object_pairs_hook=_no_dup_pairs)
    try:
        hdr, end = dec.raw_decode(text)
    except (ValueError, SafetensorsError) as e:
        err("header is not valid JSON: %s" % e)
    pad = text[end:]
    if pad.strip(" ") != "":
        err("header padding after the JSON object is not only spaces: %r" % pad[:40])
    if not isinstance(hdr, dict):
        err("header is not a JSON object")
    meta = hdr.pop("__metadata__", None)
    if meta != {"format": "pt"}:
        err('__metadata__ is %r, expected {"format": "pt"}' % (meta,))
    entries = []
    for name, ent in hdr.items():
        if not isinstance(ent, dict) or set(ent) != {"dtype", "shape", "data_offsets"}:
            err("tensor %r: entry must have exactly dtype, shape, data_offsets: %r" % (name, ent))
        dt, shape, offs = ent["dtype"], ent["shape"], ent["data_offsets"]
        if dt not in DTYPE_SIZES:
            err("tensor %r: unknown dtype %r" % (name, dt))
        if not isinstance(shape, list) or not all(type(x) is int and x >= 0 for x in shape):
            err("tensor %r: bad shape %r" % (name, shape))
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(type(x) is int and x >= 0 for x in offs) or offs[1] < offs[0]):
            err("tensor %r: bad data_offsets %r" % (name, offs))
        numel = 1
        for x in shape:
            numel *= x
        if offs[1] - offs[0] != numel * DTYPE_SIZES[dt]:
            err("tensor %r: data_offsets %r span %d bytes, shape %r x %s needs %d"
                % (name, offs, offs[1] - offs[0], shape, dt, numel * DTYPE_SIZES[dt]))
        entries.append((offs[0], offs[1], name, dt, tuple(shape)))
    entries.sort()
    pos = 0
    for b, e, name, _, _ in entries:
        if b != pos:
            err("tensor %r starts at %d but previous data ends at %d (%s)"
                % (name, b, pos, "hole" if b > pos else "overlap"))
        pos = e
    ds = 8 + n
    if size != ds + pos:
        err("file size %d != 8 + header %d + data %d = %d" % (size, n, pos, ds + pos))
    tensors = {}
    for b, e, name, dt, shape in entries:
        tensors[name] = (dt, shape, bytes(data[ds + b:ds + e]))
    info = {"header_len": n, "data_start": ds, "metadata": meta,
            "order": [x[2] for x in entries]}
    return tensors, info


def read_safetensors_file(path):
    with open(path, "rb") as f:
        data = f.read()
    return parse_safetensors(data, path)[0]


def load_reference(path):
    """A reference/golden safetensors file (also validated strictly)."""
    return read_safetensors_file(path)


def load_golden_dir(d):
    """All tensors of every *.safetensors file in a golden dir."""
    out = {}
    for p in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        for k, v in read_safetensors_file(p).items():
            if k in out:
                raise TestFailure("golden dir %s: tensor %s in two files" % (d, k))
            out[k] = v
    return out


# --------------------------------------------------------------------------------------
# reading a mounted (or plain) HF model directory
# --------------------------------------------------------------------------------------

# the daemon's hidden metadata folder (manifest.json, stats); not part of the HF view
META_DIR = ".mcorefs"

SHARD_RE = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


class View:
    def __init__(self):
        self.dir = None
        self.files = {}          # file name -> bytes (as read through open/read)
        self.config_text = None
        self.config = None
        self.index = None
        self.tensors = {}        # name -> (dtype, shape, bytes)
        self.tensor_file = {}    # name -> file name
        self.st_files = []       # safetensors file names, sorted
        self.meta_dir = None     # path of the hidden .mcorefs/ folder if there is one

    @property
    def total_bytes(self):
        return sum(len(v[2]) for v in self.tensors.values())


def _drop_cache(fd):
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass


def _check_reads(path, data, rng, n=16):
    """Random pread()s (page cache dropped first) must agree with the full read."""
    size = len(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd)
        probes = [(0, 1), (max(0, size - 1), 1), (max(0, size - 5), 100), (size, 10),
                  (size + 4096, 10), (4095, 4098), (8, 8)]
        for _ in range(n):
            off = rng.randrange(0, max(1, size))
            probes.append((off, rng.choice([1, 7, 512, 4096, 4097, 65536, 131073])))
        for off, ln in probes:
            got = os.pread(fd, ln, off)
            exp = data[off:off + ln]
            if got != exp:
                first = next((i for i in range(min(len(got), len(exp))) if got[i] != exp[i]),
                             min(len(got), len(exp)))
                raise TestFailure("%s: pread(len=%d, off=%d) returned %d bytes that differ "
                                  "from a full read at byte %d (file offset %d)"
                                  % (path, ln, off, len(got), first, off + first))
    finally:
        os.close(fd)


def _read_mmap(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        _drop_cache(fd)
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        try:
            return bytes(m[:])
        finally:
            m.close()
    finally:
        os.close(fd)


def read_view(mountdir, shard_size=None, check_modes=True, allowed_extra=(".mcorefs",), mmap_all=False,
              seed=0, check_json_format=True):
    """Read an HF model directory (the mount) completely through the kernel and check
    the layout rules.  Returns a View.  Raises TestFailure on any rule violation.

    shard_size: the shard_size the mount was given (bytes) to check the splitting rules.
    allowed_extra: names of other files that may sit in the dir (only for plain dirs).
    check_json_format: config.json and the index must be written as save_pretrained writes them
    (off for folders not written by mcorefs, e.g. the golden files).
    """
    rng = random.Random(seed)
    v = View()
    v.dir = mountdir
    problems = []
    st = os.stat(mountdir)
    # modes are the checkpoint's own (test_permissions.py checks them exactly); here: folders
    # the owner can list, files the owner can read and that nobody can execute
    if check_modes and stat.S_IMODE(st.st_mode) & 0o500 != 0o500:
        problems.append("root dir mode is %o, the owner cannot list it" % stat.S_IMODE(st.st_mode))
    names = sorted(os.listdir(mountdir))
    check(len(names) == len(set(names)), "readdir returned duplicate names: %r" % names)
    for name in names:
        p = os.path.join(mountdir, name)
        lst = os.lstat(p)
        if name in allowed_extra:
            continue
        if name == META_DIR and stat.S_ISDIR(lst.st_mode):
            v.meta_dir = p
            if check_modes and stat.S_IMODE(lst.st_mode) != stat.S_IMODE(st.st_mode):
                problems.append("%s/ mode is %o, the root's is %o" % (name, stat.S_IMODE(lst.st_mode),
                                                                      stat.S_IMODE(st.st_mode)))
            continue
        if not stat.S_ISREG(lst.st_mode):
            problems.append("%s is not a regular file (mode %o)" % (name, lst.st_mode))
            continue
        if check_modes and (stat.S_IMODE(lst.st_mode) & 0o7511) != 0o400:
            problems.append("%s mode is %o: want owner-readable, no x or set-id bits"
                            % (name, stat.S_IMODE(lst.st_mode)))
        with open(p, "rb") as f:
            data = f.read()
        if len(data) != lst.st_size:
            problems.append("%s: stat size %d but read returned %d bytes"
                            % (name, lst.st_size, len(data)))
        v.files[name] = data
    if v.meta_dir is None and os.path.isdir(os.path.join(mountdir, META_DIR)):
        v.meta_dir = os.path.join(mountdir, META_DIR)      # reachable by name, not listed
    check(not problems, "view %s:\n  %s" % (mountdir, "\n  ".join(problems)))

    check("config.json" in v.files, "no config.json in %s (files: %r)" % (mountdir, names))
    v.config_text = v.files["config.json"].decode("utf-8")
    try:
        v.config = json.loads(v.config_text, object_pairs_hook=_no_dup_pairs)
    except (ValueError, SafetensorsError) as e:
        raise TestFailure("config.json is not valid JSON: %s\n%s" % (e, v.config_text[:2000]))
    check(isinstance(v.config, dict), "config.json is not a JSON object")
    check(not check_json_format or v.config_text == json.dumps(v.config, indent=2, sort_keys=True) + "\n",
          "config.json is not written as transformers' save_pretrained writes it (json.dumps indent=2,"
          " sort_keys=True, final newline):\n%s" % v.config_text[:3000])

    st_names = sorted(n for n in v.files if n.endswith(".safetensors"))
    other = sorted(set(v.files) - set(st_names) - {"config.json", "model.safetensors.index.json"})
    check(not other, "unexpected files in the view: %r" % other)
    check(st_names, "no .safetensors files in %s (files: %r)" % (mountdir, names))
    v.st_files = st_names

    if st_names == ["model.safetensors"]:
        check("model.safetensors.index.json" not in v.files,
              "single-shard view must not have model.safetensors.index.json")
    else:
        check("model.safetensors" not in st_names,
              "model.safetensors together with other shards: %r" % st_names)
        m = len(st_names)
        want = ["model-%05d-of-%05d.safetensors" % (i, m) for i in range(1, m + 1)]
        check(st_names == want, "shard names %r, expected %r" % (st_names, want))
        check("model.safetensors.index.json" in v.files, "sharded view without an index file")

    for fn in st_names:
        try:
            tensors, _ = parse_safetensors(v.files[fn], fn)
        except SafetensorsError as e:
            raise TestFailure("invalid safetensors file in view: %s" % e)
        check(tensors, "%s holds no tensors" % fn)
        for k, val in tensors.items():
            check(k not in v.tensors, "tensor %s in both %s and %s" % (k, v.tensor_file.get(k), fn))
            v.tensors[k] = val
            v.tensor_file[k] = fn

    if "model.safetensors.index.json" in v.files:
        try:
            idx = json.loads(v.files["model.safetensors.index.json"].decode("utf-8"),
                             object_pairs_hook=_no_dup_pairs)
        except (ValueError, SafetensorsError) as e:
            raise TestFailure("model.safetensors.index.json is not valid JSON: %s" % e)
        v.index = idx
        itext = v.files["model.safetensors.index.json"].decode("utf-8")
        check(not check_json_format or itext == json.dumps(idx, indent=2, sort_keys=True) + "\n",
              "model.safetensors.index.json is not written as save_pretrained writes it: %s" % itext[:500])
        check(isinstance(idx, dict) and isinstance(idx.get("weight_map"), dict)
              and isinstance(idx.get("metadata"), dict),
              "index must have 'metadata' and 'weight_map' objects: %r" % (list(idx)[:5],))
        ts = idx["metadata"].get("total_size")
        check(type(ts) is int and ts == v.total_bytes,
              "index metadata.total_size %r != sum of tensor bytes %d" % (ts, v.total_bytes))
        wm = idx["weight_map"]
        missing = sorted(set(v.tensors) - set(wm))
        extra = sorted(set(wm) - set(v.tensors))
        check(not missing and not extra,
              "index weight_map vs tensors: missing %r, extra %r" % (missing[:5], extra[:5]))
        wrong = [(k, wm[k], v.tensor_file[k]) for k in v.tensors if wm[k] != v.tensor_file[k]]
        check(not wrong, "index weight_map points to the wrong file, e.g. %r" % (wrong[:3],))
        check(set(wm.values()) == set(st_names),
              "weight_map files %r != shard files %r" % (sorted(set(wm.values())), st_names))

    # the kernel read path: random preads everywhere, mmap on the biggest file (or all)
    for fn in sorted(v.files):
        _check_reads(os.path.join(mountdir, fn), v.files[fn], rng)
    targets = st_names if mmap_all else [max(st_names, key=lambda n: len(v.files[n]))]
    for fn in targets:
        got = _read_mmap(os.path.join(mountdir, fn))
        if got != v.files[fn]:
            i = next((i for i in range(min(len(got), len(v.files[fn])))
                      if got[i] != v.files[fn][i]), min(len(got), len(v.files[fn])))
            raise TestFailure("%s: mmap content (%d bytes) differs from read() content (%d bytes)"
                              " at byte %d" % (fn, len(got), len(v.files[fn]), i))

    if shard_size is not None:
        check_sharding(v, shard_size)
    return v


def check_sharding(v, shard_size):
    """HF sharding rules: everything fits -> one model.safetensors; otherwise each shard
    holds at most shard_size tensor bytes unless it holds a single group (one layer or one
    non-layer tensor) that alone is bigger; a layer's tensors are never split across files
    unless the layer alone exceeds shard_size."""
    total = v.total_bytes
    if total <= shard_size:
        check(v.st_files == ["model.safetensors"],
              "total tensor bytes %d <= shard_size %d but the view has %r"
              % (total, shard_size, v.st_files))
        return
    check(len(v.st_files) > 1, "total tensor bytes %d > shard_size %d but only %r"
          % (total, shard_size, v.st_files))
    layer_files, layer_bytes = {}, {}
    groups_per_file, bytes_per_file = {}, {}
    for name, (_, _, b) in v.tensors.items():
        fn = v.tensor_file[name]
        m = LAYER_RE.match(name)
        g = ("layer", int(m.group(1))) if m else ("tensor", name)
        if m:
            layer_files.setdefault(g[1], set()).add(fn)
            layer_bytes[g[1]] = layer_bytes.get(g[1], 0) + len(b)
        groups_per_file.setdefault(fn, set()).add(g)
        bytes_per_file[fn] = bytes_per_file.get(fn, 0) + len(b)
    for layer, fs in sorted(layer_files.items()):
        if len(fs) > 1 and layer_bytes[layer] <= shard_size:
            raise TestFailure("layer %d (%d bytes <= shard_size %d) is split across %r"
                              % (layer, layer_bytes[layer], shard_size, sorted(fs)))
    for fn, nb in sorted(bytes_per_file.items()):
        if nb > shard_size and len(groups_per_file[fn]) > 1:
            raise TestFailure("%s holds %d tensor bytes > shard_size %d in %d groups"
                              % (fn, nb, shard_size, len(groups_per_file[fn])))


# --------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------

def _fmt_elem(dtype, raw):
    import numpy as np
    try:
        if dtype == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
            return "%r (0x%s)" % (float(u.view("<f4")[0]), raw.hex())
        npd = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4",
               "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}.get(dtype)
        if npd:
            return "%r (0x%s)" % (np.frombuffer(raw, dtype=npd)[0].item(), raw.hex())
    except Exception:  # noqa: BLE001 - formatting only
        pass
    return "0x" + raw.hex()


def first_diff(a, b):
    import numpy as np
    n = min(len(a), len(b))
    x = np.frombuffer(a[:n], dtype=np.uint8)
    y = np.frombuffer(b[:n], dtype=np.uint8)
    idx = np.flatnonzero(x != y)
    if idx.size:
        return int(idx[0]), int(idx.size)
    return (n, 0) if len(a) != len(b) else (None, 0)


def diff_tensors(actual, expected, label_a="view", label_e="reference", max_items=12):
    """List of human-readable problems (empty if identical): name set, dtype, shape, bytes."""
    probs = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing:
        probs.append("%d tensors missing from %s: %s%s" % (
            len(missing), label_a, ", ".join(missing[:8]), " ..." if len(missing) > 8 else ""))
    if extra:
        probs.append("%d unexpected tensors in %s: %s%s" % (
            len(extra), label_a, ", ".join(extra[:8]), " ..." if len(extra) > 8 else ""))
    nbad = 0
    for name in sorted(set(actual) & set(expected)):
        adt, ash, ab = actual[name]
        edt, esh, eb = expected[name]
        if adt != edt or tuple(ash) != tuple(esh):
            probs.append("%s: %s %s %r, %s %s %r" % (name, label_a, adt, list(ash), label_e, edt,
                                                     list(esh)))
            nbad += 1
        elif ab != eb:
            off, cnt = first_diff(ab, eb)
            isz = DTYPE_SIZES.get(adt, 1)
            el = off // isz
            probs.append("%s (%s %r): bytes differ; first at byte %d = element %d: %s %s, %s %s"
                         " (%d differing bytes of %d)"
                         % (name, adt, list(ash), off, el,
                            label_a, _fmt_elem(adt, ab[el * isz:(el + 1) * isz]),
                            label_e, _fmt_elem(edt, eb[el * isz:(el + 1) * isz]), cnt, len(eb)))
            nbad += 1
        if nbad >= max_items:
            probs.append("... (stopping after %d differing tensors)" % nbad)
            break
    return probs


def assert_same_tensors(actual, expected, label_a="view", label_e="reference"):
    probs = diff_tensors(actual, expected, label_a, label_e)
    if probs:
        raise TestFailure("tensor mismatch (%s vs %s):\n  %s" % (label_a, label_e,
                                                                 "\n  ".join(probs)))


# config.json ---------------------------------------------------------------------------

# fields that HF reads as floats; written as ints they change type in transformers
FLOAT_KEYS = {"rms_norm_eps", "rope_theta", "layer_norm_eps", "layer_norm_epsilon",
              "routed_scaling_factor", "initializer_range", "attention_dropout",
              "hidden_dropout", "router_aux_loss_coef", "partial_rotary_factor"}

_NUM_RE = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"


def raw_number_tokens(text):
    """{key: raw number text} for every `"key": <number>` in the raw JSON text (any depth),
    found with a regex scan that does not use the json module."""
    out = {}
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"\s*:\s*(' + _NUM_RE + r')\s*[,}\]]', text):
        out.setdefault(m.group(1), []).append(m.group(2))
    return out


def _type_eq(a, b):
    if isinstance(b, bool) or isinstance(a, bool):
        return type(a) is type(b) and a == b
    if isinstance(b, float):
        return type(a) is float and a == b
    if isinstance(b, int):
        return type(a) is int and a == b
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(_type_eq(x, y) for x, y in zip(a, b))
    if isinstance(b, dict):
        return (isinstance(a, dict) and set(a) == set(b)
                and all(_type_eq(a[k], b[k]) for k in b))
    return type(a) is type(b) and a == b


def config_problems(cfg_text, expected, keys=None):
    """Check a config.json text against expected values (for `keys`, default all expected
    keys).  Also checks that float-typed fields are written as floats in the raw text."""
    probs = []
    try:
        cfg = json.loads(cfg_text, object_pairs_hook=_no_dup_pairs)
    except (ValueError, SafetensorsError) as e:
        return ["config.json is not valid JSON: %s" % e]
    keys = list(expected) if keys is None else list(keys)
    for k in keys:
        if k not in expected:
            probs.append("expected config lacks key %r (test data problem)" % k)
            continue
        if k not in cfg:
            probs.append("config.json lacks %r (expected %r)" % (k, expected[k]))
        elif not _type_eq(cfg[k], expected[k]):
            probs.append("config.json %r = %r (%s), expected %r (%s)" % (
                k, cfg[k], type(cfg[k]).__name__, expected[k], type(expected[k]).__name__))
    raw = raw_number_tokens(cfg_text)
    float_keys = set(FLOAT_KEYS) | {k for k in keys if k in expected
                                    and isinstance(expected[k], float)}
    for k in sorted(float_keys):
        for tok in raw.get(k, []):
            if not any(c in tok for c in ".eE"):
                probs.append("config.json %r written as %r: a float field must be written "
                             "with '.' or an exponent" % (k, tok))
        if k in keys and k in cfg and cfg[k] is not None and k not in raw:
            probs.append("config.json %r is not written as a plain number: %r" % (k, cfg[k]))
    return probs


def assert_config(cfg_text, expected, keys=None):
    probs = config_problems(cfg_text, expected, keys)
    if probs:
        compact = re.sub(r"\s*\n\s*", " ", cfg_text.strip())
        raise TestFailure("config.json mismatch:\n  %s\n  config.json: %s"
                          % ("\n  ".join(probs), compact[:3000]))


# cp -r ---------------------------------------------------------------------------------

def safetensors_headers(mountdir):
    """{file name: (header length, header dict)} of every .safetensors file in the mount, read
    before anything is damaged (the first tensor can share a page with the header)."""
    out = {}
    for fn in sorted(os.listdir(mountdir)):
        if fn.endswith(".safetensors"):
            with open(os.path.join(mountdir, fn), "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                out[fn] = (n, json.loads(f.read(n)))
    return out


def read_tensors_expect_eio(mountdir, headers, expected):
    """pread every tensor of headers from the mount. A read may fail with EIO (a damaged source,
    or a page shared with one; the kernel first returns what it got before the error, and those
    bytes must be right); every other read must equal expected[name][2]. Returns (names that
    gave EIO, number of tensors read back correctly)."""
    eio, good = [], 0
    for fn, (n, header) in sorted(headers.items()):
        fd = os.open(os.path.join(mountdir, fn), os.O_RDONLY)
        try:
            for name, t in header.items():
                if name == "__metadata__":
                    continue
                b, e = t["data_offsets"]
                want = expected[name][2]
                try:
                    data = os.pread(fd, e - b, 8 + n + b)
                    if len(data) < e - b:
                        check(data == want[:len(data)], "%s: wrong bytes before the error" % name)
                        os.pread(fd, e - b - len(data), 8 + n + b + len(data))
                        check(False, "%s: short read without EIO" % name)
                except OSError as ex:
                    check(ex.errno == errno.EIO, "%s: errno %d, want EIO" % (name, ex.errno))
                    eio.append(name)
                    continue
                check(data == want, "%s: wrong bytes" % name)
                good += 1
        finally:
            os.close(fd)
    return eio, good


def run_threads(fn, n, timeout=120):
    """Run fn(0..n-1) on n threads at once and wait; a thread still running is a failure."""
    import threading
    ts = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    check(not any(t.is_alive() for t in ts), "reader threads hung")


def cp_r_compare(mountdir, view):
    """`cp -r` the mount to a temp dir; the copy must equal what read() returned."""
    dst_parent = scratch("cp")
    dst = os.path.join(dst_parent, "copy")
    try:
        r = subprocess.run(["cp", "-r", mountdir, dst], capture_output=True, text=True,
                           timeout=300)
        check(r.returncode == 0, "cp -r %s failed (%d): %s" % (mountdir, r.returncode,
                                                             r.stderr.strip()))
        listed = sorted(os.listdir(mountdir))
        got_all = sorted(os.listdir(dst))
        check(got_all == listed, "cp -r copied %r, the mount lists %r" % (got_all, listed))
        got = sorted(n for n in got_all if n != META_DIR)
        check(got == sorted(view.files), "cp -r copied %r, view has %r" % (got, sorted(view.files)))
        for fn in got:
            with open(os.path.join(dst, fn), "rb") as f:
                data = f.read()
            if data != view.files[fn]:
                off, _ = first_diff(data, view.files[fn])
                raise TestFailure("cp -r copy of %s (%d bytes) differs from read() (%d bytes) at"
                                  " byte %s" % (fn, len(data), len(view.files[fn]), off))
    finally:
        _rmtree(dst_parent)


# --------------------------------------------------------------------------------------
# running the code under test
# --------------------------------------------------------------------------------------

def _san_dir():
    d = os.path.join(work_dir(), "sanitizer-logs")
    os.makedirs(d, exist_ok=True)
    return d


def sut_env(extra=None):
    """Environment for processes of the code under test: sanitizer reports go to log files
    (so stderr stays exactly what the program prints, also for the daemonized process),
    and are collected by check_sanitizer_logs()."""
    env = dict(os.environ)
    d = _san_dir()
    for var, name in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan"),
                      ("LSAN_OPTIONS", "lsan")):
        cur = env.get(var, "")
        cur = ":".join(p for p in cur.split(":") if p and not p.startswith("log_path="))
        env[var] = (cur + ":" if cur else "") + "log_path=" + os.path.join(d, name)
    if extra:
        env.update(extra)
    return env


_san_seen = set()


def check_sanitizer_logs(context=""):
    """Raise if any sanitizer log appeared since the last call."""
    d = _san_dir()
    new = sorted(set(os.listdir(d)) - _san_seen)
    _san_seen.update(new)
    if new:
        texts = []
        for n in new:
            try:
                with open(os.path.join(d, n), errors="replace") as f:
                    texts.append("--- %s ---\n%s" % (n, f.read()[:6000]))
            except OSError:
                pass
        raise TestFailure("sanitizer report(s) %s%s:\n%s" % (
            ", ".join(new), " (" + context + ")" if context else "", "\n".join(texts)))


class Result:
    def __init__(self, argv, rc, out, err, seconds):
        self.argv, self.rc, self.stdout, self.stderr, self.seconds = argv, rc, out, err, seconds

    def __repr__(self):
        return "rc=%r\n  cmd: %s\n  stdout: %s\n  stderr: %s" % (
            self.rc, " ".join(self.argv), self.stdout[-2000:].rstrip(), self.stderr[-2000:].rstrip())


def run_cmd(argv, timeout=DEFAULT_TIMEOUT, env=None):
    """Run a command in its own session; on timeout kill the whole process group.
    Returns Result with rc=None on timeout."""
    t = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env or sut_env(), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = p.communicate()
        rc = None
    return Result(list(argv), rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                  time.monotonic() - t)


def require_binary(path):
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise TestFailure("binary %s does not exist (build first: cmake --build build)" % path)


# mounts ---------------------------------------------------------------------------------

class MountFailed(TestFailure):
    def __init__(self, result, msg="mount failed"):
        self.result = result
        super().__init__("%s: %r" % (msg, result))


_live_mounts = {}     # mountpoint -> Mount
_known_pids = set()   # daemon pids we found (started by us)


def _proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def daemon_pids(mountpoint):
    """PIDs of mcorefs processes whose command line names this mountpoint."""
    pids = []
    base = os.path.basename(MCOREFS_BIN)
    for ent in os.listdir("/proc"):
        if not ent.isdigit():
            continue
        pid = int(ent)
        if pid == os.getpid():
            continue
        cl = _proc_cmdline(pid)
        if not cl or os.path.basename(cl[0]) != base:
            continue
        if mountpoint in cl or os.path.realpath(mountpoint) in cl:
            if _proc_state(pid) not in (None, "Z"):
                pids.append(pid)
    return pids


def mounted_paths():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            out.append(mp)
    return out


def is_mounted(path):
    path = os.path.realpath(path)
    return path in mounted_paths()


def _fusermount(mnt, lazy=False):
    argv = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [mnt]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=UNMOUNT_TIMEOUT)
        return r.returncode == 0, r.stderr.strip()
    except subprocess.TimeoutExpired:
        return False, "fusermount3 timed out"


def _wait_gone(pids, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = [p for p in pids if _proc_state(p) not in (None, "Z")]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _proc_state(p) not in (None, "Z")]


def _kill(pids):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        pids = _wait_gone(pids, 3)
        if not pids:
            return


class Mount:
    """with Mount(ckpt, ["true_vocab_size=1000"]) as m: read_view(m.path)

    Default: the daemon daemonizes (the documented mode: when it returns 0 the mount must
    be usable).  foreground=True runs it with -f in the background and waits for the mount,
    and checks its exit status after unmounting.
    On exit: unmount (fusermount3 -u, then -u -z), wait for the daemon to exit (a daemon
    that outlives its mount is an error and is killed), remove the mountpoint, and check
    for sanitizer reports.
    """

    def __init__(self, ckpt, options=None, foreground=False, extra_args=(), timeout=DEFAULT_TIMEOUT):
        self.ckpt = ckpt
        self.options = [o for o in (options or []) if o]
        self.foreground = foreground
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self.path = None
        self.pids = []
        self.proc = None
        self.result = None
        self.mount_seconds = None

    def argv(self):
        a = [MCOREFS_BIN, self.ckpt, self.path]
        if self.options:
            a += ["-o", ",".join(self.options)]
        if self.foreground:
            a.append("-f")
        return a + self.extra_args

    def __enter__(self):
        require_binary(MCOREFS_BIN)
        self.path = tempfile.mkdtemp(prefix="mnt-", dir=work_dir())
        _live_mounts[self.path] = self
        try:
            self._start()
        except BaseException:
            self.close(raise_errors=False)
            raise
        return self

    def _start(self):
        t = time.monotonic()
        if not self.foreground:
            r = run_cmd(self.argv(), timeout=self.timeout)
            self.result = r
            if r.rc != 0:
                raise MountFailed(r, "mcorefs exited with %r" % r.rc if r.rc is not None
                                  else "mcorefs did not return within %ds" % self.timeout)
            if not is_mounted(self.path):
                raise MountFailed(r, "mcorefs returned 0 but %s is not a mountpoint" % self.path)
            self.pids = daemon_pids(self.path)
            _known_pids.update(self.pids)
        else:
            self._log = open(os.path.join(work_dir(), "daemon-%s.log"
                                          % os.path.basename(self.path)), "w+b")
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=sut_env(),
                                         start_new_session=True)
            _known_pids.add(self.proc.pid)
            end = time.monotonic() + self.timeout
            while not is_mounted(self.path):
                if self.proc.poll() is not None:
                    raise MountFailed(self._fg_result(), "mcorefs -f exited with %r before mounting"
                                      % self.proc.returncode)
                if time.monotonic() > end:
                    raise MountFailed(self._fg_result(), "mount not ready after %ds" % self.timeout)
                time.sleep(0.02)
            self.pids = [self.proc.pid]
        self.mount_seconds = time.monotonic() - t
        check(os.path.ismount(self.path), "os.path.ismount(%s) is False" % self.path)

    def _fg_result(self):
        self._log.seek(0)
        txt = self._log.read().decode("utf-8", "replace")
        return Result(self.argv(), self.proc.returncode if self.proc else None, "", txt, 0)

    def __exit__(self, et, ev, tb):
        self.close(raise_errors=et is None)
        return False

    def close(self, raise_errors=True):
        problems = []
        if self.path is None:
            return
        if is_mounted(self.path):
            ok, msg = False, ""
            for _ in range(20):
                ok, msg = _fusermount(self.path)
                if ok or not is_mounted(self.path):
                    break
                time.sleep(0.1)
            if is_mounted(self.path):
                problems.append("fusermount3 -u %s failed: %s; used -z" % (self.path, msg))
                _fusermount(self.path, lazy=True)
        pids = list(self.pids)
        if not pids and self.result is not None and self.result.rc == 0:
            pids = daemon_pids(self.path)
        left = _wait_gone(pids, DAEMON_EXIT_TIMEOUT)
        if left:
            problems.append("daemon pid(s) %r still running %ds after unmount; killed"
                            % (left, DAEMON_EXIT_TIMEOUT))
            _kill(left)
        strays = daemon_pids(self.path)
        if strays:
            problems.append("stray mcorefs processes for %s: %r; killed" % (self.path, strays))
            _kill(strays)
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
            if rc != 0:
                problems.append("mcorefs -f exited with %r after unmount: %s"
                                % (rc, self._fg_result().stderr[-3000:]))
            self._log.close()
        try:
            os.rmdir(self.path)
        except OSError as e:
            problems.append("cannot remove mountpoint %s: %s" % (self.path, e))
        _live_mounts.pop(self.path, None)
        try:
            check_sanitizer_logs("mount of %s" % self.ckpt)
        except TestFailure as e:
            problems.append(str(e))
        if problems:
            msg = "unmount/cleanup problems:\n  " + "\n  ".join(problems)
            if raise_errors:
                raise TestFailure(msg)
            print("    " + msg.replace("\n", "\n    "), flush=True)


def cleanup_all():
    """Unmount everything still mounted under this script's work dir and kill the daemons
    we started.  Returns a list of what had to be cleaned (empty = nothing was left)."""
    left = []
    for mp, m in list(_live_mounts.items()):
        left.append("mount %s still open" % mp)
        try:
            m.close(raise_errors=False)
        except Exception as e:  # noqa: BLE001
            left.append("closing %s: %s" % (mp, e))
    if _work_dir:
        for mp in mounted_paths():
            if mp.startswith(_work_dir + "/"):
                left.append("stale mount %s" % mp)
                _fusermount(mp, lazy=True)
                _kill(daemon_pids(mp))
    alive = [p for p in _known_pids if _proc_state(p) not in (None, "Z")]
    if alive:
        cl = {p: _proc_cmdline(p) for p in alive}
        alive = [p for p in alive if cl[p] and os.path.basename(cl[p][0]) == os.path.basename(MCOREFS_BIN)]
        if alive:
            left.append("daemons still alive: %r" % alive)
            _kill(alive)
    return left


def _atexit():
    cleanup_all()
    if _work_dir and not _keep_work and not _any_failure:
        _rmtree(_work_dir)
    elif _work_dir:
        print("(scratch dir kept: %s)" % _work_dir)


atexit.register(_atexit)


def _sig(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


signal.signal(signal.SIGTERM, _sig)


def expect_mount_failure(ckpt, options=None, name_in_msg=(), timeout=DEFAULT_TIMEOUT):
    """Mounting must fail: non-zero exit in time, exactly one stderr line starting with
    'mcorefs:' that contains every string in name_in_msg (an entry that is a tuple: any one
    of its strings), and no mount or daemon left.  Every message is logged."""
    require_binary(MCOREFS_BIN)
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=work_dir())
    argv = [MCOREFS_BIN, ckpt, mnt] + (["-o", ",".join(options)] if options else [])
    r = run_cmd(argv, timeout=timeout)
    probs = []
    try:
        if r.rc is None:
            probs.append("did not exit within %ds" % timeout)
        elif r.rc == 0:
            probs.append("exited 0 (expected failure)")
        probs += one_line_error(r.stderr, "mcorefs:", name_in_msg)
        if is_mounted(mnt):
            probs.append("left a mount behind at %s" % mnt)
    finally:
        if is_mounted(mnt):
            _fusermount(mnt) or _fusermount(mnt, lazy=True)
        strays = daemon_pids(mnt)
        if strays:
            probs.append("left daemon process(es) %r" % strays)
            _kill(strays)
        try:
            os.rmdir(mnt)
        except OSError as e:
            probs.append("mountpoint not removable: %s" % e)
    try:
        check_sanitizer_logs("failing mount of %s" % ckpt)
    except TestFailure as e:
        probs.append(str(e))
    print("    mcorefs stderr: %s" % r.stderr.rstrip()[:500], flush=True)
    if probs:
        raise TestFailure("mount of %s with %r: %s\n  %r" % (ckpt, options, "; ".join(probs), r))
    return r


def one_line_error(stderr, prefix, must_contain=()):
    probs = []
    lines = stderr.splitlines()
    if len(lines) != 1 or not stderr.endswith("\n"):
        probs.append("stderr must be exactly one line, got %d line(s): %r" % (len(lines), stderr[:1500]))
    if not lines or not lines[0].startswith(prefix):
        probs.append("stderr does not start with %r" % prefix)
    for s in must_contain:
        alts = (s,) if isinstance(s, str) else tuple(s)    # a tuple = any one of these
        if not any(a in stderr for a in alts):
            probs.append("error message does not name %s" % " or ".join(repr(a) for a in alts))
    return probs


def run_inspect(args, timeout=DEFAULT_TIMEOUT):
    require_binary(MCOREFS_INSPECT)
    r = run_cmd([MCOREFS_INSPECT] + list(args), timeout=timeout)
    check_sanitizer_logs("mcorefs-inspect %s" % " ".join(args))
    return r


def rank_file_dirs(entries):
    """Rank-dir names (mp_rank_..) from inspect's "rank_files": entries may be paths (of the
    .pt file or its dir) or objects with a "name"/"path"."""
    out = []
    for e in entries or []:
        if isinstance(e, dict):
            e = e.get("name") or e.get("path") or e.get("file") or ""
        e = str(e).rstrip("/")
        if e.endswith(".pt"):
            e = os.path.dirname(e)
        out.append(os.path.basename(e))
    return sorted(out)


def expect_inspect_failure(args, name_in_msg=(), timeout=DEFAULT_TIMEOUT):
    r = run_inspect(args, timeout)
    probs = []
    if r.rc is None:
        probs.append("did not exit within %ds" % timeout)
    elif r.rc != 1:
        probs.append("exit status %r, expected 1" % r.rc)
    probs += one_line_error(r.stderr, "mcorefs-inspect:", name_in_msg)
    print("    inspect stderr: %s" % r.stderr.rstrip()[:500], flush=True)
    if probs:
        raise TestFailure("mcorefs-inspect %s: %s\n  %r" % (" ".join(args), "; ".join(probs), r))
    return r


# --------------------------------------------------------------------------------------
# checkpoint tree snapshot (the mount must not change anything in the checkpoint)
# --------------------------------------------------------------------------------------

def tree_snapshot(root):
    snap = {}
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for n in sorted(dns + fns):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            h = None
            if stat.S_ISREG(st.st_mode):
                hh = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        hh.update(chunk)
                h = hh.hexdigest()
            snap[rel] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, h)
    st = os.lstat(root)
    snap["."] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, None)
    return snap


def snapshot_diff(a, b):
    probs = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            probs.append("new entry %s" % k)
        elif k not in b:
            probs.append("entry %s disappeared" % k)
        elif a[k] != b[k]:
            probs.append("%s changed: %r -> %r" % (k, a[k], b[k]))
    return probs


# --------------------------------------------------------------------------------------
# zip surgery for the bad-input tests (torch.save files are uncompressed zips)
# --------------------------------------------------------------------------------------

def zip_layout(data):
    """Return (cd_offset, cd_size, eocd_offset, entries) where entries is a list of dicts
    with name, local_offset, data_offset, size, cd_entry_offset.  Handles zip64 EOCD."""
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        raise ValueError("no end of central directory record")
    _, _, _, _, n, cd_size, cd_off, _ = struct.unpack_from("<IHHHHIIH", data, eocd)
    if cd_off == 0xFFFFFFFF or cd_size == 0xFFFFFFFF or n == 0xFFFF:
        loc = data.rfind(b"PK\x06\x07", 0, eocd)
        (z64_off,) = struct.unpack_from("<Q", data, loc + 8)
        (_, _, _, _, _, _, _, n, cd_size, cd_off) = struct.unpack_from("<IQHHIIQQQQ", data, z64_off)
    entries = []
    p = cd_off
    for _ in range(n):
        sig, = struct.unpack_from("<I", data, p)
        if sig != 0x02014B50:
            raise ValueError("bad central directory entry at %d" % p)
        (csize, usize) = struct.unpack_from("<II", data, p + 20)
        nlen, xlen, clen = struct.unpack_from("<HHH", data, p + 28)
        (loff,) = struct.unpack_from("<I", data, p + 42)
        name = data[p + 46:p + 46 + nlen].decode("utf-8", "replace")
        extra = data[p + 46 + nlen:p + 46 + nlen + xlen]
        # zip64 extra field
        q = 0
        while q + 4 <= len(extra):
            hid, hlen = struct.unpack_from("<HH", extra, q)
            if hid == 1:
                vals = []
                r = q + 4
                while r + 8 <= q + 4 + hlen:
                    vals.append(struct.unpack_from("<Q", extra, r)[0])
                    r += 8
                it = iter(vals)
                if usize == 0xFFFFFFFF:
                    usize = next(it)
                if csize == 0xFFFFFFFF:
                    csize = next(it)
                if loff == 0xFFFFFFFF:
                    loff = next(it)
            q += 4 + hlen
        lnlen, lxlen = struct.unpack_from("<HH", data, loff + 26)
        entries.append({"name": name, "local_offset": loff, "cd_entry_offset": p,
                        "data_offset": loff + 30 + lnlen + lxlen, "size": csize})
        p += 46 + nlen + xlen + clen
    return cd_off, cd_size, eocd, entries


def zip_fix_crc(data, entry):
    """Recompute the CRC-32 of an (uncompressed) entry in both headers after editing it."""
    crc = zlib.crc32(bytes(data[entry["data_offset"]:entry["data_offset"] + entry["size"]])) & 0xFFFFFFFF
    (flags,) = struct.unpack_from("<H", data, entry["local_offset"] + 6)
    if flags & 8:   # sizes/CRC in a data descriptor after the data (torch's writer does this)
        dd = entry["data_offset"] + entry["size"]
        if bytes(data[dd:dd + 4]) == b"PK\x07\x08":
            dd += 4
        struct.pack_into("<I", data, dd, crc)
    else:
        struct.pack_into("<I", data, entry["local_offset"] + 14, crc)
    struct.pack_into("<I", data, entry["cd_entry_offset"] + 16, crc)


# --------------------------------------------------------------------------------------
# rewriting a rank file with torch (for checkpoints whose args must disagree / be unknown).
# Megatron classes in the pickle (enums in args) are stood in for by stub classes that
# pickle back to the same global name and constructor arguments.
# --------------------------------------------------------------------------------------

class _StubMeta(type):
    """Enum members (pickled as getattr(EnumClass, "name")) come back as named stubs."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        inst = cls.__new__(cls)
        inst._a, inst._name = (), name
        return inst


class _Stub(metaclass=_StubMeta):
    _name = None

    def __init__(self, *a, **k):
        self._a = a

    def __reduce__(self):
        if self._name is not None:
            return (getattr, (type(self), self._name))
        return (type(self), self._a)

    def __repr__(self):
        return "%s.%s" % (type(self).__name__, self._name) if self._name else \
            "%s%r" % (type(self).__name__, self._a)


class _StubFinder:
    """Meta path finder that makes `megatron.*` importable as stub modules."""

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery
        if name == "megatron" or name.startswith("megatron."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        import types
        m = types.ModuleType(spec.name)
        m.__path__ = []

        def ga(attr, _m=m):
            if attr.startswith("__"):
                raise AttributeError(attr)
            c = type(attr, (_Stub,), {"__module__": _m.__name__})
            setattr(_m, attr, c)
            return c
        m.__getattr__ = ga
        return m

    def exec_module(self, module):
        pass


class _stubbed_megatron:
    """Context: `megatron.*` imports resolve to stub modules; on exit sys.modules and
    sys.meta_path are restored (so the fixture generator's own enum modules still work)."""

    def __enter__(self):
        import numpy
        import numpy.core.multiarray
        import torch
        self.saved = {k: v for k, v in sys.modules.items()
                      if k == "megatron" or k.startswith("megatron.")}
        for k in self.saved:
            del sys.modules[k]
        self.finder = _StubFinder()
        sys.meta_path.insert(0, self.finder)
        sys.modules.setdefault("numpy._core", numpy.core)
        sys.modules.setdefault("numpy._core.multiarray", numpy.core.multiarray)
        return torch

    def __exit__(self, *exc):
        sys.meta_path.remove(self.finder)
        for k in [k for k in sys.modules if k == "megatron" or k.startswith("megatron.")]:
            del sys.modules[k]
        sys.modules.update(self.saved)
        return False


def load_rank_file(path):
    with _stubbed_megatron() as torch:
        return torch.load(path, map_location="cpu")


def real_fixture(name):
    """The folder of a real Megatron checkpoint in tests/data/megatron; a failure when absent."""
    d = os.path.join(MEGATRON_FIXTURES, name)
    if not os.path.isdir(d):
        raise TestFailure("fixture %s not found (MCOREFS_TEST_DATA=%s)" % (d, TEST_DATA))
    return d


def check_same_rank_layout(gen_it, real_it):
    """A generated iteration folder has the rank files Megatron wrote in real_it, and in each the
    same model keys with the same shapes and dtypes (TE _extra_state and non-tensors aside)."""
    check(sorted(os.listdir(real_it)) == sorted(os.listdir(gen_it)),
          "rank files %r != real %r" % (sorted(os.listdir(gen_it)), sorted(os.listdir(real_it))))

    def layout(path):
        sd = load_rank_file(os.path.join(path, "model_optim_rng.pt"))["model"]
        return {k: (tuple(v.shape), str(v.dtype)) for k, v in sd.items()
                if not k.endswith("_extra_state") and hasattr(v, "shape")}
    for sub in sorted(os.listdir(real_it)):
        a, b = layout(os.path.join(gen_it, sub)), layout(os.path.join(real_it, sub))
        diff = sorted(set(a.items()) ^ set(b.items()))
        check(not diff, "%s: generated vs real Megatron keys differ: %r" % (sub, diff[:6]))


class TPMerge:
    """Megatron-Bridge's tensor-parallel merges over {(tp, ep): state dict} rank files, for tests
    that compute the expected HF view from a real checkpoint independently of the C code."""

    def __init__(self, ranks, tp):
        self.ranks, self.tp = ranks, tp

    def model(self, t, e=0):
        return self.ranks[(t, e)]["model"]

    def cat(self, key, dim, e=0, n=None):
        import torch
        return torch.cat([self.model(t, e)[key] for t in range(n or self.tp)], dim=dim)

    def gated(self, key, e=0, n=None):
        """(gate, up) of a fused fc1: each TP shard is [gate_shard; up_shard] (Megatron's SwiGLU)."""
        import torch
        shards = [self.model(t, e)[key] for t in range(n or self.tp)]
        half = [x.shape[0] // 2 for x in shards]
        return (torch.cat([x[:h] for x, h in zip(shards, half)], 0),
                torch.cat([x[h:] for x, h in zip(shards, half)], 0))


def load_tp_ep_ranks(d):
    """{(tp, ep): state dict} of every rank file of a checkpoint without pipeline stages
    (mp_rank_TT_EEE), and the args."""
    it = int(open(os.path.join(d, "latest_checkpointed_iteration.txt")).read())
    it_dir = os.path.join(d, "iter_%07d" % it)
    ranks = {}
    for sub in sorted(os.listdir(it_dir)):
        parts = sub.split("_")
        ranks[(int(parts[2]), int(parts[3]))] = load_rank_file(os.path.join(it_dir, sub, "model_optim_rng.pt"))
    return ranks, ranks[(0, 0)]["args"]


def rewrite_rank_file(path, mutate):
    """torch.load a rank file, call mutate(state_dict), torch.save it back in place (the
    archive keeps its `model_optim_rng/` prefix)."""
    with _stubbed_megatron() as torch:
        sd = torch.load(path, map_location="cpu")
        mutate(sd)
        tmpd = tempfile.mkdtemp(dir=os.path.dirname(path))
        tmp = os.path.join(tmpd, os.path.basename(path))
        torch.save(sd, tmp)
        os.replace(tmp, path)
        os.rmdir(tmpd)


def copy_fixture(name):
    """A writable copy of a real fixture checkpoint (without golden dirs)."""
    src = os.path.join(MEGATRON_FIXTURES, name)
    dst = os.path.join(scratch(name), "ckpt")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("golden*", "KEYS.txt"))
    for dp, dns, fns in os.walk(dst):
        os.chmod(dp, 0o755)
        for n in fns:
            os.chmod(os.path.join(dp, n), 0o644)
    return dst


# --------------------------------------------------------------------------------------
# fixture generator access
# --------------------------------------------------------------------------------------

def generator():
    """Import tests/fixtures/mcore_gen.py (Skip if it is not there yet)."""
    if FIXTURES_PY not in sys.path:
        sys.path.insert(0, FIXTURES_PY)
    try:
        import mcore_gen  # noqa: WPS433
    except ImportError as e:
        raise Skip("fixture generator tests/fixtures/mcore_gen.py not importable: %s" % e)
    return mcore_gen


class Generated:
    def __init__(self, out_dir):
        self.dir = out_dir
        self.ckpt = os.path.join(out_dir, "ckpt")
        with open(os.path.join(out_dir, "reference.json")) as f:
            self.ref = json.load(f)
        self._tensors = None

    @property
    def tensors(self):
        if self._tensors is None:
            self._tensors = load_reference(os.path.join(self.dir, "reference.safetensors"))
        return self._tensors

    @property
    def true_vocab(self):
        return self.ref["true_vocab_size"]


def generate(family, name=None, **kw):
    g = generator()
    out = scratch(name or family)
    try:
        g.generate(out, family, **kw)
    except TypeError as e:
        raise TestFailure("mcore_gen.generate(%r, %r) rejected the arguments: %s" % (family, kw, e))
    return Generated(out)


def parse_size(s):
    """shard_size syntax used in option strings: plain bytes, KB/MB/GB (10^3),
    KiB/MiB/GiB (2^10)."""
    m = re.fullmatch(r"(\d+)\s*(|KB|MB|GB|KiB|MiB|GiB)", s)
    if not m:
        raise ValueError(s)
    mul = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20,
           "GiB": 2**30}[m.group(2)]
    return int(m.group(1)) * mul


# --------------------------------------------------------------------------------------
# self test: the reader and view checks against real HF-written golden dirs
# --------------------------------------------------------------------------------------

def _selftest():
    r = Runner("testlib-selftest", argv=[])
    goldens = sorted(glob.glob(os.path.join(MEGATRON_FIXTURES, "*", "golden*")))

    def golden_case(gd):
        exp = json.load(open(os.path.join(gd, "expected.json")))
        v = read_view(gd, check_modes=False, check_json_format=False,
                      allowed_extra=("expected.json", "megatron_logits.pt", "tokens.json",
                                     "hf_logits.pt"))
        check(len(v.tensors) == exp["num_tensors"], "num_tensors %d vs %d"
              % (len(v.tensors), exp["num_tensors"]))
        check(v.total_bytes == exp["total_bytes"], "total bytes")
        tens = exp["tensors"]
        tens = tens if isinstance(tens, dict) else dict(tens)
        for name, t in tens.items():
            dt, shape, b = v.tensors[name]
            check(dt == t["dtype"] and list(shape) == t["shape"], name)
            check(hashlib.sha256(b).hexdigest() == t["sha256"], "sha256 of %s" % name)
        assert_config(v.config_text, exp["config"], exp["derivable_config_keys"])

    for gd in goldens:
        r.run("golden:" + os.path.relpath(gd, MEGATRON_FIXTURES), golden_case, gd)

    def negatives():
        gd = os.path.join(MEGATRON_FIXTURES, "head_gpt_tp2dp2_distopt_torch", "golden")
        good = open(os.path.join(gd, "model.safetensors"), "rb").read()
        parse_safetensors(good)
        n = struct.unpack_from("<Q", good)[0]
        hdr = good[8:8 + n].decode()
        body = good[8 + n:]

        def mk(h, b=body, pad_to8=True):
            h = h.encode()
            if pad_to8:
                h += b" " * ((8 - (8 + len(h)) % 8) % 8)
            return struct.pack("<Q", len(h)) + h + b

        bad = {
            "truncated": good[:-1],
            "extra byte": good + b"\0",
            "unaligned": mk(hdr.rstrip(" ") + " ", pad_to8=False) if (8 + len(hdr.rstrip(" ")) + 1) % 8 else mk(hdr.rstrip(" ") + "  ", pad_to8=False),
            "non-space pad": mk(hdr.rstrip(" ") + "\n", pad_to8=True),
            "no metadata": mk(json.dumps({k: v for k, v in json.loads(hdr).items() if k != "__metadata__"})),
            "bad metadata": mk(hdr.replace('"format":"pt"', '"format":"np"')),
            "huge header": struct.pack("<Q", 100_000_001) + good[8:],
            "not an object": mk("[" + hdr[1:].rstrip(" ")[:-1] + "]"),
        }
        j = json.loads(hdr)
        names = [k for k in j if k != "__metadata__"]
        j2 = json.loads(hdr)
        j2[names[0]]["data_offsets"][1] += 2
        bad["overlap/size"] = mk(json.dumps(j2))
        j3 = json.loads(hdr)
        j3[names[0]]["shape"] = j3[names[0]]["shape"][:-1] + [j3[names[0]]["shape"][-1] + 1]
        bad["shape mismatch"] = mk(json.dumps(j3))
        j4 = json.loads(hdr)
        j4[names[0]]["dtype"] = "Q4"
        bad["unknown dtype"] = mk(json.dumps(j4))
        for what, data in bad.items():
            try:
                parse_safetensors(data, what)
            except SafetensorsError:
                continue
            raise TestFailure("parser accepted a bad file: %s" % what)
        # a re-serialised good file must parse and be identical
        t, _ = parse_safetensors(mk(json.dumps(j, separators=(",", ":"))), "reserialised")
        assert_same_tensors(t, parse_safetensors(good)[0], "reserialised", "original")
        # diff helper finds the first differing byte
        t2 = dict(t)
        nm = names[0]
        dt, sh, b = t2[nm]
        b = bytearray(b)
        b[5] ^= 1
        t2[nm] = (dt, sh, bytes(b))
        probs = diff_tensors(t2, t)
        check(len(probs) == 1 and "first at byte 5" in probs[0], "diff_tensors: %r" % probs)

    r.run("parser-negatives", negatives)

    def config_rules():
        exp = {"rms_norm_eps": 1e-05, "rope_theta": 10000.0, "vocab_size": 1000,
               "tie_word_embeddings": False}
        check(not config_problems('{"rms_norm_eps": 1e-05, "rope_theta": 10000.0, '
                                  '"vocab_size": 1000, "tie_word_embeddings": false}', exp), "good")
        check(config_problems('{"rms_norm_eps": 1e-05, "rope_theta": 10000, "vocab_size": 1000,'
                              ' "tie_word_embeddings": false}', exp), "int rope_theta")
        check(config_problems('{"rms_norm_eps": 1e-05, "rope_theta": 10000.0, "vocab_size": 1000.0,'
                              ' "tie_word_embeddings": false}', exp), "float vocab")
        check(config_problems('{"rms_norm_eps": 1e-05, "rope_theta": 10000.0, "vocab_size": 1000,'
                              ' "tie_word_embeddings": 0}', exp), "int bool")
        check(config_problems('{"rms_norm_eps": 1e-05, "rope_theta": 1e4, "vocab_size": 1000,'
                              ' "tie_word_embeddings": false, "initializer_range": 0}', exp),
              "int float key")

    r.run("config-rules", config_rules)

    def tree_and_cp():
        d = scratch("plain")
        for n, b in (("config.json", b'{"a": 1.0}'), ("model.safetensors",
                     open(os.path.join(MEGATRON_FIXTURES, "head_gpt_tp2dp2_distopt_torch",
                                       "golden", "model.safetensors"), "rb").read())):
            with open(os.path.join(d, n), "wb") as f:
                f.write(b)
        v = read_view(d, check_modes=False, check_json_format=False, shard_size=10**9, mmap_all=True)
        cp_r_compare(d, v)
        s1 = tree_snapshot(d)
        check(not snapshot_diff(s1, tree_snapshot(d)), "snapshot not stable")
        os.utime(os.path.join(d, "config.json"), ns=(1, 1))
        check(snapshot_diff(s1, tree_snapshot(d)), "snapshot misses mtime change")
        # zip helpers on a real rank file
        rf = os.path.join(MEGATRON_FIXTURES, "head_gpt_tp2pp2_torch", "iter_0000010",
                          "mp_rank_00_000", "model_optim_rng.pt")
        data = bytearray(open(rf, "rb").read())
        _, _, _, ents = zip_layout(bytes(data))
        pk = [e for e in ents if e["name"].endswith("/data.pkl")]
        check(len(pk) == 1, "data.pkl entry: %r" % [e["name"] for e in ents])
        check(data[pk[0]["data_offset"]] == 0x80, "data.pkl does not start with PROTO")
        old = bytes(data)
        zip_fix_crc(data, pk[0])
        check(bytes(data) == old, "zip_fix_crc changed an unmodified file")

    r.run("plain-dir-view", tree_and_cp)

    def rewrite():
        ck = copy_fixture("head_gpt_tp2pp2_torch")
        p = os.path.join(ck, "iter_0000010", "mp_rank_01_001", "model_optim_rng.pt")
        before = load_rank_file(p)
        rewrite_rank_file(p, lambda sd: setattr(sd["args"], "hidden_size", 96))
        after = load_rank_file(p)
        check(after["args"].hidden_size == 96, "rewrite did not change args")
        check(vars(after["args"]).keys() == vars(before["args"]).keys(), "args keys changed")
        check(repr(after["args"].attention_backend) == repr(before["args"].attention_backend),
              "enum stub round trip")
        for k, t in before["model"].items():
            if hasattr(t, "dtype"):
                check(after["model"][k].dtype == t.dtype and after["model"][k].equal(t), k)
        import zipfile
        names = zipfile.ZipFile(p).namelist()
        check(names[0] == "model_optim_rng/data.pkl", "archive prefix: %r" % names[:2])

    r.run("rewrite-rank-file", rewrite)
    return r.finish()


if __name__ == "__main__":
    if "--selftest" in sys.argv:
        sys.exit(_selftest())
    print(__doc__)
