#!/usr/bin/python3
"""Ownership and permissions under allow_other: the view shows the checkpoint's own owner,
group and mode bits (the most restrictive of the rank files a file is built from; folders take
the iteration folder's), the kernel enforces them (default_permissions), and the mount stays
read-only whatever bits it shows. Run as root; other users are played by `nobody` (setpriv).
"""
import errno
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

FIXTURE = "head_gpt_tp2pp2_torch"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _need_root():
    if os.geteuid() != 0:
        raise T.Skip("needs root (allow_other, chown, setpriv)")


def _as_nobody(argv):
    r = subprocess.run(AS_NOBODY + argv, capture_output=True, timeout=120)
    r.stderr = r.stderr.decode("utf-8", "replace")
    return r   # stdout stays bytes (shards are binary)


def _public_workdir():
    """Let `nobody` reach the scratch folder (mkdtemp makes it 0700); skip if a folder above it
    is closed to others."""
    os.chmod(T.work_dir(), 0o755)
    d = os.path.dirname(T.work_dir())
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            raise T.Skip("%s is not searchable by other users" % d)
        if d == os.path.dirname(d):
            return
        d = os.path.dirname(d)


def _public_copy():
    ckpt = T.copy_fixture(FIXTURE)        # folders 0755, files 0644, as Megatron writes them
    os.chmod(os.path.dirname(ckpt), 0o755)
    return ckpt


def _set_tree(ckpt, dir_mode, file_mode, uid=None, gid=None):
    for dp, dns, fns in os.walk(ckpt):
        for p in [dp] + [os.path.join(dp, n) for n in fns]:
            os.chmod(p, dir_mode if os.path.isdir(p) else file_mode)
            if uid is not None:
                os.chown(p, uid, gid)


def _iter_dir(ckpt):
    return os.path.join(ckpt, "iter_0000010")


def _modes(mnt):
    out = {"/": os.stat(mnt)}
    for n in os.listdir(mnt):
        out[n] = os.stat(os.path.join(mnt, n))
    return out


def test_private_checkpoint_closed_to_others():
    """A 0700/0600 checkpoint mounted by root with allow_other: nobody can neither list the
    mount nor read a file of it; root still reads it all."""
    _need_root()
    _public_workdir()
    ckpt = _public_copy()
    _set_tree(ckpt, 0o700, 0o600)
    with T.Mount(ckpt, ["allow_other"]) as m:
        opts = open("/proc/self/mountinfo").read()
        T.check(any(m.path in line and "default_permissions" in line for line in opts.splitlines()),
                "the mount must use default_permissions (the kernel checks the bits)")
        for name, st in _modes(m.path).items():
            want = 0o700 if name == "/" else 0o600
            T.check(stat.S_IMODE(st.st_mode) == want, "%s shows mode %o, the checkpoint has %o"
                    % (name, stat.S_IMODE(st.st_mode), want))
        r = _as_nobody(["ls", m.path])
        T.check(r.returncode != 0, "nobody listed a 0700 checkpoint through the mount: %r" % r.stdout[:200])
        for name in ("config.json", "model.safetensors"):
            r = _as_nobody(["cat", os.path.join(m.path, name)])
            T.check(r.returncode != 0 and not r.stdout, "nobody read %s of a 0600 checkpoint" % name)
        T.read_view(m.path)


