"""Contract tests for every surjection (SurVAE layers, dequantization, flowified layers): shapes and dtypes over random
batch sizes, truthful `exact`, the round trip each kind promises, state_dict round trips, and bad input."""
import inspect
import io
import pytest
import torch
from hypothesis import given, strategies as st

import flownb.surjections as S
import flownb.surjections as DQ
import flownb.flowify as FL
import flownb.funnels as FU
import flownb.drf as DRF
from flownb.core import Surjection

# name -> (factory, input maker(batch, dtype), exact, round trip: 'right' | 'left' | None (stochastic inverse))
def vec(d): return lambda b, dt: torch.randn(b, d, dtype=dt)
def img(c, h, w): return lambda b, dt: torch.randn(b, c, h, w, dtype=dt)
def levels(shape, bins): return lambda b, dt: torch.randint(0, bins, (b, *shape)).to(dt)

SURJECTIONS = {
    'Slice': (lambda: S.Slice(4, 2, hidden_features=8), vec(4), True, 'right'),
    'Slice-conv': (lambda: S.Slice(3, 1, hidden_features=4, conv=True), img(3, 4, 4), True, 'right'),
    'Augment': (lambda: S.Augment(2, 5, hidden_features=8), vec(2), False, 'left'),
    'Abs': (lambda: S.Abs(3, hidden_features=8), vec(3), True, 'right'),
    'Sort': (lambda: S.Sort(4), vec(4), True, 'right'),
    'Sort-learned': (lambda: S.Sort(4, learned=True, hidden_features=8), vec(4), True, 'right'),
    'StochasticPermutation': (lambda: S.StochasticPermutation(3), vec(3), False, None),
    'MaxPool2d': (lambda: S.MaxPool2d(2, 2, hidden_channels=4), img(2, 4, 6), True, 'right'),
    'VAE': (lambda: S.VAE(4, 2, hidden_features=8), vec(4), False, None),
    'UniformDequantization': (lambda: DQ.UniformDequantization(16, shape=(1, 3, 3)), levels((1, 3, 3), 16), False, 'left'),
    'VariationalDequantization': (lambda: DQ.VariationalDequantization((1, 3, 3), bins=16, hidden_features=4), levels((1, 3, 3), 16), False, 'left'),
    'FlowLinear-reduce': (lambda: FL.FlowLinear(5, 2, hidden_features=8), vec(5), True, 'right'),
    'FlowLinear-increase': (lambda: FL.FlowLinear(2, 5), vec(2), False, 'left'),
    'FlowConv2d-exact': (lambda: FL.FlowConv2d(2, 3, 2, stride=2, hidden_channels=4), img(2, 4, 4), True, 'right'),
    'FlowConv2d-bound': (lambda: FL.FlowConv2d(1, 9, 3, padding=1), img(1, 4, 4), False, 'left'),
    'MLPFunnel': (lambda: FU.MLPFunnel(5, 2, hidden_features=8), vec(5), True, 'right'),
    'MLPFunnel-spline': (lambda: FU.MLPFunnel(4, 3, hidden_features=8, transform='spline'), vec(4), True, 'right'),
    'ConvFunnel': (lambda: FU.ConvFunnel(3, 2, 3, hidden_channels=4), img(3, 5, 4), True, 'right'),
    'ConvFunnel-k1': (lambda: FU.ConvFunnel(3, 1, 1, hidden_channels=4), img(3, 2, 2), True, 'right'),
    'LCMASplit': (lambda: DRF.LCMASplit(5, 2, hidden_features=8).fit(torch.randn(5)), vec(5), True, 'right'),
    'LCMASplit-conv': (lambda: DRF.LCMASplit((4, 3, 2), 1, hidden_features=4).fit(torch.randn(4, 3, 2)), img(4, 3, 2), True, 'right'),
    'LCMASplit-static': (lambda: DRF.LCMASplit(3, 2, hidden_features=8), vec(3), True, 'right'),
}
NAMES = list(SURJECTIONS)


def build(name, batch, dtype, seed=0):
    torch.manual_seed(seed)
    factory, make, exact, trip = SURJECTIONS[name]
    layer = factory().to(dtype)
    with torch.no_grad():
        for p in layer.parameters(): p.add_(torch.randn_like(p) * 0.1)
    return layer, make(batch, dtype), exact, trip


