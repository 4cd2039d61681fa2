#!/usr/bin/python3
"""mcorefs behaves like a Unix tool (issue 12 part 2; issue 11 items 9, 10, 13b).

Without mounting: --version/-V of mcorefs, mcorefs-inspect and mount.mcorefs (one version, the one in
CMakeLists.txt project(); the daemon also names libfuse's); --help (one usage line, both checkpoint
formats, every option, where the log goes); option errors in mcorefs' words with a suggestion for a
typo; contradictory options; a missing iteration lists the ones there are; a rank folder and a plain
PyTorch DCP folder are named as such; a non-directory mount point and a mount point that already holds
an mcorefs mount are refused; a non-root user (nobody, in a private mount namespace with its own
/dev/fuse node) who cannot open /dev/fuse, or has no setuid fusermount3, is told what to do.
Mounting: a checkpoint path with a comma (as root, and as nobody through fusermount3); the accepted
FUSE options; -o log=FILE (relative to the
caller's directory) gets the daemon's log line for a failed read; SIGTERM/SIGINT to `mcorefs -f`
unmount and exit 0.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

GPT = "head_gpt_tp2pp2_torch"
GPT_OPTS = ["skip_mtp", "iteration=10", "true_vocab_size=1000"]
HELPER_BUILT = os.path.join(os.path.dirname(T.MCOREFS_BIN), "mount.mcorefs")


def project_version():
    with open(os.path.join(T.REPO, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*mcorefs\s+VERSION\s+([0-9.]+)", f.read())
    T.check(m, "no project(mcorefs VERSION x.y.z) in CMakeLists.txt")
    return m.group(1)


def real_fixture():
    src = os.path.join(T.MEGATRON_FIXTURES, GPT)
    return src, T.load_golden_dir(os.path.join(src, "golden"))


def can_mount():
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise T.Skip("cannot open /dev/fuse")
    if not os.path.exists("/dev/fuse"):
        raise T.Skip("/dev/fuse is missing")


# ---- version and help ---------------------------------------------------------------

def t_version():
    v = project_version()
    libfuse = subprocess.run(["pkg-config", "--modversion", "fuse3"], capture_output=True, text=True).stdout.strip()
    for flag in ("--version", "-V"):
        r = T.run_cmd([T.MCOREFS_BIN, flag])
        T.check(r.rc == 0 and r.stderr == "", "mcorefs %s: %r" % (flag, r))
        T.check(r.stdout == "mcorefs %s (libfuse %s)\n" % (v, libfuse),
                "mcorefs %s printed %r, expected 'mcorefs %s (libfuse %s)'" % (flag, r.stdout, v, libfuse))
        r = T.run_inspect([flag])
        T.check(r.rc == 0 and r.stdout == "mcorefs-inspect %s\n" % v, "mcorefs-inspect %s: %r" % (flag, r))
        T.check(os.access(HELPER_BUILT, os.X_OK), "the build has no configured helper %s" % HELPER_BUILT)
        r = T.run_cmd(["/bin/sh", HELPER_BUILT, flag], env=dict(os.environ))
        T.check(r.rc == 0 and r.stdout == "mount.mcorefs %s\n" % v, "mount.mcorefs %s: %r" % (flag, r))


def t_help():
    r = T.run_cmd([T.MCOREFS_BIN, "--help"])
    T.check(r.rc == 0 and r.stderr == "", "mcorefs --help: %r" % r)
    usage = [l for l in r.stdout.splitlines() if "usage" in l.lower()]
    T.check(len(usage) == 1, "--help must print one usage line, got %r" % usage)
    for word in ("torch_dist", "--ckpt-format torch)", ".metadata", "model_optim_rng.pt", "syslog",
                 "log=FILE", "allow_other", "-V, --version", "Exit status"):
        T.check(word in r.stdout, "--help does not mention %r" % word)
    for opt in ("iteration=", "true_vocab_size=", "skip_mtp", "mtp_head_copies", "arch=", "shard_size=",
                "dtype=", "hf_config=", "tokenizer=", "read_ahead_kb="):
        T.check("-o " + opt in r.stdout, "--help does not list -o %s" % opt)
    T.check("FUSE options:\n    -h" not in r.stdout and "Options for subdir module" not in r.stdout,
            "--help still prints libfuse's generic help")


# ---- option errors ------------------------------------------------------------------

def t_option_errors():
    src = os.path.join(T.MEGATRON_FIXTURES, GPT)
    cases = [
        (["skip-mtp"], ["unknown option 'skip-mtp' (did you mean skip_mtp?)"]),
        (["true_vocab=1000"], ["unknown option 'true_vocab' (did you mean true_vocab_size?)"]),
        (["iteraton=10"], ["unknown option 'iteraton' (did you mean iteration?)"]),
        (["allow_othr"], ["unknown option 'allow_othr' (did you mean allow_other?)"]),
        (["frobnicate"], ["unknown option 'frobnicate'", "--help"]),
        (["uid=0"], ["option 'uid' is not supported"]),
        (["skip_mtp", "mtp_head_copies"], ["skip_mtp and mtp_head_copies contradict"]),
        (["mtp_head_copies", "skip_mtp"], ["skip_mtp and mtp_head_copies contradict"]),
        (["log="], ["log needs a value"]),
        # the cache timeouts are applied by mcorefs itself (low-level FUSE API), bad values named
        (["entry_timeout=soon"], ["option entry_timeout needs a number of seconds", "soon"]),
        (["negative_timeout=-1"], ["option negative_timeout needs a number of seconds", "-1"]),
    ]
    for opts, names in cases:
        r = T.expect_mount_failure(src, opts, names)
        T.check("fuse:" not in r.stderr, "libfuse's message instead of ours: %r" % r.stderr)
    # an unknown flag and a third argument are errors too, not passed to libfuse
    for extra in (["-x"], ["third"], ["-o"]):
        mnt = T.scratch("mnt")
        r = T.run_cmd([T.MCOREFS_BIN, src, mnt] + extra)
        T.check(r.rc == 1 and T.one_line_error(r.stderr, "mcorefs:", [extra[0]]) == [],
                "mcorefs %s: %r" % (extra, r))


def t_missing_iteration_lists_existing():
    ck = T.copy_fixture(GPT)
    shutil.copytree(os.path.join(ck, "iter_0000010"), os.path.join(ck, "iter_0000020"))
    T.expect_mount_failure(ck, ["iteration=5"], ["no iteration 5", "iterations here: 10, 20"])
    r = T.expect_inspect_failure([ck, "-o", "iteration=15"], ["iterations here: 10, 20"])
    for it in range(30, 130, 10):       # 12 iterations: the newest 8 are named
        os.mkdir(os.path.join(ck, "iter_%07d" % it))
    T.expect_mount_failure(ck, ["iteration=25"], ["iterations here: 4 older, 50, 60, 70, 80, 90, 100, 110, 120"])
    os.unlink(os.path.join(ck, "latest_checkpointed_iteration.txt"))
    T.expect_mount_failure(ck, None, ["latest_checkpointed_iteration.txt", "iterations here: 4 older, 50",
                                      "iteration=N"])
    return r


def t_rank_folder():
    src = os.path.join(T.MEGATRON_FIXTURES, GPT)
    rank = os.path.join(src, "iter_0000010", "mp_rank_00_001")
    T.expect_mount_failure(rank, None, ["is a rank folder", "give the save folder %s" % os.path.realpath(src),
                                        "iteration folder %s" % os.path.realpath(os.path.dirname(rank))])


def t_plain_dcp():
    dcp = os.path.join(T.TEST_DATA, "torch", "dcp_sample")
    T.expect_mount_failure(dcp, None, ["dcp_sample", "plain PyTorch DCP checkpoint, not a Megatron-Core one"])


# ---- mount points -------------------------------------------------------------------

def t_mountpoint_not_directory():
    src = os.path.join(T.MEGATRON_FIXTURES, GPT)
    victim = os.path.join(T.scratch("file-mnt"), "passwd")
    with open(victim, "w") as f:
        f.write("root:x:0:0\n")
    r = T.run_cmd([T.MCOREFS_BIN, src, victim, "-o", ",".join(GPT_OPTS)])
    try:
        T.check(r.rc == 1, "mounting on a regular file: exit %r, expected 1: %r" % (r.rc, r))
        T.check(T.one_line_error(r.stderr, "mcorefs:", [victim, "not a directory"]) == [], "message: %r" % r)
        T.check(open(victim).read() == "root:x:0:0\n", "the file is shadowed / changed")
    finally:
        if T.is_mounted(victim):
            T._fusermount(victim, lazy=True)
            raise T.TestFailure("mcorefs mounted on a regular file")
    missing = os.path.join(T.scratch("missing-mnt"), "nope")
    r = T.run_cmd([T.MCOREFS_BIN, src, missing])
    T.check(r.rc == 1 and T.one_line_error(r.stderr, "mcorefs:", [missing, "No such file"]) == [],
            "missing mount point: %r" % r)


def t_mountpoint_already_mcorefs():
    can_mount()
    src, _ = real_fixture()
    with T.Mount(src, GPT_OPTS) as m:
        before = open("/proc/self/mountinfo").read().count(" %s " % m.path)
        r = T.run_cmd([T.MCOREFS_BIN, src, m.path, "-o", ",".join(GPT_OPTS)])
        after = open("/proc/self/mountinfo").read().count(" %s " % m.path)
        stray = [p for p in T.daemon_pids(m.path) if p not in m.pids]
        T._kill(stray)
        T.check(after == before, "a second mount was stacked on %s (%d -> %d entries)" % (m.path, before, after))
        T.check(r.rc == 1, "mounting on an mcorefs mount: exit %r: %r" % (r.rc, r))
        T.check(T.one_line_error(r.stderr, "mcorefs:", [m.path, "already an mcorefs mount"]) == [],
                "message: %r" % r)
        with open(os.path.join(m.path, "config.json")) as f:
            f.read()   # the first mount still works


def nonroot_in_namespace(dev_mode, setuid_fusermount, args):
    """Run the daemon as user nobody in a private mount namespace where /dev/fuse is a node of mode
    dev_mode and fusermount3 is the real one or a copy without the setuid bit. args: after the program.
    Returns (Result, scratch dir); the caller removes the dir."""
    fm = shutil.which("fusermount3") or "/usr/bin/fusermount3"
    d = tempfile.mkdtemp(prefix="mcorefs-nonroot-")   # /tmp: reachable for nobody
    os.chmod(d, 0o755)
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    os.chown(mnt, 65534, 65534)
    bin_copy = os.path.join(d, "mcorefs")
    shutil.copy(T.MCOREFS_BIN, bin_copy)             # the build dir may not be reachable for nobody
    os.chmod(bin_copy, 0o755)
    copy = os.path.join(d, "fusermount3")
    shutil.copy(fm, copy)
    os.chmod(copy, 0o755)                            # no setuid bit
    node = os.path.join(d, "fuse")
    nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups --"
    script = "set -e; mknod -m %o %s c 10 229; mount --bind %s /dev/fuse; " % (dev_mode, node, node)
    if not setuid_fusermount:
        script += "mount --bind %s %s; " % (copy, fm)
    script += "%s %s %s; " % (nobody, bin_copy, " ".join("'%s'" % a.replace("MNT", mnt) for a in args))
    script += ("%s cat %s/config.json >/dev/null && grep ' %s ' /proc/self/mountinfo; "
               "%s fusermount3 -u %s" % (nobody, mnt, mnt, nobody, mnt))
    return T.run_cmd(["unshare", "--mount", "--propagation", "private", "sh", "-c", script]), d


def need_root_namespace():
    if os.geteuid() != 0:
        raise T.Skip("needs root to set up the namespace")
    if not os.path.exists("/dev/fuse"):
        raise T.Skip("/dev/fuse is missing")
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        raise T.Skip("unshare/setpriv missing")
    if os.statvfs(tempfile.gettempdir()).f_flag & os.ST_NODEV:
        raise T.Skip("%s is nodev: no private /dev/fuse node there" % tempfile.gettempdir())


def t_nonroot_dev_fuse_not_openable():
    """As nobody with /dev/fuse 0600 (libfuse then fails with 'fuse: failed to open /dev/fuse'): one line
    that says what to do."""
    need_root_namespace()
    r, d = nonroot_in_namespace(0o600, True, ["/nonexistent-ckpt", "MNT"])
    shutil.rmtree(d, ignore_errors=True)
    print("    stderr: %s" % r.stderr.strip(), flush=True)
    T.check(r.rc not in (0, None), "exit %r, expected failure: %r" % (r.rc, r))
    T.check(T.one_line_error(r.stderr, "mcorefs:", ["cannot open /dev/fuse", "chmod 0666 /dev/fuse",
                                                    "mount as root"]) == [], "message: %r" % r)


def t_nonroot_without_setuid_fusermount():
    """As nobody with /dev/fuse usable but fusermount3 not setuid (a copy without the bit bound over it),
    so nothing can mount for the user: one line that says what to do."""
    need_root_namespace()
    r, d = nonroot_in_namespace(0o666, False, ["/nonexistent-ckpt", "MNT"])
    shutil.rmtree(d, ignore_errors=True)
    print("    stderr: %s" % r.stderr.strip(), flush=True)
    T.check(r.rc not in (0, None), "exit %r, expected failure: %r" % (r.rc, r))
    T.check(T.one_line_error(r.stderr, "mcorefs:", ["setuid-root fusermount3", "fuse3"]) == [], "message: %r" % r)


def t_dev_fuse_missing():
    """No /dev/fuse (a container started without the device; here a private empty /dev): one line that
    says what to do, not libfuse's 'fuse: device not found'."""
    need_root_namespace()
    mnt = T.scratch("nodev-mnt")
    src = os.path.join(T.MEGATRON_FIXTURES, GPT)
    r = T.run_cmd(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   "mount -t tmpfs none /dev && exec %s %s %s" % (T.MCOREFS_BIN, src, mnt)])
    print("    stderr: %s" % r.stderr.strip(), flush=True)
    T.check(r.rc == 1, "exit %r, expected 1: %r" % (r.rc, r))
    T.check(T.one_line_error(r.stderr, "mcorefs:", ["/dev/fuse is missing", "--device /dev/fuse"]) == [],
            "message: %r" % r)


