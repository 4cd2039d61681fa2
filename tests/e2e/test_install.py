#!/usr/bin/python3
"""cmake --install, the man pages, and mount(8) right after an install with no manual step.

- man pages: docs/man/{mcorefs.1, mcorefs-inspect.1, mount.mcorefs.8} (the build's configured copies)
  render with `groff -ww -z -man` and `MANWIDTH=80 man --warnings=w -l` without a single warning, have
  the usual sections, and name every option and flag that the programs' --help lists.
- DESTDIR install (no root needed): GNUInstallDirs layout, the version in the helper and the man pages,
  the link DESTDIR/sbin/mount.mcorefs -> /usr/local/sbin/mount.mcorefs for the default prefix, and no
  link for a private prefix.
- The real thing (root): in a private mount namespace, /usr/local is an empty tmpfs and /usr/sbin (and
  /sbin when it is not a link to it) an overlay whose writes go to a tmpfs, so nothing on the machine
  changes. There `cmake --install BUILD` with the default prefix, then `mount -t mcorefs` and
  `mount -t fuse.mcorefs` with a clean environment (no MCOREFS_BIN, mount(8)'s own PATH) must mount
  the installed daemon, and `man -w` must find the installed pages.
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

BUILD = os.path.dirname(T.MCOREFS_BIN)
PAGES = {"mcorefs.1": "mcorefs", "mcorefs-inspect.1": "mcorefs-inspect", "mount.mcorefs.8": "mount.mcorefs"}
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO")
GPT = os.path.join(T.MEGATRON_FIXTURES, "head_gpt_tp2pp2_torch")
OPTS = "skip_mtp,iteration=10,true_vocab_size=1000"


def project_version():
    with open(os.path.join(T.REPO, "CMakeLists.txt")) as f:
        return re.search(r"project\(\s*mcorefs\s+VERSION\s+([0-9.]+)", f.read()).group(1)


def page_path(name):
    p = os.path.join(BUILD, "man", name)
    T.check(os.path.isfile(p), "the build has no configured man page %s" % p)
    return p


def run(argv, env=None, timeout=120):
    return T.run_cmd(argv, timeout=timeout, env=env or dict(os.environ))


# ---- man pages ----------------------------------------------------------------------

def t_man_render():
    for tool in ("groff", "man"):
        T.check(shutil.which(tool), "%s is not installed (tools/install-deps.sh installs groff-base and man-db)" % tool)
    for name in PAGES:
        p = page_path(name)
        r = run(["groff", "-ww", "-z", "-man", p])
        T.check(r.rc == 0 and r.stderr == "", "groff -ww -z -man %s: %r" % (name, r))
        env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="", LC_ALL="C.UTF-8")
        r = run(["man", "--warnings=w", "-l", p], env=env)
        T.check(r.rc == 0 and r.stderr == "", "MANWIDTH=80 man --warnings=w -l %s: %r" % (name, r))
        T.check(len(r.stdout.splitlines()) > 20, "man -l %s rendered almost nothing" % name)
        T.check("@PROJECT_VERSION@" not in open(p).read() and project_version() in open(p).read(),
                "%s does not carry the version %s" % (name, project_version()))


def rendered_text(name):
    r = run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=250n", "-rHY=0", page_path(name)])
    T.check(r.rc == 0, "groff -Tascii %s: %r" % (name, r))
    return r.stdout


def t_man_complete():
    help_of = {
        "mcorefs.1": [T.MCOREFS_BIN, "--help"],
        "mcorefs-inspect.1": [T.MCOREFS_INSPECT, "--help"],
        "mount.mcorefs.8": ["/bin/sh", os.path.join(BUILD, "mount.mcorefs"), "--help"],
    }
    for name, argv in help_of.items():
        text = rendered_text(name)
        for s in SECTIONS:
            T.check(re.search(r"^%s$" % s, text, re.M), "%s has no section %s" % (name, s))
        r = run(argv)
        T.check(r.rc == 0, "%r: %r" % (argv, r))
        words = set(re.findall(r"-o ([a-z_]+)", r.stdout))              # -o options
        words |= set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", r.stdout))   # flags
        if name == "mcorefs-inspect.1":
            words |= {"summary", "tensors", "verify", "export"}
        words -= {"-o"}
        missing = sorted(w for w in words if not re.search(r"(?<![\w-])%s(?![\w])" % re.escape(w), text))
        T.check(not missing, "%s does not describe %s (from %s)" % (name, ", ".join(missing), " ".join(argv[-2:])))
        print("    %s: %d options and flags from --help, all described" % (name, len(words)), flush=True)


# ---- DESTDIR install ----------------------------------------------------------------

def cmake_install(prefix, destdir=None):
    env = dict(os.environ)
    env.pop("DESTDIR", None)
    if destdir:
        env["DESTDIR"] = destdir
    r = run(["cmake", "--install", BUILD, "--prefix", prefix], env=env, timeout=300)
    T.check(r.rc == 0, "cmake --install --prefix %s (DESTDIR=%s): %r" % (prefix, destdir, r))
    return r


def t_destdir_layout():
    v = project_version()
    dest = T.scratch("destdir")
    cmake_install("/usr/local", dest)
    root = dest + "/usr/local"
    for rel in ("bin/mcorefs", "bin/mcorefs-inspect", "sbin/mount.mcorefs"):
        p = os.path.join(root, rel)
        T.check(os.path.isfile(p) and os.access(p, os.X_OK), "not installed (executable): %s" % p)
    for rel in ("share/man/man1/mcorefs.1", "share/man/man1/mcorefs-inspect.1", "share/man/man8/mount.mcorefs.8",
                "share/doc/mcorefs/mount-helpers/README.md"):
        T.check(os.path.isfile(os.path.join(root, rel)), "not installed: %s" % rel)
    helper = open(os.path.join(root, "sbin/mount.mcorefs")).read()
    T.check("version='%s'" % v in helper, "the installed helper does not carry version %s" % v)
    link = os.path.join(dest, "sbin", "mount.mcorefs")
    T.check(os.path.islink(link), "no link %s (mount(8) looks for mount.mcorefs only in /sbin)" % link)
    T.check(os.readlink(link) == "/usr/local/sbin/mount.mcorefs", "%s -> %s" % (link, os.readlink(link)))
    # a private prefix: no link into /sbin
    dest2 = T.scratch("destdir-opt")
    r = cmake_install("/opt/mcorefs-test", dest2)
    T.check(os.path.isfile(os.path.join(dest2, "opt/mcorefs-test/sbin/mount.mcorefs")), "no helper in /opt prefix")
    T.check(not os.path.lexists(os.path.join(dest2, "sbin")), "a private prefix made a /sbin link: %r" % r)
    T.check("ln -s /opt/mcorefs-test/sbin/mount.mcorefs /sbin/mount.mcorefs" in r.stdout,
            "the install of a private prefix does not say how to link the helper: %s" % r.stdout)


# ---- the real install, in a private mount namespace ---------------------------------

def t_real_install_mount():
    if os.geteuid() != 0:
        raise T.Skip("not root")
    if not os.path.exists("/dev/fuse") or shutil.which("unshare") is None:
        raise T.Skip("no /dev/fuse or no unshare")
    r = run(["unshare", "--mount", "--propagation", "private", sys.executable, os.path.abspath(__file__),
             "--inside"], env=T.sut_env(), timeout=600)
    print("\n".join("    | " + l for l in (r.stdout + r.stderr).rstrip().splitlines()), flush=True)
    T.check(r.rc == 0 and "INSIDE OK" in r.stdout, "install + mount in the namespace failed: rc=%r" % r.rc)


def sh(argv, **kw):
    r = T.run_cmd(argv, timeout=kw.get("timeout", 300), env=kw.get("env", dict(os.environ)))
    T.check(r.rc == 0, "%s: %r" % (" ".join(argv), r))
    return r


_ns_mounts = []   # unmounted in reverse order when done (the namespace goes away anyway)


def private_system_dirs():
    """An empty /usr/local and writable-in-a-tmpfs /usr/sbin (and /sbin), only in this namespace."""
    scratch = T.scratch("ns")
    _ns_mounts.append(scratch)
    sh(["mount", "-t", "tmpfs", "tmpfs", scratch])
    sh(["mount", "-t", "tmpfs", "tmpfs", "/usr/local"])
    if os.path.isdir("/run/mount"):
        sh(["mount", "-t", "tmpfs", "tmpfs", "/run/mount"])     # libmount's utab stays private too
    done = set()
    for d in ("/usr/sbin", "/sbin"):
        real = os.path.realpath(d)
        if real in done:
            continue
        done.add(real)
        up, wk = os.path.join(scratch, "up" + str(len(done))), os.path.join(scratch, "wk" + str(len(done)))
        os.mkdir(up)
        os.mkdir(wk)
        sh(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s" % (real, up, wk), real])
        _ns_mounts.append(real)


def mount_and_check(mtype, env):
    mnt = T.scratch("mnt-" + mtype)
    r = T.run_cmd(["mount", "-t", mtype, GPT, mnt, "-o", OPTS], env=env)
    try:
        T.check(r.rc == 0, "mount -t %s: %r" % (mtype, r))
        T.check(T.is_mounted(mnt), "mount -t %s returned 0 but nothing is mounted" % mtype)
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and mnt in (T._proc_cmdline(int(p)) or [])]
        exes = {os.readlink("/proc/%d/exe" % p) for p in pids}
        T.check(exes == {"/usr/local/bin/mcorefs"}, "mount -t %s ran %r, not the installed /usr/local/bin/mcorefs"
                % (mtype, exes))
        cfg = json.load(open(os.path.join(mnt, "config.json")))
        T.check(cfg.get("vocab_size") == 1000, "config.json vocab_size %r" % cfg.get("vocab_size"))
        print("mount -t %s: ok, daemon %s" % (mtype, sorted(exes)), flush=True)
    finally:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and mnt in (T._proc_cmdline(int(p)) or [])]
        if T.is_mounted(mnt):
            u = T.run_cmd(["umount", mnt], env=env)
            T.check(u.rc == 0, "umount: %r" % u)
        T.check(not T._wait_gone(pids, 20), "the daemon did not exit after umount")


def inside():
    """Runs as root in a private mount namespace (see t_real_install_mount)."""
    private_system_dirs()
    r = sh(["cmake", "--install", BUILD])          # the prefix configured in the build: the default
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "", flush=True)
    for p in ("/usr/local/bin/mcorefs", "/usr/local/sbin/mount.mcorefs", "/usr/local/share/man/man1/mcorefs.1"):
        T.check(os.path.exists(p), "cmake --install (default prefix) did not install %s" % p)
    link = "/sbin/mount.mcorefs"
    T.check(os.path.realpath(link) == "/usr/local/sbin/mount.mcorefs",
            "%s does not lead to the installed helper (-> %s)" % (link, os.path.realpath(link)))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    env.update({k: v for k, v in T.sut_env().items() if k.endswith("SAN_OPTIONS")})
    for mtype in ("mcorefs", "fuse.mcorefs"):
        mount_and_check(mtype, env)
    v = project_version()
    r = sh(["mcorefs", "--version"], env=env)
    T.check(r.stdout.startswith("mcorefs %s " % v), "mcorefs --version in PATH: %r" % r.stdout)
    r = sh(["mount.mcorefs", "--version"], env=env)
    T.check(r.stdout == "mount.mcorefs %s\n" % v, "mount.mcorefs --version: %r" % r.stdout)
    if shutil.which("man"):
        for sect, page, path in (("1", "mcorefs", "/usr/local/share/man/man1/mcorefs.1"),
                                 ("1", "mcorefs-inspect", "/usr/local/share/man/man1/mcorefs-inspect.1"),
                                 ("8", "mount.mcorefs", "/usr/local/share/man/man8/mount.mcorefs.8")):
            r = sh(["man", "-w", sect, page], env=env)
            T.check(r.stdout.strip() == path, "man -w %s %s: %r, expected %s" % (sect, page, r.stdout, path))
    T.check_sanitizer_logs("installed daemon")
    print("INSIDE OK", flush=True)


def main():
    if sys.argv[1:] == ["--inside"]:
        try:
            inside()
        except (T.TestFailure, T.MountFailed) as e:
            print("FAIL: %s" % e, flush=True)
            return 1
        finally:
            for m in reversed(_ns_mounts):
                subprocess.run(["umount", "-l", m], capture_output=True)
        return 0
    r = T.Runner("install")
    T.require_binary(T.MCOREFS_BIN)
    r.run("man:render-without-warnings", t_man_render)
    r.run("man:every-option", t_man_complete)
    r.run("install:destdir-layout", t_destdir_layout)
    r.run("install:mount-t-mcorefs-and-fuse.mcorefs", t_real_install_mount)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
