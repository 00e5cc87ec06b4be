"""Property-based contract tests: every registered bijection, over random batch sizes, feature sizes and dtypes, keeps
the layer contract of DESIGN.md: shapes, finiteness, invertibility, ldj against autograd, exactness, serialization."""
import io
import inspect
import pytest
import torch
from hypothesis import given, strategies as st

import flownb.bijections, flownb.flowify
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
    exported = {n for mod in (flownb.bijections, flownb.flowify) for n, o in vars(mod).items()
                if inspect.isclass(o) and issubclass(o, Bijection) and o.__module__ == mod.__name__}
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
    assert layer.exact is True
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


def _parametrized(module):
    return any(torch.nn.utils.parametrize.is_parametrized(m) for m in module.modules())


def _copy_via_state_dict(name, layer, dtype):
    "A fresh layer from the registry with `layer`'s state, saved and loaded through torch.save"
    buf = io.BytesIO(); torch.save(layer.state_dict(), buf); buf.seek(0)
    fresh = BIJECTIONS[name][0](3).to(dtype)
    fresh.load_state_dict(torch.load(buf))
    return fresh


@pytest.mark.parametrize('name', list(BIJECTIONS))
def test_ldj_float32_close_to_float64(name):
    layer, x = build(name, 3, torch.float64, 6)
    with torch.no_grad():
        layer(x)  # data-dependent init in float64
        _, ldj64 = layer(x)
        _, ldj32 = _copy_via_state_dict(name, layer, torch.float32)(x.float())
    torch.testing.assert_close(ldj32.double(), ldj64, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', list(BIJECTIONS))
def test_save_load_and_state_dict_round_trip(name):
    layer, x = build(name, 3, torch.float32, 5)
    with torch.no_grad():
        z, ldj = layer(x)
        z2, ldj2 = _copy_via_state_dict(name, layer, torch.float32)(x)
        pairs = [(z, z2), (ldj, ldj2)]
        if not _parametrized(layer):  # torch refuses to pickle whole parametrized modules; state_dict is their path
            buf = io.BytesIO(); torch.save(layer, buf); buf.seek(0)
            z3, ldj3 = torch.load(buf, weights_only=False)(x)
            pairs += [(z, z3), (ldj, ldj3)]
    for a, b in pairs: assert torch.equal(a, b)


@pytest.mark.parametrize('name', ['AffineCoupling', 'RQSpline', 'Conv1x1-vector', 'ActNorm'])
def test_gradients_reach_every_parameter(name):
    layer, x = build(name, 3, torch.float32, 8)
    layer(x)  # init
    z, ldj = layer(x)
    (z.square().sum() - ldj.sum()).backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no finite gradient for {missing}"