def test_registry_covers_every_exported_surjection():
    exported = {n for mod in (S, FL, FU, DRF) for n, o in vars(mod).items()
                if inspect.isclass(o) and issubclass(o, Surjection) and o.__module__ == mod.__name__}
    registered = {n.split('-')[0] for n in SURJECTIONS}
    assert exported <= registered, f"add these layers to SURJECTIONS: {sorted(exported - registered)}"


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=['float32', 'float64'])
@given(batch=st.integers(1, 7))
def test_contract(name, dtype, batch):
    layer, x, exact, trip = build(name, batch, dtype)
    z, ldj = layer(x)
    assert ldj.shape == (batch,) and ldj.dtype == dtype and torch.isfinite(ldj).all()
    assert z.dtype == dtype and torch.isfinite(z).all() and z.shape[0] == batch
    assert layer.exact is exact, f"{name}: exact={layer.exact}, expected {exact}"
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    with torch.no_grad():
        x_back = layer.inverse(z)
        assert x_back.shape == x.shape
        if trip == 'right':   # deterministic forward: forward(inverse(z)) == z
            torch.testing.assert_close(layer(x_back)[0], z.detach(), atol=tol, rtol=tol)
        elif trip == 'left':  # deterministic inverse: inverse(forward(x)) == x
            torch.testing.assert_close(x_back, x, atol=tol, rtol=tol)


@pytest.mark.parametrize('name', NAMES)
def test_state_dict_round_trip(name):
    layer, x, _, _ = build(name, 4, torch.float64)
    fresh, _, _, _ = build(name, 4, torch.float64, seed=1)
    buf = io.BytesIO(); torch.save(layer.state_dict(), buf); buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    with torch.no_grad():
        torch.manual_seed(7); a = layer(x)
        torch.manual_seed(7); b = fresh(x)
    torch.testing.assert_close(a[0], b[0]); torch.testing.assert_close(a[1], b[1])


@pytest.mark.parametrize('name', [n for n in NAMES if 'Dequantization' not in n])
def test_bad_float_inputs(name):
    layer, x, _, _ = build(name, 3, torch.float32)
    nan = x.clone(); nan.view(-1)[0] = float('nan')
    with pytest.raises(ValueError, match='non-finite'): layer(nan)
    with pytest.raises(TypeError, match='floating-point'): layer(x.to(torch.int64))
    with pytest.raises(ValueError, match='empty batch'): layer(x[:0])
    with pytest.raises(ValueError, match='expected input'): layer(x.reshape(3, -1)[:, :1] if x.dim() > 2 else x[:, :1].unsqueeze(-1))


@pytest.mark.parametrize('name', ['UniformDequantization', 'VariationalDequantization'])
def test_bad_levels(name):
    layer, x, _, _ = build(name, 3, torch.float32)
    with pytest.raises(ValueError, match=r'expected levels in 0..15, got min 0, max 16'): layer(torch.full_like(x, 16.0).index_fill_(0, torch.tensor([0]), 0.0))
    with pytest.raises(ValueError, match='non-integer'): layer(x.clamp(max=14) + 0.5)
    with pytest.raises(ValueError, match=r'expected input \(batch, 1, 3, 3\)'): layer(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match='expected levels'): layer(torch.full_like(x, float('nan')))
    layer(x.to(torch.int64))   # integer tensors are the natural input


def test_constructor_errors():
    cases = [(lambda: S.Slice(3, 3), 'drops dimensions'), (lambda: S.Augment(3, 2), 'adds dimensions'),
             (lambda: DQ.UniformDequantization(1), 'at least 2'), (lambda: DQ.VariationalDequantization((2, 3)), 'shape must be')]
    for make, fragment in cases:
        with pytest.raises(ValueError, match=fragment): make()
    with pytest.raises(ValueError, match=r'divisible by the window 2×2, got \(1, 1, 3, 4\)'): S.MaxPool2d(1, 2)(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match='strictly increasing'): S.SortedToReal(2)(torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match='positive'): S.Log()(torch.tensor([[0.0]]))
