"""What the contract checks before any layer's own code runs, for every registered layer: the input's dtype against
the layer's parameters, the context against what the layer reads, and the constructor's arguments. Each case here
used to fail deep inside torch (`mat1 and mat2 must have the same dtype`, a `cat` size error, `ZeroDivisionError`) or,
worse, not at all (an ignored context, an integer context, an infinite slope)."""
import pytest
import torch
import torch.nn.functional as F

from flownb.core import Flow, Bijection, context_features_of, validation
from flownb.distributions import StandardNormal, ConditionalNormal, mlp, conv_net
from flownb import bijections as B, surjections as S, funnels as FU, drf as DRF, flowify as FL
from flownb.checks import check_logdet
from layers import BIJECTIONS, SURJECTIONS, make_input, build_surjection


def _bijection(name):
    factory, kind = BIJECTIONS[name]
    torch.manual_seed(0)
    layer = factory(3)
    x = make_input(kind, 4, 3, torch.float32)
    with torch.no_grad(): z = layer(x)[0]   # data-dependent initialisation (ActNorm) happens here
    return layer, x, z


def _surjection(name):
    layer, x, _, _ = build_surjection(name, 4, torch.float32)
    with torch.no_grad(): z = layer(x)[0]
    return layer, x, z


LAYERS = [('bijection', n) for n in BIJECTIONS] + [('surjection', n) for n in SURJECTIONS]
IDS = [n for _, n in LAYERS]


def _layer(kind, name): return _bijection(name) if kind == 'bijection' else _surjection(name)


def _has_float_parameters(layer):
    return any(t.is_floating_point() for t in list(layer.parameters()) + list(layer.buffers()))


# ------------------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize('wrong', [torch.float64, torch.float16, torch.bfloat16], ids=['float64', 'float16', 'bfloat16'])
@pytest.mark.parametrize('kind,name', LAYERS, ids=IDS)
def test_wrong_dtype_names_the_layer_and_both_dtypes(kind, name, wrong):
    layer, x, z = _layer(kind, name)
    if not _has_float_parameters(layer):   # nothing to disagree with: the layer computes in the input's dtype
        with torch.no_grad(): out = layer(x.to(wrong))[0]
        assert out.dtype == wrong, f"{name}: a parameter-free layer changed the dtype {wrong} to {out.dtype}"
        return
    forward_input = x.to(wrong) if x.is_floating_point() else x
    if 'Dequantization' in name:   # reads integer levels of any dtype and converts them (casts_input)
        with torch.no_grad(): out = layer(x.to(wrong))[0]
        assert out.dtype == torch.float32
    else:
        with pytest.raises(TypeError, match=f"input has dtype {wrong} but the layer's parameters are torch.float32") as info:
            layer(forward_input)
        assert type(layer).__name__ in str(info.value), info.value
    with pytest.raises(TypeError, match=f"input has dtype {wrong} but the layer's parameters are torch.float32") as info:
        layer.inverse(z.to(wrong))
    assert '.inverse' in str(info.value) and type(layer).__name__ in str(info.value), info.value


def test_a_float64_batch_into_a_float32_flow_names_the_layer():
    flow = Flow(StandardNormal(4), [B.ActNorm(4), FL.FlowLinear(4, 4), B.AffineCoupling(4)])
    flow.log_prob(torch.randn(8, 4))
    with pytest.raises(TypeError, match=r"layer 0 \(ActNorm\): ActNorm\(4\): input has dtype torch.float64"):
        flow.log_prob(torch.randn(8, 4, dtype=torch.float64))
    flow.double()
    assert flow.log_prob(torch.randn(8, 4, dtype=torch.float64)).dtype == torch.float64   # converting the model is the fix


def test_autocast_mixed_dtypes_are_allowed():
    "Inside torch.autocast the activations are bf16 while the parameters stay float32: that is the point, not a mistake"
    flow = Flow(StandardNormal(6), [B.AffineCoupling(6, hidden_features=8), FL.FlowLinear(6, 6), B.AffineCoupling(6, swap=True)])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        lp = flow.log_prob(torch.randn(5, 6))
    assert torch.isfinite(lp).all()


