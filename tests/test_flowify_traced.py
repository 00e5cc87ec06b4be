"""flowify beyond nn.Sequential (issue 20): traced modules, the new layers (BatchNorm, AvgPool2d, Dropout, ELU, Tanh,
Sigmoid, ReLU replaced), the input shape read from the first Linear, init='orthogonal', and every refusal naming its
node and its reason.

Equivalence tests run in float64 with the noise at its mean and compare with the module to 1e-10: each weight is
rebuilt from its SVD to ~1e-15 relative, and the margin covers a few dozen float64 operations on O(1) values.
"""
import math
import warnings
import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F
from torch import nn
from hypothesis import given, settings, strategies as st

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import flowify, use_noise_mean, FlowConv2d, Tanh, Sigmoid, ELU
from flownb.checks import check_normalized
from flownb.bijections import RQSpline

F64 = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)


def _stats(bn, seed=0):
    "Give a BatchNorm trained-looking running statistics and affine weights (one negative gamma)"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 2 + 0.3)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=g)); bn.weight[0] = -abs(bn.weight[0]) - 0.1
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.num_batches_tracked += 5
    return bn


class Functional(nn.Module):
    "A classifier written with functional calls, tensor methods and views"
    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(4, 1, 2, 2)), nn.Parameter(torch.randn(4))
        self.w2 = nn.Parameter(torch.randn(6, 16) / 4)
        self.slope = nn.Parameter(torch.full((4,), 0.3))

    def forward(self, x):
        batch = x.size(0)
        x = F.conv2d(x, self.w1, self.b1, stride=2)            # 4 × 4 × 4
        x = F.prelu(x, self.slope)
        x = F.avg_pool2d(x, kernel_size=2)                      # 4 × 2 × 2
        x = F.dropout(x, 0.5, training=False)
        x = x.contiguous().view(batch, -1)                      # 16
        x = F.leaky_relu(F.linear(x, self.w2 * 2), 0.2)         # 6
        x = x.reshape(-1, 6).view(x.shape[0], 1, 2, 3)          # unflatten
        x = torch.flatten(x, 1).flatten(1)
        return torch.sigmoid(x)


class Block(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__(); self.fc, self.act = nn.Linear(d_in, d_out), nn.PReLU(d_out, init=0.5)
    def forward(self, x): return self.act(self.fc(x))


class Nested(nn.Module):
    "Custom blocks, a Sequential inside, and a subclass of nn.Linear (traced into its F.linear)"
    class MyLinear(nn.Linear): pass
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Block(6, 5), nn.BatchNorm1d(5), Block(5, 4))
        self.head = Nested.MyLinear(4, 3)
    def forward(self, x): return F.elu(self.head(self.body(x)), 0.7)


class WithTransform(nn.Module):
    "A flownb transform used inside a forward, as a flow uses it: its z is [0]"
    def __init__(self):
        super().__init__(); self.fc, self.spline = nn.Linear(4, 3), RQSpline(3, bins=4)
    def forward(self, x): return self.spline(F.leaky_relu(self.fc(x)))[0]


