#!/usr/bin/python3
"""A training run mounted whole (-o iterations=all), through the kernel, while "Megatron" saves.

Simulated run built from the real fixtures in tests/data (copied to scratch):
- iteration 10 saved; mount; a loader reads latest/ and checks every byte against the golden view;
- iteration 20 written slowly (rank files appear one by one, each in two halves, the tracker
  last): never visible before the tracker names it; then visible, latest -> iter_0000020,
  its bytes the new values;
- iteration 10 deleted: gone from the root, reads of a file opened before give EIO;
- iteration 20 re-saved in place with other values while readers loop over it: every whole-file
  read is one generation (or fails), never a mix; afterwards the new values;
- 50 iterations: mount time and the daemon's RSS after touching every iteration stay flat
  (compared with 5 iterations, max_views=4);
- torch_dist (the .metadata written last) and a release folder;
- mcorefs-inspect diff on two iterations, one known tensor changed.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"
GPT_DIST = "head_gpt_tp2pp2_torch_dist"
IT10 = "iter_0000010"
RF = "model_optim_rng.pt"
TRACKER = "latest_checkpointed_iteration.txt"
WAIT = 15   # seconds a change may take to show (inotify; re-checks every second without it)


def golden(name):
    gd = os.path.join(T.MEGATRON_FIXTURES, name, "golden")
    exp = json.load(open(os.path.join(gd, "expected.json")))
    return T.load_golden_dir(gd), [o for o in exp.get("mount_options", "").split(",") if o]


def new_run(fixture):
    """A run folder holding the fixture's iteration 10 and a tracker naming it."""
    run = os.path.join(T.scratch("run"), "save")
    os.makedirs(run)
    shutil.copytree(os.path.join(T.MEGATRON_FIXTURES, fixture, IT10), os.path.join(run, IT10))
    write_tracker(run, "10")
    return run


def write_tracker(run, text):
    with open(os.path.join(run, TRACKER), "w") as f:   # as Megatron: open('w'), write
        f.write(text)


