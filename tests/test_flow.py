"""Flow-level behaviour: importance-weighted bounds, chunking, devices and dtypes, torch.compile, context."""
import math, re
import pytest
import torch
import torch.distributions as D

from flownb.core import Flow, Surjection, bits_per_dim
from flownb.distributions import StandardNormal, DiagonalNormal
from flownb.bijections import AffineCoupling, ActNorm, RQSpline, Permutation, Logit, Squeeze, Reshape, Conv1x1


class NoisyAugment(Surjection):
    "Append u ~ N(0, s^2): contribution -log q(u); with a 2-D standard normal base the exact marginal is N(0,1)"
    exact, stochastic = False, 'forward'
    def __init__(self, s): super().__init__(); self.s = s
    def forward(self, x, context=None):
        u = torch.randn_like(x) * self.s
        return torch.cat([x, u], 1), -D.Normal(0., self.s).log_prob(u).sum(1)
    def inverse(self, z, context=None): return z[:, :1]


def test_iw_bound_chunked_equals_unchunked_in_distribution():
    torch.manual_seed(0)
    flow = Flow(StandardNormal(2), NoisyAugment(1.7)).double()
    x = torch.randn(300, 1, dtype=torch.float64)
    full = flow.log_prob(x, k=64).mean()
    chunked = flow.log_prob(x, k=64, k_chunk=7).mean()   # 7 does not divide 64: exercises the last partial chunk
    exact = D.Normal(0., 1.).log_prob(x).mean()
    assert abs(full - chunked) < 0.02 and chunked <= exact + 0.01 and full <= exact + 0.01


def test_context_passes_through_to_layers():
    flow = Flow(StandardNormal(2), [AffineCoupling(2, context_features=3), AffineCoupling(2, context_features=3, swap=True)])
    with torch.no_grad():
        for p in flow.parameters(): p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(4, 2)
    a = flow.log_prob(x, context=torch.eye(3)[[0, 0, 0, 0]])
    b = flow.log_prob(x, context=torch.eye(3)[[1, 1, 1, 1]])
    assert not torch.allclose(a, b), 'context had no effect'
    samples = flow.sample(context=torch.eye(3)[[2, 2, 2]])
    assert samples.shape == (3, 2)


def test_float64_and_module_base_moves_with_the_flow():
    flow = Flow(DiagonalNormal(2), [AffineCoupling(2), ActNorm(2)]).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    assert flow.log_prob(x).dtype == torch.float64
    assert flow.sample(3).dtype == torch.float64


def test_image_pipeline_shapes_and_bits_per_dim():
    "Logit → Squeeze → Conv1x1/coupling → Reshape on 8x8 images, scored in bits/dim"
    flow = Flow(StandardNormal(64), [Logit(0.05), Squeeze(2), ActNorm(4), Conv1x1(4),
                                     AffineCoupling(4, hidden_features=8, conv=True), Reshape((4, 4, 4), 64)])
    x = torch.rand(16, 1, 8, 8)
    lp = flow.log_prob(x)
    assert lp.shape == (16,) and torch.isfinite(lp).all()
    bpd = bits_per_dim(lp.mean(), (1, 8, 8))
    assert 0 < bpd < 20
    assert flow.sample(2).shape == (2, 1, 8, 8)


def test_torch_compile_log_prob_and_backward():
    "torch.compile traces a flow (aot_eager: the autograd graph without a C++ toolchain) and gives the same numbers"
    torch.manual_seed(0)
    flow = Flow(StandardNormal(2), [AffineCoupling(2), RQSpline(2), Permutation(2), AffineCoupling(2)])
    x = torch.randn(32, 2)
    eager = flow.log_prob(x)
    compiled = torch.compile(flow, backend='aot_eager')
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.mean().backward()
    assert all(p.grad is not None for p in flow.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    flow = Flow(StandardNormal(2), [ActNorm(2), AffineCoupling(2), RQSpline(2)]).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    cpu = flow.log_prob(x)
    gpu = flow.cuda().log_prob(x.cuda()).cpu()
    torch.testing.assert_close(cpu, gpu)


@pytest.mark.slow
def test_moons_training_beats_gaussian():
    "End to end: a coupling/spline flow trained on two moons beats a full-covariance Gaussian by a clear margin"
    torch.manual_seed(0)
    t = torch.rand(6000) * math.pi
    upper = torch.rand(6000) < 0.5
    data = torch.stack([torch.where(upper, torch.cos(t), 1 - torch.cos(t)), torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))], 1)
    data = data + 0.08 * torch.randn_like(data)
    train, test = data[:4000], data[4000:]
    layers = []
    for i in range(6): layers += [ActNorm(2), AffineCoupling(2, swap=i % 2 == 1), RQSpline(2, bound=4.0)]
    flow = Flow(StandardNormal(2), layers)
    flow.log_prob(train[:1000])
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(2000):
        loss = -flow.log_prob(train[torch.randint(0, 4000, (256,))]).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): ll = flow.log_prob(test).mean().item()
    gauss = D.MultivariateNormal(train.mean(0), torch.cov(train.T)).log_prob(test).mean().item()
    assert ll > gauss + 0.5, (ll, gauss)