# name -> (module builder, input shape of one sample, flowify options, expected exactness)
CASES = {
    'BatchNorm1d': (lambda: nn.Sequential(nn.Linear(5, 4), _stats(nn.BatchNorm1d(4)), nn.LeakyReLU(0.2)), (5,), {}, True),
    'BatchNorm1d-no-affine': (lambda: nn.Sequential(_stats(nn.BatchNorm1d(5, affine=False)), nn.Linear(5, 3)), (5,), {}, True),
    'BatchNorm2d': (lambda: nn.Sequential(nn.Conv2d(1, 3, 2, stride=2), _stats(nn.BatchNorm2d(3))), (1, 6, 6), {}, True),
    'Conv2d-AvgPool2d': (lambda: nn.Sequential(nn.Conv2d(1, 3, 1), nn.AvgPool2d(2)), (1, 6, 6), {}, False),   # the conv widens: a bound
    'AvgPool2d-alone': (lambda: nn.Sequential(nn.AvgPool2d(2)), (2, 4, 6), {}, True),
    'AvgPool2d-rectangular-gaps': (lambda: nn.Sequential(nn.AvgPool2d((1, 2), stride=(2, 3))), (2, 5, 7), {}, True),
    'AvgPool2d-overlap-padded': (lambda: nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1)), (2, 5, 5), {}, False),
    'AvgPool2d-divisor': (lambda: nn.Sequential(nn.AvgPool2d(2, divisor_override=3)), (1, 4, 4), {}, True),
    'Dropout-identity': (lambda: nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.LeakyReLU(0.1), nn.Dropout1d(0.2)), (4,), {'dropout': 'identity'}, True),
    'Dropout2d-identity': (lambda: nn.Sequential(nn.Conv2d(2, 2, 1), nn.Dropout2d(0.3)), (2, 3, 3), {'dropout': 'identity'}, True),
    'Identity-Unflatten-Flatten': (lambda: nn.Sequential(nn.Linear(8, 8), nn.Identity(), nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 4, 2, stride=2), nn.Flatten()), (8,), {}, True),
    'ELU-last': (lambda: nn.Sequential(nn.Linear(4, 3), nn.ELU(0.5)), (4,), {}, True),
    'Tanh-last-then-flatten': (lambda: nn.Sequential(nn.Conv2d(1, 2, 2, stride=2), nn.Tanh(), nn.Flatten()), (1, 4, 4), {}, True),
    'Sigmoid-last': (lambda: nn.Sequential(nn.Linear(4, 2), nn.Sigmoid()), (4,), {}, True),
    'traced-functional': (lambda: Functional(), (1, 8, 8), {'dropout': 'identity'}, True),
    'traced-nested': (lambda: _stats_in(Nested()), (6,), {}, True),
    'traced-in-sequential': (lambda: nn.Sequential(nn.Linear(6, 6), Block(6, 4), nn.Linear(4, 2)), (6,), {}, True),
    'traced-transform-leaf': (lambda: WithTransform(), (4,), {}, True),
    'traced-pad': (lambda: _Padded(), (1, 3, 3), {}, False),
}


def _stats_in(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d): _stats(m)
    return module


class _Padded(nn.Module):
    def __init__(self): super().__init__(); self.conv = nn.Conv2d(1, 2, 2, stride=2)
    def forward(self, x): return F.leaky_relu(self.conv(F.pad(x, (0, 1, 0, 1))), 0.3)


def _reference(module):
    "What the flow must compute: the module in eval mode (dropout the identity, batch norms with running statistics)"
    return module.eval()


@pytest.mark.parametrize('name', list(CASES))
def test_accepted_kind_computes_what_the_module_computes(name):
    builder, shape, options, exact = CASES[name]
    torch.manual_seed(0)
    module = builder().to(F64).eval()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)   # a network without weights (a pool alone) is flowified in the default dtype
    try: flow = use_noise_mean(flowify(module, input_shape=shape, **options))
    finally: torch.set_default_dtype(previous)
    assert flow.exact is exact, f"{name}: exact={flow.exact}, expected {exact}"
    x = torch.randn(4, *shape, dtype=F64)
    with torch.no_grad():
        z, ldj = flow(x)
        torch.testing.assert_close(z, _reference(module)(x), **TOL)
        assert ldj.shape == (4,) and torch.isfinite(ldj).all()
        assert flow.inverse(z).shape == x.shape   # every shape restored: input_shape given