def t_nonroot_mount_comma_path():
    """As nobody with a usable /dev/fuse: the mount goes through fusermount3, and a comma in the
    checkpoint path must survive that too."""
    need_root_namespace()
    d0 = tempfile.mkdtemp(prefix="mcorefs-nonroot-ckpt-")
    try:
        os.chmod(d0, 0o755)
        ck = os.path.join(d0, "run,lr=1e-4")
        shutil.copytree(os.path.join(T.MEGATRON_FIXTURES, GPT), ck,
                        ignore=shutil.ignore_patterns("golden*", "KEYS.txt"))
        for dp, dns, fns in os.walk(d0):
            os.chmod(dp, 0o755)
            for n in fns:
                os.chmod(os.path.join(dp, n), 0o644)
        r, d = nonroot_in_namespace(0o666, True, [ck, "MNT", "-o", ",".join(GPT_OPTS)])
        shutil.rmtree(d, ignore_errors=True)
        T.check(r.rc == 0, "non-root mount of %s: %r" % (ck, r))
        T.check(" mcorefs:%s " % ck in r.stdout, "mountinfo source is not mcorefs:%s: %r" % (ck, r.stdout))
    finally:
        shutil.rmtree(d0, ignore_errors=True)


# ---- mounts -------------------------------------------------------------------------

