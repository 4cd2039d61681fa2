#!/usr/bin/python3
"""Mount the real Megatron-Core checkpoints in tests/data/megatron and compare the view
with the golden HF files written by an independent converter (every tensor: name, dtype,
shape, bytes; the derivable config keys; layout rules of the view).

torch_dist fixtures are compared with their golden files too.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

TORCH = ["head_gpt_tp2pp2_torch", "head_gpt_tp2dp2_distopt_torch", "head_moe_tp2ep2_torch",
         "head_dsv3_tp2ep2_torch"]
TORCH_DIST = ["head_gpt_tp2pp2_torch_dist", "head_moe_tp2ep2_torch_dist",
              "v014_gpt_tp2pp2_torch_dist"]


def fixture(name):
    return T.real_fixture(name)


def golden_case(name, golden="golden", extra_opts=(), shard_size=None, root_arg=None,
                foreground=False):
    d = fixture(name)
    gd = os.path.join(d, golden)
    exp = json.load(open(os.path.join(gd, "expected.json")))
    golden_tensors = T.load_golden_dir(gd)
    # the golden files must agree with expected.json (guards against a damaged fixture)
    T.check(len(golden_tensors) == exp["num_tensors"], "golden dir vs expected.json tensor count")
    opts = [o for o in exp.get("mount_options", "").split(",") if o] + list(extra_opts)
    if shard_size is not None:
        opts.append("shard_size=%d" % shard_size)
    ckpt = root_arg(d) if root_arg else d
    before = T.tree_snapshot(d) if os.access(d, os.W_OK) else None
    with T.Mount(ckpt, opts, foreground=foreground) as m:
        v = T.read_view(m.path, shard_size=shard_size)
        T.assert_same_tensors(v.tensors, golden_tensors, "mount", "golden")
        T.assert_config(v.config_text, exp["config"], exp["derivable_config_keys"])
        if shard_size is None:
            T.check(v.st_files == ["model.safetensors"],
                    "default shard size: expected a single model.safetensors, got %r" % v.st_files)
        T.cp_r_compare(m.path, v)
    if before is not None:
        probs = T.snapshot_diff(before, T.tree_snapshot(d))
        T.check(not probs, "checkpoint dir changed: %s" % probs[:5])


def latest_iter_dir(d):
    it = open(os.path.join(d, "latest_checkpointed_iteration.txt")).read().strip()
    return os.path.join(d, "iter_%07d" % int(it))


def inspect_case(name):
    d = fixture(name)
    exp = json.load(open(os.path.join(d, "golden", "expected.json")))
    r = T.run_inspect([d, "--json", "--tensors", "-o", exp["mount_options"]])
    T.check(r.rc == 0, "mcorefs-inspect failed: %r" % r)
    try:
        j = json.loads(r.stdout)
    except ValueError as e:
        raise T.TestFailure("mcorefs-inspect --json output is not JSON: %s\n%s" % (e, r.stdout[:2000]))
    for k in ("iteration", "family", "architecture", "tp", "pp", "vpp", "ep", "etp",
              "rank_files", "num_tensors", "num_params", "tensors"):
        T.check(k in j, "inspect --json lacks key %r (keys: %r)" % (k, sorted(j)))
    it = int(open(os.path.join(d, "latest_checkpointed_iteration.txt")).read())
    T.check(j["iteration"] == it, "iteration %r != %d" % (j["iteration"], it))
    T.check(j["architecture"] == exp["architectures"][0],
            "architecture %r != %r" % (j["architecture"], exp["architectures"][0]))
    rank_dirs = sorted(x for x in os.listdir(latest_iter_dir(d)) if x.startswith("mp_rank_"))
    got = T.rank_file_dirs(j["rank_files"])
    T.check(got == rank_dirs, "rank_files %r != %r" % (got, rank_dirs))
    tp = int(name.split("tp")[1][0])
    T.check(j["tp"] == tp, "tp %r != %d" % (j["tp"], tp))
    if "pp2" in name:
        T.check(j["pp"] == 2, "pp %r != 2" % j["pp"])
    if "ep2" in name:
        T.check(j["ep"] == 2, "ep %r != 2" % j["ep"])
    tens = exp["tensors"] if isinstance(exp["tensors"], dict) else dict(exp["tensors"])
    T.check(j["num_tensors"] == len(tens), "num_tensors %r != %d" % (j["num_tensors"], len(tens)))
    nparams = 0
    for t in tens.values():
        n = 1
        for s in t["shape"]:
            n *= s
        nparams += n
    T.check(j["num_params"] == nparams, "num_params %r != %d" % (j["num_params"], nparams))
    listed = {t["name"]: (t["dtype"], list(t["shape"])) for t in j["tensors"]}
    want = {k: (t["dtype"], t["shape"]) for k, t in tens.items()}
    if listed != want:
        miss = sorted(set(want) - set(listed))[:5]
        extra = sorted(set(listed) - set(want))[:5]
        bad = [(k, listed[k], want[k]) for k in sorted(set(listed) & set(want))
               if listed[k] != want[k]][:5]
        raise T.TestFailure("inspect --tensors differs from golden: missing %r extra %r "
                            "different %r" % (miss, extra, bad))


def concurrent_reads():
    """Several threads pread() random ranges of every file (page cache dropped) at once;
    every answer must equal the golden-derived bytes of a first full read, which itself
    must match golden."""
    import random
    name = "head_moe_tp2ep2_torch"
    d = fixture(name)
    golden = T.load_golden_dir(os.path.join(d, "golden"))
    with T.Mount(d, ["true_vocab_size=1000", "shard_size=250000"]) as m:
        v = T.read_view(m.path, shard_size=250000)
        T.assert_same_tensors(v.tensors, golden, "mount", "golden")
        errors = []

        def worker(seed):
            rng = random.Random(seed)
            fds = {fn: os.open(os.path.join(m.path, fn), os.O_RDONLY) for fn in v.files}
            try:
                for fd in fds.values():
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                for _ in range(300):
                    fn = rng.choice(sorted(v.files))
                    data = v.files[fn]
                    off = rng.randrange(0, len(data))
                    ln = rng.choice([1, 3, 4096, 10000, 65536, 200000])
                    got = os.pread(fds[fn], ln, off)
                    if got != data[off:off + ln]:
                        errors.append("%s off=%d len=%d: wrong bytes" % (fn, off, ln))
                        return
            except OSError as e:
                errors.append("%s" % e)
            finally:
                for fd in fds.values():
                    os.close(fd)
        T.run_threads(worker, 8)
        T.check(not errors, "concurrent reads: %s" % errors[:5])


def two_mounts_same_ckpt():
    name = "head_dsv3_tp2ep2_torch"
    d = fixture(name)
    golden = T.load_golden_dir(os.path.join(d, "golden"))
    golden_skip = T.load_golden_dir(os.path.join(d, "golden.skip_mtp"))
    with T.Mount(d, ["true_vocab_size=1000"]) as a, \
            T.Mount(d, ["true_vocab_size=1000", "skip_mtp"]) as b:
        T.assert_same_tensors(T.read_view(b.path).tensors, golden_skip, "mount 2", "golden.skip_mtp")
        T.assert_same_tensors(T.read_view(a.path).tensors, golden, "mount 1", "golden")


def main():
    r = T.Runner("real-fixtures")
    for name in TORCH:
        r.run("golden:%s" % name, golden_case, name)
    # other ways of naming the same checkpoint, other shard sizes, foreground mode
    r.run("golden:head_gpt_tp2pp2_torch:iter-dir", golden_case, "head_gpt_tp2pp2_torch",
          root_arg=latest_iter_dir)
    r.run("golden:head_gpt_tp2pp2_torch:shard_size=100000", golden_case,
          "head_gpt_tp2pp2_torch", shard_size=100000)
    r.run("golden:head_gpt_tp2pp2_torch:foreground", golden_case, "head_gpt_tp2pp2_torch",
          foreground=True)
    r.run("golden:head_moe_tp2ep2_torch:shard_size=300000", golden_case,
          "head_moe_tp2ep2_torch", shard_size=300000)
    r.run("golden.skip_mtp:head_dsv3_tp2ep2_torch", golden_case, "head_dsv3_tp2ep2_torch",
          golden="golden.skip_mtp", extra_opts=("skip_mtp",))
    r.run("golden:head_dsv3_tp2ep2_torch:shard_size=200000", golden_case,
          "head_dsv3_tp2ep2_torch", shard_size=200000)
    r.run("concurrent-reads:head_moe_tp2ep2_torch", concurrent_reads)
    r.run("two-mounts-at-once:head_dsv3_tp2ep2_torch", two_mounts_same_ckpt)
    for name in TORCH:
        r.run("inspect:%s" % name, inspect_case, name)
    for name in TORCH_DIST:   # more torch_dist cases in test_torch_dist.py
        r.run("golden:%s" % name, golden_case, name)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
