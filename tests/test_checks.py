"""The checks must be able to fail: each is run on a deliberately broken layer and must raise CheckFailed."""
import pytest
import torch

from flownb.core import Flow, Bijection, Surjection
from flownb.distributions import StandardNormal
from flownb.bijections import AffineCoupling, ActNorm, RQSpline, LeakyReLU, Permutation
from flownb.checks import check_inverse, check_logdet, check_normalized, check_iw_bound, CheckFailed


class WrongLdj(Bijection):
    "z = 2x, but claims ldj = 0"
    def forward(self, x, context=None): return 2 * x, x.new_zeros(x.shape[0])
    def inverse(self, z, context=None): return z / 2


class WrongInverse(Bijection):
    "z = 2x with the right ldj but a wrong inverse"
    def forward(self, x, context=None): return 2 * x, x.new_full((x.shape[0],), x.shape[1] * torch.log(torch.tensor(2.)).item())
    def inverse(self, z, context=None): return z / 2.1


def test_check_logdet_catches_wrong_ldj():
    with pytest.raises(CheckFailed, match=r'check_logdet\(WrongLdj\) FAILED'):
        check_logdet(WrongLdj(), torch.randn(4, 2, dtype=torch.float64))


def test_check_inverse_catches_wrong_inverse():
    with pytest.raises(CheckFailed, match=r'check_inverse\(WrongInverse\) FAILED: max'):
        check_inverse(WrongInverse(), torch.randn(4, 2, dtype=torch.float64))


def test_check_normalized_catches_wrong_ldj():
    with pytest.raises(CheckFailed, match='integral = 0.25'):
        check_normalized(Flow(StandardNormal(2), [WrongLdj()]).double(), -6, 6)
    report = check_normalized(Flow(StandardNormal(2), [WrongLdj()]).double(), -6, 6, raise_on_fail=False)
    assert not report and abs(report.measured - 0.25) < 1e-3


def test_check_iw_bound_catches_a_bound_above_the_exact_value():
    class Overconfident(Surjection):
        "A 'bounded' layer whose contribution is too large by 1 nat: the bound would exceed log p"
        exact, stochastic = False, 'forward'
        def forward(self, x, context=None): return x, x.new_ones(x.shape[0])
        def inverse(self, z, context=None): return z
    flow = Flow(StandardNormal(1), [Overconfident()]).double()
    x = torch.randn(200, 1, dtype=torch.float64)
    exact = StandardNormal(1).double().log_prob(x)
    with pytest.raises(CheckFailed, match='above the exact value'): check_iw_bound(flow, x, reference=exact)


def test_two_d_flow_of_bijections_is_normalized_and_has_correct_logdet():
    "The foundation's acceptance test: a 2-D flow from these bijections, integral within 1% and log-det error < 1e-4 (float64)"
    torch.manual_seed(0)
    layers = []
    for i in range(3):
        layers += [ActNorm(2), AffineCoupling(2, hidden_features=16, swap=i % 2 == 1), RQSpline(2, bins=6, bound=3.0),
                   LeakyReLU(2.0), Permutation(2)]
    flow = Flow(StandardNormal(2), layers).double()
    x = torch.randn(512, 2, dtype=torch.float64)
    flow.log_prob(x)  # ActNorm init
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if 'net' in name or 'raw' in name: p.add_(torch.randn_like(p) * 0.1)  # larger moves give tails past any box
    report = check_normalized(flow, -24, 24, n=800)
    assert abs(report.measured - 1) < 0.01, report
    assert check_logdet(flow.transform, x[:16], atol=1e-4, rtol=0).measured < 1e-4
    check_inverse(flow.transform, x[:16])


def test_check_normalized_on_a_bounded_flow_uses_importance_sampling():
    class Augment(Surjection):
        exact, stochastic = False, 'forward'
        def forward(self, x, context=None):
            u = torch.randn_like(x) * 1.5
            q = torch.distributions.Normal(0., 1.5)
            return torch.cat([x, u], 1), -q.log_prob(u).sum(1)
        def inverse(self, z, context=None): return z[:, :1]
    torch.manual_seed(0)
    flow = Flow(StandardNormal(2), [Augment()]).double()
    report = check_normalized(flow, -8, 8, n=1000, k=64, dims=1)
    assert 'importance-weighted' in report.message and abs(report.measured - 1) < 0.01