def t_comma_in_path():
    can_mount()
    src, golden = real_fixture()
    parent = os.path.join(T.scratch("sweep"), "run,lr=1e-4,wd=0.1")
    shutil.copytree(src, parent, ignore=shutil.ignore_patterns("golden*", "KEYS.txt"))
    with T.Mount(parent, GPT_OPTS) as m:
        with open("/proc/self/mountinfo") as f:
            line = [l for l in f if " %s " % m.path in l][0]
        source = line.split(" - ")[1].split()[1]
        T.check(source == "mcorefs:" + parent, "mount source %r, expected mcorefs:%s" % (source, parent))
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, golden, "mount", "golden")


def t_accepted_fuse_options():
    """Every FUSE option we document is passed on, and the mount stays read-only with rw."""
    can_mount()
    src, golden = real_fixture()
    fuse_opts = ["rw", "ro", "allow_other", "noatime", "nodev", "nosuid", "noexec",
                 "dev", "suid", "exec", "atime", "async", "dirsync", "kernel_cache", "attr_timeout=2",
                 "entry_timeout=2", "negative_timeout=0", "max_threads=8", "max_idle_threads=4", "clone_fd",
                 "auto_unmount", "default_permissions", "subtype=mcorefs", "max_read=131072", "noauto_cache"]
    with T.Mount(src, GPT_OPTS + fuse_opts) as m:
        T.check(os.statvfs(m.path).f_flag & os.ST_RDONLY, "the mount is not read-only with rw given")
        v = T.read_view(m.path)
        T.assert_same_tensors(v.tensors, golden, "mount", "golden")


