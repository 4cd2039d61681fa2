#!/usr/bin/python3
"""mount(8), /etc/fstab and systemd integration (mount-helpers/).

Real mounts, as root, through every way a system mounts mcorefs:
  mount -t fuse.mcorefs SRC DIR -o ...    mount(8) -> /sbin/mount.fuse3 -> `mcorefs` from PATH
  mount -t mcorefs SRC DIR -o ...         mount(8) -> /sbin/mount.mcorefs (our helper) -> mcorefs
  mount -t fuse 'mcorefs#SRC' DIR         the legacy fuse type#source spelling
  mount.fuse3 / mount.mcorefs called directly, the way mount(8) calls them
  mount -T FSTAB DIR, mount -a -T FSTAB   fstab lines of both types, with fstab-only options
all on the real fixture head_gpt_tp2pp2_torch and on a generated llama TP2 checkpoint, with
ro,skip_mtp,iteration=10,true_vocab_size=1000. Each mount must be fuse.mcorefs, read-only, backed
by the daemon under test (MCOREFS_BIN, checked with /proc/PID/exe), show vocab_size 1000, and give
the golden/reference tensors. Unmounting is `umount DIR`, and the daemon must exit.

mount(8) runs helpers only from /sbin, and it resets PATH to /usr/local/sbin:/usr/local/bin:/usr/sbin:
/usr/bin:/sbin:/bin for them. So while this script runs, it creates the symlinks
/sbin/mount.mcorefs -> mount-helpers/mount.mcorefs and /usr/local/bin/mcorefs -> $MCOREFS_BIN.
It creates each one only if nothing is there yet, and removes it afterwards. If something else is
there, the tests that need that link are skipped.

Also, without mounting: the helper's option filter, argument handling and binary lookup with a fake
mcorefs; fstab.example and mcorefs-example.mount (the lines pass the helper; the unit is named after
its Where=; `systemd-analyze verify` if available).

Skipped (exit 0) without root or /dev/fuse, except for the tests that do not mount.
"""

import atexit
import configparser
import json
import os
import shutil
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

HELPERS = os.path.join(T.REPO, "mount-helpers")
HELPER = os.path.join(HELPERS, "mount.mcorefs")
FSTAB_EXAMPLE = os.path.join(HELPERS, "fstab.example")
UNIT_EXAMPLE = os.path.join(HELPERS, "mcorefs-example.mount")
REAL = os.path.join(T.MEGATRON_FIXTURES, "head_gpt_tp2pp2_torch")
GEN_PY = os.path.join(T.FIXTURES_PY, "mcore_gen.py")
SBIN_LINK = "/sbin/mount.mcorefs"
PATH_LINK = "/usr/local/bin/mcorefs"
MOUNT_FUSE3 = "/sbin/mount.fuse3"

OPTS = "skip_mtp,iteration=10,true_vocab_size=1000"
# options that only mount(8)/systemd understand; none of them may reach the daemon
FSTAB_ONLY = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser",
              "owner", "group"}
FSTAB_ONLY_PREFIX = ("x-", "X-", "comment=")


def can_mount():
    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    for prog in ("mount", "umount", "fusermount3"):
        if shutil.which(prog) is None:
            return "%s not found" % prog
    return None


NO_MOUNT = can_mount()


def need_mount():
    if NO_MOUNT:
        raise T.Skip(NO_MOUNT)


# --------------------------------------------------------------------------------------
# temporary system symlinks (/sbin/mount.mcorefs, /usr/local/bin/mcorefs)
# --------------------------------------------------------------------------------------

