"""The registry of public layers the contract tests run. Every exported Transform subclass must appear here (a test
checks that), so a new layer is covered as soon as it is exported: BIJECTIONS and SURJECTIONS give a factory and an
input for each, NORMALIZE a 1-D or 2-D flow built around each that must integrate to one (exact layers exactly, bounded
ones through their importance-weighted estimate)."""
import importlib, inspect, math, pkgutil, warnings
import torch
import flownb
from flownb.core import Bijection, Surjection, Flow
from flownb.distributions import StandardNormal
from flownb import bijections as B
from flownb import flowify as FL
from flownb import surjections as S
from flownb import funnels as FU
from flownb import drf as DRF
from flownb import point_sets as P
from flownb.nn import res_net


def public_layer_classes() -> dict[str, type]:
    "Every concrete Bijection or Surjection class defined in a flownb module, by name"
    found = {}
    for info in pkgutil.iter_modules(flownb.__path__):
        mod = importlib.import_module(f'flownb.{info.name}')
        for name, obj in vars(mod).items():
            if (inspect.isclass(obj) and issubclass(obj, (Bijection, Surjection)) and obj.__module__ == mod.__name__
                    and obj not in (Bijection, Surjection) and not name.startswith('_') and name == obj.__name__):
                found[name] = obj   # skip private bases and aliases (MLPFunnel = CouplingFunnel)
    return found


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
    # spline couplings: perturbed less than the affine ones, since at scale 0.5 the conditioner squeezes bins to a few
    # thousandths and slopes to ~3e-7, where no float32 inverse can recover x (float64 still does; see the ldj and float64 tests)
    'SplineCoupling': (lambda f: _randomize(B.SplineCoupling(max(f, 2), hidden_features=8, bins=5, bound=2.0), 0.2), 'vector-min2'),
    'SplineCoupling-swap': (lambda f: _randomize(B.SplineCoupling(max(f, 2), hidden_features=8, swap=True), 0.2), 'vector-min2'),
    'SplineCoupling-conv': (lambda f: _randomize(B.SplineCoupling(max(f, 2), hidden_features=4, conv=True, bins=4), 0.2), 'image-min2'),
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
    'FlowLinear-cayley': (lambda f: _randomize(FL.FlowLinear(f, f, orthogonal_map='cayley'), 0.3), 'vector'),
    'Log': (lambda f: S.Log(), 'positive'),
    'SortedToReal': (lambda f: S.SortedToReal(f), 'sorted'),
    # point sets (batch, 4 points, 2 coordinates), whatever the feature size drawn
    'SortedPointsToReal': (lambda f: P.SortedPointsToReal(4, 2), 'points-sorted'),
    'ReorderPoints': (lambda f: P.ReorderPoints(4, 2), 'points'),
    'PointActNorm': (lambda f: P.PointActNorm(2), 'points'),
    'PointCoupling': (lambda f: _randomize(P.PointCoupling(4, 2, d_model=8, heads=2), 0.3), 'points'),
    'PointCoupling-points': (lambda f: _randomize(P.PointCoupling(4, 2, split='points', swap=True, positional=True, d_model=8, heads=2), 0.3), 'points'),
}
# issue 20: flowify's batch norm (eval-mode affine map, learned log|a| and shift, fixed signs) and the activations onto an
# interval; 'standard' inputs (N(0, 1)) keep tanh away from ±1, where float32 cannot invert it to 1e-4
BIJECTIONS.update({
    'FlowBatchNorm': (lambda f: _randomize(FL.FlowBatchNorm(f), 0.5), 'vector'),
    'FlowBatchNorm-image': (lambda f: _randomize(FL.FlowBatchNorm(f), 0.5), 'image'),
    'FlowBatchNorm-negative': (lambda f: _negative_signs(_randomize(FL.FlowBatchNorm(f), 0.5)), 'vector'),
    'Tanh': (lambda f: FL.Tanh(), 'standard'),
    'Sigmoid': (lambda f: FL.Sigmoid(), 'standard'),
    'ELU': (lambda f: FL.ELU(0.7), 'standard'),
})

# RealNVP's spatial coupling, with the default conditioner and with RealNVP's ResNet (weight-normalised convolutions)
BIJECTIONS.update({
    'CheckerboardCoupling': (lambda f: _randomize(B.CheckerboardCoupling(f, hidden_features=4), 0.3), 'image'),
    'CheckerboardCoupling-resnet': (lambda f: _randomize(B.CheckerboardCoupling(f, parity=1, conditioner=lambda i, o: res_net(i, o, blocks=1, hidden_features=4)), 0.3), 'image'),
})