def t_log_file():
    """-o log=FILE (relative: to the caller's directory): the EIO of a read from a truncated rank file is
    logged there, in lines `TIME mcorefs[PID]: MESSAGE`."""
    can_mount()
    ck = T.copy_fixture(GPT)
    cwd = T.scratch("logcwd")
    mnt = T.scratch("logmnt")
    argv = [T.MCOREFS_BIN, ck, mnt, "-o", ",".join(GPT_OPTS + ["log=daemon.log"])]
    p = subprocess.run(argv, cwd=cwd, env=T.sut_env(), capture_output=True, text=True, timeout=60)
    log = os.path.join(cwd, "daemon.log")
    try:
        T.check(p.returncode == 0 and T.is_mounted(mnt), "mount with log=: %r %r" % (p.returncode, p.stderr))
        layout = T.safetensors_headers(mnt)
        victim = os.path.join(ck, "iter_0000010", "mp_rank_01_001", "model_optim_rng.pt")
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 3)
        eio, good = T.read_tensors_expect_eio(mnt, layout, T.load_golden_dir(
            os.path.join(T.MEGATRON_FIXTURES, GPT, "golden")))
        T.check(eio, "no read failed although %s was truncated" % victim)
    finally:
        pids = T.daemon_pids(mnt)
        T._fusermount(mnt)
        T._wait_gone(pids, 20)
    T.check(os.path.exists(log), "no log file %s (relative log= must be taken from the caller's directory)" % log)
    lines = open(log).read().splitlines()
    T.check(lines, "the log file is empty")
    for l in lines:
        T.check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ mcorefs\[\d+\]: ", l), "log line format: %r" % l)
    T.check(any("model.safetensors" in l for l in lines), "no log line names the failed read: %r" % lines)
    print("    %d log line(s), e.g. %s" % (len(lines), lines[0]), flush=True)


