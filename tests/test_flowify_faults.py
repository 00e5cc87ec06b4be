"""Faults found in the flowified layers by the adversarial review (issue 21), each pinned by a test:

1. `FlowConv2d` with stride > kernel: the pixels between patches were ignored by `log_prob` (not a density although
   `exact=True`) and came back as NaN from `inverse`; they are now dropped with a learned Gaussian and sampled back.
2. `orthogonal_map='householder'` under weight decay: torch's map reads its ±1 signs from the optimized tensor with
   `.int()`, so one AdamW step zeroed U and V while `ldj` still assumed them orthogonal.
3. `flowify(..., input_shape=...)` ran flownb transforms on its all-zeros shape probe, which initialised ActNorm from it
   (log_scale 13.8) or failed with an error about a batch the user never passed.
"""
import math
import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F
from torch import nn

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.bijections import ActNorm, Reshape
from flownb.flowify import FlowLinear, FlowConv2d, flowify, use_noise_mean
from flownb.flowify_linear import ORTHOGONAL_MAPS
from flownb.checks import check_inverse, check_logdet, check_normalized

F64 = torch.float64


def read_mask(layer, size, like):
    "True where some patch of `layer` reads the pixel of a (padded) image of `size`"
    ones = like.new_ones(1, 1, *size)
    return F.fold(F.unfold(ones, layer.kernel_size, stride=layer.stride), size, layer.kernel_size, stride=layer.stride) > 0


# ---------------------------------------------------------------- 1. stride > kernel: the gaps between patches
def three_pixel_flow(loc=0.5, log_scale=-0.3):
    "The issue's example: Conv2d(1, 1, kernel_size=1, stride=2) on a 1×3 image reads pixels 0 and 2; pixel 1 is a gap"
    conv = nn.Conv2d(1, 1, kernel_size=1, stride=2).double()
    with torch.no_grad(): conv.weight.fill_(1.5); conv.bias.fill_(0.3)
    layer = flowify(conv, input_shape=(1, 1, 3))[0]
    with torch.no_grad(): layer.crop_loc.fill_(loc); layer.crop_log_scale.fill_(log_scale)
    return layer, Flow(StandardNormal((1, 1, 2)), [Reshape(3, (1, 1, 3)), layer]).double()


def grid_integral(flow, L, n):
    "Midpoint rule for a density on R^3 over [-L, L]^3 with n points per axis"
    axis = torch.linspace(-L, L, n + 1, dtype=F64); axis = (axis[1:] + axis[:-1]) / 2
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing='ij'), -1).reshape(-1, 3)
    with torch.no_grad(): return flow.log_prob(grid).exp().sum().item() * (2 * L / n) ** 3