def test_log_prob_refuses_a_bounded_flow_whose_noise_is_at_its_mean():
    "Under noise_mean, Augment's term at q's mean sat log σ_q above the exact value (an adversarial review's repro): refused"
    from flownb.core import noise_mean
    from flownb.surjections import Augment
    torch.manual_seed(0)
    aug = Augment(1, 2, hidden_features=8).double()
    with torch.no_grad(): aug.noise.net[-1].bias[1] = 2.0          # a wide q(u | x)
    flow = Flow(StandardNormal(2), [aug]).double()
    x = torch.randn(4, 1, dtype=torch.float64)
    drawn = flow.log_prob(x, k=100)
    with noise_mean(flow):
        for k in (None, 100):
            with pytest.raises(ValueError, match=r'Augment\(1→2\) put their noise at its mean \(noise_mean\)'): flow.log_prob(x, k=k)
        flow.sample(3)                                              # sampling at the mean is what noise_mean is for
    assert flow.log_prob(x, k=100).shape == drawn.shape             # the setting came back: drawn again


@pytest.mark.parametrize('make, where', [
    (lambda: __import__('flownb.surjections', fromlist=['Abs']).Abs(3, hidden_features=0), 'Abs(3) maps onto [0, ∞)'),
    (lambda: __import__('flownb.surjections', fromlist=['Sort']).Sort(3), 'Sort(3) maps onto the increasing vectors'),
])
def test_a_layer_onto_part_of_the_space_straight_into_a_gaussian_is_reported_as_a_bound(make, where):
    "The base's mass outside the layer's range belongs to no input: Flow warns, exact is False, and K passes are one"
    with pytest.warns(UserWarning, match=re.escape(where)): flow = Flow(StandardNormal(3), [make(), ActNorm(3)]).double()
    assert not flow.exact
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(x, k=8), flow.log_prob(x))   # nothing draws: the bound is one pass


def test_no_support_warning_where_the_range_is_mapped_back_or_the_base_lives_on_it():
    import warnings
    from flownb.surjections import Abs, Log, Sort, SortedToReal
    from flownb.point_sets import point_set_flow
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert Flow(StandardNormal(2), [Abs(2), Log(), ActNorm(2)]).exact
        assert Flow(StandardNormal(3), [Sort(3), SortedToReal(3)]).exact
        assert Flow(D.Independent(D.HalfNormal(torch.ones(2)), 1), [Abs(2)]).exact
        assert Flow(StandardNormal(2), [Abs(2), Logit(0.0)]).exact     # a later layer with a domain: trusted to map the set back
        assert point_set_flow(4, 2, steps=1, d_model=8, heads=2).exact
        assert not point_set_flow(4, 2, steps=1, d_model=8, heads=2, sorted_to_real=False).exact   # SurVAE's variant, asked for


def test_every_narrowing_layer_needs_its_own_way_back():
    "Sort's cone is opened by SortedToReal, Abs's half-line by nothing: still a gap; and Log does not open Sort's cone"
    from flownb.surjections import Abs, Sort, SortedToReal, Log
    with pytest.warns(UserWarning, match=re.escape('Abs(2) maps onto [0, ∞)')): assert not Flow(StandardNormal(2), [Abs(2), Sort(2), SortedToReal(2)]).exact
    with pytest.warns(UserWarning, match='Sort.2. maps onto the increasing vectors'): assert not Flow(StandardNormal(2), [Sort(2), Log()]).exact


def test_noise_mean_on_layers_that_always_draw_still_evaluates():
    "Dequantization and stochastic permutations draw in forward whatever noise_mean says: their terms stay bounds"
    from flownb.core import use_noise_mean
    from flownb.models import create_model
    flow = use_noise_mean(create_model('realnvp', (1, 8, 8), 17))
    x = torch.randint(0, 17, (4, 1, 8, 8)).float()
    assert flow.log_prob(x).shape == (4,)


def test_a_gap_is_not_called_an_exact_continuous_part():
    import warnings
    from flownb.flowify import Sigmoid
    from flownb.models import continuous_part_exact
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); gap = Flow(StandardNormal(3), [ActNorm(3), Sigmoid()])
    assert not continuous_part_exact(gap) and continuous_part_exact(Flow(StandardNormal(3), [ActNorm(3)]))
