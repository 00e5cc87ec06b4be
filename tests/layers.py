"""The registry of public layers the contract tests run. Every exported Transform subclass must appear here (a test
checks that), so a new layer is covered as soon as it is exported."""
import torch
from flownb import bijections as B
from flownb import flowify as FL


def _randomize(layer, scale=0.5, seed=0):
    "Move a layer away from its identity initialisation so tests exercise real maps"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return layer


# name -> (factory(features) -> layer, input kind: 'vector' | 'image' | 'unit' (values in (0,1)) | 'any')
BIJECTIONS = {
    'LeakyReLU': (lambda f: B.LeakyReLU(0.2), 'any'),
    'RQSpline': (lambda f: _randomize(B.RQSpline(f, bins=5, bound=2.0), 1.0), 'vector'),
    'RQSpline-shared': (lambda f: _randomize(B.RQSpline(None, bins=4), 1.0), 'any'),
    'ActNorm': (lambda f: B.ActNorm(f), 'vector'),
    'AffineCoupling': (lambda f: _randomize(B.AffineCoupling(max(f, 2), hidden_features=8)), 'vector-min2'),
    'AffineCoupling-swap': (lambda f: _randomize(B.AffineCoupling(max(f, 2), hidden_features=8, swap=True)), 'vector-min2'),
    'AffineCoupling-conv': (lambda f: _randomize(B.AffineCoupling(max(f, 2), hidden_features=4, conv=True), 0.3), 'image-min2'),
    'Conv1x1': (lambda f: _randomize(B.Conv1x1(f), 0.3), 'image'),
    'Conv1x1-vector': (lambda f: _randomize(B.Conv1x1(f), 0.3), 'vector'),
    'Permutation': (lambda f: B.Permutation(f), 'vector'),
    'Squeeze': (lambda f: B.Squeeze(2), 'image-even'),
    'Reshape': (lambda f: B.Reshape((f, 2, 2), (4 * f,)), 'image-2x2'),
    'Logit': (lambda f: B.Logit(0.05), 'unit'),
    'PReLU': (lambda f: _randomize(FL.PReLU(f), 0.5), 'vector'),
    'PReLU-shared': (lambda f: FL.PReLU(1, 0.3), 'any'),
    'Flatten': (lambda f: FL.Flatten((f, 2, 2)), 'image-2x2'),
    'FlowLinear-square': (lambda f: _randomize(FL.FlowLinear(f, f), 0.3), 'vector'),
}


def make_input(kind, batch, features, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = max(features, 2) if kind.endswith('min2') else features
    if kind.startswith('image'):
        h = 2 if kind in ('image-2x2',) else 4
        return torch.randn(batch, f, h, h, generator=g, dtype=dtype)
    if kind == 'unit': return torch.rand(batch, features, generator=g, dtype=dtype) * 0.98 + 0.01
    return torch.randn(batch, f, generator=g, dtype=dtype) * 1.5
