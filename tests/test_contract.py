"""The layer contract (stated in nbs/00_core.ipynb: forward is data → latent, `ldj` of shape (batch,), `exact` tells
the truth), for every public layer, from the registries in layers.py (a test fails when an
exported layer is missing there, so new layers are covered automatically):

- shapes and dtypes (float32, float64) over random batch sizes and feature sizes (hypothesis), on CPU and on CUDA when
  there is one; `ldj` of shape (batch,) and finite;
- invertibility where exact: bijections both ways, inference surjections forward(inverse(z)) == z, generative ones
  inverse(forward(x)) == x;
- `ldj` against the autograd Jacobian for every dimension-preserving layer;
- the `exact` flag is truthful: each layer inside a 1-D or 2-D flow integrates to one on a grid, exactly for exact
  layers and through the unbiased importance-weighted estimate for bounded ones;
- `torch.save`/`torch.load` and `state_dict` round trips give identical outputs;
- `torch.compile` gives the eager outputs.
"""
import io
import pytest
import torch
from hypothesis import given, strategies as st

from flownb.checks import check_inverse, check_logdet, check_normalized
from layers import (BIJECTIONS, SURJECTIONS, NORMALIZE, NOT_NORMALIZED, make_input, build_surjection, normalization_flow,
                    public_layer_classes)

DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ['float32', 'float64']
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'))]
batches = st.integers(1, 9)
features = st.integers(1, 5)


def build(name, f, dtype, batch, device='cpu'):
    factory, kind = BIJECTIONS[name]
    layer = factory(f).to(device=device, dtype=dtype)
    x = make_input(kind, max(batch, 2) if name == 'ActNorm' else batch, f, dtype).to(device)
    return layer, x


def test_registries_cover_every_public_layer():
    public = set(public_layer_classes())
    registered = {n.split('-')[0] for n in (*BIJECTIONS, *SURJECTIONS)}
    assert public <= registered, f"add these layers to tests/layers.py: {sorted(public - registered)}"
    checked = set(NORMALIZE) | set(NOT_NORMALIZED)
    missing = [n for n in (*BIJECTIONS, *SURJECTIONS) if n not in checked]
    assert not missing, f"give these layers a normalisation check (NORMALIZE) or a reason (NOT_NORMALIZED): {missing}"


