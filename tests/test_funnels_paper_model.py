"""`funnels-conv` against the Funnels paper's code (sambklein/funnels_repo, `experiments/image_generation.py`,
`create_transform('funnel_conv', ...)` with `experiments/image_configs/AD_config.json`: levels 3, steps_per_level 7,
conv_width 2, num_bins 2, tail_bound 3, hidden_features 64, pad 2, funnel_first 0, multi_scale 0, actnorm 1), layer by
layer. The table is written from that code by hand, so a slip in either shows up here."""
import torch

from flownb.models import create_model, latent_shape, continuous_part_exact, MODELS, FUNNELS_IMAGE_RECIPE
from flownb.bijections import ActNorm, Conv1x1, SplineCoupling, Squeeze
from flownb.flowify import Flatten
from flownb.flowify_conv import FlowPad2d
from flownb.funnels import StridedConvFunnel
from flownb.dequantization import UniformDequantization


def _level(c, funnel):
    "squeeze, 7 × (ActNorm, 1×1 convolution, RQ-spline coupling), a closing 1×1 convolution, then ActNorm + 2×2 funnel"
    steps = [('actnorm', c), ('1x1', c), ('rqs', c, 2, 3.0)] * 7
    return [('squeeze',)] + steps + [('1x1', c)] + ([('actnorm', c), ('funnel', c, (2, 2))] if funnel else [])

# MNIST: 1×28×28 padded by 2 on every side to 1×32×32; squeezes make 4, 16, 64 channels; funnels halve 16 → 8 and 4 → 2
OFFICIAL_MNIST = [('dequantize', 256), ('pad', (2, 2, 2, 2))] + _level(4, True) + _level(16, True) + _level(64, False) + [('flatten',)]


def _token(t):
    if isinstance(t, UniformDequantization): return ('dequantize', t.bins)
    if isinstance(t, FlowPad2d): return ('pad', tuple(t.padding))
    if isinstance(t, Squeeze): return ('squeeze',)
    if isinstance(t, ActNorm): return ('actnorm', t.features)
    if isinstance(t, Conv1x1): return ('1x1', t.channels)
    if isinstance(t, SplineCoupling): return ('rqs', t.features, t.bins, t.bound)
    if isinstance(t, StridedConvFunnel): return ('funnel', t.channels, t.kernel_size)
    if isinstance(t, Flatten): return ('flatten',)
    return (type(t).__name__,)


def test_funnels_conv_is_the_papers_funnel_conv_layer_by_layer():
    flow = create_model('funnels-conv', (1, 28, 28), 256)
    assert [_token(t) for t in flow.transform.transforms] == OFFICIAL_MNIST
    assert latent_shape(flow) == (64,)
    assert continuous_part_exact(flow) is False          # the padding's noise: a bound on MNIST
    assert MODELS['funnels-conv'].recipe == FUNNELS_IMAGE_RECIPE
    assert FUNNELS_IMAGE_RECIPE['batch_size'] == 512 and FUNNELS_IMAGE_RECIPE['lr'] == 5e-4


def test_funnels_conv_shapes_through_every_level():
    "Each funnel divides the dimension by 4 and keeps the channels, and the inverse returns an image of the data's shape"
    torch.manual_seed(0)
    flow = create_model('funnels-conv', (1, 28, 28), 256)
    x = torch.randint(0, 256, (2, 1, 28, 28))
    shapes, h = [], flow.transform.transforms[0](x)[0]
    for t in flow.transform.transforms[1:]:
        h = t(h)[0]
        if isinstance(t, StridedConvFunnel): shapes.append(tuple(h.shape[1:]))
    assert shapes == [(4, 8, 8), (16, 2, 2)]
    with torch.no_grad(): s = flow.sample(3)
    assert s.shape == (3, 1, 28, 28) and s.min() >= 0 and s.max() <= 255