class SysLink:
    """A symlink at `path` -> `target`, created only if `path` does not exist yet and removed by
    remove() (also at exit). usable: the path resolves to target (ours, or already identical)."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.created = False
        self.was_created = False
        self.why_not = None

    def create(self):
        if os.path.lexists(self.path):
            if os.path.realpath(self.path) != os.path.realpath(self.target):
                self.why_not = "%s exists (-> %s), not ours; left alone" % (
                    self.path, os.path.realpath(self.path))
            return
        try:
            os.symlink(self.target, self.path)
            self.created = self.was_created = True
        except OSError as e:
            self.why_not = "cannot create %s: %s" % (self.path, e)

    def usable(self):
        if self.why_not:
            raise T.Skip(self.why_not)

    def remove(self):
        if self.created and os.path.islink(self.path) and os.readlink(self.path) == self.target:
            os.unlink(self.path)
        self.created = False


LINKS = []


def _remove_links():
    for ln in LINKS:
        try:
            ln.remove()
        except OSError as e:
            print("cannot remove %s: %s" % (ln.path, e), flush=True)


atexit.register(_remove_links)     # runs before mcorefs_testlib's cleanup (atexit is LIFO)


# --------------------------------------------------------------------------------------
# mounting through mount(8) and friends
# --------------------------------------------------------------------------------------

def mount_env(with_bin=True, path_first=None):
    env = T.sut_env()
    if with_bin:
        env["MCOREFS_BIN"] = T.MCOREFS_BIN
    else:
        env.pop("MCOREFS_BIN", None)
    if path_first:
        env["PATH"] = path_first + ":" + env.get("PATH", "/usr/bin:/bin")
    return env


def proc_cmdline(pid):
    return T._proc_cmdline(pid)


def mcorefs_daemons(mnt):
    """(pid, cmdline, exe) of live processes whose cmdline names the mount point and whose program
    is called mcorefs (however it was started)."""
    out = []
    names = {"mcorefs", os.path.basename(T.MCOREFS_BIN)}
    real = os.path.realpath(mnt)
    for ent in os.listdir("/proc"):
        if not ent.isdigit() or int(ent) == os.getpid():
            continue
        pid = int(ent)
        cl = proc_cmdline(pid)
        if not cl or os.path.basename(cl[0]) not in names:
            continue
        if mnt not in cl and real not in cl:
            continue
        if T._proc_state(pid) in (None, "Z"):
            continue
        try:
            exe = os.path.realpath("/proc/%d/exe" % pid)
        except OSError:
            exe = "?"
        out.append((pid, cl, exe))
    return out


def mountinfo(mnt):
    """(fstype, source, mount options, super options) of the mount at mnt, or None."""
    real = os.path.realpath(mnt)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if mp != real:
                continue
            sep = parts.index("-")
            found = (parts[sep + 1], parts[sep + 2].replace("\\040", " "), parts[5], parts[sep + 3])
    return found


_open_mounts = {}   # mountpoint -> SysMount


class SysMount:
    """with SysMount(["mount", "-t", "fuse.mcorefs", SRC, MNT, ...], MNT) as m: ...

    Runs the mount command, which must exit 0 with the mount ready; finds the daemon. On exit:
    `umount MNT` (must work), the daemon must exit, the mount point must be gone from mountinfo;
    anything left is force-cleaned and reported."""

    def __init__(self, argv, mnt, env, label):
        self.argv, self.mnt, self.env, self.label = list(argv), mnt, env, label
        self.daemons = []
        self.result = None

    def __enter__(self):
        _open_mounts[self.mnt] = self
        try:
            r = T.run_cmd(self.argv, env=self.env)
            self.result = r
            if r.rc != 0:
                raise T.MountFailed(r, "%s exited with %r" % (self.label, r.rc))
            if not T.is_mounted(self.mnt):
                raise T.MountFailed(r, "%s returned 0 but %s is not a mount point" % (self.label, self.mnt))
            self.daemons = mcorefs_daemons(self.mnt)
            T.check(len(self.daemons) == 1, "%s: expected one mcorefs daemon for %s, found %r"
                    % (self.label, self.mnt, self.daemons))
        except BaseException:
            self.close(raise_errors=False)
            raise
        return self

    def __exit__(self, et, ev, tb):
        self.close(raise_errors=et is None)
        return False

    @property
    def daemon_args(self):
        return self.daemons[0][1] if self.daemons else []

    def daemon_opts(self):
        """The daemon's -o options, in order (all -o arguments joined)."""
        a, opts = self.daemon_args, []
        for i, x in enumerate(a):
            if x == "-o" and i + 1 < len(a):
                opts += a[i + 1].split(",")
            elif x.startswith("-o") and len(x) > 2:
                opts += x[2:].split(",")
        return opts

    def close(self, raise_errors=True):
        problems = []
        pids = [d[0] for d in self.daemons] or [d[0] for d in mcorefs_daemons(self.mnt)]
        if T.is_mounted(self.mnt):
            r = T.run_cmd(["umount", self.mnt], timeout=T.UNMOUNT_TIMEOUT)
            if r.rc != 0 or T.is_mounted(self.mnt):
                problems.append("umount %s failed: %r" % (self.mnt, r))
                if T.is_mounted(self.mnt):
                    T._fusermount(self.mnt, lazy=True)
        left = T._wait_gone(pids, T.DAEMON_EXIT_TIMEOUT)
        if left:
            problems.append("daemon %r still running after umount; killed" % left)
            T._kill(left)
        strays = [d[0] for d in mcorefs_daemons(self.mnt)]
        if strays:
            problems.append("stray mcorefs processes for %s: %r; killed" % (self.mnt, strays))
            T._kill(strays)
        _open_mounts.pop(self.mnt, None)
        try:
            T.check_sanitizer_logs(self.label)
        except T.TestFailure as e:
            problems.append(str(e))
        if problems:
            msg = "unmount/cleanup problems:\n  " + "\n  ".join(problems)
            if raise_errors:
                raise T.TestFailure(msg)
            print("    " + msg.replace("\n", "\n    "), flush=True)


