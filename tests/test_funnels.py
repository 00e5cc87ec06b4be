"""Funnels beyond the notebook: random shapes against brute force, normalization of a 4-D image funnel, and refusals."""
import math
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.funnels import CroppingConvFunnel, LinearFunnel, CouplingFunnel, StridedConvFunnel


def perturbed(module, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters(): p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


@given(c_in=st.integers(1, 3), drop=st.integers(0, 2), k=st.integers(1, 3), h=st.integers(0, 2), w=st.integers(0, 2),
       batch=st.integers(1, 3), seed=st.integers(0, 100))
def test_conv_funnel_logdet_and_solve_match_brute_force(c_in, drop, k, h, w, batch, seed):
    c_out = max(1, c_in - drop)
    if k == 1 and c_out == c_in: c_out = c_in - 1 if c_in > 1 else None
    if c_out is None: return
    H, W = h + k, w + k
    torch.manual_seed(seed)
    t = perturbed(CroppingConvFunnel(c_in, c_out, k, hidden_features=4), 0.3, seed).double()
    x = torch.randn(batch, c_in, H, W, dtype=torch.float64)
    z, ldj = t(x)
    assert z.shape == (batch, c_out, H - k + 1, W - k + 1) and ldj.shape == (batch,)
    n = z[0].numel()
    def out_of_kept(kept):
        full = x[:1].clone(); full[:, :c_out, k - 1:, k - 1:] = kept
        return F.conv2d(full, t.kernel(), t.bias)
    jac = torch.autograd.functional.jacobian(out_of_kept, x[:1, :c_out, k - 1:, k - 1:]).reshape(n, n)
    torch.testing.assert_close(torch.linalg.slogdet(jac)[1], t.log_diag.sum() * z.shape[2] * z.shape[3], atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(t._solve(z, x), x, atol=1e-8, rtol=1e-8)


@given(d_in=st.integers(2, 6), d_out=st.integers(1, 5), transform=st.sampled_from(['affine', 'spline']), seed=st.integers(0, 50))
def test_mlp_funnel_round_trips(d_in, d_out, transform, seed):
    if d_out >= d_in: return
    torch.manual_seed(seed)
    t = perturbed(CouplingFunnel(d_in, d_out, 8, transform=transform), 0.2, seed).double()
    x = torch.randn(5, d_in, dtype=torch.float64)
    z, ldj = t(x)
    assert torch.isfinite(ldj).all()
    torch.testing.assert_close(t(t.inverse(z))[0], z, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(t._g(z, x[:, d_out:], None, inverse=True)[0], x[:, :d_out], atol=1e-9, rtol=1e-9)


@given(c=st.integers(1, 3), kh=st.integers(1, 3), kw=st.integers(1, 3), ph=st.integers(1, 3), pw=st.integers(1, 3),
       batch=st.integers(1, 3), seed=st.integers(0, 100))
def test_strided_conv_funnel_matches_the_strided_convolution_and_brute_force(c, kh, kw, ph, pw, batch, seed):
    "Any patch shape and patch grid: the output is F.conv2d with stride = kernel, the log-determinant that of the kept pixels"
    if kh * kw < 2: return
    torch.manual_seed(seed)
    t = perturbed(StridedConvFunnel(c, (kh, kw), hidden_features=8, num_layers=2), 0.3, seed).double()
    x = torch.randn(batch, c, ph * kh, pw * kw, dtype=torch.float64)
    z, ldj = t(x)
    assert z.shape == (batch, c, ph, pw) and ldj.shape == (batch,)
    torch.testing.assert_close(z, F.conv2d(x, t.kernel(), t.bias, stride=(kh, kw)), atol=1e-10, rtol=1e-10)
    def out_of_kept(kept):
        full = x[:1].clone(); full[:, :, kh - 1::kh, kw - 1::kw] = kept
        return F.conv2d(full, t.kernel(), t.bias, stride=(kh, kw))
    n = z[0].numel()
    jac = torch.autograd.functional.jacobian(out_of_kept, x[:1, :, kh - 1::kh, kw - 1::kw]).reshape(n, n)
    torch.testing.assert_close(torch.linalg.slogdet(jac)[1], torch.linalg.slogdet(t.tap_matrix())[1] * ph * pw, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(t._solve(z, t._patches(x)[:, t.dropped_index]), x, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(t(t.inverse(z))[0], z, atol=1e-8, rtol=1e-8)


@given(d_in=st.integers(2, 7), d_out=st.integers(1, 6), permute=st.booleans(), seed=st.integers(0, 50))
def test_linear_funnel_logdet_and_round_trip(d_in, d_out, permute, seed):
    if d_out >= d_in: return
    torch.manual_seed(seed)
    t = perturbed(LinearFunnel(d_in, d_out, 8, num_layers=1, permute=permute), 0.3, seed).double()
    x = torch.randn(4, d_in, dtype=torch.float64)
    z, ldj = t(x)
    kept, dropped = t.permutation[:d_out], t.permutation[d_out:]
    def out_of_kept(v):
        full = x[:1].clone(); full[:, kept] = v
        return t(full)[0]
    jac = torch.autograd.functional.jacobian(out_of_kept, x[:1, kept]).reshape(d_out, d_out)
    torch.testing.assert_close(ldj[:1], torch.linalg.slogdet(jac)[1] + t.dropped.log_prob(x[:1, dropped], z[:1], None), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(t(t.inverse(z))[0], z, atol=1e-9, rtol=1e-9)
    t.noise_mean = True
    x_back = t.inverse(z)
    torch.testing.assert_close(x_back[:, dropped], t.dropped.mean(z, None), atol=1e-12, rtol=1e-12)


def test_strided_conv_funnel_density_integrates_to_one_in_4d():
    "A 1×2×2 image through the paper's 2×2 funnel to one pixel: importance sampling over R^4 must give total mass 1"
    torch.manual_seed(0)
    flow = Flow(StandardNormal((1, 1, 1)), [perturbed(StridedConvFunnel(1, 2, hidden_features=8, num_layers=2), 0.1)]).double()
    q = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), 2.0)
    x = q.sample((400_000,))
    with torch.no_grad(): log_w = flow.log_prob(x.reshape(-1, 1, 2, 2)) - q.log_prob(x).sum(1)
    w = log_w.exp()
    mass, se = w.mean().item(), (w.std() / math.sqrt(len(w))).item()
    assert se < 0.01, se
    assert abs(mass - 1) < 4 * se + 0.005, (mass, se)


def test_conv_funnel_density_integrates_to_one_in_4d():
    "A 1×2×2 image funnelled to one pixel: importance sampling over R^4 must give total mass 1"
    torch.manual_seed(0)
    flow = Flow(StandardNormal((1, 1, 1)), [perturbed(CroppingConvFunnel(1, 1, 2, hidden_features=4), 0.1)]).double()
    q = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), 2.0)
    x = q.sample((400_000,))
    with torch.no_grad(): log_w = flow.log_prob(x.reshape(-1, 1, 2, 2)) - q.log_prob(x).sum(1)
    w = log_w.exp()
    mass, se = w.mean().item(), (w.std() / math.sqrt(len(w))).item()
    assert se < 0.01, se
    assert abs(mass - 1) < 4 * se + 0.005, (mass, se)


def test_funnels_refuse_to_increase_dimension():
    with pytest.raises(ValueError, match='a funnel reduces dimension'): CouplingFunnel(3, 3)
    with pytest.raises(ValueError, match='a funnel reduces dimension'): CroppingConvFunnel(1, 2, 3)
    with pytest.raises(ValueError, match='drops nothing'): CroppingConvFunnel(2, 2, 1)
    with pytest.raises(ValueError, match="transform must be 'affine' or 'spline'"): CouplingFunnel(3, 1, transform='cubic')