def test_validation_off_skips_the_dtype_check():
    layer = B.ActNorm(2)
    layer(torch.randn(4, 2))
    with validation(False), pytest.raises(RuntimeError):   # torch's own error: the check is off, as asked
        B.AffineCoupling(2)(torch.randn(3, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ context
@pytest.mark.parametrize('kind,name', LAYERS, ids=IDS)
def test_unconditional_layers_refuse_a_context(kind, name):
    layer, x, z = _layer(kind, name)
    assert context_features_of(layer) == 0
    context = torch.ones(x.shape[0], 3)
    with pytest.raises(ValueError, match=r'built without one \(context_features=0\)') as info: layer(x, context)
    assert type(layer).__name__ in str(info.value)
    with pytest.raises(ValueError, match='built without one'): layer.inverse(z, context)
    with pytest.raises(ValueError, match='built without one'): layer(x, torch.ones(x.shape[0], 3, dtype=torch.long))


# every layer that can condition on a context, built for 3 context features, with an input maker
K = 3
def vec(d): return lambda b: torch.randn(b, d)
def img(c, h, w): return lambda b: torch.randn(b, c, h, w)

CONDITIONAL = {
    'AffineCoupling': (lambda: B.AffineCoupling(4, hidden_features=8, context_features=K), vec(4)),
    'AffineCoupling-conv': (lambda: B.AffineCoupling(2, hidden_features=4, conv=True, context_features=K), img(2, 4, 4)),
    'SplineCoupling': (lambda: B.SplineCoupling(4, hidden_features=8, context_features=K), vec(4)),
    'Slice': (lambda: S.Slice(4, 2, hidden_features=8, context_features=K), vec(4)),
    'Slice-conv': (lambda: S.Slice(3, 1, hidden_features=4, conv=True, context_features=K), img(3, 4, 4)),
    'Augment': (lambda: S.Augment(2, 4, hidden_features=8, context_features=K), vec(2)),
    'Abs': (lambda: S.Abs(3, hidden_features=8, context_features=K), vec(3)),
    'MaxPool2d': (lambda: S.MaxPool2d(2, 2, hidden_features=4, context_features=K), img(2, 4, 4)),
    'VAE': (lambda: S.VAE(4, 2, hidden_features=8, context_features=K), vec(4)),
    'FlowLinear-reduce': (lambda: FL.FlowLinear(5, 2, hidden_features=8, context_features=K), vec(5)),
    'FlowConv2d-reduce': (lambda: FL.FlowConv2d(2, 3, 2, stride=2, hidden_features=4, context_features=K), img(2, 4, 4)),
    'CouplingFunnel': (lambda: FU.CouplingFunnel(5, 2, hidden_features=8, context_features=K), vec(5)),
    'CroppingConvFunnel': (lambda: FU.CroppingConvFunnel(3, 2, 3, hidden_features=4, context_features=K), img(3, 5, 4)),
    'StridedConvFunnel': (lambda: FU.StridedConvFunnel(2, 2, hidden_features=8, context_features=K), img(2, 4, 4)),
    'LinearFunnel': (lambda: FU.LinearFunnel(5, 2, hidden_features=8, context_features=K), vec(5)),
    'LCMASplit': (lambda: DRF.LCMASplit(5, 2, hidden_features=8, context_features=K), vec(5)),
}


def _conditional(name, batch=6):
    torch.manual_seed(0)
    factory, make = CONDITIONAL[name]
    layer = factory()
    with torch.no_grad():
        for p in layer.parameters(): p.add_(torch.randn_like(p) * 0.1)
    x, c = make(batch), F.one_hot(torch.arange(batch) % K, K).float()
    with torch.no_grad(): z = layer(x, c)[0]
    return layer, x, c, z


@pytest.mark.parametrize('name', list(CONDITIONAL))
def test_conditional_layers_check_their_context(name):
    layer, x, c, z = _conditional(name)
    assert context_features_of(layer) == K
    n = x.shape[0]
    cases = [
        (c[:2], ValueError, f'the context has batch size 2 but the input has {n}'),
        (torch.ones(n, K + 1), ValueError, rf'expected a context of shape \(batch, {K}\), got \({n}, {K + 1}\)'),
        (torch.ones(n), ValueError, rf'expected a context of shape \(batch, {K}\)'),
        (torch.ones(n, K, dtype=torch.long), TypeError, 'floating-point context'),
        (c.clone().index_fill_(0, torch.tensor([1]), float('nan')), ValueError, 'non-finite'),
        ([[1.0] * K] * n, TypeError, 'context must be a torch.Tensor'),
    ]
    for bad, error, fragment in cases:
        with pytest.raises(error, match=fragment) as info: layer(x, bad)
        assert type(layer).__name__ in str(info.value), info.value
        with pytest.raises(error, match=fragment): layer.inverse(z, bad)
    with pytest.raises(ValueError, match='no context was given'): layer(x)


@pytest.mark.parametrize('name', list(CONDITIONAL))
def test_the_context_changes_the_likelihood(name):
    "A context that reaches the layer's networks changes its output or ldj (with weights away from their zero init)"
    layer, x, c, _ = _conditional(name)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters(): p.add_(torch.randn_like(p) * 0.3)
        S_ = (layer(x, c), layer(x, c.roll(1, 0)))
    (z0, l0), (z1, l1) = S_
    assert not (torch.allclose(z0, z1) and torch.allclose(l0, l1)), f"{name}: the context changes nothing"


def test_compose_and_flow_give_the_context_only_to_layers_that_read_it():
    flow = Flow(StandardNormal(2), [B.ActNorm(4), B.AffineCoupling(4, hidden_features=8, context_features=K), B.LeakyReLU(0.5),
                                    S.Slice(4, 2, hidden_features=8, context_features=K)])
    assert flow.context_features == K and context_features_of(flow.transform) == K
    x, c = torch.randn(6, 4), F.one_hot(torch.arange(6) % K, K).float()
    lp = flow.log_prob(x, c)
    assert torch.isfinite(lp).all() and flow.sample(context=c).shape == (6, 4)
    with pytest.raises(ValueError, match='Flow.log_prob: the context has batch size 2 but the input has 6'): flow.log_prob(x, c[:2])
    unconditional = Flow(StandardNormal(4), [B.ActNorm(4), B.LeakyReLU(0.5)])
    with pytest.raises(ValueError, match='Flow.log_prob: was given a context'): unconditional.log_prob(x, c)
    with pytest.raises(ValueError, match='Flow.sample: was given a context'): unconditional.sample(context=c)
    with pytest.raises(ValueError, match=r'Compose: was given a context'): unconditional.transform(x, c)


def test_a_users_layer_declares_its_context():
    "A layer of one's own reads a context once it says how wide it is; until then a context is refused, not ignored"
    class Shift(Bijection):
        def __init__(self, context_features=0):
            super().__init__(); self.context_features = context_features
            self.net = torch.nn.Linear(max(context_features, 1), 2)
        def forward(self, x, context=None):
            return x + (self.net(context) if self.context_features else 0), x.new_zeros(x.shape[0])
        def inverse(self, z, context=None): return z - (self.net(context) if self.context_features else 0)
    x, c = torch.randn(5, 2), torch.randn(5, 2)
    Shift(2)(x, c)
    with pytest.raises(ValueError, match='Shift: was given a context'): Shift()(x, c)


# ------------------------------------------------------------------------------------------------ constructors
INF, NAN = float('inf'), float('nan')
CONSTRUCTORS = [
    # (label, call, error fragment); every one raises ValueError naming the layer
    ('MaxPool2d(1, 0)', lambda: S.MaxPool2d(1, 0), 'MaxPool2d: kernel_height must be a positive integer, got 0'),
    ('MaxPool2d(1, -2)', lambda: S.MaxPool2d(1, -2), 'MaxPool2d: kernel_height must be a positive integer'),
    ('MaxPool2d(1, 1)', lambda: S.MaxPool2d(1, 1), 'MaxPool2d: a 1×1 window pools nothing'),
    ('MaxPool2d(0, 2)', lambda: S.MaxPool2d(0, 2), 'MaxPool2d: channels must be a positive integer, got 0'),
    ('MaxPool2d(1, (2, 2, 2))', lambda: S.MaxPool2d(1, (2, 2, 2)), 'MaxPool2d: kernel_size must be an int or a pair'),
    ('MaxPool2d context without net', lambda: S.MaxPool2d(1, 2, hidden_features=0, context_features=3), 'MaxPool2d: context_features needs a network'),
    ('ActNorm(0)', lambda: B.ActNorm(0), 'ActNorm: features must be a positive integer, got 0'),
    ('ActNorm(2.5)', lambda: B.ActNorm(2.5), 'ActNorm: features must be a positive integer, got 2.5'),
    ('AffineCoupling(max_log_scale=0)', lambda: B.AffineCoupling(2, max_log_scale=0), 'AffineCoupling: max_log_scale must be a finite number > 0, got 0'),
    ('AffineCoupling(max_log_scale=inf)', lambda: B.AffineCoupling(2, max_log_scale=INF), 'AffineCoupling: max_log_scale must be a finite number > 0'),
    ('AffineCoupling(hidden_features=0)', lambda: B.AffineCoupling(2, hidden_features=0), 'AffineCoupling: hidden_features must be a positive integer'),
    ('AffineCoupling(num_layers=-1)', lambda: B.AffineCoupling(2, num_layers=-1), 'AffineCoupling: num_layers must be an integer >= 0'),
    ('AffineCoupling(context_features=-1)', lambda: B.AffineCoupling(2, context_features=-1), 'AffineCoupling: context_features must be an integer >= 0'),
    ('SplineCoupling(bins=1)', lambda: B.SplineCoupling(2, bins=1), 'SplineCoupling: bins must be an integer >= 2'),
    ('SplineCoupling(bound=nan)', lambda: B.SplineCoupling(2, bound=NAN), 'SplineCoupling: bound must be a finite number > 0'),
    ('LeakyReLU(inf)', lambda: B.LeakyReLU(INF), 'LeakyReLU: negative_slope must be a finite number > 0, got inf'),
    ('LeakyReLU(nan)', lambda: B.LeakyReLU(NAN), 'LeakyReLU: negative_slope must be a finite number > 0'),
    ('LeakyReLU(0)', lambda: B.LeakyReLU(0), 'a slope of 0 is a ReLU'),
    ('RQSpline(0)', lambda: B.RQSpline(0), 'RQSpline: features must be a positive integer, got 0'),
    ('RQSpline(bins=2.5)', lambda: B.RQSpline(2, bins=2.5), 'RQSpline: bins must be an integer >= 2'),
    ('RQSpline(bound=inf)', lambda: B.RQSpline(2, bound=INF), 'RQSpline: bound must be a finite number > 0'),
    ('Conv1x1(0)', lambda: B.Conv1x1(0), 'Conv1x1: channels must be a positive integer, got 0'),
    ('Permutation(-1)', lambda: B.Permutation(-1), 'Permutation: features must be a positive integer, got -1'),
    ('Squeeze(2.5)', lambda: B.Squeeze(2.5), 'Squeeze: factor must be an integer >= 2, got 2.5'),
    ('Reshape((0,), (0,))', lambda: B.Reshape((0,), (0,)), 'Reshape: in_shape must be a non-empty shape of positive integers'),
    ('Logit(nan)', lambda: B.Logit(NAN), r'Logit: alpha must be in \[0, 0.5\)'),
    ('UniformDequantization(2.5)', lambda: S.UniformDequantization(2.5), 'UniformDequantization: bins must be an integer >= 2, got 2.5'),
    ('UniformDequantization(1)', lambda: S.UniformDequantization(1), 'UniformDequantization: bins must be an integer >= 2, got 1'),
    ('UniformDequantization(shape=(1, 0))', lambda: S.UniformDequantization(256, shape=(1, 0)), 'UniformDequantization: shape must hold positive integers'),
    ('VariationalDequantization(hidden=0)', lambda: S.VariationalDequantization((1, 2, 2), 4, hidden_features=0), 'VariationalDequantization: hidden_features must be a positive integer'),
    ('FlowDequantization(num_steps=0)', lambda: S.FlowDequantization((1, 2, 2), 4, num_steps=0), 'FlowDequantization: num_steps must be a positive integer'),
    ('FlowDequantization(spline_bins=1)', lambda: S.FlowDequantization((1, 2, 2), 4, spline_bins=1), 'FlowDequantization: spline_bins must be an integer >= 2'),
    ('FlowDequantization(bound=0)', lambda: S.FlowDequantization((3,), 4, bound=0.0), 'FlowDequantization: bound must be a finite number > 0'),
    ('Sort(-1)', lambda: S.Sort(-1), 'Sort: features must be a positive integer, got -1'),
    ('Sort(0)', lambda: S.Sort(0), 'Sort: features must be a positive integer, got 0'),
    ('SortedToReal(0)', lambda: S.SortedToReal(0), 'SortedToReal: features must be a positive integer'),
    ('StochasticPermutation(0)', lambda: S.StochasticPermutation(0), 'StochasticPermutation: features must be a positive integer'),
    ('Abs(0)', lambda: S.Abs(0), 'Abs: features must be a positive integer, got 0'),
    ('Abs(2, hidden=-1)', lambda: S.Abs(2, hidden_features=-1), 'Abs: hidden_features must be an integer >= 0'),
    ('Abs context without net', lambda: S.Abs(2, hidden_features=0, context_features=2), 'Abs: context_features needs a network'),
    ('VAE(0, 2)', lambda: S.VAE(0, 2), 'VAE: in_features must be a positive integer, got 0'),
    ('VAE(4, 0)', lambda: S.VAE(4, 0), 'VAE: latent_features must be a positive integer, got 0'),
    ('Slice(4, 2.5)', lambda: S.Slice(4, 2.5), 'Slice: out_features must be a positive integer, got 2.5'),
    ('Augment(-1, 3)', lambda: S.Augment(-1, 3), 'Augment: in_features must be a positive integer, got -1'),
    ('ConditionalNormal(2, 0)', lambda: ConditionalNormal(2, 0), 'ConditionalNormal: out_features must be a positive integer, got 0'),
    ('ConditionalNormal(max_log_scale=0)', lambda: ConditionalNormal(2, 2, max_log_scale=0), 'ConditionalNormal: max_log_scale must be a finite number > 0'),
    ('mlp(2, 2, 0)', lambda: mlp(2, 2, 0), 'mlp: hidden_features must be a positive integer, got 0'),
    ('conv_net(0, 2)', lambda: conv_net(0, 2), 'conv_net: in_channels must be a positive integer, got 0'),
    ('CouplingFunnel(4, 2, bins=1)', lambda: FU.CouplingFunnel(4, 2, transform='spline', bins=1), 'CouplingFunnel: bins must be an integer >= 2'),
    ('CouplingFunnel(4.0, 2)', lambda: FU.CouplingFunnel(4.0, 2), 'CouplingFunnel: in_features must be a positive integer, got 4.0'),
    ('CroppingConvFunnel(2, 1, True)', lambda: FU.CroppingConvFunnel(2, 1, True), 'CroppingConvFunnel: kernel_size must be a positive integer, got True'),
    ('CroppingConvFunnel(2, 1, 3, hidden=0)', lambda: FU.CroppingConvFunnel(2, 1, 3, hidden_features=0), 'CroppingConvFunnel: hidden_features must be a positive integer'),
    ('StridedConvFunnel(2, 1)', lambda: FU.StridedConvFunnel(2, 1), 'StridedConvFunnel: kernel_size must be a positive integer or a pair'),
    ('StridedConvFunnel(2, (2, 0))', lambda: FU.StridedConvFunnel(2, (2, 0)), 'StridedConvFunnel: kernel_size must be a positive integer or a pair'),
    ('StridedConvFunnel(0)', lambda: FU.StridedConvFunnel(0), 'StridedConvFunnel: channels must be a positive integer, got 0'),
    ('StridedConvFunnel(2, num_layers=0)', lambda: FU.StridedConvFunnel(2, num_layers=0), 'StridedConvFunnel: num_layers must be a positive integer, got 0'),
    ('LinearFunnel(4, 4)', lambda: FU.LinearFunnel(4, 4), 'LinearFunnel: a funnel reduces dimension'),
    ('LinearFunnel(4.5, 2)', lambda: FU.LinearFunnel(4.5, 2), 'LinearFunnel: in_features must be a positive integer, got 4.5'),
    ('LowDimPrior(4, 0)', lambda: DRF.LowDimPrior(4, 0), 'LowDimPrior: noise_features must be a positive integer, got 0'),
    ('LowDimPrior(context=-1)', lambda: DRF.LowDimPrior(4, 2, context_features=-1), 'LowDimPrior: context_features must be an integer >= 0'),
    ('LCMASplit(4, True)', lambda: DRF.LCMASplit(4, True), 'LCMASplit: keep must be in 1..3'),
]


@pytest.mark.parametrize('label,call,fragment', CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
def test_constructors_refuse_nonsense(label, call, fragment):
    with pytest.raises(ValueError, match=fragment): call()


@pytest.mark.parametrize('k', [-1, 0, 'a', 2.5, True])
def test_importance_sample_counts_are_checked_even_for_exact_flows(k):
    flow = Flow(StandardNormal(2), [B.AffineCoupling(2)])
    assert flow.exact
    with pytest.raises(ValueError, match='Flow.log_prob: k must be a positive integer or None'): flow.log_prob(torch.randn(3, 2), k=k)
    with pytest.raises(ValueError, match='Flow.log_prob: k_chunk must be a positive integer or None'):
        flow.log_prob(torch.randn(3, 2), k=4, k_chunk=k)


# ------------------------------------------------------------------------------------------------ check_logdet
def test_check_logdet_fails_a_singular_jacobian():
    "The tolerance grows with |log det|; at log det = -inf it used to become inf and pass anything"
    class Collapse(Bijection):
        def forward(self, x, context=None): return x @ torch.ones(2, 2, dtype=x.dtype), x.new_zeros(x.shape[0])
        def inverse(self, z, context=None): return z
    report = check_logdet(Collapse(), torch.randn(4, 2, dtype=torch.float64), raise_on_fail=False)
    assert not report.passed and 'singular' in report.message
    class InfiniteLdj(Bijection):
        def forward(self, x, context=None): return x, x.new_full((x.shape[0],), float('inf'))
        def inverse(self, z, context=None): return z
    assert not check_logdet(InfiniteLdj(), torch.randn(3, 2, dtype=torch.float64), raise_on_fail=False).passed