def _negative_signs(layer):
    "Flip the fixed sign of every other channel of a FlowBatchNorm (a trained BatchNorm's gamma can be negative)"
    with torch.no_grad(): layer.sign[::2] = -1
    return layer


def make_input(kind, batch, features, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = max(features, 2) if kind.endswith('min2') else features
    if kind.startswith('image'):
        h = 2 if kind in ('image-2x2',) else 4
        return torch.randn(batch, f, h, h, generator=g, dtype=dtype)
    if kind == 'points': return torch.randn(batch, 4, 2, generator=g, dtype=dtype) * 1.5
    if kind == 'points-sorted':
        x = torch.randn(batch, 4, 2, generator=g, dtype=dtype)
        x[:, :, 0] = torch.cumsum(torch.rand(batch, 4, generator=g, dtype=dtype) + 0.1, 1) - 1
        return x
    if kind == 'unit': return torch.rand(batch, features, generator=g, dtype=dtype) * 0.98 + 0.01
    if kind == 'positive': return torch.rand(batch, features, generator=g, dtype=dtype) * 3 + 0.1
    if kind == 'sorted': return torch.cumsum(torch.rand(batch, features, generator=g, dtype=dtype) + 0.1, 1) - 1
    if kind == 'standard': return torch.randn(batch, features, generator=g, dtype=dtype)
    return torch.randn(batch, f, generator=g, dtype=dtype) * 1.5


# ---------------------------------------------------------------- surjections
# name -> (factory, input maker(batch, dtype), exact); which round trip holds is the layer's own declaration, `stochastic`
def vec(d): return lambda b, dt: torch.randn(b, d, dtype=dt)
def img(c, h, w): return lambda b, dt: torch.randn(b, c, h, w, dtype=dt)
def levels(shape, bins): return lambda b, dt: torch.randint(0, bins, (b, *shape)).to(dt)

SURJECTIONS = {
    'Slice': (lambda: S.Slice(4, 2, hidden_features=8), vec(4), True),
    'Slice-conv': (lambda: S.Slice(3, 1, hidden_features=4, conv=True), img(3, 4, 4), True),
    'Augment': (lambda: S.Augment(2, 5, hidden_features=8), vec(2), False),
    'Abs': (lambda: S.Abs(3, hidden_features=8), vec(3), True),
    'Sort': (lambda: S.Sort(4), vec(4), True),
    'Sort-learned': (lambda: S.Sort(4, learned=True, hidden_features=8), vec(4), True),
    'StochasticPermutation': (lambda: S.StochasticPermutation(3), vec(3), False),
    'MaxPool2d': (lambda: S.MaxPool2d(2, 2, hidden_features=4), img(2, 4, 6), True),
    'VAE': (lambda: S.VAE(4, 2, hidden_features=8), vec(4), False),
    'UniformDequantization': (lambda: S.UniformDequantization(16, shape=(1, 3, 3)), levels((1, 3, 3), 16), False),
    'VariationalDequantization': (lambda: S.VariationalDequantization((1, 3, 3), bins=16, hidden_features=4), levels((1, 3, 3), 16), False),
    'FlowDequantization': (lambda: S.FlowDequantization((1, 3, 3), bins=16, hidden_features=4, num_steps=2), levels((1, 3, 3), 16), False),
    'FlowDequantization-vector': (lambda: S.FlowDequantization((3,), bins=16, hidden_features=4, num_steps=2), levels((3,), 16), False),
    'FlowLinear-reduce': (lambda: FL.FlowLinear(5, 2, hidden_features=8), vec(5), True),
    'FlowLinear-increase': (lambda: FL.FlowLinear(2, 5), vec(2), False),
    'FlowConv2d-exact': (lambda: FL.FlowConv2d(2, 3, 2, stride=2, hidden_features=4), img(2, 4, 4), True),
    'FlowConv2d-bound': (lambda: FL.FlowConv2d(1, 9, 3, padding=1), img(1, 4, 4), False),
    'FlowPad2d': (lambda: FL.FlowPad2d(2, (0, 1, 0, 1)), img(2, 3, 3), False),
    # stride > kernel: the pixels between patches are read by no patch and dropped with a learned Gaussian (exact)
    'FlowConv2d-gaps': (lambda: FL.FlowConv2d(2, 1, 1, stride=2, hidden_features=4), img(2, 5, 5), True),
    'FlowConv2d-gaps-square': (lambda: FL.FlowConv2d(1, 4, 2, stride=3), img(1, 8, 8), True),
    # patches overlap along the height and leave gaps along the width: a bound whose inverse samples the gaps
    'FlowConv2d-gaps-overlap': (lambda: FL.FlowConv2d(1, 3, (3, 1), stride=(1, 2)), img(1, 5, 5), False),
    'CouplingFunnel': (lambda: FU.CouplingFunnel(5, 2, hidden_features=8), vec(5), True),
    'CouplingFunnel-spline': (lambda: FU.CouplingFunnel(4, 3, hidden_features=8, transform='spline'), vec(4), True),
    'CroppingConvFunnel': (lambda: FU.CroppingConvFunnel(3, 2, 3, hidden_features=4), img(3, 5, 4), True),
    'CroppingConvFunnel-k1': (lambda: FU.CroppingConvFunnel(3, 1, 1, hidden_features=4), img(3, 2, 2), True),
    'StridedConvFunnel': (lambda: FU.StridedConvFunnel(2, 2, hidden_features=8, num_layers=2), img(2, 4, 6), True),
    'LinearFunnel': (lambda: FU.LinearFunnel(5, 2, hidden_features=8, num_layers=2), vec(5), True),
    'StridedConvFunnel-rect': (lambda: FU.StridedConvFunnel(3, (1, 3), hidden_features=8, num_layers=1), img(3, 2, 6), True),
    'LCMASplit': (lambda: DRF.LCMASplit(5, 2, hidden_features=8).fit(torch.randn(5)), vec(5), True),
    'LCMASplit-conv': (lambda: DRF.LCMASplit((4, 3, 2), 1, hidden_features=4).fit(torch.randn(4, 3, 2)), img(4, 3, 2), True),
    'LCMASplit-static': (lambda: DRF.LCMASplit(3, 2, hidden_features=8), vec(3), True),
    'SortPoints': (lambda: P.SortPoints(4, 2), lambda b, dt: torch.randn(b, 4, 2, dtype=dt), True),
    'ShufflePoints': (lambda: P.ShufflePoints(4, 2), lambda b, dt: torch.randn(b, 4, 2, dtype=dt), False),
}
# issue 20: nn.AvgPool2d, flowified as a FlowConv2d with a fixed averaging kernel: exact (stride = kernel), and a bound
# (overlapping, zero padding counted in the average); built through flowify, the only way users get them
def _avg_pool(*args, input_shape, **kwargs): return FL.flowify(torch.nn.AvgPool2d(*args, **kwargs), input_shape=input_shape)[0]
SURJECTIONS.update({
    'FlowConv2d-avgpool': (lambda: _avg_pool(2, input_shape=(2, 4, 6)), img(2, 4, 6), True),
    'FlowConv2d-avgpool-bound': (lambda: _avg_pool(3, stride=1, padding=1, input_shape=(1, 4, 4)), img(1, 4, 4), False),
})


def build_surjection(name, batch, dtype, seed=0):
    "The registered surjection, its parameters moved off initialisation, and an input batch"
    torch.manual_seed(seed)
    factory, make, exact = SURJECTIONS[name]
    layer = factory().to(dtype)
    with torch.no_grad():
        for p in layer.parameters(): p.add_(torch.randn_like(p) * 0.1)
    return layer, make(batch, dtype), exact, layer.stochastic


# ---------------------------------------------------------------- normalisation: every layer inside a 1-D or 2-D flow
def _to_image(c, h, w): return B.Reshape((c * h * w,), (c, h, w))
def _to_vector(c, h, w): return B.Reshape((c, h, w), (c * h * w,))
def _r(layer, scale=0.5, seed=0): return _randomize(layer, scale, seed)

_PHI = 0.5 * (1 + math.erf(math.log(0.95 / 0.05) / math.sqrt(2)))   # Logit(0.05) maps (0,1) onto ±logit(0.95) only

# name -> (base size, layers, box low, box high, expected integral[, grid points per axis]); float64, initialised on N(0, I) data
NORMALIZE = {
    'LeakyReLU': (2, lambda: [B.LeakyReLU(0.5)], -24, 8, 1.0, 256),   # 0 on a cell edge: the density jumps there
    'RQSpline': (1, lambda: [_r(B.RQSpline(1, bins=5, bound=2.0), 1.0)], -8, 8, 1.0, 20000),   # steep: a fine 1-D grid
    'RQSpline-shared': (1, lambda: [_r(B.RQSpline(None, bins=4), 1.0)], -8, 8, 1.0, 20000),
    'ActNorm': (2, lambda: [B.ActNorm(2)], -8, 8, 1.0),
    'AffineCoupling': (2, lambda: [_r(B.AffineCoupling(2, hidden_features=8))], -9, 9, 1.0),
    'AffineCoupling-swap': (2, lambda: [_r(B.AffineCoupling(2, hidden_features=8, swap=True))], -9, 9, 1.0),
    'AffineCoupling-conv': (2, lambda: [_to_image(2, 1, 1), _r(B.AffineCoupling(2, hidden_features=4, conv=True), 0.3), _to_vector(2, 1, 1)], -9, 9, 1.0),
    'SplineCoupling': (2, lambda: [_r(B.SplineCoupling(2, hidden_features=8, bins=5, bound=2.0))], -9, 9, 1.0),
    'SplineCoupling-swap': (2, lambda: [_r(B.SplineCoupling(2, hidden_features=8, swap=True))], -9, 9, 1.0),
    'SplineCoupling-conv': (2, lambda: [_to_image(2, 1, 1), _r(B.SplineCoupling(2, hidden_features=4, conv=True, bins=4), 0.3), _to_vector(2, 1, 1)], -9, 9, 1.0),
    'Conv1x1': (2, lambda: [_to_image(2, 1, 1), _r(B.Conv1x1(2), 0.3), _to_vector(2, 1, 1)], -9, 9, 1.0),
    'Conv1x1-vector': (2, lambda: [_r(B.Conv1x1(2), 0.3)], -9, 9, 1.0),
    'Permutation': (2, lambda: [B.Permutation(2, 'reverse'), B.ActNorm(2)], -8, 8, 1.0),
    'Logit': (2, lambda: [B.Logit(0.05)], 0.0, 1.0, (2 * _PHI - 1) ** 2),
    'PReLU': (2, lambda: [_r(FL.PReLU(2, 0.5), 0.1)], -24, 8, 1.0, 256),
    'PReLU-shared': (2, lambda: [FL.PReLU(1, 0.5)], -24, 8, 1.0, 256),
    'FlowLinear-square': (2, lambda: [_r(FL.FlowLinear(2, 2), 0.3)], -9, 9, 1.0),
    'FlowLinear-cayley': (2, lambda: [_r(FL.FlowLinear(2, 2, orthogonal_map='cayley'), 0.3)], -9, 9, 1.0),
    'Log': (1, lambda: [S.Log()], 0.0, 60.0, 1.0),
    'SortedToReal': (2, lambda: [S.Sort(2), S.SortedToReal(2)], [-9, -9.013], [40, 40.021], 1.0, 600),   # log-normal gaps: long tails
    # point sets as 2-D vectors: two 1-D points, or one point of two coordinates
    'SortedPointsToReal': (2, lambda: [B.Reshape((2,), (2, 1)), P.SortPoints(2, 1), P.SortedPointsToReal(2, 1), B.Reshape((2, 1), (2,))], [-9, -9.013], [40, 40.021], 1.0, 600),
    'PointActNorm': (2, lambda: [B.Reshape((2,), (1, 2)), P.PointActNorm(2), B.Reshape((1, 2), (2,))], -8, 8, 1.0),
    'PointCoupling': (2, lambda: [B.Reshape((2,), (1, 2)), _r(P.PointCoupling(1, 2, d_model=8, heads=2), 0.3), B.Reshape((1, 2), (2,))], -9, 9, 1.0),
    'PointCoupling-points': (2, lambda: [B.Reshape((2,), (2, 1)), _r(P.PointCoupling(2, 1, split='points', positional=True, d_model=8, heads=2), 0.3), B.Reshape((2, 1), (2,))], -9, 9, 1.0),
    'SortPoints': (2, lambda: [B.Reshape((2,), (2, 1)), P.SortPoints(2, 1), P.SortedPointsToReal(2, 1), B.Reshape((2, 1), (2,))], [-9, -9.013], [40, 40.021], 1.0, 600),
    'ShufflePoints': (2, lambda: [B.Reshape((2,), (2, 1)), P.ShufflePoints(2, 1), B.Reshape((2, 1), (2,)), _r(B.AffineCoupling(2, hidden_features=8))], -9, 9, 1.0),
    # exact surjections, 2-D data to a 1-D latent (or 2-D for Abs and Sort)
    'Slice': (1, lambda: [S.Slice(2, 1, hidden_features=8)], -8, 8, 1.0),
    'Slice-conv': (1, lambda: [_to_image(2, 1, 1), S.Slice(2, 1, hidden_features=4, conv=True), _to_vector(1, 1, 1)], -8, 8, 1.0),
    'Abs': (1, lambda: [S.Abs(1, hidden_features=8), S.Log()], -60, 60, 1.0),
    'Sort': (2, lambda: [S.Sort(2), S.SortedToReal(2)], [-9, -9.013], [40, 40.021], 1.0, 600),
    'Sort-learned': (2, lambda: [S.Sort(2, learned=True, hidden_features=8), S.SortedToReal(2)], [-9, -9.013], [40, 40.021], 1.0, 600),
    'MaxPool2d': (1, lambda: [_to_image(1, 1, 2), S.MaxPool2d(1, (1, 2), hidden_features=4), _to_vector(1, 1, 1)], -8, 8, 1.0),
    'FlowLinear-reduce': (1, lambda: [FL.FlowLinear(2, 1, hidden_features=8)], -9, 9, 1.0),
    'FlowConv2d-exact': (1, lambda: [_to_image(1, 1, 2), FL.FlowConv2d(1, 1, (1, 2), stride=(1, 2), hidden_features=4), _to_vector(1, 1, 1)], -9, 9, 1.0),
    'CouplingFunnel': (1, lambda: [FU.CouplingFunnel(2, 1, hidden_features=8)], -9, 9, 1.0),
    'CouplingFunnel-spline': (1, lambda: [FU.CouplingFunnel(2, 1, hidden_features=8, transform='spline')], -9, 9, 1.0),
    'CroppingConvFunnel': (1, lambda: [_to_image(2, 1, 1), FU.CroppingConvFunnel(2, 1, 1, hidden_features=4), _to_vector(1, 1, 1)], -9, 9, 1.0),
    'LinearFunnel': (1, lambda: [FU.LinearFunnel(2, 1, hidden_features=8)], -9, 9, 1.0),
    'StridedConvFunnel': (1, lambda: [_to_image(1, 1, 2), FU.StridedConvFunnel(1, (1, 2), hidden_features=8), _to_vector(1, 1, 1)], -9, 9, 1.0),
    'LCMASplit': (1, lambda: [DRF.LCMASplit(2, 1, hidden_features=8).fit(torch.tensor([0.3, -0.2]))], -9, 9, 1.0),
    # bounded layers: their importance-weighted density estimate is unbiased, so it integrates to one too
    'Augment': (2, lambda: [S.Augment(1, 2, hidden_features=8)], -8, 8, 1.0),
    'StochasticPermutation': (2, lambda: [S.StochasticPermutation(2), B.ActNorm(2)], -8, 8, 1.0),
    'VAE': (1, lambda: [S.VAE(2, 1, hidden_features=8)], -8, 8, 1.0),
    'FlowLinear-increase': (2, lambda: [FL.FlowLinear(1, 2)], -8, 8, 1.0),
    'FlowConv2d-bound': (1, lambda: [_to_image(1, 1, 1), FL.FlowConv2d(1, 1, 3, padding=1, hidden_features=4), _to_vector(1, 1, 1)], -8, 8, 1.0),
    'FlowPad2d': (2, lambda: [_to_image(1, 1, 1), FL.FlowPad2d(1, (0, 1, 0, 0)), _to_vector(1, 1, 2)], -8, 8, 1.0),
}
# issue 20. The activations onto an interval are exact on their range: with the N(0, I) base their density integrates to
# the base's mass there, (2Φ(1) - 1)² for tanh, (Φ(1) - Φ(0))² for the sigmoid, Φ(α)² for ELU(α); a base on the range
# integrates to one (tests/test_flowify_traced.py). ELU(0.7)'s density jumps at 0: the box puts 0 on a cell edge.
_P = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))
NORMALIZE.update({
    'FlowBatchNorm': (2, lambda: [_r(FL.FlowBatchNorm(2), 0.5)], -9, 9, 1.0),
    'FlowBatchNorm-negative': (2, lambda: [_negative_signs(_r(FL.FlowBatchNorm(2), 0.5))], -9, 9, 1.0),
    'Tanh': (2, lambda: [FL.Tanh()], -12, 12, (2 * _P(1) - 1) ** 2, 400),
    'Sigmoid': (2, lambda: [FL.Sigmoid()], -40, 40, (_P(1) - _P(0)) ** 2, 800),
    'ELU': (2, lambda: [FL.ELU(0.7)], -30, 10, _P(0.7) ** 2, 400),
    'FlowConv2d-avgpool': (1, lambda: [_to_image(1, 1, 2), _avg_pool((1, 2), input_shape=(1, 1, 2)), _to_vector(1, 1, 1)], -9, 9, 1.0),
})
# a 1×2 image: the checkerboard keeps one pixel and scales and shifts the other given it
NORMALIZE.update({
    'CheckerboardCoupling': (2, lambda: [_to_image(1, 1, 2), _r(B.CheckerboardCoupling(1, hidden_features=4), 0.3), _to_vector(1, 1, 2)], -9, 9, 1.0),
})
# layers a density check says nothing about: pure rearrangements (log-determinant 0, and invertibility is tested),
# discrete-data layers (their sum over levels is checked separately), and variants already covered under another name
NOT_NORMALIZED = {'Squeeze': 'a rearrangement', 'ReorderPoints': 'a rearrangement', 'Reshape': 'a rearrangement', 'Flatten': 'a rearrangement',
                  'UniformDequantization': 'discrete data: summed over levels instead', 'VariationalDequantization': 'discrete data: summed over levels instead', 'FlowDequantization': 'discrete data: summed over levels instead',
                  'FlowDequantization-vector': 'discrete data: summed over levels instead',
                  'FlowConv2d-gaps': 'a gap needs 3 pixels, so a 3-D density: integrated on a 3-D grid in tests/test_flowify_faults.py',
                  'FlowConv2d-gaps-square': 'same maths as FlowConv2d-gaps, integrated in tests/test_flowify_faults.py',
                  'FlowConv2d-gaps-overlap': 'overlap needs 3 rows and a gap 3 columns, a 9-D density; its parts are checked in tests/test_flowify_faults.py',
                  'CheckerboardCoupling-resnet': 'same layer as CheckerboardCoupling (another conditioner)',
                  'CroppingConvFunnel-k1': 'same layer as CroppingConvFunnel', 'StridedConvFunnel-rect': 'same layer as StridedConvFunnel', 'LCMASplit-conv': 'same layer as LCMASplit', 'LCMASplit-static': 'same layer as LCMASplit'}
