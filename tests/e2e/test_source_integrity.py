#!/usr/bin/python3
"""Every byte comes from an unchanged regular file beneath the checkpoint.

- A rank file (legacy) or a .distcp (torch_dist) rewritten in place after mount (dd
  conv=notrunc over a tensor's bytes; torch.save of other values over the same path): every
  tensor read gives the original bytes or EIO, never other bytes; .mcorefs/stats counts it
  (source_changed, read_errors); the daemon's log names the file.
- After a change is seen, the mount's cached pages are dropped: a tensor read (and cached)
  before the change then gives EIO too.
- A rank file replaced by rename keeps serving the old inode's bytes.
- Names that leave the checkpoint folder (a storage name through a directory symlink `sub ->`
  outside) and FIFOs or directories in place of checkpoint files refuse the mount (and
  mcorefs-inspect) with one line naming the file, in bounded time.

Real fixtures from tests/data, copied to a scratch dir and damaged there.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"
GPT_DIST = "head_gpt_tp2pp2_torch_dist"
V014_DIST = "v014_gpt_tp2pp2_torch_dist"   # core 0.14: args in common.pt
IT = "iter_0000010"
RF = "model_optim_rng.pt"
HANG_TIMEOUT = 20   # a FIFO that blocks the open would hang forever: fail instead


def golden(name):
    gd = os.path.join(T.MEGATRON_FIXTURES, name, "golden")
    exp = json.load(open(os.path.join(gd, "expected.json")))
    return T.load_golden_dir(gd), [o for o in exp.get("mount_options", "").split(",") if o]


def stats(mnt):
    with open(os.path.join(mnt, ".mcorefs", "stats")) as f:
        return {k: v for k, v in (l.split(" ", 1) for l in f.read().splitlines())}


def daemon_log(m):
    with open(m._log.name, "rb") as f:
        return f.read().decode("utf-8", "replace")


def largest_data_entry(path):
    """(offset, length) of the bytes of the largest tensor storage in a torch.save archive."""
    with zipfile.ZipFile(path) as z:
        zi = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(zi.header_offset)
        h = f.read(30)
    start = zi.header_offset + 30 + int.from_bytes(h[26:28], "little") + int.from_bytes(h[28:30], "little")
    return start, zi.file_size


def dd_over(path, off, length):
    r = subprocess.run(["dd", "if=/dev/urandom", "of=" + path, "bs=1", "seek=%d" % off, "count=%d" % length,
                        "conv=notrunc", "status=none"], capture_output=True, text=True)
    T.check(r.returncode == 0, "dd failed: %s" % r.stderr)


def damaged_after_mount(fixture, damage):
    """Mount a copy (layout from a first mount, so the second has nothing cached), damage it,
    read every tensor: the original bytes or EIO. Returns (eio, good, stats, log, victim)."""
    ckpt = T.copy_fixture(fixture)
    want, opts = golden(fixture)
    with T.Mount(ckpt, opts) as m:
        headers = T.safetensors_headers(m.path)
    with T.Mount(ckpt, opts, foreground=True) as m:
        time.sleep(0.02)   # the damage lands in a later timestamp tick than the mount's fstat
        victim = damage(ckpt)
        eio, good = T.read_tensors_expect_eio(m.path, headers, want)
        st = stats(m.path)
        log = daemon_log(m)
    return eio, good, st, log, victim


def expect_refused_reads(fixture, damage):
    eio, good, st, log, victim = damaged_after_mount(fixture, damage)
    rel = os.path.relpath(victim, os.path.dirname(os.path.dirname(victim)))
    T.check(eio, "no read failed although %s was rewritten in place" % victim)
    T.check(good > 0, "every read failed; reads from unchanged files must still work")
    T.check(int(st["source_changed"]) >= 1, "stats source_changed %r" % st["source_changed"])
    T.check(int(st["read_errors"]) >= int(st["source_changed"]), "read_errors %r" % st["read_errors"])
    lines = [l for l in log.splitlines() if "changed since mount" in l]
    T.check(lines, "no log line says a file changed; log: %r" % log[-1500:])
    T.check(all(rel in l for l in lines), "log lines do not name %s: %r" % (rel, lines[:3]))
    print("    %d tensors EIO, %d original; source_changed %s; log: %s"
          % (len(eio), good, st["source_changed"], lines[0][:200]))


def legacy_dd_in_place():
    def damage(ckpt):
        victim = os.path.join(ckpt, IT, "mp_rank_01_001", RF)
        off, n = largest_data_entry(victim)
        dd_over(victim, off, n)
        return victim
    expect_refused_reads(GPT, damage)


def legacy_torch_save_in_place():
    """What Megatron re-saving the same iteration does: torch.save over the same path
    (open with O_TRUNC: same inode, new values, possibly another layout)."""
    def damage(ckpt):
        victim = os.path.join(ckpt, IT, "mp_rank_00_000", RF)
        with T._stubbed_megatron() as torch:   # load and save with the same stub classes
            sd = torch.load(victim, map_location="cpu")
            for k, v in sd["model"].items():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    sd["model"][k] = v * 2 + 1
            ino = os.stat(victim).st_ino
            torch.save(sd, victim)
        T.check(os.stat(victim).st_ino == ino, "torch.save replaced the inode")
        return victim
    expect_refused_reads(GPT, damage)


def dist_dd_in_place():
    """dd over tensor bytes only (the chunk archives' headers intact): the first rows of the
    embedding, found in the .distcp that holds them."""
    want, _ = golden(GPT_DIST)
    needle = want["model.embed_tokens.weight"][2][:64]

    def damage(ckpt):
        for fn in sorted(os.listdir(os.path.join(ckpt, IT))):
            if fn.endswith(".distcp"):
                victim = os.path.join(ckpt, IT, fn)
                pos = open(victim, "rb").read().find(needle)
                if pos >= 0:
                    dd_over(victim, pos, 8192)
                    return victim
        T.check(False, "embedding bytes not found in any .distcp")
    expect_refused_reads(GPT_DIST, damage)


def legacy_renamed_over():
    """A rank file replaced by rename: the mount keeps the old inode, every byte original."""
    def damage(ckpt):
        victim = os.path.join(ckpt, IT, "mp_rank_01_001", RF)

        def mutate(sd):
            for k in list(sd["model"]):
                v = sd["model"][k]
                if hasattr(v, "is_floating_point") and v.is_floating_point():
                    sd["model"][k] = v + 1
        ino = os.stat(victim).st_ino
        T.rewrite_rank_file(victim, mutate)
        T.check(os.stat(victim).st_ino != ino, "rewrite_rank_file did not replace the inode")
        return victim
    eio, good, st, log, victim = damaged_after_mount(GPT, damage)
    T.check(not eio, "%d reads failed after a rename over %s: %r" % (len(eio), victim, eio[:3]))
    T.check(int(st["source_changed"]) == 0, "source_changed %r" % st["source_changed"])
    print("    %d tensors original after the rename" % good)


def cache_dropped_after_change():
    """A tensor read before the change is in the mount's page cache; once a later read sees
    the change, those pages are dropped, so reading it again (same open file) gives EIO."""
    ckpt = T.copy_fixture(GPT)
    want, opts = golden(GPT)
    with T.Mount(ckpt, opts) as m:
        headers = T.safetensors_headers(m.path)
    fn = sorted(headers)[0]
    n, hdr = headers[fn]
    big = sorted(((t["data_offsets"], k) for k, t in hdr.items()
                  if k != "__metadata__" and t["data_offsets"][1] - t["data_offsets"][0] >= 16384
                  and "layers." in k), key=lambda x: x[0][0])
    T.check(len(big) >= 2, "need two large layer tensors in %s" % fn)
    (a0, a1), first = big[0]
    (b0, b1), last = big[-1]
    with T.Mount(ckpt, opts, foreground=True) as m:
        fd = os.open(os.path.join(m.path, fn), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # no readahead: only what we read is cached
            T.check(os.pread(fd, a1 - a0, 8 + n + a0) == want[first][2], "%s: wrong bytes" % first)
            time.sleep(0.02)
            for d in sorted(os.listdir(os.path.join(ckpt, IT))):   # every rank file rewritten in place
                p = os.path.join(ckpt, IT, d, RF)
                dd_over(p, *largest_data_entry(p))
            try:
                T.check(os.pread(fd, a1 - a0, 8 + n + a0) == want[first][2], "%s: cached bytes changed" % first)
            except OSError as e:
                # the kernel may evict the clean page under memory pressure (seen while a benchmark
                # wrote GBs beside it): the reread then reaches the daemon, which refuses it — right
                T.check(e.errno == errno.EIO, "errno %d" % e.errno)
                print("    (cached page evicted before the change was seen: nothing left to drop)")
                return
            try:
                os.pread(fd, b1 - b0, 8 + n + b0)
                T.check(False, "%s: read after the change did not fail" % last)
            except OSError as e:
                T.check(e.errno == errno.EIO, "errno %d" % e.errno)
            deadline, dropped = time.monotonic() + 10, False
            while not dropped and time.monotonic() < deadline:
                try:
                    got = os.pread(fd, a1 - a0, 8 + n + a0)
                    T.check(got == want[first][2], "%s: other bytes after the change" % first)
                    time.sleep(0.05)
                except OSError as e:
                    T.check(e.errno == errno.EIO, "errno %d" % e.errno)
                    dropped = True
            T.check(dropped, "%s still served from the page cache 10 s after the change was seen" % first)
        finally:
            os.close(fd)


# ---- paths that leave the checkpoint, FIFOs, directories ----------------------------

def both_refuse(ckpt, names):
    T.expect_mount_failure(ckpt, ["true_vocab_size=1000"], names, timeout=HANG_TIMEOUT)
    T.expect_inspect_failure([ckpt, "-o", "true_vocab_size=1000"], names, timeout=HANG_TIMEOUT)


def patch_storage_name(ckpt, old, new):
    """Rename a storage file in .metadata (a pickle) by a byte patch of equal length."""
    T.check(len(old) == len(new), "names must have equal length")
    p = os.path.join(ckpt, IT, ".metadata")
    data = open(p, "rb").read()
    T.check(old.encode() in data, "%s not in .metadata" % old)
    open(p, "wb").write(data.replace(old.encode(), new.encode()))


def dist_storage_through_symlink():
    """`s -> a folder outside` in the iteration folder, and .metadata naming s/0_0.distcp: a
    complete copy of the real file is there, so only the beneath check can stop it."""
    ckpt = T.copy_fixture(GPT_DIST)
    outside = T.scratch("outside")
    shutil.copy(os.path.join(ckpt, IT, "__0_0.distcp"), os.path.join(outside, "0_0.distcp"))
    os.symlink(outside, os.path.join(ckpt, IT, "s"))
    patch_storage_name(ckpt, "__0_0.distcp", "s/0_0.distcp")
    both_refuse(ckpt, ["s/0_0.distcp", "outside the checkpoint"])


def dist_storage_through_symlink_etc():
    ckpt = T.copy_fixture(GPT_DIST)
    os.symlink("/etc", os.path.join(ckpt, IT, "sub"))
    patch_storage_name(ckpt, "__0_0.distcp", "sub/hostname")   # /etc/hostname: equal length
    both_refuse(ckpt, ["sub/hostname", "outside the checkpoint"])


def ckpt_path_is_symlink():
    """The folder given on the command line may itself be a symlink: resolved once, mounts."""
    ckpt = T.copy_fixture(GPT)
    link = os.path.join(T.scratch("link"), "ckpt-link")
    os.symlink(ckpt, link)
    want, opts = golden(GPT)
    with T.Mount(link, opts) as m:
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, want, "mount", "golden")


def iteration_folder_outside():
    """iter_0000010 a symlink to a folder outside the checkpoint: refused."""
    src = T.copy_fixture(GPT)
    ckpt = os.path.join(T.scratch("root"), "ckpt")
    os.makedirs(ckpt)
    shutil.copy(os.path.join(src, "latest_checkpointed_iteration.txt"), ckpt)
    os.symlink(os.path.join(src, IT), os.path.join(ckpt, IT))
    both_refuse(ckpt, [IT, "outside the checkpoint"])


def file_symlinked_outside(fixture, rel):
    """A checkpoint file that is a symlink to a complete copy of itself outside the folder."""
    ckpt = T.copy_fixture(fixture)
    p = os.path.join(ckpt, rel)
    outside = os.path.join(T.scratch("outside"), os.path.basename(rel))
    shutil.move(p, outside)
    os.symlink(outside, p)
    both_refuse(ckpt, ["/".join(rel.split("/")[-2:]), "outside the checkpoint"])


def replace_with(path, kind):
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)


def not_regular(fixture, rel, kind):
    ckpt = T.copy_fixture(fixture)
    replace_with(os.path.join(ckpt, rel), kind)
    both_refuse(ckpt, ["/".join(rel.split("/")[-2:]), "not a regular file"])


def main():
    r = T.Runner("source integrity")
    r.run("legacy-dd-in-place", legacy_dd_in_place)
    r.run("legacy-torch-save-in-place", legacy_torch_save_in_place)
    r.run("dist-dd-in-place", dist_dd_in_place)
    r.run("legacy-renamed-over", legacy_renamed_over)
    r.run("cache-dropped-after-change", cache_dropped_after_change)
    r.run("dist-storage-through-symlink", dist_storage_through_symlink)
    r.run("dist-storage-through-symlink-etc", dist_storage_through_symlink_etc)
    r.run("ckpt-path-is-symlink", ckpt_path_is_symlink)
    r.run("iteration-folder-outside", iteration_folder_outside)
    r.run("rank-file-symlinked-outside", file_symlinked_outside, GPT, os.path.join(IT, "mp_rank_01_000", RF))
    r.run("tracker-symlinked-outside", file_symlinked_outside, GPT, "latest_checkpointed_iteration.txt")
    r.run("common-pt-symlinked-outside", file_symlinked_outside, V014_DIST, os.path.join(IT, "common.pt"))
    for kind in ("fifo", "dir"):
        r.run("%s-common-pt" % kind, not_regular, V014_DIST, os.path.join(IT, "common.pt"), kind)
        r.run("%s-rank-file" % kind, not_regular, GPT, os.path.join(IT, "mp_rank_01_000", RF), kind)
        r.run("%s-first-rank-file" % kind, not_regular, GPT, os.path.join(IT, "mp_rank_00_000", RF), kind)
        r.run("%s-tracker" % kind, not_regular, GPT, "latest_checkpointed_iteration.txt", kind)
        r.run("%s-metadata" % kind, not_regular, GPT_DIST, os.path.join(IT, ".metadata"), kind)
        r.run("%s-distcp" % kind, not_regular, GPT_DIST, os.path.join(IT, "__2_0.distcp"), kind)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
