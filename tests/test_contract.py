"""Property-based contract tests: every registered bijection, over random batch sizes, feature sizes and dtypes, keeps
the layer contract of DESIGN.md: shapes, finiteness, invertibility, ldj against autograd, exactness, serialization."""
import io
import inspect
import pytest
import torch
from hypothesis import given, strategies as st

import flownb.bijections
from flownb.core import Transform, Bijection
from flownb.checks import check_inverse, check_logdet
from layers import BIJECTIONS, make_input

DTYPES = [torch.float32, torch.float64]
batches = st.integers(1, 9)
features = st.integers(1, 5)


def build(name, f, dtype, batch):
    factory, kind = BIJECTIONS[name]
    layer = factory(f).to(dtype)
    x = make_input(kind, max(batch, 2) if name == 'ActNorm' else batch, f, dtype)
    return layer, x


def test_registry_covers_every_exported_bijection():
    exported = {n for n, o in vars(flownb.bijections).items()
                if inspect.isclass(o) and issubclass(o, Transform) and o.__module__ == 'flownb.bijections'}
    registered = {n.split('-')[0] for n in BIJECTIONS}
    assert exported <= registered, f"add these layers to tests/layers.py: {sorted(exported - registered)}"


@pytest.mark.parametrize('name', list(BIJECTIONS))
@pytest.mark.parametrize('dtype', DTYPES, ids=['float32', 'float64'])
@given(batch=batches, f=features)
def test_shapes_and_finite(name, dtype, batch, f):
    layer, x = build(name, f, dtype, batch)
    z, ldj = layer(x)
    assert ldj.shape == (x.shape[0],), f"{name}: ldj shape {tuple(ldj.shape)}, expected ({x.shape[0]},)"
    assert z.dtype == dtype and ldj.dtype == dtype
    assert torch.isfinite(z).all() and torch.isfinite(ldj).all()
    assert layer.exact is True and isinstance(layer, Bijection)
    assert layer.inverse(z).shape == x.shape


@pytest.mark.parametrize('name', list(BIJECTIONS))
@pytest.mark.parametrize('dtype', DTYPES, ids=['float32', 'float64'])
@given(batch=batches, f=features)
def test_invertible(name, dtype, batch, f):
    layer, x = build(name, f, dtype, batch)
    check_inverse(layer, x)  # tolerance 1e-8 (float64) / 1e-4 (float32): rounding of a few ops on O(1) values


@pytest.mark.parametrize('name', list(BIJECTIONS))
@given(batch=st.integers(1, 4), f=st.integers(1, 4))
def test_ldj_matches_autograd_jacobian(name, batch, f):
    layer, x = build(name, f, torch.float64, batch)
    check_logdet(layer, x, atol=1e-6, rtol=1e-6)  # float64: exact maths agrees to ~1e-12; 1e-6 leaves margin


@pytest.mark.parametrize('name', list(BIJECTIONS))
def test_ldj_float32_close_to_float64(name):
    layer, x = build(name, 3, torch.float64, 6)
    layer(x)  # data-dependent init in float64
    layer32 = _copy(layer).float()
    _, ldj64 = layer(x)
    _, ldj32 = layer32(x.float())
    torch.testing.assert_close(ldj32.double(), ldj64.detach(), atol=1e-4, rtol=1e-4)


def _copy(module):
    buf = io.BytesIO(); torch.save(module, buf); buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize('name', list(BIJECTIONS))
def test_save_load_and_state_dict_round_trip(name):
    layer, x = build(name, 3, torch.float32, 5)
    with torch.no_grad():
        z, ldj = layer(x)
        loaded = _copy(layer)
        z2, ldj2 = loaded(x)
        fresh, _ = build(name, 3, torch.float32, 5)
        fresh.load_state_dict(layer.state_dict())
        z3, ldj3 = fresh(x)
    for a, b in [(z, z2), (ldj, ldj2), (z, z3), (ldj, ldj3)]: assert torch.equal(a, b)


@pytest.mark.parametrize('name', ['AffineCoupling', 'RQSpline', 'Conv1x1-vector', 'ActNorm'])
def test_gradients_reach_every_parameter(name):
    layer, x = build(name, 3, torch.float32, 8)
    layer(x)  # init
    z, ldj = layer(x)
    (z.square().sum() - ldj.sum()).backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no finite gradient for {missing}"