@pytest.mark.parametrize('name', ['BatchNorm1d', 'AvgPool2d-alone', 'ELU-last', 'traced-functional', 'traced-nested'])
def test_accepted_kind_in_float32(name):
    "float32 networks flowify to float32 layers and agree with the module to float32 rounding (1e-4 on O(1) values)"
    builder, shape, options, _ = CASES[name]
    torch.manual_seed(0)
    module = builder().eval()
    flow = use_noise_mean(flowify(module, input_shape=shape, **options))
    x = torch.randn(4, *shape)
    with torch.no_grad(): torch.testing.assert_close(flow(x)[0], module(x), atol=1e-4, rtol=1e-4)


def test_relu_replaced_by_leaky_relu_with_a_warning():
    torch.manual_seed(0)
    class Net(nn.Module):
        def __init__(self): super().__init__(); self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
        def forward(self, x): return self.b(F.relu(self.a(x)).relu())
    net = Net().double()
    with pytest.warns(UserWarning, match=r'replaced 2 ReLU\(s\) \(node relu, node relu_1\) by LeakyReLU\(0.05\).*different function'):
        flow = flowify(net, relu_slope=0.05)
    x = torch.randn(16, 4, dtype=F64)
    leaky = lambda v: F.leaky_relu(v, 0.05)
    with torch.no_grad():
        torch.testing.assert_close(flow(x)[0], net.b(leaky(leaky(net.a(x)))), **TOL)
        assert not torch.allclose(flow(x)[0], net(x))   # the function did change


def test_batchnorm_in_training_mode_is_frozen_with_a_warning_and_the_probe_leaves_it_alone():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3).double()
    norm(torch.randn(8, 3, 4, 4, dtype=F64) * 2 + 1)          # one training step
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    net = nn.Sequential(nn.Conv2d(1, 3, 1).double(), norm)
    with pytest.warns(UserWarning, match=r'layer 1 is in training mode, where BatchNorm normalizes each batch by its own statistics; the flow uses the running statistics, frozen'):
        flow = use_noise_mean(flowify(net, input_shape=(1, 4, 4)))
    assert norm.training and all(torch.equal(state[k], v) for k, v in norm.state_dict().items())   # the probe never ran it
    x = torch.randn(5, 1, 4, 4, dtype=F64)
    with torch.no_grad(): torch.testing.assert_close(flow(x)[0], net.eval()(x), **TOL)


def test_batchnorm_in_eval_mode_and_untrained_with_orthogonal_init_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        flowify(nn.Sequential(nn.Linear(3, 3), _stats(nn.BatchNorm1d(3)).eval()))
        flow = flowify(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), init='orthogonal')   # untrained, training mode
    torch.testing.assert_close(flow[1].scale.detach(), torch.full((3,), 1 / math.sqrt(1 + 1e-5)))   # the identity start


def test_dropout_probe_does_not_touch_the_random_stream():
    "A Dropout in training mode would draw a mask if the shape probe ran it: the stream after flowify is as without it"
    draws = []
    for middle in (nn.Dropout(0.5), nn.Identity()):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 4), middle, nn.Linear(4, 2))
        torch.manual_seed(1)
        flowify(net, input_shape=(4,), dropout='identity')
        draws.append(torch.rand(1))
    assert torch.equal(*draws)


# ---------------------------------------------------------------- exactness: normalisation on a grid
class _Chain2D(nn.Module):
    "2-D points through a traced chain of new kinds: view, avg pool (the difference dropped), flatten, batch norm, linear"
    def __init__(self): super().__init__(); self.norm, self.fc = nn.BatchNorm1d(1), nn.Linear(1, 1)
    def forward(self, x):
        x = F.avg_pool2d(x.view(x.size(0), 1, 1, 2), (1, 2)).flatten(1)
        return self.fc(self.norm(x))


