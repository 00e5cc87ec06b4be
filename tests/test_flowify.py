"""Flowified layers: equivalence with the torch layers they came from, exactness flags, inverses, bounds, bad input."""
import io
import pytest
import torch
from torch import nn
from hypothesis import given, strategies as st

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import FlowLinear, FlowConv2d, PReLU, Flatten, flowify, use_noise_mean
from flownb.flowify_linear import BlockHouseholder, ORTHOGONAL_MAPS
from flownb.checks import check_inverse, check_logdet, check_normalized


@given(d_in=st.integers(1, 12), d_out=st.integers(1, 12), batch=st.integers(1, 6), bias=st.booleans())
def test_flowlinear_reproduces_linear(d_in, d_out, batch, bias):
    torch.manual_seed(d_in * 13 + d_out)
    linear = nn.Linear(d_in, d_out, bias=bias).double()
    layer = use_noise_mean(FlowLinear.from_linear(linear))
    x = torch.randn(batch, d_in, dtype=torch.float64)
    with torch.no_grad():
        z, ldj = layer(x)
        torch.testing.assert_close(z, linear(x), atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(layer.weight, linear.weight, atol=1e-9, rtol=1e-9)
    assert ldj.shape == (batch,) and torch.isfinite(ldj).all()
    assert layer.exact == (d_in >= d_out)


@given(d_in=st.integers(1, 8), d_out=st.integers(1, 8))
def test_flowlinear_round_trips_by_kind(d_in, d_out):
    torch.manual_seed(d_in + 7 * d_out)
    layer = FlowLinear(d_in, d_out, hidden_features=8).double()
    with torch.no_grad(): layer.svd.log_s.normal_()
    x = torch.randn(5, d_in, dtype=torch.float64)
    check_inverse(layer, x)   # right inverse (reducing), left inverse (increasing), both (equal)
    if d_in == d_out: check_logdet(layer, x)


@pytest.mark.parametrize('case', [
    dict(in_channels=1, out_channels=3, kernel_size=2, stride=2),
    dict(in_channels=2, out_channels=5, kernel_size=3, stride=1, padding=1),
    dict(in_channels=3, out_channels=2, kernel_size=3, stride=2),
    dict(in_channels=2, out_channels=8, kernel_size=(1, 2), stride=(1, 2), padding=(0, 1)),
    dict(in_channels=1, out_channels=1, kernel_size=1, bias=False),
])
@pytest.mark.parametrize('size', [(5, 5), (6, 7)])
def test_flowconv_reproduces_conv(case, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(**case).double()
    layer = use_noise_mean(FlowConv2d.from_conv2d(conv, input_size=size))
    x = torch.randn(3, case['in_channels'], *size, dtype=torch.float64)
    with torch.no_grad():
        z, ldj = layer(x)
        torch.testing.assert_close(z, conv(x), atol=1e-9, rtol=1e-9)
        assert layer.inverse(z).shape == x.shape
    assert ldj.shape == (3,) and torch.isfinite(ldj).all()


def test_flowconv_generative_steps_invert_exactly():
    "padding + overlap with a bijective kernel: inverse(forward(x)) == x for any noise draw"
    torch.manual_seed(0)
    layer = FlowConv2d(2, 18, kernel_size=3, stride=1, padding=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(layer.inverse(layer(x)[0]), x, atol=1e-9, rtol=1e-9)
    assert not layer.exact


def test_flowconv_exact_bijection_logdet():
    torch.manual_seed(0)
    layer = FlowConv2d(2, 8, kernel_size=2, stride=2).double()
    with torch.no_grad(): layer.svd.log_s.normal_()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert layer.exact
    check_inverse(layer, x); check_logdet(layer, x)


def test_reducing_linear_flow_is_normalized_in_2d():
    torch.manual_seed(3)
    layer = FlowLinear(2, 1, hidden_features=8).double()
    with torch.no_grad():
        for p in layer.dropped.parameters(): p.normal_(0, 0.3)
    report = check_normalized(Flow(StandardNormal(1), layer).double(), -8, 8, n=400)
    assert abs(report.measured - 1) < 0.01


def test_flowified_network_state_dict_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 2, stride=2), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(16, 4))
    flow = flowify(net, input_shape=(1, 4, 4))
    copy = flowify(nn.Sequential(nn.Conv2d(1, 4, 2, stride=2), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(16, 4)), input_shape=(1, 4, 4))
    copy.load_state_dict(flow.state_dict())
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        a, b = flow(x), copy(x)
        torch.testing.assert_close(a[0], b[0]); torch.testing.assert_close(a[1], b[1])
    # whole-module pickling is refused by torch for parametrized modules (orthogonal U, V); state_dict is the path
    buf = io.BytesIO(); torch.save(flow.state_dict(), buf); buf.seek(0)
    copy.load_state_dict(torch.load(buf))
    with torch.no_grad(): torch.testing.assert_close(copy(x)[0], a[0])


@given(d=st.integers(1, 40), block=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_block_householder_is_orthogonal_and_loads_any_orthogonal_matrix(d, block, seed):
    torch.manual_seed(seed)
    q = BlockHouseholder(d, block).double()
    with torch.no_grad(): q.vectors.mul_(torch.rand(1, max(d - 1, 0), dtype=torch.float64) * 3 + 0.01)   # norms do not matter
    Q = q.weight
    torch.testing.assert_close(Q.T @ Q, torch.eye(d, dtype=torch.float64), atol=1e-12, rtol=0)
    x = torch.randn(4, d, dtype=torch.float64)
    torch.testing.assert_close(q.right_t(x), x @ Q.T, atol=1e-12, rtol=0)
    target = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
    if seed % 3 == 0: target = torch.eye(d, dtype=torch.float64)[torch.randperm(d)]   # permutations: QR steps with no reflection
    torch.testing.assert_close(q.load(target).weight, target, atol=1e-12, rtol=0)


@given(d=st.integers(2, 40), block=st.integers(1, 9), rows=st.integers(0, 60), seed=st.integers(0, 2**16))
def test_hand_written_backward_matches_autograd(d, block, rows, seed):
    "Whatever the sizes (one block or many, a ragged last one, no rows, more rows than d so that Q is formed), the hand-written derivatives are autograd's"
    torch.manual_seed(seed)
    q = BlockHouseholder(d, block).double()
    with torch.no_grad(): q.vectors.add_(torch.randn_like(q.vectors) * 0.5)
    x = torch.randn(rows, d, dtype=torch.float64, requires_grad=True)
    cotangents = torch.randn(2, rows, d, dtype=torch.float64)
    results = []
    for hand_written in (True, False):
        q.hand_written_backward = hand_written
        loss = (q.right(x) * cotangents[0]).sum() + (q.right_t(x) * cotangents[1]).sum()
        results.append((loss, *torch.autograd.grad(loss, (x, q.vectors))))
    for a, b in zip(*results): torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_hand_written_backward_gives_per_sample_gradients_under_torch_func():
    "vmap(grad(...)) through the reflections (per-sample gradients, as DP-SGD needs them) agrees with one backward per sample"
    torch.manual_seed(0)
    layer = nn.Module()
    layer.q = BlockHouseholder(200).double()                              # four blocks: the hand-written path
    layer.forward = lambda x: layer.q.right(x)
    c, x = torch.randn(200, dtype=torch.float64), torch.randn(5, 200, dtype=torch.float64)
    def loss(vectors, row):
        return (torch.func.functional_call(layer, {'q.vectors': vectors, 'q.signs': layer.q.signs}, (row[None],)) * c).sum()
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(layer.q.vectors.detach(), x)
    for row, g in zip(x, per_sample):
        layer.q.vectors.grad = None
        (layer.q.right(row[None]) * c).sum().backward()
        torch.testing.assert_close(g, layer.q.vectors.grad, atol=1e-10, rtol=1e-10)


def test_orthogonal_map_choices():
    x = torch.randn(6, 5, dtype=torch.float64)
    linear = nn.Linear(5, 3).double()
    outs = [use_noise_mean(FlowLinear.from_linear(linear, orthogonal_map=m))(x)[0] for m in ORTHOGONAL_MAPS]
    for out in outs: torch.testing.assert_close(out, linear(x).detach(), atol=1e-9, rtol=0)   # every map reproduces the layer
    with pytest.raises(ValueError, match="orthogonal_map must be one of 'blocked_householder', 'cayley'"): FlowLinear(3, 2, orthogonal_map='qr')


def test_flowify_bad_input_and_unsupported():
    with pytest.raises(TypeError, match=r'layer 1 \(ReLU\): ReLU is not injective'): flowify(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(TypeError, match='Dropout'): flowify(nn.Sequential(nn.Dropout()))
    with pytest.raises(TypeError, match='ActNorm'): flowify(nn.Sequential(nn.BatchNorm1d(3)))
    with pytest.raises(TypeError, match='flownb.surjections.MaxPool2d'): flowify(nn.Sequential(nn.MaxPool2d(2)))
    with pytest.raises(TypeError, match='attention'): flowify(nn.Sequential(nn.MultiheadAttention(4, 2)))
    with pytest.raises(TypeError, match='dilation'): flowify(nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2)))
    with pytest.raises(TypeError, match='only nn.Flatten\\(\\) of all non-batch dims'): flowify(nn.Sequential(nn.Flatten(2)))
    with pytest.raises(ValueError, match=r'FlowLinear\(3→2\): expected input \(batch, 3\), got \(4, 2\)'): FlowLinear(3, 2)(torch.randn(4, 2))
    with pytest.raises(ValueError, match='non-finite'): FlowLinear(2, 2)(torch.tensor([[float('nan'), 0.0]]))
    with pytest.raises(TypeError, match='floating-point'): FlowConv2d(1, 1, 1)(torch.zeros(1, 1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='smaller than the kernel'): FlowConv2d(1, 1, 4)(torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match='positive'): FlowConv2d(1, 1, 0)
    with pytest.raises(ValueError, match='init must be > 0'): PReLU(2, init=0.0)
    with pytest.raises(ValueError, match='input_shape'): Flatten().inverse(torch.zeros(2, 4))