def close_all_mounts():
    for m in list(_open_mounts.values()):
        m.close(raise_errors=False)


def new_mountpoint():
    return T.scratch("mnt")


# expected content ---------------------------------------------------------------------

_expect = {}


def real_fixture():
    if not os.path.isdir(REAL):
        raise T.Skip("real fixture %s is missing" % REAL)
    if "real" not in _expect:
        _expect["real"] = T.load_golden_dir(os.path.join(REAL, "golden"))
    return REAL, _expect["real"]


def generated_fixture():
    if "gen" not in _expect:
        out = os.path.join(T.work_dir(), "gen-llama-tp2")
        r = T.run_cmd([sys.executable, GEN_PY, "--family", "llama", "--tp", "2", "--out", out],
                      timeout=300, env=dict(os.environ))
        T.check(r.rc == 0, "mcore_gen.py failed: %r" % r)
        ref = json.load(open(os.path.join(out, "reference.json")))
        T.check(ref["true_vocab_size"] == 1000, "generated true_vocab_size %r, expected 1000"
                % ref["true_vocab_size"])
        _expect["gen"] = (os.path.join(out, "ckpt"),
                          T.load_reference(os.path.join(out, "reference.safetensors")))
    return _expect["gen"]


def check_mount(m, src, expected, opts_in_daemon=("skip_mtp", "iteration=10", "true_vocab_size=1000")):
    """The mount at m.mnt is ours, read-only, fuse.mcorefs, shows the expected model."""
    mi = mountinfo(m.mnt)
    T.check(mi is not None, "%s is not in mountinfo" % m.mnt)
    fstype, source, mopts, _ = mi
    T.check(fstype == "fuse.mcorefs", "fstype is %r, expected fuse.mcorefs" % fstype)
    T.check(source == "mcorefs:" + src or source == "mcorefs:" + os.path.realpath(src),
            "source is %r, expected mcorefs:%s" % (source, src))
    T.check("ro" in mopts.split(","),
            "mount options %r are not read-only (daemon cmdline %r): mcorefs must stay ro even when"
            " given rw, which mount(8) passes whenever ro is not given" % (mopts, m.daemon_args))
    T.check(os.statvfs(m.mnt).f_flag & os.ST_RDONLY, "statvfs: %s is not ST_RDONLY" % m.mnt)
    pid, cl, exe = m.daemons[0]
    T.check(exe == os.path.realpath(T.MCOREFS_BIN),
            "the daemon is %s, not the build under test %s (cmdline %r)" % (exe, T.MCOREFS_BIN, cl))
    opts = m.daemon_opts()
    bad = [o for o in opts if o in FSTAB_ONLY or o.startswith(FSTAB_ONLY_PREFIX)]
    T.check(not bad, "fstab-only options %r reached the daemon: %r" % (bad, cl))
    for o in opts_in_daemon:
        T.check(o in opts, "option %r did not reach the daemon: %r" % (o, cl))
    cfg = json.load(open(os.path.join(m.mnt, "config.json")))
    T.check(cfg.get("vocab_size") == 1000, "config.json vocab_size %r, expected 1000" % cfg.get("vocab_size"))
    v = T.read_view(m.mnt, allowed_extra=(".mcorefs",))   # the hidden info folder, if any
    T.check(v.st_files, "no safetensors file in the mount")
    T.assert_same_tensors(v.tensors, expected, "mount", "golden/reference")
    try:
        fd = os.open(os.path.join(m.mnt, "config.json"), os.O_WRONLY)
        os.close(fd)
        raise T.TestFailure("config.json could be opened for writing")
    except OSError:
        pass
    return cl


# --------------------------------------------------------------------------------------
# tests that mount
# --------------------------------------------------------------------------------------

def t_mount_fuse_type(fixture, extra_opts="ro,nofail,_netdev"):
    need_mount()
    PATH_LINK_OBJ.usable()
    src, expected = fixture()
    mnt = new_mountpoint()
    argv = ["mount", "-t", "fuse.mcorefs", src, mnt, "-o", extra_opts + "," + OPTS]
    # mount(8) resets PATH for its helpers: mcorefs is found as /usr/local/bin/mcorefs (our link)
    with SysMount(argv, mnt, mount_env(), "mount -t fuse.mcorefs") as m:
        cl = check_mount(m, src, expected)
        T.check(os.path.basename(cl[0]) == "mcorefs", "not started by mount.fuse3: %r" % cl)
        print("    daemon: %s" % " ".join(cl), flush=True)