# ---------------------------------------------------------------- bijections
@pytest.mark.parametrize('name', list(BIJECTIONS))
@pytest.mark.parametrize('dtype', DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize('device', DEVICES)
@given(batch=batches, f=features)
def test_bijection_shapes_and_finite(name, dtype, device, batch, f):
    layer, x = build(name, f, dtype, batch, device)
    z, ldj = layer(x)
    assert ldj.shape == (x.shape[0],), f"{name}: ldj shape {tuple(ldj.shape)}, expected ({x.shape[0]},)"
    assert z.dtype == dtype and ldj.dtype == dtype and z.device == x.device
    assert torch.isfinite(z).all() and torch.isfinite(ldj).all()
    assert layer.exact is True
    assert layer.inverse(z).shape == x.shape


@pytest.mark.parametrize('name', list(BIJECTIONS))
@pytest.mark.parametrize('dtype', DTYPES, ids=DTYPE_IDS)
@given(batch=batches, f=features)
def test_bijection_invertible(name, dtype, batch, f):
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
def test_bijection_save_load_and_state_dict_round_trip(name):
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


@pytest.mark.parametrize('name', ['AffineCoupling', 'RQSpline', 'Conv1x1-vector', 'ActNorm', 'FlowLinear-square', 'PReLU'])
def test_gradients_reach_every_parameter(name):
    layer, x = build(name, 3, torch.float32, 8)
    layer(x)  # init
    z, ldj = layer(x)
    (z.square().sum() - ldj.sum()).backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no finite gradient for {missing}"


# ---------------------------------------------------------------- surjections
@pytest.mark.parametrize('name', list(SURJECTIONS))
@pytest.mark.parametrize('dtype', DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize('device', DEVICES)
@given(batch=st.integers(1, 7))
def test_surjection_contract(name, dtype, device, batch):
    layer, x, exact, trip = build_surjection(name, batch, dtype)
    layer, x = layer.to(device), x.to(device)
    z, ldj = layer(x)
    assert ldj.shape == (batch,) and ldj.dtype == dtype and torch.isfinite(ldj).all()
    assert z.dtype == dtype and torch.isfinite(z).all() and z.shape[0] == batch and z.device == x.device
    assert layer.exact is exact, f"{name}: exact={layer.exact}, expected {exact}"
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    with torch.no_grad():
        x_back = layer.inverse(z)
        assert x_back.shape == x.shape
        if trip in (None, 'inverse'):   # deterministic forward: forward(inverse(z)) == z, and forward repeats itself
            torch.testing.assert_close(layer(x_back)[0], z.detach(), atol=tol, rtol=tol)
            torch.testing.assert_close(layer(x)[0], z.detach(), atol=tol, rtol=tol)
        if trip in (None, 'forward'):   # deterministic inverse: inverse(forward(x)) == x, and inverse repeats itself
            torch.testing.assert_close(x_back, x, atol=tol, rtol=tol)
            torch.testing.assert_close(layer.inverse(z), x_back, atol=tol, rtol=tol)


@pytest.mark.parametrize('name', list(SURJECTIONS))
def test_surjection_state_dict_and_save_load_round_trip(name):
    layer, x, _, _ = build_surjection(name, 4, torch.float64)
    fresh, _, _, _ = build_surjection(name, 4, torch.float64, seed=1)
    buf = io.BytesIO(); torch.save(layer.state_dict(), buf); buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    copies = [fresh]
    if not _parametrized(layer):
        buf = io.BytesIO(); torch.save(layer, buf); buf.seek(0)
        copies.append(torch.load(buf, weights_only=False))
    with torch.no_grad():
        torch.manual_seed(7); a = layer(x)
        for other in copies:
            torch.manual_seed(7); b = other(x)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"{name}: a reloaded copy computes something else"


# ---------------------------------------------------------------- the exact flag is truthful
@pytest.mark.parametrize('name', list(NORMALIZE))
def test_density_integrates_to_one(name):
    flow, dims, lo, hi, expected, n = normalization_flow(name)
    exact = flow.transform.exact   # the layers' terms; a flow whose base overhangs their range integrates to less than one
    if name in ('Tanh', 'Sigmoid', 'ELU'): assert not flow.exact, f"{name} onto an interval, on a N(0, I) base: flow.exact must be False"
    # exact: the midpoint grids are accurate to ~1e-4 here (measured at twice the resolution). Bounded: the K=64
    # importance-weighted estimate of p(x) is unbiased, so its integral is 1 up to Monte Carlo noise (a few 1e-3).
    report = check_normalized(flow, lo, hi, n=n, dims=dims, k=64, tol=0.01, raise_on_fail=False)
    assert abs(report.details['integral'] - expected) < (0.005 if exact else 0.02), f"{name} (exact={exact}): {report.message}; expected {expected:.5f}"


@pytest.mark.parametrize('name', ['UniformDequantization', 'VariationalDequantization', 'FlowDequantization'])
def test_dequantization_bounds_on_discrete_data(name):
    """Discrete data: the ELBO of every level is below log P(level), so exp(ELBO) sums to at most one over the levels;
    the importance-weighted estimate of P(level) is unbiased, so it sums to one"""
    from flownb.core import Flow
    from flownb.distributions import StandardNormal
    from flownb.bijections import Logit
    import flownb.surjections as S
    torch.manual_seed(0)
    deq = (S.UniformDequantization(5, shape=(1,)) if name.startswith('Uniform') else
           S.VariationalDequantization((1,), bins=5, hidden_features=4) if name.startswith('Variational') else
           S.FlowDequantization((1,), bins=5, hidden_features=4, num_steps=2))
    # moved off the zero start; less for the flow, whose splines turn a large random move into a q far narrower than
    # the cell's posterior, and then the importance weights are so heavy-tailed that 8 x 256 samples underestimate
    with torch.no_grad():
        for p in deq.parameters(): p.add_(torch.randn_like(p) * (0.05 if name.startswith('Flow') else 0.3))
    flow = Flow(StandardNormal(1), [deq, Logit(0.0)]).double()
    levels = torch.arange(5, dtype=torch.float64)[:, None]
    with torch.no_grad():
        elbo = flow.log_prob(levels.repeat(4000, 1)).reshape(4000, 5).mean(0)   # E_q[log p(x, u) - log q(u|x)], per level
        iw = torch.stack([flow.log_prob(levels, k=256).exp() for _ in range(8)]).mean(0)
    assert elbo.exp().sum().item() <= 1 + 1e-3, elbo.exp().sum().item()
    assert abs(iw.sum().item() - 1) < 0.02, iw.sum().item()
    assert (elbo <= iw.log() + 0.01).all()


# ---------------------------------------------------------------- torch.compile
def _compile_cases():
    cases = [(n, 'bijection') for n in BIJECTIONS] + [(n, 'surjection') for n, v in SURJECTIONS.items() if v[2]]
    return [pytest.param(*c, id=c[0]) for c in cases]


@pytest.mark.parametrize('name,family', _compile_cases())
def test_torch_compile_matches_eager(name, family):
    "Deterministic layers under torch.compile (aot_eager: graph capture and autograd tracing, no C compiler needed)"
    torch._dynamo.reset()
    if family == 'bijection': layer, x = build(name, 3, torch.float32, 6)
    else: layer, x, _, _ = build_surjection(name, 6, torch.float32)
    with torch.no_grad(): z, ldj = layer(x)   # eager first (also runs any data-dependent init)
    compiled = torch.compile(layer, backend='aot_eager')
    z2, ldj2 = compiled(x.clone().requires_grad_(True))
    torch.testing.assert_close(z2, z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ldj2, ldj, atol=1e-5, rtol=1e-5)
    (z2.square().sum() - ldj2.sum()).backward()   # and it trains