ONE_D_DATA = {'Log', 'Abs', 'Augment', 'FlowLinear-increase', 'FlowConv2d-bound', 'FlowPad2d'}
NOT_NORMALIZED.update({'FlowBatchNorm-image': 'same layer as FlowBatchNorm',   # issue 20
                       'FlowConv2d-avgpool-bound': 'same maths as FlowConv2d-bound (integrated); at its start the fixed average mixes one '
                                                   'pixel with 8 noise pixels, and the K=64 importance weights are too heavy-tailed to integrate'})


def normalization_flow(name, seed=0):
    "The float64 flow for `NORMALIZE[name]`, with parameters moved off initialisation and ActNorm initialised"
    size, layers, lo, hi, expected, *n = NORMALIZE[name]
    torch.manual_seed(seed)
    layers = layers()
    for layer in layers:
        if isinstance(layer, (S.Slice, S.Abs, S.Sort, S.MaxPool2d, S.Augment, S.VAE, FL.FlowLinear, FL.FlowConv2d, FL.FlowPad2d, FU.CouplingFunnel, FU.CroppingConvFunnel, FU.StridedConvFunnel, FU.LinearFunnel, DRF.LCMASplit)):
            with torch.no_grad():
                for p in layer.parameters(): p.add_(torch.randn_like(p) * 0.2)
    with warnings.catch_warnings():   # the activations onto an interval leave a support gap on purpose (Tanh, Sigmoid, ELU)
        warnings.filterwarnings('ignore', message='Flow: .* maps onto')
        flow = Flow(StandardNormal(size), layers).double()
    dims = 1 if name in ONE_D_DATA or size == 1 and name.startswith('RQSpline') else 2
    g = torch.Generator().manual_seed(seed)
    init = {'Log': lambda n: torch.randn(n, 1, generator=g, dtype=torch.float64).exp(),
            'Logit': lambda n: torch.rand(n, 2, generator=g, dtype=torch.float64)}.get(name, lambda n: torch.randn(n, dims, generator=g, dtype=torch.float64))
    with torch.no_grad(): flow.log_prob(init(512))   # data-dependent initialisation (ActNorm) on standard-normal data
    return flow, dims, lo, hi, expected, (n[0] if n else 2000 if dims == 1 else 250)