def t_mount_helper_type(fixture, extra_opts, with_bin):
    need_mount()
    SBIN_LINK_OBJ.usable()
    if not with_bin:
        PATH_LINK_OBJ.usable()
    src, expected = fixture()
    mnt = new_mountpoint()
    argv = ["mount", "-t", "mcorefs", src, mnt, "-o", extra_opts + "," + OPTS]
    with SysMount(argv, mnt, mount_env(with_bin=with_bin), "mount -t mcorefs") as m:
        cl = check_mount(m, src, expected)
        opts = m.daemon_opts()
        T.check(opts[0] == "ro" and "rw" not in opts,
                "helper did not pass ro first / passed rw: %r" % cl)
        want = T.MCOREFS_BIN if with_bin else PATH_LINK
        T.check(cl[0] == want, "daemon started as %r, expected %r (%s)" % (
            cl[0], want, "MCOREFS_BIN" if with_bin else "found in PATH"))
        print("    daemon: %s" % " ".join(cl), flush=True)


def t_mount_legacy_hash():
    need_mount()
    PATH_LINK_OBJ.usable()
    src, expected = real_fixture()
    mnt = new_mountpoint()
    argv = ["mount", "-t", "fuse", "mcorefs#" + src, mnt, "-o", "ro," + OPTS]
    with SysMount(argv, mnt, mount_env(), "mount -t fuse mcorefs#SRC") as m:
        check_mount(m, src, expected)


def t_direct_mount_fuse3():
    """mount.fuse3 as mount(8) calls it, with our build first in PATH: no system links needed."""
    need_mount()
    if not os.access(MOUNT_FUSE3, os.X_OK):
        raise T.Skip("%s is missing" % MOUNT_FUSE3)
    src, expected = real_fixture()
    bindir = os.path.join(T.work_dir(), "bin")
    os.makedirs(bindir, exist_ok=True)
    if not os.path.lexists(os.path.join(bindir, "mcorefs")):
        os.symlink(T.MCOREFS_BIN, os.path.join(bindir, "mcorefs"))
    mnt = new_mountpoint()
    argv = [MOUNT_FUSE3, src, mnt, "-o", "rw,nofail,_netdev,noauto,users," + OPTS,
            "-t", "fuse.mcorefs"]
    with SysMount(argv, mnt, mount_env(path_first=bindir), "mount.fuse3") as m:
        check_mount(m, src, expected)


def t_direct_helper():
    """Our helper as mount(8) calls it (no /sbin link needed): SRC DIR -o OPTS."""
    need_mount()
    src, expected = generated_fixture()
    mnt = new_mountpoint()
    argv = ["/bin/sh", HELPER, src, mnt, "-o",
            "rw,defaults,nofail,_netdev,noauto,user,users,x-systemd.automount,comment=x,relatime,"
            "nodev,nosuid,ro," + OPTS]
    with SysMount(argv, mnt, mount_env(), "mount.mcorefs (direct)") as m:
        cl = check_mount(m, src, expected)
        opts = m.daemon_opts()
        T.check(opts == ["ro", "nodev", "nosuid"] + OPTS.split(","),
                "daemon options %r, expected ro,nodev,nosuid,%s" % (opts, OPTS))
        T.check(cl[0] == T.MCOREFS_BIN, "daemon %r is not MCOREFS_BIN" % cl[0])


def fstab_escape(p):
    return p.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def t_fstab():
    """mount -T FSTAB DIR for lines of both types (with fstab-only options), then mount -a -T."""
    need_mount()
    SBIN_LINK_OBJ.usable()
    PATH_LINK_OBJ.usable()
    real, real_t = real_fixture()
    gen, gen_t = generated_fixture()
    cases = [  # (src, type, options, expected tensors, auto?)
        (real, "fuse.mcorefs", "ro,nodev,nosuid,allow_other," + OPTS, real_t, True),
        (real, "mcorefs", "defaults,nofail,_netdev," + OPTS, real_t, True),
        (gen, "mcorefs", "ro,noauto,nofail,x-systemd.automount,x-systemd.idle-timeout=10min," + OPTS,
         gen_t, False),
        (gen, "fuse.mcorefs", "ro,noauto,nofail,x-systemd.automount,_netdev," + OPTS, gen_t, False),
    ]
    mnts = [os.path.realpath(new_mountpoint()) for _ in cases]
    fstab = os.path.join(T.work_dir(), "fstab")
    with open(fstab, "w") as f:
        f.write("# test fstab for mcorefs\n")
        for (src, typ, opts, _, _), mnt in zip(cases, mnts):
            f.write("%s  %s  %s  %s  0 0\n" % (fstab_escape(src), fstab_escape(mnt), typ, opts))
    env = mount_env()
    for (src, typ, opts, exp, _), mnt in zip(cases, mnts):
        print("    mount -T fstab %s  (%s, %s)" % (mnt, typ, opts), flush=True)
        with SysMount(["mount", "-T", fstab, mnt], mnt, env, "mount -T fstab (%s)" % typ) as m:
            check_mount(m, src, exp)
    # mount -a: the two auto lines are mounted, the noauto ones are not
    r = T.run_cmd(["mount", "-a", "-T", fstab], env=env)
    try:
        T.check(r.rc == 0, "mount -a -T %s failed: %r" % (fstab, r))
        for (src, typ, opts, exp, auto), mnt in zip(cases, mnts):
            T.check(T.is_mounted(mnt) == auto, "after mount -a: %s (%s) mounted=%r, expected %r"
                    % (mnt, opts, T.is_mounted(mnt), auto))
    finally:
        for mnt in mnts:
            if T.is_mounted(mnt) or mcorefs_daemons(mnt):
                m = SysMount([], mnt, env, "mount -a -T fstab")
                m.daemons = mcorefs_daemons(mnt)
                m.close()