def test_gap_pixel_enters_log_prob():
    layer, flow = three_pixel_flow()
    assert layer.exact
    x = torch.tensor([[0.2, -1000.0, -0.4], [0.2, 1000.0, -0.4], [0.2, 0.0, -0.4], [0.2, 3.0, -0.4]], dtype=F64)
    with torch.no_grad(): log_p = flow.log_prob(x)
    gap = D.Normal(torch.tensor(0.5, dtype=F64), torch.tensor(-0.3, dtype=F64).exp())
    # float64: log-densities of order 1e6 carry rounding ~1e-10; 1e-6 is far above that and far below any real difference
    torch.testing.assert_close(log_p - log_p[2], gap.log_prob(x[:, 1]) - gap.log_prob(x[2, 1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize('L,n', [(6.0, 48), (10.0, 80)])
def test_gap_density_integrates_to_one(L, n):
    """Each factor is a Gaussian of sd <= 0.75 lying > 7 sd inside the box, and the midpoint rule at step 0.25 is accurate
    to far below 1e-10 for such functions (measured 1 - 4e-14), so 1e-6 only absorbs rounding. The old layer gave
    integrals growing with the box (it ignored the gap pixel), so two box sizes are checked."""
    _, flow = three_pixel_flow()
    assert abs(grid_integral(flow, L, n) - 1) < 1e-6


def test_gap_log_prob_has_the_product_form():
    "1×4 image, 1×1 patches of stride 3: pixels 0 and 3 go through z = w x + b, pixels 1 and 2 are gaps; log p is the sum"
    torch.manual_seed(1)
    layer = FlowConv2d(1, 1, 1, stride=3).double()
    with torch.no_grad():
        layer.svd.log_s.fill_(0.2); layer.svd.bias.fill_(-0.1); layer.crop_loc.fill_(-0.3); layer.crop_log_scale.fill_(-0.2)
    flow = Flow(StandardNormal((1, 1, 2)), [Reshape(4, (1, 1, 4)), layer]).double()
    x = torch.randn(16, 4, dtype=F64) * 2
    with torch.no_grad():
        log_p = flow.log_prob(x)
        w = layer.svd.weight.item()                                  # ±e^0.2, the sign from U and V
    base, gap = D.Normal(0., 1.), D.Normal(torch.tensor(-0.3, dtype=F64), torch.tensor(-0.2, dtype=F64).exp())
    expected = (base.log_prob(w * x[:, 0] - 0.1) + base.log_prob(w * x[:, 3] - 0.1) + 2 * math.log(abs(w))
                + gap.log_prob(x[:, 1]) + gap.log_prob(x[:, 2]))
    torch.testing.assert_close(log_p, expected, atol=1e-10, rtol=0)     # float64 rounding of a few O(1) terms


def test_gap_inverse_is_finite_and_a_right_inverse():
    "The issue's second example: Conv2d(1, 4, 2, stride=3) on 8×8 returned NaN at the 28 unread pixels of each image"
    torch.manual_seed(0)
    layer = FlowConv2d.from_conv2d(nn.Conv2d(1, 4, 2, stride=3)).double()
    with torch.no_grad(): layer.crop_loc.fill_(0.5); layer.crop_log_scale.fill_(-1.0)
    assert layer.exact
    images = torch.randn(3, 1, 8, 8, dtype=F64)
    with torch.no_grad():
        z, ldj = layer(images)
        x_back = layer.inverse(z)
    assert x_back.shape == images.shape and torch.isfinite(x_back).all() and torch.isfinite(ldj).all()
    read = read_mask(layer, (8, 8), images)
    assert int((~read).sum()) == 28
    torch.testing.assert_close(x_back[read.expand_as(images)], images[read.expand_as(images)], atol=1e-10, rtol=0)   # bijective kernel
    check_inverse(layer, images)                       # forward(inverse(z)) == z, tolerance 1e-8 in float64
    with torch.no_grad():
        mean_back = use_noise_mean(layer).inverse(z)
        assert torch.equal(mean_back[~read.expand_as(images)], torch.full((3 * 28,), 0.5, dtype=F64))
        use_noise_mean(layer, False)
        gaps = torch.cat([layer.inverse(z)[~read.expand_as(images)] for _ in range(200)])   # 16800 draws of N(0.5, e^-2)
    # standard errors: 0.37/sqrt(16800) = 0.003 for the mean, ~0.002 for the sd; 0.02 is > 6 of them
    assert abs(gaps.mean().item() - 0.5) < 0.02 and abs(gaps.std().item() - math.exp(-1.0)) < 0.02


GAP_CASES = [
    dict(in_channels=1, out_channels=1, kernel_size=1, stride=2),
    dict(in_channels=1, out_channels=4, kernel_size=2, stride=3),
    dict(in_channels=2, out_channels=1, kernel_size=1, stride=2),                   # reducing kernel: ConditionalNormal too
    dict(in_channels=1, out_channels=2, kernel_size=(1, 2), stride=(2, 3)),          # gaps along both axes, different sizes
    dict(in_channels=2, out_channels=3, kernel_size=2, stride=(2, 3)),               # gaps along the width only
]


@pytest.mark.parametrize('case', GAP_CASES, ids=lambda c: f"{c['in_channels']}-{c['out_channels']}-k{c['kernel_size']}-s{c['stride']}")
@pytest.mark.parametrize('size', [(7, 8), (8, 9)])
def test_gap_layers_reproduce_conv_and_invert(case, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(**case).double()
    layer = FlowConv2d.from_conv2d(conv, input_size=size, hidden_features=4)
    assert layer.exact
    x = torch.randn(4, case['in_channels'], *size, dtype=F64)
    with torch.no_grad():
        z, ldj = layer(x)
        torch.testing.assert_close(z, conv(x), atol=1e-9, rtol=1e-9)
        x_back = layer.inverse(z)
        assert x_back.shape == x.shape and torch.isfinite(x_back).all() and torch.isfinite(ldj).all()
        torch.testing.assert_close(layer(x_back)[0], z, atol=1e-9, rtol=1e-9)
        # the unread pixels now change ldj, by exactly their Gaussian log-density
        unread = ~read_mask(layer, size, x).expand_as(x)
        shifted = x.clone(); shifted[unread] += 2.0
        gap = D.Normal(layer.crop_loc.reshape(1, -1, 1, 1), layer.crop_log_scale.exp().reshape(1, -1, 1, 1))
        change = ((gap.log_prob(shifted) - gap.log_prob(x)) * unread).flatten(1).sum(1)
        torch.testing.assert_close(layer(shifted)[1] - ldj, change, atol=1e-9, rtol=0)


def test_gaps_along_one_axis_with_overlap_along_the_other():
    "Patches overlap along the height (k=3 > s=1) and leave gaps along the width (s=2 > k=1): a bound with finite ldj"
    torch.manual_seed(0)
    layer = FlowConv2d(1, 3, (3, 1), stride=(1, 2)).double()
    assert not layer.exact
    x = torch.randn(4, 1, 5, 5, dtype=F64)
    with torch.no_grad():
        z, ldj = layer(x)
        x_back = layer.inverse(z)
    assert torch.isfinite(z).all() and torch.isfinite(ldj).all() and torch.isfinite(x_back).all()
    read = read_mask(layer, (5, 5), x).expand_as(x)
    torch.testing.assert_close(x_back[read], x[read], atol=1e-10, rtol=0)   # the copies' mean is the pixel; gaps are sampled


def test_gaps_with_padding_stay_finite():
    torch.manual_seed(0)
    layer = FlowConv2d(1, 2, 1, stride=2, padding=1).double()
    x = torch.randn(3, 1, 5, 5, dtype=F64)
    with torch.no_grad():
        z, ldj = layer(x)
        x_back = layer.inverse(z)
    assert z.shape == (3, 2, 4, 4) and x_back.shape == x.shape
    assert torch.isfinite(ldj).all() and torch.isfinite(x_back).all()
    assert not layer.exact


def test_inverse_refuses_an_input_size_that_does_not_match():
    layer = FlowConv2d(1, 1, 1, stride=2, input_size=(9, 9))
    z, _ = layer(torch.randn(2, 1, 5, 5))
    with pytest.raises(ValueError, match=r'FlowConv2d\(1→1.*input_size \(9, 9\) does not give outputs of size 3×3'):
        layer.inverse(z)


# ---------------------------------------------------------------- 2. orthogonal maps under weight decay
OPTIMIZERS = {
    'AdamW': lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
    'Adam-L2': lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),   # coupled penalty: normalized steps
    'SGD-momentum': lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-2),
}


def train_steps(layer, x, optimizer, steps=5):
    opt = OPTIMIZERS[optimizer](layer.parameters())
    for _ in range(steps):
        z, ldj = layer(x)
        loss = (z.square().sum(1) / 2 - ldj).mean()        # maximum likelihood under N(0, I)
        opt.zero_grad(); loss.backward(); opt.step()
    return layer


def orthogonality_error(q):
    with torch.no_grad(): return (q.T @ q - torch.eye(q.shape[0], dtype=q.dtype)).abs().max().item()


@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
@pytest.mark.parametrize('orthogonal_map', ORTHOGONAL_MAPS)
@pytest.mark.parametrize('dtype', [torch.float32, F64], ids=['float32', 'float64'])
def test_orthogonal_after_weight_decay(orthogonal_map, optimizer, dtype):
    """Tolerances: float64 maps are orthogonal to ~1e-15 and float32 ones to ~1e-6 (a few roundings of d = 5 terms);
    1e-10 / 1e-5 leave room for the steps and still catch a collapsed column (an error of 1)"""
    torch.manual_seed(0)
    x = torch.randn(64, 5, dtype=dtype)
    layer = train_steps(FlowLinear(5, 5, orthogonal_map=orthogonal_map).to(dtype), x, optimizer)
    tol = 1e-10 if dtype == F64 else 1e-5
    for q in (layer.svd.U.weight, layer.svd.V.weight):
        assert orthogonality_error(q) < tol, f"{orthogonal_map} after {optimizer}: max |QᵀQ - I| = {orthogonality_error(q):.3g}"
    if dtype == F64: check_logdet(layer, x[:4])            # ldj = Σ log s still the autograd log-determinant (1e-6)


@pytest.mark.parametrize('orthogonal_map', ORTHOGONAL_MAPS)
def test_flow_after_weight_decay_integrates_to_one(orthogonal_map):
    "The issue's 2-D flow (69.9 with torch's householder map); a 250² midpoint grid on [-9, 9]² is accurate to ~1e-4"
    torch.manual_seed(0)
    layer = train_steps(FlowLinear(2, 2, orthogonal_map=orthogonal_map).double(), torch.randn(64, 2, dtype=F64) * 1.5, 'AdamW')
    report = check_normalized(Flow(StandardNormal(2), layer).double(), -9, 9, n=250, dims=2, raise_on_fail=False)
    assert abs(report.details['integral'] - 1) < 0.005, report.message


def test_householder_map_is_orthogonal_for_any_tensor():
    "Nothing a user or an optimizer writes into the optimized tensor can make the factor non-orthogonal"
    torch.manual_seed(0)
    layer = FlowLinear(4, 4, orthogonal_map='householder').double()
    for q in (layer.svd.U, layer.svd.V):
        with torch.no_grad(): q.parametrizations.weight.original.copy_(torch.randn(4, 4, dtype=F64) * 3)
        assert orthogonality_error(q.weight) < 1e-12


def test_householder_map_loads_torch_state_dicts():
    "A factor saved with torch's own 'householder' map (healthy, diagonal -1) loads into flownb's and gives the same Q"
    torch.manual_seed(0)
    theirs = torch.nn.utils.parametrizations.orthogonal(nn.Linear(4, 4, bias=False).double(), orthogonal_map='householder')
    with torch.no_grad(): theirs.parametrizations.weight.original.add_(torch.randn(4, 4, dtype=F64).tril(-1))
    ours = FlowLinear(4, 4, orthogonal_map='householder').double().svd.U
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours.weight, theirs.weight, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- 3. the shape probe of flowify
def test_flowify_with_input_shape_leaves_actnorm_uninitialised():
    image_norm, vector_norm = ActNorm(3), ActNorm(4)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), image_norm, nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(48, 4), vector_norm)
    flow = flowify(net, input_shape=(1, 4, 4))
    for norm in (image_norm, vector_norm):
        assert not bool(norm.initialized)
        assert torch.equal(norm.log_scale.detach(), torch.zeros(norm.features)) and torch.equal(norm.shift.detach(), torch.zeros(norm.features))
    assert flow[1] is image_norm and flow[-1] is vector_norm


