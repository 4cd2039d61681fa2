#!/usr/bin/python3
"""mcorefs-inspect as a user meets it: sizes for people (exact bytes stay in --json), no expert
parallel sizes for a dense model, a verify report that says what was checked, argument errors
that name the real problem, and an export that leaves no partial file behind when SIGTERM or
SIGINT stops it (and removes the partial files of an export that was killed hard).
"""
import json
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402

DENSE = "head_gpt_tp2pp2_torch"
MOE = "head_moe_tp2ep2_torch"
DIST = "head_gpt_tp2pp2_torch_dist"


def fixture(name):
    return os.path.join(T.MEGATRON_FIXTURES, name)


def ok(args):
    r = T.run_inspect(args)
    T.check(r.rc == 0, "mcorefs-inspect %s: %r" % (" ".join(args), r))
    return r.stdout


# ---- summary ------------------------------------------------------------------------------

def human_sizes():
    out = ok([fixture(DENSE)])
    print(out, flush=True)
    T.check(not re.search(r"\d{4,} bytes", out), "raw byte counts in the summary:\n" + out)
    T.check(re.search(r"parameters .* \d+\.\d\d (kB|MB|GB)$", out, re.M), "no human total size:\n" + out)
    T.check(re.search(r"mp_rank_00_000 .* \d+\.\d\d kB$", out, re.M), "no human file size:\n" + out)
    j = json.loads(ok([fixture(DENSE), "--json"]))
    T.check(isinstance(j["total_bytes"], int) and j["total_bytes"] > 1000, "--json lost exact bytes: %r" % j)
    T.check(all(isinstance(f["bytes"], int) for f in j["rank_files"]), "--json lost file bytes")


def no_etp_for_dense():
    out = ok([fixture(DENSE)])
    T.check("etp" not in out and "ep=" not in out, "dense summary shows expert parallelism:\n" + out)
    moe = ok([fixture(MOE)])
    T.check(re.search(r"layout .* ep=2 etp=\d", moe), "MoE summary lost ep/etp:\n" + moe)


# ---- verify -------------------------------------------------------------------------------

def verify_says_what_it_did_dist():
    out = ok(["verify", fixture(DIST)])
    print(out, flush=True)
    T.check("0 copies compared" not in out, "verify still reads as 'did nothing':\n" + out)
    T.check("one copy" in out and re.search(r"\d+ tensor pieces", out) and ".metadata" in out,
            "verify does not say what it checked on torch_dist:\n" + out)


def verify_says_what_it_did_legacy():
    out = ok(["verify", fixture(DENSE)])
    print(out, flush=True)
    T.check(re.search(r"compared [1-9]\d* replicated copies", out) and "all identical" in out
            and re.search(r"\d+\.\d\d kB read and hashed", out), "verify wording:\n" + out)


# ---- argument errors ----------------------------------------------------------------------

def arg_error(args, words):
    T.expect_inspect_failure(args, words)


# ---- export and signals -------------------------------------------------------------------

def partials(d):
    return sorted(n for n in os.listdir(d) if "partial" in n) if os.path.isdir(d) else []


def export_interrupted(g, sig):
    # The export is frozen (SIGSTOP) as soon as it reports progress, so that a loaded machine
    # cannot let it finish before the signal; if it still got done first (no partial file to
    # interrupt), that attempt proves nothing and is made again.
    for attempt in range(3):
        out = os.path.join(T.scratch("export"), "out%d" % attempt)
        argv = [T.MCOREFS_INSPECT, "export", g.ckpt, out, "-o", "true_vocab_size=%d" % g.true_vocab]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=T.sut_env(), start_new_session=True)
        try:
            line = p.stderr.readline().decode()           # the first progress line: 10 % written
            os.kill(p.pid, signal.SIGSTOP)
            T.check(line.startswith("export:"), "no progress line: %r" % line)
            seen = partials(out)
            if seen:
                os.kill(p.pid, sig)                       # pending until the export runs again
            os.kill(p.pid, signal.SIGCONT)
            rest = p.communicate(timeout=T.DEFAULT_TIMEOUT)[1].decode()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        print("    attempt %d: partial files while running: %r; exit %r; stderr: %s"
              % (attempt, seen, p.returncode, rest.strip()[-300:]), flush=True)
        if seen:
            break
    T.check(seen, "export finished before it could be interrupted, 3 times")
    T.check(p.returncode == -sig, "export exit status %r, expected death by signal %d" % (p.returncode, sig))
    T.check(not partials(out), "partial files left after signal %d: %r" % (sig, partials(out)))
    T.check(not [n for n in os.listdir(out) if not n.startswith(".")], "an interrupted export left files: %r"
            % os.listdir(out))
    T.check_sanitizer_logs("interrupted export")


def export_removes_stale_partials():
    out = os.path.join(T.scratch("export"), "out")
    os.makedirs(out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [".model.safetensors.%d.mcorefs-partial" % dead.pid, ".config.json.mcorefs-partial"]
    live = ".model.safetensors.%d.mcorefs-partial" % os.getpid()    # an export still running
    for n in stale + [live]:
        with open(os.path.join(out, n), "wb") as f:
            f.write(b"x" * 100)
    r = T.run_cmd([T.MCOREFS_INSPECT, "export", fixture(DENSE), out])
    T.check(r.rc == 0, "export failed: %r" % r)
    T.check(partials(out) == [live], "after export: %r (stale ones must go, the live one stay)" % partials(out))
    T.check("removed 2 partial files" in r.stderr, "export did not say it cleaned up: %r" % r.stderr)


def main():
    r = T.Runner("inspect-cli")
    r.run("human-sizes", human_sizes)
    r.run("no-etp-for-dense", no_etp_for_dense)
    r.run("verify-wording-torch_dist", verify_says_what_it_did_dist)
    r.run("verify-wording-legacy", verify_says_what_it_did_legacy)
    for args, words in (
            (["tensor", fixture(DENSE)], ["unknown command 'tensor'", "did you mean tensors?"]),
            (["verfy", fixture(DENSE)], ["unknown command 'verfy'", "did you mean verify?"]),
            (["show", fixture(DENSE)], ["unknown command 'show'", "summary, tensors, verify, export"]),
            ([fixture(DENSE), "verify"], ["comes before the checkpoint", "mcorefs-inspect verify"]),
            (["--jsno", fixture(DENSE)], ["unknown flag '--jsno'", "did you mean --json?"]),
            (["export", fixture(DENSE)], ["export needs an output folder"]),
            ([], ["no checkpoint given"])):
        r.run("arg-error:%s" % " ".join(a if "/" not in a else "CKPT" for a in args) if args else "arg-error:none",
              arg_error, args, words)
    g = []

    def gen():
        g.append(T.generate("llama", "export-llama", tp=1, seed=5,
                            dims=dict(hidden=1024, heads=8, groups=4, ffn=2816, layers=6, vocab=32000)))
    r.run("generate-export-model", gen)
    if g:
        r.run("export-sigterm-cleans-up", export_interrupted, g[0], signal.SIGTERM)
        r.run("export-sigint-cleans-up", export_interrupted, g[0], signal.SIGINT)
    r.run("export-removes-stale-partials", export_removes_stale_partials)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