def wait_for(cond, what, timeout=WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    T.check(False, "after %ds: %s" % (timeout, what))


def latest(mnt):
    try:
        return os.readlink(os.path.join(mnt, "latest"))
    except OSError:
        return None


def transformed(want, fn):
    """The HF tensors a checkpoint whose every float source element went through fn shows
    (HF tensors are rearrangements of source elements: elementwise maps commute with them)."""
    import torch
    dt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    out = {}
    for name, (dtype, shape, raw) in want.items():
        t = torch.frombuffer(bytearray(raw), dtype=dt[dtype])
        out[name] = (dtype, shape, bytes(fn(t).contiguous().view(torch.uint8).numpy().tobytes()))
    return out


def mutate_rank_file(path, fn, dst=None, only=None):
    """torch.save the rank file with fn applied to every float tensor of its model (or to the
    tensors named in `only`), to dst (default: in place, same inode)."""
    with T._stubbed_megatron() as torch:
        sd = torch.load(path, map_location="cpu")
        for k, v in list(sd["model"].items()):
            if isinstance(v, torch.Tensor) and v.is_floating_point() and (only is None or k in only):
                sd["model"][k] = fn(v)
        torch.save(sd, dst or path)


def read_all(mnt_dir):
    v = T.read_view(mnt_dir, check_modes=False)
    return v.tensors


def write_slowly(src, dst, mnt, name):
    """Copy a file in two halves; after each half the iteration must still be invisible."""
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        for part in (data[:len(data) // 2], data[len(data) // 2:]):
            f.write(part)
            f.flush()
            os.fsync(f.fileno())
            time.sleep(0.1)   # the watcher's debounce and a scan happen meanwhile
            T.check(name not in os.listdir(mnt), "%s shown while %s is half written" % (name, dst))
            T.check(not os.path.exists(os.path.join(mnt, name)), "%s found by name while being written" % name)
            T.check(latest(mnt) != name, "latest -> %s before the tracker" % name)


def training_run_legacy():
    want, opts = golden(GPT)
    run = new_run(GPT)
    staging = T.scratch("staging")
    twice = transformed(want, lambda t: t * 2 + 1)
    thrice = transformed(want, lambda t: t * 3 - 1)
    with T.Mount(run, opts + ["iterations=all"], foreground=True) as m:
        T.check(sorted(os.listdir(m.path)) == [IT10, "latest"], "root: %r" % os.listdir(m.path))
        T.check(latest(m.path) == IT10, "latest -> %r" % latest(m.path))
        T.assert_same_tensors(read_all(os.path.join(m.path, "latest")), want, "latest/", "golden")

        # iteration 20: rank files appear one by one, in halves; the tracker last
        it20 = os.path.join(run, "iter_0000020")
        os.makedirs(it20)
        for rank in sorted(os.listdir(os.path.join(run, IT10))):
            os.makedirs(os.path.join(staging, rank))
            staged = os.path.join(staging, rank, RF)   # same name: torch.save names the archive after it
            mutate_rank_file(os.path.join(run, IT10, rank, RF), lambda t: t * 2 + 1, dst=staged)
            os.makedirs(os.path.join(it20, rank))
            write_slowly(staged, os.path.join(it20, rank, RF), m.path, "iter_0000020")
        write_tracker(run, "20")
        wait_for(lambda: latest(m.path) == "iter_0000020", "latest -> iter_0000020")
        T.check(sorted(os.listdir(m.path)) == [IT10, "iter_0000020", "latest"], "root: %r" % os.listdir(m.path))
        T.assert_same_tensors(read_all(os.path.join(m.path, "latest")), twice, "iter 20", "golden*2+1")
        T.assert_same_tensors(read_all(os.path.join(m.path, IT10)), want, "iter 10", "golden")

        # iteration 10 deleted under an open file
        shard = sorted(f for f in os.listdir(os.path.join(m.path, IT10)) if f.endswith(".safetensors"))[0]
        fd = os.open(os.path.join(m.path, IT10, shard), os.O_RDONLY)
        try:
            shutil.rmtree(os.path.join(run, IT10))
            wait_for(lambda: IT10 not in os.listdir(m.path), "iter_0000010 gone from the root")
            T.check(not os.path.exists(os.path.join(m.path, IT10)), "iter_0000010 still found by name")
            try:
                os.pread(fd, 4096, 0)
                T.check(False, "read of a deleted iteration's open file succeeded")
            except OSError as e:
                T.check(e.errno == errno.EIO, "read of a deleted iteration: errno %d, want EIO" % e.errno)
        finally:
            os.close(fd)

        # iteration 20 re-saved in place while readers loop: whole files are one generation
        resave_in_place(m.path, run, it20, twice, thrice)
        log = open(m._log.name, "rb").read().decode("utf-8", "replace")
        T.check("deleted or re-saved" in log, "no log line for the refused reads: %r" % log[-1000:])


def resave_in_place(mnt, run, it20, before, after):
    done = threading.Event()
    seen = {"before": 0, "after": 0, "failed": 0}
    problems = []

    def generation_of(tensors):
        if all(tensors[k] == before[k] for k in tensors):
            return "before"
        if all(tensors[k] == after[k] for k in tensors):
            return "after"
        return None

    def reader():
        while not done.is_set() or seen["after"] == 0:
            try:
                d = os.path.join(mnt, "iter_0000020")
                for fn in sorted(os.listdir(d)):
                    if not fn.endswith(".safetensors"):
                        continue
                    with open(os.path.join(d, fn), "rb") as f:
                        data = f.read()
                    tensors = T.parse_safetensors(data, fn)[0]
                    g = generation_of(tensors)
                    if g is None:
                        problems.append("%s: a read mixing two generations (or other bytes)" % fn)
                        return
                    seen[g] += 1
            except OSError as e:
                if e.errno not in (errno.EIO, errno.ENOENT):
                    problems.append("unexpected errno %d: %s" % (e.errno, e))
                    return
                seen["failed"] += 1
                time.sleep(0.01)   # hidden while being re-saved: try again shortly
            if time.monotonic() > deadline:
                problems.append("the new generation never showed")
                return

    deadline = time.monotonic() + 120
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: seen["before"] > 0 or problems, "a first read of the old generation")
        # Megatron saving iteration 20 again: torch.save over each rank file (same inode), with
        # other values (3x - 1 of iteration 10's), one after the other; then the tracker
        for rank in sorted(os.listdir(it20)):
            path = os.path.join(it20, rank, RF)
            ino = os.stat(path).st_ino
            base = os.path.join(T.scratch("base"), RF)
            shutil.copy(os.path.join(T.MEGATRON_FIXTURES, GPT, IT10, rank, RF), base)
            mutate_rank_file(base, lambda t: t * 3 - 1, dst=path)
            T.check(os.stat(path).st_ino == ino, "torch.save replaced the inode")
            time.sleep(1.2)   # readers run against the half re-saved iteration (re-checks come every second)
        write_tracker(run, "20")
    finally:
        done.set()
        for t in threads:
            t.join(150)
    T.check(not problems, "; ".join(problems[:3]))
    T.assert_same_tensors(read_all(os.path.join(mnt, "iter_0000020")), after, "re-saved iter 20", "golden*3-1")
    print("    whole-file reads: %d old generation, %d new, %d refused (EIO/ENOENT)"
          % (seen["before"], seen["after"], seen["failed"]))


def training_run_dist():
    """torch_dist: chunk files first, .metadata (in two halves) last; then the tracker."""
    want, opts = golden(GPT_DIST)
    run = new_run(GPT_DIST)
    with T.Mount(run, opts + ["iterations=all"]) as m:
        T.assert_same_tensors(read_all(os.path.join(m.path, "latest")), want, "latest/", "golden")
        it20 = os.path.join(run, "iter_0000020")
        os.makedirs(it20)
        src = os.path.join(run, IT10)
        names = sorted(os.listdir(src), key=lambda n: (n == ".metadata", n == "metadata.json", n))
        for n in names:
            write_slowly(os.path.join(src, n), os.path.join(it20, n), m.path, "iter_0000020")
        write_tracker(run, "20")
        wait_for(lambda: latest(m.path) == "iter_0000020", "latest -> iter_0000020")
        T.assert_same_tensors(read_all(os.path.join(m.path, "latest")), want, "iter 20", "golden")
        fn = sorted(f for f in os.listdir(os.path.join(m.path, IT10)) if f.endswith(".safetensors"))[0]
        fd = os.open(os.path.join(m.path, IT10, fn), os.O_RDONLY)
        try:
            shutil.rmtree(os.path.join(run, IT10))
            wait_for(lambda: IT10 not in os.listdir(m.path), "iter_0000010 gone")
            try:
                os.pread(fd, 4096, 0)
                T.check(False, "read of a deleted iteration's open file succeeded")
            except OSError as e:
                T.check(e.errno == errno.EIO, "errno %d, want EIO" % e.errno)
        finally:
            os.close(fd)


def release_folder():
    want, opts = golden(GPT)
    run = os.path.join(T.scratch("rel"), "save")
    os.makedirs(run)
    shutil.copytree(os.path.join(T.MEGATRON_FIXTURES, GPT, IT10), os.path.join(run, "release"))
    write_tracker(run, "release")
    with T.Mount(run, opts + ["iterations=all"]) as m:
        T.check(sorted(os.listdir(m.path)) == ["latest", "release"], "root: %r" % os.listdir(m.path))
        T.check(latest(m.path) == "release", "latest -> %r" % latest(m.path))
        T.assert_same_tensors(read_all(os.path.join(m.path, "release")), want, "release/", "golden")


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def many_iterations(n):
    """A run of n iterations (hard links of one save: no disk), mounted with max_views=4; every
    iteration's config.json and one tensor read. Returns (mount seconds, RSS after, KB)."""
    run = os.path.join(T.scratch("many%d" % n), "save")
    os.makedirs(run)
    src = os.path.join(T.MEGATRON_FIXTURES, GPT, IT10)
    for i in range(1, n + 1):
        subprocess.run(["cp", "-al", src, os.path.join(run, "iter_%07d" % (10 * i))], check=True)
    write_tracker(run, str(10 * n))
    # two worker threads: each thread keeps its own reply buffer, and a loaded machine would
    # start more of them for the 50-iteration run, which has nothing to do with views
    with T.Mount(run, ["true_vocab_size=1000", "iterations=all", "max_views=4", "max_threads=2"]) as m:
        secs = m.mount_seconds
        names = sorted(os.listdir(m.path))
        T.check(len(names) == n + 1, "%d entries, want %d" % (len(names), n + 1))
        for rnd in range(2):
            for name in names:
                if name == "latest":
                    continue
                json.load(open(os.path.join(m.path, name, "config.json")))
                shard = sorted(f for f in os.listdir(os.path.join(m.path, name)) if f.endswith(".safetensors"))[0]
                with open(os.path.join(m.path, name, shard), "rb") as f:
                    f.read(1 << 16)
        time.sleep(0.5)   # the kernel sends the last releases asynchronously
        rss = rss_kb(m.pids[0])
        fds = 0   # rank files held open (each built view holds its 4); not libfuse's pipes
        for fd in os.listdir("/proc/%d/fd" % m.pids[0]):
            try:
                fds += os.readlink("/proc/%d/fd/%s" % (m.pids[0], fd)).startswith(run + "/")
            except OSError:
                pass
    return secs, rss, fds


def fifty_iterations():
    saved = os.environ.get("ASAN_OPTIONS")
    # sanitizer builds: freed memory goes back at once (the quarantine would hold every closed view)
    os.environ["ASAN_OPTIONS"] = ((saved + ":") if saved else "") + "quarantine_size_mb=0"
    try:
        s5, r5, f5 = many_iterations(5)
        s50, r50, f50 = many_iterations(50)
    finally:
        if saved is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = saved
    print("    mount: 5 iterations %.3fs, 50 iterations %.3fs; daemon RSS after reading every iteration "
          "twice: 5 -> %d KB, 50 -> %d KB; rank files open 5 -> %d, 50 -> %d (max_views=4)"
          % (s5, s50, r5, r50, f5, f50))
    T.check(s50 < max(1.0, 3 * s5), "mounting 50 iterations took %.3fs (5: %.3fs)" % (s50, s5))
    # bounded by max_views, not by the run length: each built view holds its 4 rank files open
    T.check(f5 <= 4 * 4 and f50 <= 4 * 4, "more rank files open than 4 views hold: %d for 5 iterations, %d for 50" % (f5, f50))
    # RSS is a loose guard only (sanitizer allocators and worker threads' buffers move it by ~10 MB
    # on a loaded machine); the open rank files above are the exact measure of the LRU.
    T.check(r50 < r5 * 2 + 8000, "RSS grew with the run: %d KB for 5, %d KB for 50" % (r5, r50))


def diff_iterations():
    """Iteration 20 = iteration 10 with the final norm doubled: diff names exactly that tensor."""
    want, _ = golden(GPT)
    run = new_run(GPT)
    it20 = os.path.join(run, "iter_0000020")
    shutil.copytree(os.path.join(run, IT10), it20)
    key = "decoder.final_layernorm.weight"
    changed = 0
    for rank in sorted(os.listdir(it20)):
        path = os.path.join(it20, rank, RF)
        with T._stubbed_megatron() as torch:
            sd = torch.load(path, map_location="cpu")
        if key in sd["model"]:
            mutate_rank_file(path, lambda t: t * 2, only=(key,))
            changed += 1
    T.check(changed > 0, "no rank file holds %s" % key)
    r = T.run_cmd([T.MCOREFS_INSPECT, "diff", run, "10", "20", "--json", "-o", "true_vocab_size=1000"])
    T.check(r.rc == 2, "diff exit status %r (want 2: differences): %s" % (r.rc, r.stderr[-500:]))
    out = json.loads(r.stdout)
    moved = [t for t in out["tensors"] if t["status"] != "identical"]
    T.check([t["name"] for t in moved] == ["model.norm.weight"], "changed: %r" % [t["name"] for t in moved])
    import torch
    dtype, shape, raw = want["model.norm.weight"]
    w = torch.frombuffer(bytearray(raw), dtype={"BF16": torch.bfloat16, "F32": torch.float32}[dtype]).double()
    T.check(abs(moved[0]["max_abs_diff"] - float(w.abs().max())) < 1e-12,
            "max_abs_diff %r, want %r" % (moved[0]["max_abs_diff"], float(w.abs().max())))
    T.check(out["identical"] == len(want) - 1 and out["changed"] == 1, "counts: %r" % {k: out[k] for k in
            ("identical", "changed", "only_in_a", "only_in_b")})
    same = T.run_cmd([T.MCOREFS_INSPECT, "diff", os.path.join(run, IT10), os.path.join(run, IT10)])
    T.check(same.rc == 0 and "0 changed" in same.stdout, "diff of a checkpoint with itself: %r %r"
            % (same.rc, same.stdout[-300:]))


def manifest_after_eviction():
    """A view evicted and rebuilt while the kernel still holds its manifest's inode: getattr and
    read of that inode (no new lookup by name) show the whole manifest, not an empty file."""
    run = new_run(GPT)
    it20 = os.path.join(run, "iter_0000020")
    shutil.copytree(os.path.join(run, IT10), it20)
    write_tracker(run, "20")
    opts = ["true_vocab_size=1000", "iterations=all", "max_views=1", "entry_timeout=30", "attr_timeout=30"]
    with T.Mount(run, opts) as m:
        man = os.path.join(m.path, IT10, ".mcorefs", "manifest.json")
        size = os.stat(man).st_size
        T.check(size > 0, "manifest size %d" % size)
        for _ in range(2):                       # builds view 20: view 10 (unpinned) is evicted
            os.listdir(os.path.join(m.path, "iter_0000020"))
            json.load(open(os.path.join(m.path, "iter_0000020", "config.json")))
        with open(man, "rb") as f:               # cached entry: open by inode, view 10 rebuilt
            data = f.read()
        T.check(len(data) == size, "manifest read %d bytes after eviction, %d before" % (len(data), size))
        json.loads(data)


def options_refused():
    run = new_run(GPT)
    for opts, words in ((["iterations=some"], "iterations takes the value all"),
                        (["iterations=all", "iteration=10"], "exclude each other"),
                        (["max_views=2"], "iterations=all mounts only"),
                        (["iterations=all", "max_views=0"], "max_views needs a number")):
        mnt = T.scratch("mnt")
        r = T.run_cmd([T.MCOREFS_BIN, run, mnt, "-o", ",".join(opts)])
        T.check(r.rc == 1 and words in r.stderr, "%r: rc %r, stderr %r" % (opts, r.rc, r.stderr))


def main():
    r = T.Runner("training_run")
    r.run("legacy: follow saves, delete, re-save in place", training_run_legacy)
    r.run("torch_dist: .metadata last, delete", training_run_dist)
    r.run("release folder", release_folder)
    r.run("50 iterations: flat mount time and RSS", fifty_iterations)
    r.run("diff of two iterations", diff_iterations)
    r.run("manifest of an evicted view", manifest_after_eviction)
    r.run("option errors", options_refused)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