def test_public_checkpoint_readable_and_copy_deletable():
    """A 0755/0644 checkpoint: nobody reads it, and `cp -r MOUNT OUT` run by nobody gives a
    normal folder that nobody can delete again; writes still get EROFS."""
    _need_root()
    _public_workdir()
    ckpt = _public_copy()
    dest = T.scratch("nobody-copy")
    os.chmod(dest, 0o755)
    os.chown(dest, 65534, 65534)
    with T.Mount(ckpt, ["allow_other"]) as m:
        for name, st in _modes(m.path).items():
            want = 0o755 if name == "/" else 0o644
            T.check(stat.S_IMODE(st.st_mode) == want and st.st_uid == 0,
                    "%s shows mode %o uid %d, the checkpoint has %o uid 0"
                    % (name, stat.S_IMODE(st.st_mode), st.st_uid, want))
        cfg = open(os.path.join(m.path, "config.json"), "rb").read()
        r = _as_nobody(["cat", os.path.join(m.path, "config.json")])
        T.check(r.returncode == 0 and r.stdout == cfg, "nobody cannot read config.json: %s" % r.stderr)
        copy = os.path.join(dest, "copy")
        r = _as_nobody(["cp", "-r", m.path, copy])
        T.check(r.returncode == 0, "cp -r as nobody failed: %s" % r.stderr)
        T.check(open(os.path.join(copy, "config.json"), "rb").read() == cfg, "the copy's config.json differs")
        r = _as_nobody(["touch", os.path.join(copy, "tokenizer.json")])
        T.check(r.returncode == 0, "nobody cannot add a file to its copy: %s" % r.stderr)
        r = _as_nobody(["rm", "-rf", copy])
        T.check(r.returncode == 0 and not os.path.exists(copy), "rm -rf of the copy as nobody failed: %s" % r.stderr)
        p = os.path.join(m.path, "config.json")
        for what, fn in (("open for writing", lambda: open(p, "r+b")),
                         ("create", lambda: open(os.path.join(m.path, "new.json"), "wb")),
                         ("chmod", lambda: os.chmod(p, 0o600)), ("unlink", lambda: os.unlink(p)),
                         ("mkdir", lambda: os.mkdir(os.path.join(m.path, "d"))),
                         ("truncate", lambda: os.truncate(p, 0))):
            try:
                fn()
                raise T.TestFailure("%s on a 0644 file of the mount succeeded" % what)
            except OSError as e:
                T.check(e.errno == errno.EROFS, "%s: want EROFS, got %s" % (what, e))


def test_owner_and_most_restrictive_bits():
    """Entries show the files' owner and group, not the caller's; a shard built from a 0640 rank
    file shows 0640 while shards from 0644 files only keep 0644; rank files of different owners
    leave the owner no more than everyone else gets."""
    _need_root()
    _public_workdir()
    ckpt = _public_copy()
    _set_tree(ckpt, 0o755, 0o644, 1234, 2345)
    it = _iter_dir(ckpt)
    for d in ("mp_rank_00_001", "mp_rank_01_001"):   # pipeline stage 1: last layers, final norm, lm_head
        os.chmod(os.path.join(it, d, "model_optim_rng.pt"), 0o640)
    with T.Mount(ckpt, ["shard_size=100000"]) as m:
        modes = _modes(m.path)
        for name, st in modes.items():
            T.check((st.st_uid, st.st_gid) == (1234, 2345), "%s shows owner %d:%d, the files' is 1234:2345"
                    % (name, st.st_uid, st.st_gid))
        shards = sorted(n for n in modes if n.endswith(".safetensors"))
        first, last = shards[0], shards[-1]
        T.check(stat.S_IMODE(modes[first].st_mode) == 0o644,
                "%s (embedding, first layers: stage 0 only) shows %o, want 644" % (first, stat.S_IMODE(modes[first].st_mode)))
        T.check(stat.S_IMODE(modes[last].st_mode) == 0o640,
                "%s (lm_head: a 0640 rank file) shows %o, want 640" % (last, stat.S_IMODE(modes[last].st_mode)))
        T.check(stat.S_IMODE(modes["config.json"].st_mode) == 0o640, "config.json must be as closed as the closest rank file")
        T.check(stat.S_IMODE(modes["/"].st_mode) == 0o755, "the root shows the iteration folder's bits")
    _set_tree(ckpt, 0o755, 0o644, 1234, 2345)
    os.chown(os.path.join(it, "mp_rank_01_001", "model_optim_rng.pt"), 4321, 2345)
    with T.Mount(ckpt, []) as m:
        st = os.stat(os.path.join(m.path, "model.safetensors"))
        T.check(st.st_uid == 1234 and stat.S_IMODE(st.st_mode) == 0o444,
                "files of two owners: want owner 1234 with only the others' r (444), got %d %o"
                % (st.st_uid, stat.S_IMODE(st.st_mode)))