def t_log_file_unwritable():
    src = os.path.join(T.MEGATRON_FIXTURES, GPT)
    bad = os.path.join(T.scratch("nolog"), "no-such-dir", "x.log")
    T.expect_mount_failure(src, GPT_OPTS + ["log=" + bad], ["log file", bad])


def signal_exit(sig):
    can_mount()
    src, _ = real_fixture()
    mnt = T.scratch("sigmnt")
    p = subprocess.Popen([T.MCOREFS_BIN, src, mnt, "-f", "-o", ",".join(GPT_OPTS)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=T.sut_env(), start_new_session=True)
    try:
        end = time.monotonic() + 60
        while not T.is_mounted(mnt):
            T.check(p.poll() is None and time.monotonic() < end, "mcorefs -f did not mount: %r" % (p.poll(),))
            time.sleep(0.02)
        with open(os.path.join(mnt, "config.json")) as f:
            f.read()
        p.send_signal(sig)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise T.TestFailure("mcorefs -f did not exit within 30 s of signal %d" % sig)
        err = p.stderr.read().decode()
        T.check(rc == 0, "mcorefs -f exited %r after signal %d (expected 0): %s" % (rc, sig, err))
        T.check(not T.is_mounted(mnt), "still mounted after signal %d" % sig)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if T.is_mounted(mnt):
            T._fusermount(mnt, lazy=True)
        p.stdout.close()
        p.stderr.close()
    T.check_sanitizer_logs("signal %d" % sig)


def main():
    r = T.Runner("unix tool")
    T.require_binary(T.MCOREFS_BIN)
    r.run("version", t_version)
    r.run("help", t_help)
    r.run("option-errors", t_option_errors)
    r.run("missing-iteration-lists-existing", t_missing_iteration_lists_existing)
    r.run("rank-folder", t_rank_folder)
    r.run("plain-dcp", t_plain_dcp)
    r.run("mountpoint-not-directory", t_mountpoint_not_directory)
    r.run("mountpoint-already-mcorefs", t_mountpoint_already_mcorefs)
    r.run("dev-fuse-missing", t_dev_fuse_missing)
    r.run("nonroot-dev-fuse-not-openable", t_nonroot_dev_fuse_not_openable)
    r.run("nonroot-without-setuid-fusermount", t_nonroot_without_setuid_fusermount)
    r.run("nonroot-mount-comma-path", t_nonroot_mount_comma_path)
    r.run("comma-in-path", t_comma_in_path)
    r.run("accepted-fuse-options", t_accepted_fuse_options)
    r.run("log-file", t_log_file)
    r.run("log-file-unwritable", t_log_file_unwritable)
    r.run("sigterm-exits-0", signal_exit, signal.SIGTERM)
    r.run("sigint-exits-0", signal_exit, signal.SIGINT)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
