#!/usr/bin/python3
"""torch_dist (PyTorch Distributed Checkpoint) checkpoints written by Megatron-Core: the view must
be byte-identical to the legacy-format twin of the same run and to the golden HF files; inspect
reports the DCP layout; damaged checkpoints (missing .distcp, truncated .distcp, corrupt or
inconsistent .metadata) fail at mount with one line naming the file.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

TWINS = {"head_gpt_tp2pp2_torch_dist": "head_gpt_tp2pp2_torch",
         "head_moe_tp2ep2_torch_dist": "head_moe_tp2ep2_torch",
         "v014_gpt_tp2pp2_torch_dist": None}


def fixture(name):
    d = os.path.join(T.MEGATRON_FIXTURES, name)
    if not os.path.isdir(d):
        raise T.Skip("%s not found" % d)
    return d


def twin_case(name):
    d = fixture(name)
    golden = T.load_golden_dir(os.path.join(d, "golden"))
    with T.Mount(d, ["true_vocab_size=1000"]) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, golden, "torch_dist mount", "golden")
        twin = TWINS[name]
        if twin:
            with T.Mount(fixture(twin), ["true_vocab_size=1000"]) as m2:
                w = T.read_view(m2.path)
                T.assert_same_tensors(v.tensors, w.tensors, "torch_dist mount", "legacy twin mount")
                T.check(v.config_text == w.config_text, "config.json differs from the legacy twin's")


def inspect_case(name):
    d = fixture(name)
    r = T.run_cmd([T.MCOREFS_INSPECT, d, "--json", "-o", "true_vocab_size=1000"])
    T.check(r.rc == 0, "inspect failed: %r" % r)
    j = json.loads(r.stdout)
    T.check(j["format"] == "torch_dist", "format %r" % j["format"])
    distcp = sorted(f for f in os.listdir(os.path.join(d, "iter_0000010")) if f.endswith(".distcp"))
    T.check(sorted(f["name"] for f in j["rank_files"]) == distcp, "files %r vs %r" % (j["rank_files"], distcp))
    T.check(j["dcp_chunks"] >= j["dcp_keys"] > 0, "chunks %r keys %r" % (j["dcp_chunks"], j["dcp_keys"]))


def concurrent_first_reads():
    """Chunk archives are read on first use: 8 threads read a fresh torch_dist mount in
    different random orders at once (every chunk is first touched concurrently); every block
    must equal the legacy twin's view. tools/tsan-stress.sh runs this under ThreadSanitizer."""
    import random
    name = "head_moe_tp2ep2_torch_dist"
    opts = ["true_vocab_size=1000", "shard_size=250000"]
    with T.Mount(fixture(TWINS[name]), opts) as m:
        want = T.read_view(m.path, shard_size=250000).files
    blocks = [(fn, off) for fn in sorted(want) for off in range(0, len(want[fn]), 65536)]
    errors = []
    with T.Mount(fixture(name), opts) as m:
        def worker(seed):
            order = list(blocks)
            random.Random(seed).shuffle(order)
            fds = {fn: os.open(os.path.join(m.path, fn), os.O_RDONLY) for fn in want}
            try:
                for fn, off in order:
                    if os.pread(fds[fn], 65536, off) != want[fn][off:off + 65536]:
                        errors.append("%s off=%d: wrong bytes" % (fn, off))
                        return
            except OSError as e:
                errors.append(str(e))
            finally:
                for fd in fds.values():
                    os.close(fd)
        T.run_threads(worker, 8)
        T.check(not errors, "concurrent first reads: %s" % errors[:5])


def damaged(what):
    src = fixture("head_gpt_tp2pp2_torch_dist")
    d = T.scratch("dist")
    shutil.rmtree(d)
    shutil.copytree(src, d)
    it = os.path.join(d, "iter_0000010")
    if what == "missing-distcp":
        victim = os.path.join(it, "__2_0.distcp")
        os.unlink(victim)
    elif what == "truncated-distcp":
        victim = os.path.join(it, "__1_0.distcp")
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
    elif what == "corrupt-metadata":
        victim = os.path.join(it, ".metadata")
        with open(victim, "r+b") as f:
            data = bytearray(f.read())
            for i in range(len(data) // 3, len(data) // 3 + 64):
                data[i] ^= 0x5A
            f.seek(0)
            f.write(data)
    elif what == "truncated-metadata":
        victim = os.path.join(it, ".metadata")
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
    mnt = T.scratch("mnt")
    r = T.run_cmd([T.MCOREFS_BIN, d, mnt, "-o", "true_vocab_size=1000"])
    lines = r.stderr.strip().splitlines()
    T.check(r.rc == 1, "mount of a checkpoint with %s: rc=%r" % (what, r))
    T.check(len(lines) == 1 and lines[0].startswith("mcorefs: "), "want one error line: %r" % r.stderr)
    T.check(os.path.basename(victim) in lines[0], "error does not name %s: %s" % (victim, lines[0]))
    T.check(not T.is_mounted(mnt), "left a mount behind")


def main():
    r = T.Runner("torch_dist")
    for name in TWINS:
        r.run("twin+golden:%s" % name, twin_case, name)
        r.run("inspect:%s" % name, inspect_case, name)
    r.run("concurrent-first-reads", concurrent_first_reads)
    for what in ("missing-distcp", "truncated-distcp", "corrupt-metadata", "truncated-metadata"):
        r.run("damaged:%s" % what, damaged, what)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