def test_actnorm_initialises_from_the_first_real_batch():
    torch.manual_seed(0)
    norm = ActNorm(4)
    flow = flowify(nn.Sequential(nn.Linear(6, 4), norm, nn.LeakyReLU(0.1), nn.Linear(4, 2)), input_shape=(6,))   # vector input
    x = torch.randn(128, 6) * 4 + 2
    with torch.no_grad():
        h = flow[:2](x)[0]
    assert bool(norm.initialized)
    # ActNorm standardises its first batch: mean 0, sd 1 per feature up to float32 rounding (1e-5)
    torch.testing.assert_close(h.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.std(0), torch.ones(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize('net,shape,message', [
    (lambda: nn.Sequential(nn.Linear(3, 4), ActNorm(3)), (3,), r"input_shape \(3,\) does not fit layer 1 \(ActNorm\(\)\): ActNorm\(3\): expected input"),
    (lambda: nn.Sequential(ActNorm(2), nn.Linear(2, 2)), (3,), r"does not fit layer 0 \(ActNorm\(\)\)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(9, 2)), (1, 4, 4), r"does not fit layer 2 \(Linear"),
    (lambda: nn.Sequential(nn.Flatten(), FlowLinear(5, 2)), (1, 2, 2), r"does not fit layer 1 \(FlowLinear.*FlowLinear\(5→2\): expected input \(batch, 5\), got \(1, 4\)"),
])
def test_wrong_input_shape_names_the_layer(net, shape, message):
    with pytest.raises(ValueError, match=message): flowify(net(), input_shape=shape)


def test_shape_probe_has_no_side_effects_on_transforms():
    "A stochastic, parametrized transform passed through: its state and the random stream are untouched by the probe"
    torch.manual_seed(0)
    increasing = FlowLinear(3, 5, orthogonal_map='cayley')       # draws noise in its forward pass
    norm = ActNorm(5)
    before = {k: v.clone() for k, v in (*increasing.state_dict().items(), *norm.state_dict().items())}
    rng = torch.random.get_rng_state()
    flow = flowify(nn.Sequential(increasing, norm, nn.LeakyReLU(0.1)), input_shape=(3,))
    assert torch.equal(torch.random.get_rng_state(), rng)
    after = {k: v for k, v in (*increasing.state_dict().items(), *norm.state_dict().items())}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert flow(torch.randn(8, 3))[0].shape == (8, 5)
