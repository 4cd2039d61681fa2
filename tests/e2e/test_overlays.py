#!/usr/bin/python3
"""Options that shape the view beyond the weights: -o tokenizer=DIR (read-through tokenizer
files), -o hf_config=FILE (JSON merged over config.json), -o mtp_head_copies (DeepSeek's
release layout of MTP layers), and the vocab note when a tokenizer comes without a true size.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402


def test_tokenizer_and_hf_config():
    g = T.generate("qwen2", tp=2, seed=21)
    tok = T.scratch("tokenizer")
    files = {
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 4096}',
        "special_tokens_map.json": b'{"eos_token": "<|endoftext|>"}',
        "merges.txt": b"#version: 0.2\na b\n",
        "vocab.json": b'{"a": 0, "b": 1}',
    }
    for name, data in files.items():
        with open(os.path.join(tok, name), "wb") as f:
            f.write(data)
    with open(os.path.join(tok, "not_a_tokenizer_file.bin"), "wb") as f:
        f.write(b"x")
    cfg = os.path.join(T.scratch("cfg"), "extra.json")
    extra = {"bos_token_id": 151643, "eos_token_id": 151645, "rope_theta": 1000000.0,
             "rope_scaling": {"type": "yarn", "factor": 4.0}}
    with open(cfg, "w") as f:
        json.dump(extra, f)
    opts = ["true_vocab_size=%d" % g.true_vocab, "tokenizer=" + tok, "hf_config=" + cfg]
    with T.Mount(g.ckpt, opts) as m:
        names = set(os.listdir(m.path))
        for name, data in files.items():
            T.check(name in names, "%s missing from the view: %r" % (name, sorted(names)))
            with open(os.path.join(m.path, name), "rb") as f:
                T.check(f.read() == data, "%s: bytes differ from the tokenizer folder" % name)
        T.check("not_a_tokenizer_file.bin" not in names, "unrelated files must not be shown")
        with open(os.path.join(m.path, "config.json")) as f:
            text = f.read()
        c = json.loads(text)
        for k, v in extra.items():
            T.check(c.get(k) == v, "config %s = %r, hf_config says %r" % (k, c.get(k), v))
        T.check(c["vocab_size"] == g.true_vocab, "vocab_size changed by the overlay")
        v = T.read_view(m.path, allowed_extra=(".mcorefs",) + tuple(files))
        T.assert_same_tensors(v.tensors, g.tensors, "mount", "reference")


def test_tokenizer_without_true_vocab_says_which():
    g = T.generate("llama", tp=1, seed=22, args_vocab_size=False)
    tok = T.scratch("tokenizer")
    with open(os.path.join(tok, "tokenizer.json"), "w") as f:
        f.write("{}")
    with T.Mount(g.ckpt, ["tokenizer=" + tok]) as m:
        err = m.result.stderr
        T.check("vocab_size" in err and "true_vocab_size" in err,
                "no note about the vocab size used: %r" % err)
        c = json.load(open(os.path.join(m.path, "config.json")))
        T.check(c["vocab_size"] == g.ref["padded_vocab_size"],
                "without args.vocab_size or true_vocab_size the padded size is shown, got %r" % c["vocab_size"])


def test_bad_overlays():
    g = T.generate("llama", tp=1, seed=23)
    empty = T.scratch("empty-tok")
    bad = os.path.join(T.scratch("badcfg"), "bad.json")
    with open(bad, "w") as f:
        f.write("[1, 2]")
    for opt, want in ((["tokenizer=" + empty], empty), (["hf_config=" + bad], bad),
                      (["hf_config=/nonexistent/x.json"], "/nonexistent/x.json")):
        r = T.run_cmd([T.MCOREFS_BIN, g.ckpt, T.scratch("mnt"), "-o", ",".join(opt)])
        lines = r.stderr.strip().splitlines()
        T.check(r.rc == 1 and len(lines) == 1 and want in lines[0],
                "%s: want exit 1 and one line naming %s, got rc=%r %r" % (opt, want, r.rc, r.stderr))


def _tokenizer_dir(prefix, files):
    tok = T.scratch(prefix)
    for name, data in files.items():
        with open(os.path.join(tok, name), "wb") as f:
            f.write(data)
    return tok


def _read_uncached(path):
    with open(path, "rb") as f:
        T._drop_cache(f.fileno())
        return f.read()


def test_relative_overlay_paths():
    """Relative tokenizer= and hf_config= are resolved against the caller's folder at mount
    (the daemon changes to / afterwards: reads once gave EIO with an empty log line)."""
    g = T.generate("llama", tp=1, seed=25)
    tok = _tokenizer_dir("reltok", {"tokenizer.json": b'{"version": "1.0"}', "tokenizer.model": b"\x00sp\x00model"})
    with open(os.path.join(tok, "extra.json"), "w") as f:
        f.write('{"bos_token_id": 7}')
    cwd = os.getcwd()
    os.chdir(os.path.dirname(tok))
    try:
        rel = os.path.basename(tok)
        with T.Mount(g.ckpt, ["tokenizer=" + rel, "hf_config=" + os.path.join(rel, "extra.json")]) as m:
            T.check(_read_uncached(os.path.join(m.path, "tokenizer.json")) == b'{"version": "1.0"}',
                    "tokenizer.json from a relative tokenizer= folder not read back")
            T.check(_read_uncached(os.path.join(m.path, "tokenizer.model")) == b"\x00sp\x00model",
                    "a tokenizer file holding NUL bytes not read back whole")
            c = json.load(open(os.path.join(m.path, "config.json")))
            T.check(c.get("bos_token_id") == 7, "relative hf_config= not applied: %r" % c.get("bos_token_id"))
    finally:
        os.chdir(cwd)


def test_symlink_out_of_tokenizer_dir_refused():
    """A symlink in the tokenizer folder that leads outside it is refused at mount, naming it;
    one that stays inside the folder is followed."""
    g = T.generate("llama", tp=1, seed=26)
    secret = os.path.join(T.scratch("secret"), "shadow")
    with open(secret, "wb") as f:
        f.write(b"root-only secret")
    os.chmod(secret, 0o600)
    tok = _tokenizer_dir("linktok", {"tokenizer.json": b"{}", "real_vocab": b'{"a": 0}'})
    os.symlink("real_vocab", os.path.join(tok, "vocab.json"))
    with T.Mount(g.ckpt, ["tokenizer=" + tok]) as m:
        T.check(_read_uncached(os.path.join(m.path, "vocab.json")) == b'{"a": 0}',
                "a symlink inside the tokenizer folder must be followed")
    for target in (secret, os.path.relpath(secret, tok)):
        link = os.path.join(tok, "tokenizer_config.json")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
        T.expect_mount_failure(g.ckpt, ["tokenizer=" + tok], name_in_msg=("tokenizer_config.json", "outside"))


def test_hf_cache_snapshot_as_tokenizer_dir():
    """A Hugging Face hub cache snapshot (REPO/snapshots/REV/x -> ../../blobs/HASH) works as the
    tokenizer folder: links into the same REPO are followed, a link out of REPO is refused."""
    g = T.generate("llama", tp=1, seed=30)
    repo = os.path.join(T.scratch("hfcache"), "models--org--model")
    snap = os.path.join(repo, "snapshots", "0123abcd")
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(snap)
    files = {"tokenizer.json": b'{"model": {"type": "BPE"}}', "tokenizer_config.json": b'{"a": 1}'}
    for i, (name, data) in enumerate(sorted(files.items())):
        with open(os.path.join(repo, "blobs", "blob%d" % i), "wb") as f:
            f.write(data)
        os.symlink(os.path.join("..", "..", "blobs", "blob%d" % i), os.path.join(snap, name))
    with T.Mount(g.ckpt, ["tokenizer=" + snap]) as m:
        for name, data in files.items():
            T.check(_read_uncached(os.path.join(m.path, name)) == data, "%s of an HF cache snapshot not read back" % name)
    secret = os.path.join(T.scratch("secret"), "shadow")
    with open(secret, "wb") as f:
        f.write(b"secret")
    os.symlink(secret, os.path.join(snap, "vocab.json"))
    T.expect_mount_failure(g.ckpt, ["tokenizer=" + snap], name_in_msg=("vocab.json", "outside"))


def test_swapped_symlink_after_mount():
    """Overlay bytes are taken at mount: pointing a link elsewhere afterwards (here at a
    root-only file of the same size) changes nothing that the mount serves."""
    g = T.generate("llama", tp=1, seed=27)
    secret = os.path.join(T.scratch("secret"), "shadow")
    with open(secret, "wb") as f:
        f.write(b"SECRET-SECRET-SECRET")
    os.chmod(secret, 0o600)
    original = b'{"model": "original"}'[:len(b"SECRET-SECRET-SECRET")].ljust(20, b" ")
    tok = _tokenizer_dir("swaptok", {"real.json": original})
    link = os.path.join(tok, "tokenizer.json")
    os.symlink("real.json", link)
    with T.Mount(g.ckpt, ["tokenizer=" + tok]) as m:
        path = os.path.join(m.path, "tokenizer.json")
        T.check(_read_uncached(path) == original, "tokenizer.json not read back")
        tmp = link + ".new"
        os.symlink(secret, tmp)
        os.replace(tmp, link)
        with open(os.path.join(tok, "real.json"), "wb") as f:
            f.write(b"X" * len(original))
        got = _read_uncached(path)
        T.check(got == original, "tokenizer.json changed after mount: %r" % got)


def test_non_regular_overlays_refused():
    """A FIFO (or folder) in place of a tokenizer file or of hf_config is refused at mount with
    a line naming it, without hanging; so is a file above 64 MiB."""
    g = T.generate("llama", tp=1, seed=28)
    tok = _tokenizer_dir("fifotok", {"tokenizer.json": b"{}"})
    os.mkfifo(os.path.join(tok, "vocab.json"))
    T.expect_mount_failure(g.ckpt, ["tokenizer=" + tok], name_in_msg=("vocab.json", "not a regular file"),
                           timeout=20)
    fifo = os.path.join(T.scratch("fifocfg"), "extra.json")
    os.mkfifo(fifo)
    T.expect_mount_failure(g.ckpt, ["hf_config=" + fifo], name_in_msg=(fifo, "not a regular file"), timeout=20)
    tok2 = _tokenizer_dir("dirtok", {"tokenizer.json": b"{}"})
    os.mkdir(os.path.join(tok2, "merges.txt"))
    T.expect_mount_failure(g.ckpt, ["tokenizer=" + tok2], name_in_msg=("merges.txt", "not a regular file"))
    tok3 = _tokenizer_dir("bigtok", {"tokenizer_config.json": b"{}"})
    with open(os.path.join(tok3, "tokenizer.json"), "wb") as f:
        f.truncate((64 << 20) + 1)   # sparse: costs no disk
    T.expect_mount_failure(g.ckpt, ["tokenizer=" + tok3], name_in_msg=("tokenizer.json", "64 MiB"))


def test_hf_config_keeps_numbers_as_written():
    """Every value of hf_config comes out with its JSON type: 4.0 stays a float (not 4), big
    integers keep their digits; config.json is exactly json.dumps(indent=2, sort_keys=True)+"\\n"."""
    g = T.generate("llama", tp=1, seed=29)
    cfg = os.path.join(T.scratch("numcfg"), "extra.json")
    with open(cfg, "w") as f:
        f.write('{"rope_scaling": {"type": "yarn", "factor": 4.0, "beta_fast": 32, "mscale": 1E0},'
                ' "zz_eps": 1e-6, "big": 123456789012345678901234567890, "list": [1.0, 2, -0.5e3],'
                r' "name": "caf\u00e9 \ud83d\ude00 \"q\" \u00ff", "aa": {"b": 1, "a": [true, null]}, "dup": 1, "dup": 2.5}')
    want = json.load(open(cfg))
    with T.Mount(g.ckpt, ["hf_config=" + cfg]) as m:
        text = open(os.path.join(m.path, "config.json"), encoding="utf-8").read()
    c = json.loads(text)
    for k, v in want.items():
        T.check(T._type_eq(c.get(k), v), "config %s = %r, hf_config says %r" % (k, c.get(k), v))
    T.check('"factor": 4.0' in text, "rope_scaling.factor not written as 4.0: %s" % text)
    T.check(text == json.dumps(c, indent=2, sort_keys=True) + "\n",
            "config.json is not as save_pretrained writes it:\n%s" % text)


def test_mtp_head_copies():
    for tied in (False, True):
        g = T.generate("deepseek_v3", tp=2, ep=2, mtp=1, tied=tied, mtp_hf_shared_copies=True, seed=24)
        with T.Mount(g.ckpt, ["true_vocab_size=%d" % g.true_vocab, "mtp_head_copies"]) as m:
            v = T.read_view(m.path)
            T.assert_same_tensors(v.tensors, g.tensors, "mount", "reference")
            n = g.ref["num_layers"]
            for name in ("model.layers.%d.embed_tokens.weight" % n, "model.layers.%d.shared_head.head.weight" % n):
                T.check(name in v.tensors, "%s missing" % name)


def main():
    r = T.Runner("overlays")
    r.run("tokenizer_and_hf_config", test_tokenizer_and_hf_config)
    r.run("tokenizer_without_true_vocab_says_which", test_tokenizer_without_true_vocab_says_which)
    r.run("bad_overlays", test_bad_overlays)
    r.run("mtp_head_copies", test_mtp_head_copies)
    r.run("relative_overlay_paths", test_relative_overlay_paths)
    r.run("symlink_out_of_tokenizer_dir_refused", test_symlink_out_of_tokenizer_dir_refused)
    r.run("hf_cache_snapshot_as_tokenizer_dir", test_hf_cache_snapshot_as_tokenizer_dir)
    r.run("swapped_symlink_after_mount", test_swapped_symlink_after_mount)
    r.run("non_regular_overlays_refused", test_non_regular_overlays_refused)
    r.run("hf_config_keeps_numbers_as_written", test_hf_config_keeps_numbers_as_written)
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