def t_mount_errors():
    """Failures come back through mount(8) with the daemon's / helper's one-line message and leave
    nothing mounted."""
    need_mount()
    SBIN_LINK_OBJ.usable()
    PATH_LINK_OBJ.usable()
    src, _ = real_fixture()
    missing = os.path.join(T.work_dir(), "no-such-checkpoint")
    cases = [
        (["-t", "fuse.mcorefs", missing], "ro", "mcorefs:"),
        (["-t", "mcorefs", missing], "ro", "mcorefs:"),
        (["-t", "mcorefs", src], "iteration=abc", "mcorefs: bad value for iteration"),
        (["-t", "fuse.mcorefs", src], "true_vocab_size=0", "mcorefs: bad value for true_vocab_size"),
        (["-t", "mcorefs", src], "setuid=nobody", "mount.mcorefs: option 'setuid=nobody'"),
        (["-t", "mcorefs", src], "skip-mtp", "mcorefs: unknown option 'skip-mtp' (did you mean skip_mtp?)"),
        (["-t", "fuse.mcorefs", src], "iteration=7", "iterations here: 10"),
    ]
    for args, opts, msg in cases:
        mnt = new_mountpoint()
        argv = ["mount"] + args + [mnt, "-o", opts]
        r = T.run_cmd(argv, env=mount_env())
        try:
            T.check(r.rc not in (0, None), "%s succeeded / hung: %r" % (" ".join(argv), r))
            T.check(msg in r.stderr, "%s: stderr does not contain %r: %r" % (" ".join(argv), msg, r))
            T.check(not T.is_mounted(mnt), "%s left a mount" % " ".join(argv))
            T.check(not mcorefs_daemons(mnt), "%s left a daemon" % " ".join(argv))
        finally:
            if T.is_mounted(mnt) or mcorefs_daemons(mnt):
                m = SysMount([], mnt, mount_env(), "failed mount")
                m.close(raise_errors=False)
        print("    %-60s rc=%s  %s" % (" ".join(args[:2] + [opts]), r.rc,
                                     r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""),
              flush=True)


# --------------------------------------------------------------------------------------
# tests that do not mount: the helper with a fake mcorefs, the example files
# --------------------------------------------------------------------------------------

FAKE_MCOREFS = """#!/bin/sh
# fake mcorefs: print the arguments as JSON and which file ran
/usr/bin/python3 -c 'import json, sys; print(json.dumps({"self": sys.argv[1], "args": sys.argv[2:]}))' "$0" "$@"
"""


def run_helper(args, env_extra=None, helper=HELPER, drop_bin=True):
    env = dict(os.environ)
    if drop_bin:
        env.pop("MCOREFS_BIN", None)
    env["PATH"] = "/usr/bin:/bin"           # no mcorefs in PATH unless a test adds it
    if env_extra:
        env.update(env_extra)
    return T.run_cmd(["/bin/sh", helper] + list(args), env=env, timeout=30)


def fake_bin(d):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "mcorefs")
    with open(p, "w") as f:
        f.write(FAKE_MCOREFS)
    os.chmod(p, 0o755)
    return p


def parse_fake(r):
    T.check(r.rc == 0, "helper failed: %r" % r)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise T.TestFailure("fake mcorefs did not run: %r" % r)


