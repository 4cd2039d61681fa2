#!/usr/bin/python3
"""Regenerate the seed corpus (fuzz/corpus/{zip,pickle,torchfile}) with Debian's torch.
Usage: /usr/bin/python3 fuzz/make_corpus.py [DATA_DIR]   (default: tests/data in the repo)"""
import argparse, collections, enum, io, os, pickle, random, shutil, sys, zipfile
import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '..', 'tests', 'data')
out = {k: os.path.join(here, 'corpus', k) for k in ('zip', 'pickle', 'torchfile')}
for d in out.values():
    os.makedirs(d, exist_ok=True)


class ModelType(enum.Enum):
    encoder_or_decoder = 1


def megatron_like():
    """A tiny model_optim_rng-like object: Namespace args, OrderedDict model with views, rng."""
    args = argparse.Namespace(hidden_size=64, num_layers=2, params_dtype=torch.bfloat16, seq_length=128,
                              model_type=ModelType.encoder_or_decoder, lr=3e-4, data_path=['a', 'b'],
                              blob=b'\x00\xffabc', empty=b'', flags={1, 2})
    buf = torch.randn(200).to(torch.bfloat16)
    model = collections.OrderedDict()
    model['embedding.word_embeddings.weight'] = buf[0:64].view(8, 8)
    model['decoder.layers.0.input_layernorm.weight'] = buf[64:72]
    model['decoder.layers.0.mlp.linear_fc1._extra_state'] = None
    model['output_layer.weight'] = torch.randn(4, 8).t()
    model._metadata = collections.OrderedDict({'': {'version': 1}})
    random.seed(1)
    rng = [{'random_rng_state': random.getstate()[:2] + (None,), 'np_rng_state': None,
            'torch_rng_state': torch.arange(16, dtype=torch.uint8), 'rng_tracker_states': {}}]
    return {'args': args, 'checkpoint_version': 3.0, 'iteration': 10, 'model': model, 'rng_state': rng,
            'num_floating_point_operations_so_far': 0}


def save(obj, path):
    torch.save(obj, path)
    return path


objs = {
    'dtypes': {k: (torch.arange(6) - 2).to(dt) for k, dt in
               [('bf16', torch.bfloat16), ('f16', torch.float16), ('f32', torch.float32), ('f64', torch.float64),
                ('i64', torch.int64), ('i32', torch.int32), ('i16', torch.int16), ('i8', torch.int8),
                ('u8', torch.uint8), ('bool', torch.bool)]},
    'views': (lambda b: {'base': b, 't': b.t(), 'slice': b[1:3, 2:5], 'step': b[::2, ::3],
                         'expand': torch.ones(3, 1).expand(3, 4), 'scalar': torch.tensor(2.0),
                         'empty': torch.zeros(0, 3), 'param': torch.nn.Parameter(torch.ones(2))})(torch.arange(24.).view(4, 6)),
    'megatron': megatron_like(),
    'plain': {'a': [1, 2.5, 'x', None, True], 'b': (2**40, -3, 2**70)},
}
pkl_objs = dict(objs, mixed={'s': {1, 2}, 'fs': frozenset([3]), 'b': b'\x01\x02', 'ba': bytearray(b'z'),
                             'od': collections.OrderedDict(a=1), 'nested': [[[[]]]], 'f': -1.5e300})

for name, obj in objs.items():
    p = save(obj, os.path.join(out['torchfile'], name + '.pt'))
    shutil.copy(p, os.path.join(out['zip'], name + '.zip'))
    with zipfile.ZipFile(p) as z:
        data_pkl = [n for n in z.namelist() if n.endswith('/data.pkl')][0]
        open(os.path.join(out['pickle'], name + '_torch.pkl'), 'wb').write(z.read(data_pkl))
for name, obj in pkl_objs.items():
    for proto in (2, 4, 5):
        try:
            open(os.path.join(out['pickle'], '%s_p%d.pkl' % (name, proto)), 'wb').write(pickle.dumps(obj, protocol=proto))
        except Exception as e:  # e.g. protocol 5 on old Python
            print('skip', name, proto, e)

sample = os.path.join(shared, 'torch', 'torch2x_sample.pt')
for d, ext in (('torchfile', '.pt'), ('zip', '.zip')):
    shutil.copy(sample, os.path.join(out[d], 'torch2x_sample' + ext))
with zipfile.ZipFile(sample) as z:
    open(os.path.join(out['pickle'], 'torch2x_sample.pkl'), 'wb').write(z.read('torch2x_sample/data.pkl'))
# plain zips (Python's writer: sizes in local headers, no ZIP64 end record) and a tiny ZIP64 one
with zipfile.ZipFile(os.path.join(out['zip'], 'python_stored.zip'), 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps(None, protocol=2))
    z.writestr('archive/data/0', b'\x00' * 16)
with zipfile.ZipFile(os.path.join(out['zip'], 'python_zip64.zip'), 'w') as z:
    with z.open('archive/data.pkl', 'w', force_zip64=True) as f:
        f.write(pickle.dumps([1, 2], protocol=2))
for d in out.values():
    print(d, sorted((f, os.path.getsize(os.path.join(d, f))) for f in os.listdir(d)))