def test_traced_chain_of_new_kinds_is_exact_and_normalised():
    torch.manual_seed(0)
    net = _Chain2D().double().eval()
    with torch.no_grad(): net.norm.running_mean.fill_(0.4); net.norm.running_var.fill_(2.0); net.norm.weight.fill_(-1.3); net.fc.weight.fill_(0.8)
    flow = Flow(StandardNormal(1), flowify(net, input_shape=(2,))).double()
    with torch.no_grad():
        for p in flow.transform[1].dropped.parameters(): p.add_(torch.randn_like(p) * 0.1)
    assert flow.exact
    # a smooth density: the midpoint rule on 300² cells over [-10, 10]² is accurate to ~1e-10 here; 1e-4 leaves margin
    report = check_normalized(flow, -10, 10, n=300, tol=1e-4)
    assert abs(report.measured - 1) < 1e-4


@pytest.mark.parametrize('t,mass', [(Tanh(), lambda P: 2 * P(1) - 1), (Sigmoid(), lambda P: P(1) - P(0)), (ELU(0.6), lambda P: P(0.6))])
def test_bounded_activation_exact_on_its_range(t, mass):
    "With a N(0, 1) base the density integrates to the base's mass on the range (exact ldj); with a uniform base to one"
    P = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))
    with pytest.warns(UserWarning, match=r'maps onto .*integrates to less than 1'): gap = Flow(StandardNormal(1), [t]).double()
    assert not gap.exact                                 # the base overhangs the range: log_prob is a lower bound
    report = check_normalized(gap, -40, 40, n=8000, raise_on_fail=False)
    assert abs(report.measured - mass(P)) < 1e-4, (report.measured, mass(P))   # cells of 0.01 on a smooth density (ELU's jump at 0 on an edge)
    if isinstance(t, Sigmoid):
        unit = D.Independent(D.Uniform(torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)), 1)
        on_range = Flow(unit, [t])
        assert on_range.exact                           # a base on (0, 1): no gap
        assert abs(check_normalized(on_range, -40, 40, n=8000, tol=1e-4).measured - 1) < 1e-4


# ---------------------------------------------------------------- the input shape
def test_input_shape_read_from_the_first_linear():
    torch.manual_seed(0)
    mlp = nn.Sequential(_stats(nn.BatchNorm1d(6)).eval(), nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Unflatten(1, (2, 2, 2)),
                        nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(3), nn.Flatten())
    flow = Flow(StandardNormal(2), flowify(mlp))       # no input_shape: the pad and the pool need the channels
    assert flow.sample(3).shape == (3, 6)
    class Functional(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.randn(4, 5))
        def forward(self, x): return F.linear(x, self.w).view(-1, 1, 2, 2)
    assert Flow(StandardNormal((1, 2, 2)), flowify(Functional())).sample(2).shape == (2, 5)


def test_without_a_readable_shape_log_prob_works_and_sampling_asks_for_input_shape():
    net = nn.Sequential(nn.Conv2d(1, 4, 2, stride=2), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(16, 4))
    flow = Flow(StandardNormal(4), flowify(net))
    assert flow.log_prob(torch.rand(3, 1, 4, 4)).shape == (3,)
    with pytest.raises(ValueError, match=r'event shape to restore is unknown.*input_shape'): flow.sample(2)
    flow = Flow(StandardNormal(4), flowify(net, input_shape=(1, 4, 4)))
    assert flow.sample(2).shape == (2, 1, 4, 4)


def test_a_shape_read_from_the_first_linear_that_does_not_fit_later_layers_is_left_as_before():
    "A network broken after its first layer flowifies as before (the error comes when it runs); a given shape is checked"
    flow = flowify(nn.Sequential(nn.Linear(6, 4), nn.Linear(5, 2)))
    with pytest.raises(ValueError, match=r'FlowLinear\(5→2\): expected input \(batch, 5\), got \(2, 4\)'): flow(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r'input_shape \(6,\) does not fit layer 1'): flowify(nn.Sequential(nn.Linear(6, 4), nn.Linear(5, 2)), input_shape=(6,))


