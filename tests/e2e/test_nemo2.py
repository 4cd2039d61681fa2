#!/usr/bin/python3
"""NeMo 2.0 checkpoints: <ckpt>/weights (torch_dist, keys "module.*", no Megatron args) beside
<ckpt>/context (model.yaml: the model's GPTConfig as nemo.lightning.io dumps it). The folder (or
its weights/ folder) mounts with the description from model.yaml and shows the reference bit for
bit with the config mcore_gen derives; a model.yaml that disagrees with the tensors is refused
naming the tensor and both shapes; without model.yaml the mount says what to pass.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcorefs_testlib as T  # noqa: E402


def generate(family, name, **kw):
    T.generator()
    try:
        import dcp_model_gen as M        # noqa: WPS433
    except ImportError as e:
        raise T.Skip("tests/fixtures/dcp_model_gen.py not importable: %s" % e)
    out = T.scratch(name)
    try:
        M.generate_nemo2(out, family, **kw)
    except ImportError as e:             # PyYAML writes model.yaml
        raise T.Skip("cannot write model.yaml: %s" % e)
    g = T.Generated(out)
    g.nemo = os.path.join(out, g.ref["nemo_dir"])
    return g


def roundtrip(family, **kw):
    g = generate(family, "nemo-" + family, **kw)
    for path in (g.nemo, os.path.join(g.nemo, "weights")):
        with T.Mount(path) as m:
            v = T.read_view(m.path)
            T.assert_same_tensors(v.tensors, g.tensors, "NeMo 2.0 mount", "reference")
            T.assert_config(v.config_text, g.ref["config"], g.ref["derivable_config_keys"])


def t_llama_tp2():
    roundtrip("llama", tp=2, dp=2, spec="local")


def t_qwen3_moe_tp2_ep2():
    roundtrip("qwen3_moe", tp=2, ep=2, dp=2, spec="te")


def _edit_yaml(g, old, new):
    p = os.path.join(g.nemo, "context", "model.yaml")
    with open(p) as f:
        text = f.read()
    T.check(old in text, "model.yaml has no %r (test data problem)" % old)
    with open(p, "w") as f:
        f.write(text.replace(old, new, 1))


def t_yaml_disagrees_with_tensors():
    g = generate("llama", "nemo-bad", tp=1, dp=2)
    _edit_yaml(g, "  ffn_hidden_size: 128\n", "  ffn_hidden_size: 96\n")
    T.expect_mount_failure(g.nemo, None, ["decoder.layers.0.mlp.linear_fc1.weight", "has shape [256, 64]",
                                            "context/model.yaml implies [192, 64]"])


def t_no_model_yaml():
    g = generate("llama", "nemo-noyaml", tp=1, dp=2)
    os.unlink(os.path.join(g.nemo, "context", "model.yaml"))
    T.expect_mount_failure(g.nemo, None, ["has no 'args'", "hf_config"])


def main():
    r = T.Runner("nemo2")
    for name, fn in list(globals().items()):
        if name.startswith("t_") and callable(fn):
            r.run(name, fn)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
