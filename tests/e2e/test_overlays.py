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
    sys.exit(r.finish())


if __name__ == "__main__":
    main()