def t_helper_options():
    d = T.scratch("fake")
    fake = fake_bin(os.path.join(d, "bin"))
    env = {"MCOREFS_BIN": fake}
    table = [
        ("rw", "ro"),                      # mount(8)'s default: dropped, ro instead
        ("", "ro"),
        ("ro,ro,rw", "ro"),
        ("defaults,auto,noauto,nofail,_netdev,user,users,nouser,owner,group,comment=hi,"
         "x-systemd.automount,x-systemd.idle-timeout=1min,X-mount.mkdir,user=bob", "ro"),
        ("relatime,norelatime,strictatime,nostrictatime,diratime,nodiratime,lazytime,nolazytime",
         "ro"),
        ("ro,skip_mtp,iteration=10,true_vocab_size=1000", "ro,skip_mtp,iteration=10,true_vocab_size=1000"),
        ("allow_other,nodev,nosuid,noexec,noatime,arch=llama,shard_size=2GB,dtype=bf16,"
         "hf_config=/a b/c.json,tokenizer=/t",
         "ro,allow_other,nodev,nosuid,noexec,noatime,arch=llama,shard_size=2GB,dtype=bf16,"
         "hf_config=/a b/c.json,tokenizer=/t"),
    ]
    for given, want in table:
        args = ["/ckpt with space", "/mnt/x"] + (["-o", given] if given else [])
        out = parse_fake(run_helper(args, env))
        T.check(out["self"] == fake, "ran %r, expected the MCOREFS_BIN %r" % (out["self"], fake))
        T.check(out["args"] == ["/ckpt with space", "/mnt/x", "-o", want],
                "-o %r: mcorefs got %r, expected -o %r" % (given, out["args"], want))
    # several -o, -oOPTS, flags mount(8) may pass (-n -s -v, bundled), -t, --
    out = parse_fake(run_helper(["-n", "/c", "-o", "rw,skip_mtp", "/m", "-sv", "-oiteration=3",
                                 "-t", "mcorefs"], env))
    T.check(out["args"] == ["/c", "/m", "-o", "ro,skip_mtp,iteration=3"], "got %r" % out["args"])
    r = run_helper(["-v", "--", "-odd-src", "/m"], env)
    T.check(parse_fake(r)["args"] == ["-odd-src", "/m", "-o", "ro"], "-- handling: %r" % r)
    T.check("mount.mcorefs: %s -odd-src /m -o ro" % fake in r.stderr, "-v did not print the command: %r" % r)
    # -f: fake, nothing runs
    r = run_helper(["-f", "/c", "/m", "-o", "skip_mtp"], env)
    T.check(r.rc == 0 and r.stdout == "" and r.stderr == "", "-f ran something: %r" % r)
    # errors: one line 'mount.mcorefs: ...', exit 1, mcorefs not run
    for args, msg in [
        (["/c"], "need a checkpoint folder and a mount point"),
        (["/c", "/m", "/x"], "need a checkpoint folder and a mount point"),
        (["/c", "/m", "-o"], "option -o needs an argument"),
        (["/c", "/m", "-o", "setuid=nobody"], "only supported with type fuse.mcorefs"),
        (["/c", "/m", "-o", "skip_mtp,drop_privileges"], "only supported with type fuse.mcorefs"),
        (["/c", "/m", "-N", "/proc/1/ns/mnt"], "namespaces"),
        (["/c", "/m", "-q"], "unknown flag -q"),
        (["", "/m"], "empty checkpoint path"),
    ]:
        r = run_helper(args, env)
        T.check(r.rc == 1 and r.stdout == "", "%r: rc %r, stdout %r (expected 1, nothing run)"
                % (args, r.rc, r.stdout))
        probs = T.one_line_error(r.stderr, "mount.mcorefs:", [msg])
        T.check(not probs, "%r: %s: %r" % (args, "; ".join(probs), r.stderr))
    r = run_helper(["-h"], env)
    T.check(r.rc == 0 and "usage:" in r.stdout, "-h: %r" % r)