def test_closed_folder_on_the_way():
    """A 0755/0644 checkpoint inside a 0700 folder (a private home) stays closed to others through
    the mount, as it is on disk; so does a shard whose rank file sits in a 0700 mp_rank folder."""
    _need_root()
    _public_workdir()
    ckpt = _public_copy()
    os.chmod(os.path.dirname(ckpt), 0o700)
    with T.Mount(ckpt, ["allow_other"]) as m:
        for name, st in _modes(m.path).items():
            want = 0o700 if name == "/" else 0o600
            T.check(stat.S_IMODE(st.st_mode) == want, "%s shows %o inside a 0700 folder, want %o"
                    % (name, stat.S_IMODE(st.st_mode), want))
        r = _as_nobody(["cat", os.path.join(m.path, "config.json")])
        T.check(r.returncode != 0, "nobody read a checkpoint kept in a 0700 folder through the mount")
    os.chmod(os.path.dirname(ckpt), 0o755)
    os.chmod(os.path.join(_iter_dir(ckpt), "mp_rank_01_001"), 0o700)   # stage 1, tp 1
    with T.Mount(ckpt, ["allow_other", "shard_size=100000"]) as m:
        modes = _modes(m.path)
        shards = sorted(n for n in modes if n.endswith(".safetensors"))
        T.check(stat.S_IMODE(modes[shards[0]].st_mode) == 0o644, "a stage-0 shard must stay 0644")
        T.check(stat.S_IMODE(modes[shards[-1]].st_mode) == 0o600,
                "the lm_head shard (from a rank file in a 0700 folder) shows %o, want 600"
                % stat.S_IMODE(modes[shards[-1]].st_mode))
        r = _as_nobody(["cat", os.path.join(m.path, shards[-1])])
        T.check(r.returncode != 0, "nobody read a shard whose rank file is in a 0700 folder")
        r = _as_nobody(["cat", os.path.join(m.path, shards[0])])
        T.check(r.returncode == 0, "nobody cannot read a stage-0 shard: %s" % r.stderr)


def test_overlay_and_torch_dist_bits():
    """Tokenizer files keep their own owner and bits; config.json is no more open than the
    hf_config file merged into it; on torch_dist, .metadata's bits bound every file."""
    _need_root()
    _public_workdir()
    ckpt = _public_copy()
    tok = T.scratch("tok")
    for name, mode in (("tokenizer.json", 0o600), ("tokenizer_config.json", 0o644)):
        with open(os.path.join(tok, name), "w") as f:
            f.write("{}")
        os.chmod(os.path.join(tok, name), mode)
    os.chown(os.path.join(tok, "tokenizer.json"), 1234, 2345)
    cfg = os.path.join(T.scratch("cfg"), "extra.json")
    with open(cfg, "w") as f:
        f.write('{"bos_token_id": 1}')
    os.chmod(cfg, 0o640)
    with T.Mount(ckpt, ["tokenizer=" + tok, "hf_config=" + cfg, "allow_other"]) as m:
        modes = _modes(m.path)
        got = {n: (stat.S_IMODE(modes[n].st_mode), modes[n].st_uid) for n in
               ("tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors")}
        want = {"tokenizer.json": (0o600, 1234), "tokenizer_config.json": (0o644, 0),
                "config.json": (0o640, 0), "model.safetensors": (0o644, 0)}
        T.check(got == want, "modes/owners %r, want %r" % (got, want))
        r = _as_nobody(["cat", os.path.join(m.path, "tokenizer.json")])
        T.check(r.returncode != 0, "nobody read a 0600 tokenizer file through the mount")
    dist = T.copy_fixture("head_gpt_tp2pp2_torch_dist")
    os.chmod(os.path.dirname(dist), 0o755)
    os.chmod(os.path.join(_iter_dir(dist), ".metadata"), 0o640)
    with T.Mount(dist, []) as m:
        for name, st in _modes(m.path).items():
            if name != "/":
                T.check(stat.S_IMODE(st.st_mode) == 0o640, "%s shows %o with a 0640 .metadata, want 640"
                        % (name, stat.S_IMODE(st.st_mode)))


def main():
    r = T.Runner("permissions")
    r.run("private_checkpoint_closed_to_others", test_private_checkpoint_closed_to_others)
    r.run("public_checkpoint_readable_and_copy_deletable", test_public_checkpoint_readable_and_copy_deletable)
    r.run("owner_and_most_restrictive_bits", test_owner_and_most_restrictive_bits)
    r.run("closed_folder_on_the_way", test_closed_folder_on_the_way)
    r.run("overlay_and_torch_dist_bits", test_overlay_and_torch_dist_bits)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
