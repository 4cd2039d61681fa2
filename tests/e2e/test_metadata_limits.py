#!/usr/bin/python3
"""A torch_dist `.metadata` is read within a fixed memory cap (512 MiB, file included), so a
crafted one of any size is refused, naming the file and the limit in words, before the daemon
or mcorefs-inspect reaches 1 GiB of RSS. (That a Kimi-K2-sized checkpoint still mounts, within
the mount targets, and reads back bit for bit is tests/e2e/test_k2_shape.py.)

The crafted files replace the .metadata of a copy of a real Megatron torch_dist fixture.
Peak RSS is taken from wait4() of the process itself.
"""
import os
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

DIST = "head_gpt_tp2pp2_torch_dist"
IT = "iter_0000010"
RSS_LIMIT_KB = 1024 * 1024          # the documented bound: 1 GiB


def run_measured(argv, timeout=T.DEFAULT_TIMEOUT):
    """(rc, stderr, peak RSS in KiB) of argv, which must exit by itself (a failing mount does)."""
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                         env=T.sut_env(), start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            raise T.TestFailure("%s did not exit within %ds" % (" ".join(argv), timeout))
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    return p.returncode, err.read().decode("utf-8", "replace"), ru.ru_maxrss


def crafted(write):
    """A copy of the real torch_dist fixture whose .metadata is written by write(file)."""
    ck = T.copy_fixture(DIST)
    with open(os.path.join(ck, IT, ".metadata"), "wb") as f:
        write(f)
    return ck


def refused(ck, words):
    """Both programs refuse ck with one line naming .metadata and every word, under 1 GiB."""
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=T.work_dir())
    try:
        for prog, argv in (("mcorefs-inspect", [T.MCOREFS_INSPECT, ck]),
                           ("mcorefs", [T.MCOREFS_BIN, ck, mnt, "-f"])):
            rc, err, rss = run_measured(argv)
            print("    %s: rc %d, peak RSS %.0f MiB, stderr: %s" % (prog, rc, rss / 1024, err.strip()[:400]),
                  flush=True)
            T.check(rc != 0, "%s accepted a crafted .metadata" % prog)
            probs = T.one_line_error(err, prog + ":", [".metadata"] + list(words))
            T.check(not probs, "%s: %s" % (prog, "; ".join(probs)))
            T.check(rss < RSS_LIMIT_KB, "%s peaked at %.0f MiB RSS (limit 1024 MiB)" % (prog, rss / 1024))
            T.check(not T.is_mounted(mnt), "a mount was left at %s" % mnt)
        T.check_sanitizer_logs("crafted .metadata")
    finally:
        os.rmdir(mnt)


def huge_memo_id():
    # PROTO 2, None, LONG_BINPUT 2**24, STOP: one memo slot, but an id that asks for a 128 MiB table
    ck = crafted(lambda f: f.write(b"\x80\x02N" + b"r" + struct.pack("<I", 1 << 24) + b"."))
    refused(ck, ["refused", "limit", "memo id 16777216 exceeds"])


def many_values(mbytes):
    # PROTO 2, MARK, then one EMPTY_LIST per byte: every byte is a 32-byte value plus a stack slot
    n = mbytes << 20

    def write(f):
        f.write(b"\x80\x02(")
        block = b"]" * (1 << 20)
        for _ in range(n >> 20):
            f.write(block)
        f.write(b"l.")
    refused(crafted(write), ["refused", "512 MiB"])


def huge_file():
    # 4 GiB, sparse: refused from its size, never read
    ck = crafted(lambda f: f.truncate(4 << 30))
    refused(ck, ["refused", "limit", "4294967296 bytes"])


def main():
    r = T.Runner("metadata-limits")
    r.run("huge-memo-id", huge_memo_id)
    r.run("many-values-64MB", many_values, 64)
    r.run("huge-file", huge_file)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