def t_helper_finds_binary():
    d = T.scratch("find")
    # installed layout: PREFIX/sbin/mount.mcorefs, PREFIX/bin/mcorefs
    prefix = os.path.join(d, "prefix")
    os.makedirs(os.path.join(prefix, "sbin"))
    helper = os.path.join(prefix, "sbin", "mount.mcorefs")
    shutil.copy(HELPER, helper)
    os.chmod(helper, 0o755)
    in_bin = fake_bin(os.path.join(prefix, "bin"))
    r = run_helper(["/c", "/m"], helper=helper)
    T.check(os.path.realpath(parse_fake(r)["self"]) == in_bin, "PREFIX/bin/mcorefs not used: %r" % r)
    # next to the helper wins over ../bin
    same = fake_bin(os.path.join(prefix, "sbin"))
    r = run_helper(["/c", "/m"], helper=helper)
    T.check(os.path.realpath(parse_fake(r)["self"]) == same, "sbin/mcorefs not used: %r" % r)
    os.unlink(same)
    # called through a symlink elsewhere (like /sbin/mount.mcorefs -> PREFIX/sbin/mount.mcorefs)
    linkdir = os.path.join(d, "sbin-link")
    os.makedirs(linkdir)
    link = os.path.join(linkdir, "mount.mcorefs")
    os.symlink(helper, link)
    env = dict(os.environ, PATH="/usr/bin:/bin")
    env.pop("MCOREFS_BIN", None)
    r = T.run_cmd([link, "/c", "/m"], env=env, timeout=30)          # argv[0] = the link
    T.check(os.path.realpath(parse_fake(r)["self"]) == in_bin, "symlinked helper: %r" % r)
    # MCOREFS_BIN wins over everything
    other = fake_bin(os.path.join(d, "other"))
    r = run_helper(["/c", "/m"], {"MCOREFS_BIN": other}, helper=helper)
    T.check(parse_fake(r)["self"] == other, "MCOREFS_BIN not used: %r" % r)
    r = run_helper(["/c", "/m"], {"MCOREFS_BIN": os.path.join(d, "nope")}, helper=helper)
    T.check(r.rc == 1 and not T.one_line_error(r.stderr, "mount.mcorefs:", ["MCOREFS_BIN"]),
            "bad MCOREFS_BIN: %r" % r)
    # PATH, when nothing is next to it
    shutil.rmtree(os.path.join(prefix, "bin"))
    pathdir = os.path.join(d, "pathdir")
    in_path = fake_bin(pathdir)
    r = run_helper(["/c", "/m"], {"PATH": pathdir + ":/usr/bin:/bin"}, helper=helper)
    T.check(parse_fake(r)["self"] == in_path, "mcorefs in PATH not used: %r" % r)
    # nowhere
    r = run_helper(["/c", "/m"], helper=helper)
    T.check(r.rc == 1 and not T.one_line_error(r.stderr, "mount.mcorefs:", ["cannot find the mcorefs program"]),
            "no mcorefs anywhere: %r" % r)


def t_helper_file():
    st = os.stat(HELPER)
    T.check(st.st_mode & stat.S_IXUSR, "%s is not executable" % HELPER)
    with open(HELPER) as f:
        first = f.readline()
    T.check(first.strip() == "#!/bin/sh", "shebang %r, expected #!/bin/sh" % first)
    for sh in ("sh", "dash", "bash"):
        p = shutil.which(sh)
        if p:
            r = T.run_cmd([p, "-n", HELPER], env=dict(os.environ), timeout=30)
            T.check(r.rc == 0, "%s -n %s: %r" % (sh, HELPER, r))
    if shutil.which("dash"):      # strict POSIX shell: the whole option path, not only syntax
        d = T.scratch("dash")
        fake = fake_bin(d)
        env = dict(os.environ, MCOREFS_BIN=fake, PATH="/usr/bin:/bin")
        r = T.run_cmd([shutil.which("dash"), HELPER, "/c", "/m", "-o", "rw,nofail,skip_mtp"], env=env)
        T.check(parse_fake(r)["args"] == ["/c", "/m", "-o", "ro,skip_mtp"], "dash: %r" % r)


