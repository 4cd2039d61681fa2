#!/usr/bin/python3
"""The daemon's read path allocates nothing and takes no lock per request.

gdb attaches to a running daemon (-s: one request thread, whose reply buffer a first read has
allocated) and counts the calls to the allocator and to lock functions made by the daemon's
own code (called from the mcorefs executable), and the allocations of libfuse's reply path
(its copy fallback, under fuse_reply_data), while random reads of a real fixture go through
it: plain tensors (spliced file ranges), row-split ones (gathered with preadv), headers, small
and large requests. libfuse's own per-request bookkeeping (its request struct, the lock that
frees it) is not counted. A statfs() from the test ends the count (a breakpoint in op_statfs).
Needs gdb and root (ptrace); skipped otherwise.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"
COUNTED = ["malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc",
           "pthread_mutex_lock", "pthread_rwlock_rdlock", "pthread_rwlock_wrlock", "pthread_spin_lock"]


def golden(name):
    gd = os.path.join(T.MEGATRON_FIXTURES, name, "golden")
    exp = json.load(open(os.path.join(gd, "expected.json")))
    return [o for o in exp.get("mount_options", "").split(",") if o]


def stats(mnt):
    with open(os.path.join(mnt, ".mcorefs", "stats")) as f:
        return {k: v for k, v in (l.split(" ", 1) for l in f.read().splitlines())}


# $counted(): the call at this breakpoint comes straight from the daemon's own code (its caller,
# past the allocator's or sanitizer's own frames, is in the mcorefs executable), or is an
# allocation by libfuse's reply path (fuse_reply_data: its copy fallback). libfuse's own
# per-request lock and request struct are not the daemon's doing.
GDB_PYTHON = """
python
import gdb
class Counted(gdb.Function):
    def __init__(self):
        super().__init__("counted")
    def invoke(self, is_alloc):
        f = gdb.newest_frame().older()
        while f is not None and gdb.solib_name(f.pc()) is not None and (f.name() or "").startswith("_"):
            f = f.older()   # libasan's interceptor, libc's internals
        if f is not None and gdb.solib_name(f.pc()) is None:
            return 1
        if int(is_alloc):
            f = gdb.newest_frame()
            while f is not None:
                if f.name() == "fuse_reply_data":
                    return 1
                f = f.older()
        return 0
Counted()
end
"""


def gdb_script(ready):
    lines = ["set pagination off", "set confirm off", "set $hits = 0", GDB_PYTHON]
    for fn in COUNTED:
        lines += ["break %s if $counted(%d)" % (fn, 0 if "lock" in fn else 1),
                  "commands", "silent", "set $hits = $hits + 1", "printf \"HIT %s\\n\"" % fn, "bt 12",
                  "continue", "end"]
    lines += ["break op_statfs", "commands", "silent", "printf \"MCOREFS_HITS %d\\n\", $hits", "detach", "quit",
              "end", "shell touch %s" % ready, "continue"]
    return "\n".join(lines) + "\n"


def no_alloc_no_lock_per_read():
    if shutil.which("gdb") is None:
        raise T.Skip("gdb not installed")
    if os.geteuid() != 0:
        raise T.Skip("needs root to attach gdb")
    ckpt = T.copy_fixture(GPT)
    with T.Mount(ckpt, golden(GPT), foreground=True, extra_args=["-s"]) as m:
        names = sorted(n for n in os.listdir(m.path) if n.endswith(".safetensors"))
        path = os.path.join(m.path, names[0])
        fd = os.open(path, os.O_RDONLY)
        try:
            # warm-up: the thread's reply buffer, libfuse's splice pipe (allocated once per thread)
            whole = os.pread(fd, os.fstat(fd).st_size + 1, 0)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for off in range(0, len(whole), 65536):
                os.pread(fd, 65536, off)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            before = int(stats(m.path)["bytes_served"])
            ready = os.path.join(T.scratch("gdb"), "ready")
            script = os.path.join(os.path.dirname(ready), "count.gdb")
            with open(script, "w") as f:
                f.write(gdb_script(ready))
            log = open(script + ".out", "w+b")   # a file: a full pipe would stop gdb and the daemon with it
            gdb = subprocess.Popen(["gdb", "-nx", "-batch", "-p", str(m.pids[0]), "-x", script],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            end = time.monotonic() + 120
            while not os.path.exists(ready):
                if gdb.poll() is not None:
                    T.check(False, "gdb ended early: %s" % open(log.name, "rb").read().decode("utf-8", "replace")[-3000:])
                if time.monotonic() > end:
                    gdb.kill()
                    T.check(False, "gdb not ready after 120 s")
                time.sleep(0.1)
            rng = random.Random(15)
            for _ in range(48):   # 4 KiB-aligned pieces: one request each, every kind of tensor
                off = rng.randrange(0, len(whole)) & ~4095
                n = rng.choice([4096, 12288, 65536])
                T.check(os.pread(fd, n, off) == whole[off:off + n], "bytes at %d+%d differ" % (off, n))
            os.statvfs(m.path)   # ends the count
            gdb.wait(timeout=120)
            out = open(log.name, "rb").read().decode("utf-8", "replace")
        finally:
            os.close(fd)
        served = int(stats(m.path)["bytes_served"]) - before
    T.check(served > 0, "the reads did not reach the daemon (bytes_served +%d)" % served)
    hits = [l for l in out.splitlines() if l.startswith("MCOREFS_HITS ")]
    T.check(hits, "gdb did not report a count: %s" % out[-3000:])
    n = int(hits[0].split()[1])
    T.check(n == 0, "%d allocations or locks from the daemon's code during reads:\n%s" % (n, out[-4000:]))
    print("    %d bytes served through the daemon, 0 allocations or locks of its own" % served)


def main():
    r = T.Runner("read path")
    r.run("no-alloc-no-lock-per-read", no_alloc_no_lock_per_read)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