# ---------------------------------------------------------------- init='orthogonal'
@settings(max_examples=20, deadline=None)
@given(d_in=st.integers(1, 9), d_out=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_orthogonal_init_gives_the_nearest_semi_orthogonal_weight(d_in, d_out, seed):
    torch.manual_seed(seed)
    linear = nn.Linear(d_in, d_out).double()
    before = linear.weight.detach().clone()
    layer = use_noise_mean(flowify(linear, init='orthogonal'))[0]
    u, s, vh = torch.linalg.svd(before, full_matrices=False)
    torch.testing.assert_close(layer.weight.detach(), u @ vh, atol=1e-10, rtol=0)          # U Vᵀ: every singular value 1
    assert layer.bias.abs().max() == 0 and layer.svd.log_s.abs().max() == 0
    assert torch.equal(linear.weight, before)                                             # the module is untouched
    x = torch.randn(3, d_in, dtype=F64)
    with torch.no_grad(): torch.testing.assert_close(layer(x)[0], x @ (u @ vh).T, **TOL)


def test_orthogonal_init_reaches_conv_and_traced_layers_but_not_average_pools():
    torch.manual_seed(0)
    flow = flowify(Functional(), input_shape=(1, 8, 8), init='orthogonal', dropout='identity')
    convs = [t for t in flow if isinstance(t, FlowConv2d)]
    assert convs[0].svd.log_s.abs().max() == 0 and convs[0].svd.bias.abs().max() == 0
    torch.testing.assert_close(convs[1].svd.log_s.detach(), torch.full((4,), -math.log(2.0)))   # the 2×2 pool: singular value 1/2


# ---------------------------------------------------------------- converters: max pooling from a later layer
def test_converter_hands_flowify_a_max_pool_surjection():
    from flownb.surjections import MaxPool2d
    calls = []
    def max_pool(pool, shape):
        calls.append(shape)
        return MaxPool2d(shape[0], pool.kernel_size, hidden_features=4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).double()
    flow = use_noise_mean(flowify(net, input_shape=(2, 4, 4), converters={nn.MaxPool2d: max_pool}).double())
    assert calls == [(2, 4, 4)] and flow.exact
    x = torch.randn(5, 2, 4, 4, dtype=F64)
    with torch.no_grad(): torch.testing.assert_close(flow(x)[0], net(x), **TOL)


# ---------------------------------------------------------------- refusals: each names the node (or layer) and the reason
class _Residual(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(4, 4)
    def forward(self, x): return x + self.fc(x)

class _Concat(nn.Module):
    def __init__(self): super().__init__(); self.fc, self.out = nn.Linear(4, 4), nn.Linear(8, 2)
    def forward(self, x):
        h = F.leaky_relu(self.fc(x))
        return self.out(torch.cat([h, h * 2], 1))

class _Square(nn.Module):
    def forward(self, x): return x * x

class _TwoInputs(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(4, 4)
    def forward(self, x, y): return self.fc(x) + y

class _TwoOutputs(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(4, 4)
    def forward(self, x): return (self.fc(x),)

class _ControlFlow(nn.Module):
    def forward(self, x): return x if x.sum() > 0 else -x

class _MixesBatch(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(8, 2)
    def forward(self, x): return self.fc(x.view(2, -1))

class _Calls(nn.Module):
    def __init__(self, fn): super().__init__(); self.fn = fn
    def forward(self, x): return self.fn(x)

class _TanhInside(nn.Module):
    def __init__(self): super().__init__(); self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)
    def forward(self, x): return self.b(torch.tanh(self.a(x)))

class _TransformWithoutIndex(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(3, 3); self.act = __import__('flownb').LeakyReLU(0.1)
    def forward(self, x): return self.act(self.fc(x))


REFUSALS = {
    'residual': (lambda: flowify(_Residual()), TypeError, r'node x: its value feeds 2 nodes \(fc, add\), which meet again at node add \(operator.add\).*sum of two paths has no tractable inverse'),
    'concatenation': (lambda: flowify(_Concat()), TypeError, r'node leaky_relu: its value feeds 2 nodes \((mul, cat|cat, mul)\), which meet again at node cat \(torch.cat\)'),
    'value-used-twice': (lambda: flowify(_Square()), TypeError, r'node mul \(operator.mul\): it reads x and x, two paths that meet'),
    'residual-in-sequential': (lambda: flowify(nn.Sequential(nn.Linear(4, 4), _Residual())), TypeError, r'layer 1 \(_Residual\), node x: its value feeds 2 nodes'),
    'two-inputs': (lambda: flowify(_TwoInputs()), TypeError, r'_TwoInputs.forward reads 2 inputs \(x, y\); a flow maps one tensor'),
    'tuple-output': (lambda: flowify(_TwoOutputs()), TypeError, r'_TwoOutputs.forward returns a tuple; a flow has one output tensor'),
    'control-flow': (lambda: flowify(_ControlFlow()), TypeError, r'torch.fx could not trace _ControlFlow: TraceError.*no Python control flow on tensor values'),
    'view-mixes-batch': (lambda: flowify(_MixesBatch()), TypeError, r'node view \(Tensor.view\): it reshapes to \(2, -1\), whose first dimension is not the batch'),
    'unsupported-function': (lambda: flowify(_Calls(F.gelu)), TypeError, r'node gelu \(F.gelu\): F.gelu has no flowified counterpart; supported calls: F.linear'),
    'relu-function': (lambda: flowify(_Calls(torch.relu)), TypeError, r'node relu \(torch.relu\): ReLU is not injective.*relu_slope'),
    'relu-method': (lambda: flowify(_Calls(lambda x: x.relu())), TypeError, r'node relu \(Tensor.relu\): ReLU is not injective'),
    'dropout-function': (lambda: flowify(_Calls(lambda x: F.dropout(x, 0.1))), TypeError, r"node dropout \(F.dropout\): dropout zeroes random units in training mode and is the identity in eval mode; pass dropout='identity'"),
    'flatten-batch-too': (lambda: flowify(_Calls(torch.flatten)), TypeError, r'node flatten \(torch.flatten\) flattens dims 0..-1; only nn.Flatten\(\) of all non-batch dims'),
    'max-pool-function': (lambda: flowify(_Calls(lambda x: F.max_pool2d(x, 2)), input_shape=(1, 4, 4)), TypeError, r"node max_pool2d \(F.max_pool2d\): max pooling is a surjection.*07_surjections.*converters=\{nn.MaxPool2d"),
    'max-pool-layer': (lambda: flowify(nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2))), TypeError, r"layer 1 \(MaxPool2d\): max pooling is a surjection whose inverse must sample the entries below each maximum"),
    'tanh-inside': (lambda: flowify(_TanhInside()), TypeError, r'node tanh \(torch.tanh\) inside the network: it maps onto \(-1, 1\), but node b \(Linear\) comes after it.*integrate to less than one'),
    'sigmoid-then-layer': (lambda: flowify(nn.Sequential(nn.Sigmoid(), nn.Flatten(), nn.LeakyReLU(0.1))), TypeError, r'layer 0 \(Sigmoid\) inside the network: it maps onto \(0, 1\), but layer 2 \(LeakyReLU\) comes after it'),
    'elu-inside': (lambda: flowify(nn.Sequential(nn.Linear(3, 3), nn.ELU(), nn.Linear(3, 1))), TypeError, r'layer 1 \(ELU\) inside the network: it maps onto \(-1, ∞\)'),
    'elu-negative-alpha': (lambda: flowify(nn.Sequential(nn.ELU(alpha=-1.0))), TypeError, r'layer 0 \(ELU\(alpha=-1.0\)\) has alpha=-1.0; only alpha > 0 is invertible'),
    'batchnorm-no-statistics': (lambda: flowify(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False))), TypeError, r'layer 0 \(BatchNorm1d\): it has no running statistics \(track_running_stats=False\).*ActNorm'),
    'batchnorm-never-run': (lambda: flowify(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))), TypeError, r"layer 1 \(BatchNorm1d\): it is in training mode and has never seen a batch \(num_batches_tracked=0\).*init='orthogonal'.*ActNorm"),
    'batchnorm-zero-weight': (lambda: flowify(nn.Sequential(_zero_gamma(nn.BatchNorm1d(3)).eval())), TypeError, r'layer 0 \(BatchNorm1d\): .*weight 0 on channel\(s\) \[1\].*not invertible'),
    'avgpool-ceil-mode': (lambda: flowify(nn.AvgPool2d(2, ceil_mode=True), input_shape=(1, 5, 5)), TypeError, r'layer 0 \(AvgPool2d.*\): ceil_mode=True averages the partial windows'),
    'avgpool-exclude-pad': (lambda: flowify(nn.AvgPool2d(3, 1, 1, count_include_pad=False), input_shape=(1, 5, 5)), TypeError, r'count_include_pad=False the border windows divide by fewer pixels'),
    'avgpool-no-shape': (lambda: flowify(nn.Sequential(nn.Conv2d(1, 2, 1), nn.AvgPool2d(2))), TypeError, r'layer 1 \(AvgPool2d.*\) needs the number of channels: call flowify\(module, input_shape=...\)'),
    'view-needs-shape': (lambda: flowify(_Calls(lambda x: x.view(x.size(0), 2, -1))), TypeError, r'node view \(Tensor.view\) reshapes each sample to \(2, -1\), but its input shape is unknown'),
    'view-batch-dependent': (lambda: flowify(_Calls(lambda x: x.view(-1, x.size(0))), input_shape=(4,)), TypeError, r'node view \(Tensor.view\): it reshapes to \(-1, size\), whose sizes after the first depend on the batch size'),
    'transform-without-index': (lambda: flowify(_TransformWithoutIndex()), TypeError, r'node act \(LeakyReLU\) is a flownb transform, which returns \(z, ldj\): write self.act\(x\)\[0\]'),
    'bad-init': (lambda: flowify(nn.Linear(2, 2), init='xavier'), ValueError, r"init must be 'keep' or 'orthogonal', got 'xavier'"),
    'bad-relu-slope': (lambda: flowify(nn.Linear(2, 2), relu_slope=0.0), ValueError, r'relu_slope must be a finite number > 0, got 0.0'),
    'bad-dropout': (lambda: flowify(nn.Linear(2, 2), dropout='scale'), ValueError, r"dropout must be None \(refuse\) or 'identity', got 'scale'"),
    'bad-converters': (lambda: flowify(nn.Linear(2, 2), converters={'Linear': print}), TypeError, r'converters must be a dict \{module class: function'),
    'converter-returns-module': (lambda: flowify(nn.Sequential(nn.MaxPool2d(2)), converters={nn.MaxPool2d: lambda m, s: nn.Identity()}), TypeError, r'the converter for MaxPool2d returned a Identity for layer 0; expected a flownb Transform'),
}


def _zero_gamma(bn):
    with torch.no_grad(): bn.weight[1] = 0.0
    return bn


@pytest.mark.parametrize('name', list(REFUSALS))
def test_refusal_names_the_node_and_the_reason(name):
    call, error, message = REFUSALS[name]
    with pytest.raises(error, match=message): call()


def test_sequential_behaves_as_before():
    "Networks flowify accepted before give the same layer types and outputs (the old notebook's examples)"
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 4), nn.LeakyReLU(0.2), nn.Sequential(nn.Linear(4, 4), nn.PReLU(4)), nn.Linear(4, 2)).double()
    flow = flowify(mlp)
    assert [type(t).__name__ for t in flow] == ['FlowLinear', 'LeakyReLU', 'FlowLinear', 'PReLU', 'FlowLinear']
    x = torch.randn(5, 6, dtype=F64)
    with torch.no_grad(): torch.testing.assert_close(flow(x)[0], mlp(x), **TOL)