def fstab_lines(path):
    """Entry lines of an fstab file, also the commented-out entries ('#/...')."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if s.startswith("#/"):
                s = s[1:]
            elif not s or s.startswith("#"):
                continue
            out.append((n, s.split()))
    return out


def t_fstab_example():
    d = T.scratch("fstab-ex")
    fake = fake_bin(d)
    lines = fstab_lines(FSTAB_EXAMPLE)
    T.check(lines, "no entries in %s" % FSTAB_EXAMPLE)
    types, automount = set(), set()
    for n, fields in lines:
        T.check(len(fields) == 6, "line %d: %d fields, expected 6: %r" % (n, len(fields), fields))
        src, mnt, typ, opts, dump, passno = fields
        T.check(typ in ("fuse.mcorefs", "mcorefs"), "line %d: type %r" % (n, typ))
        T.check(src.startswith("/") and mnt.startswith("/"), "line %d: paths %r %r" % (n, src, mnt))
        T.check((dump, passno) == ("0", "0"), "line %d: dump/pass %r %r" % (n, dump, passno))
        types.add(typ)
        if "noauto" in opts.split(",") and "x-systemd.automount" in opts.split(","):
            automount.add(typ)
        out = parse_fake(run_helper([src, mnt, "-o", opts], {"MCOREFS_BIN": fake}))
        got = out["args"][3].split(",")
        bad = [o for o in got if o in FSTAB_ONLY or o.startswith(FSTAB_ONLY_PREFIX) or o == "rw"]
        T.check(not bad, "line %d: helper passed %r to mcorefs" % (n, bad))
    T.check(types == {"fuse.mcorefs", "mcorefs"}, "fstab.example has types %r, expected both" % types)
    T.check(automount == {"fuse.mcorefs", "mcorefs"},
            "fstab.example: noauto,x-systemd.automount lines for %r, expected both types" % automount)


def systemd_escape_path(p):
    """systemd-escape -p (enough for ASCII paths)."""
    p = p.strip("/")
    if not p:
        return "-"
    out = []
    for i, c in enumerate(p):
        if c == "/":
            out.append("-")
        elif c.isalnum() or c in ":_" or (c == "." and i > 0):
            out.append(c)
        else:
            out.append("\\x%02x" % ord(c))
    return "".join(out)


def t_systemd_unit():
    cp = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read(UNIT_EXAMPLE)
    T.check(cp.has_section("Mount"), "no [Mount] section")
    mnt = dict(cp["Mount"])
    want = {"What": "/ckpt/run1", "Where": "/mnt/run1", "Type": "fuse.mcorefs"}
    for k, v in want.items():
        T.check(mnt.get(k) == v, "[Mount] %s=%r, expected %r" % (k, mnt.get(k), v))
    opts = mnt.get("Options", "").split(",")
    for o in ("ro", "skip_mtp", "allow_other", "true_vocab_size=151643"):
        T.check(o in opts, "[Mount] Options lacks %r: %r" % (o, opts))
    name = systemd_escape_path(mnt["Where"]) + ".mount"
    T.check(name == "mnt-run1.mount", "escaped name %r" % name)
    text = open(UNIT_EXAMPLE).read()
    T.check(name in text, "the unit does not say it must be installed as %s" % name)
    tool = shutil.which("systemd-escape")
    if tool:
        r = T.run_cmd([tool, "-p", "--suffix=mount", mnt["Where"]], env=dict(os.environ), timeout=30)
        T.check(r.stdout.strip() == name, "systemd-escape says %r, we say %r" % (r.stdout, name))
    tool = shutil.which("systemd-analyze")
    if tool:
        d = T.scratch("unit")
        dst = os.path.join(d, name)
        shutil.copy(UNIT_EXAMPLE, dst)
        r = T.run_cmd([tool, "verify", dst], env=dict(os.environ), timeout=60)
        T.check(r.rc == 0, "systemd-analyze verify %s: %r" % (name, r))
        print("    systemd-analyze verify %s: ok" % name, flush=True)


# --------------------------------------------------------------------------------------

SBIN_LINK_OBJ = SysLink(SBIN_LINK, HELPER)
PATH_LINK_OBJ = SysLink(PATH_LINK, T.MCOREFS_BIN)


def main():
    r = T.Runner("mount helpers")
    r.run("helper:file", t_helper_file)
    r.run("helper:options", t_helper_options)
    r.run("helper:finds-binary", t_helper_finds_binary)
    r.run("example:fstab", t_fstab_example)
    r.run("example:systemd-unit", t_systemd_unit)
    mount_tests = [
        ("direct:mount.fuse3:real", t_direct_mount_fuse3),
        ("direct:mount.mcorefs:generated", t_direct_helper),
        ("mount-t-fuse.mcorefs:real", t_mount_fuse_type, real_fixture),
        ("mount-t-fuse.mcorefs:generated", t_mount_fuse_type, generated_fixture, "nofail"),
        ("mount-t-mcorefs:real:MCOREFS_BIN", t_mount_helper_type, real_fixture,
         "nofail,_netdev,users", True),
        ("mount-t-mcorefs:generated:PATH", t_mount_helper_type, generated_fixture, "ro", False),
        ("mount-t-fuse:mcorefs#src", t_mount_legacy_hash),
        ("fstab:mount-T", t_fstab),
        ("errors", t_mount_errors),
    ]
    if NO_MOUNT:
        print("skipped: the mount tests (%s)" % NO_MOUNT, flush=True)
    try:
        if (not NO_MOUNT and not r.list_only and any(r.selected(t[0]) for t in mount_tests)):
            T.require_binary(T.MCOREFS_BIN)
            for ln in (SBIN_LINK_OBJ, PATH_LINK_OBJ):
                LINKS.append(ln)
                ln.create()
                print("link %s -> %s: %s" % (ln.path, ln.target, "created" if ln.created else
                                             (ln.why_not or "already there")), flush=True)
        for name, fn, *args in mount_tests:
            r.run(name, fn, *args)
    finally:
        close_all_mounts()
        _remove_links()
    for ln in LINKS:
        if ln.was_created and os.path.lexists(ln.path):
            print("FAIL cleanup: %s left behind" % ln.path)
            r.failed.append("cleanup:" + ln.path)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
