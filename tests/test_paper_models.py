"""The `flowification-*` registry models against the official code's `experiments/architectures.py`
(balintmate/flowification at c5ce7920), layer by layer. The tables below are written from that file by hand, apart from
flownb's own table (`FLOWIFICATION_ARCHITECTURES`), so a slip in either shows up here."""
import pytest
import torch

from flownb.models import create_model, continuous_part_exact, latent_shape, FLOWIFICATION_RECIPE, paper_spline
from flownb.bijections import RQSpline, SplineCoupling, Permutation
from flownb.flowify import FlowLinear, FlowConv2d, FlowPad2d, Flatten
from flownb.dequantization import UniformDequantization

S = 'S'
P = ('pad', (0, 1, 0, 1))   # one row at the bottom, one column on the right: the official "just enough for the stride"
def C(i, o, k, s): return ('conv', i, o, k, s)
def L(i, o): return ('linear', i, o)
def N(f, n): return ('nsf', f, n)
F = 'flatten'

LIN64 = [L(64, 64), S] * 6 + [L(64, 32), S] + [L(32, 32), S] * 6 + [L(32, 8), S]
OFFICIAL = {
    # MNIST, experiments/architectures.py lines 13-90
    ('mnist', 'mlp'): [F, L(784, 512), S, L(512, 256), S, L(256, 128), S, L(128, 64), S, L(64, 32), S, L(32, 8)],
    ('mnist', 'conv1'): [P, C(1, 16, 3, 2), S, C(16, 24, 2, 2), S, C(24, 32, 3, 2), S, C(32, 48, 2, 1), S, C(48, 64, 2, 1), S, F] + LIN64,
    ('mnist', 'conv2'): [C(1, 4, 2, 2), S, C(4, 16, 2, 2), S, P, C(16, 32, 2, 2), S, C(32, 48, 2, 2), S, C(48, 64, 2, 2), S, F] + LIN64,
    ('mnist', 'conv1-nsf'): [P, C(1, 16, 3, 2), S, C(16, 24, 2, 2), S, C(24, 32, 3, 2), S, C(32, 48, 2, 1), S, C(48, 64, 2, 1), S, F,
                             N(64, 2), L(64, 32), S, N(32, 2), L(32, 8), S, N(8, 2)],
    ('mnist', 'conv2-nsf'): [C(1, 4, 2, 2), S, N(4, 2), C(4, 16, 2, 2), S, N(16, 2), P, C(16, 24, 2, 2), S, N(24, 2),
                             C(24, 32, 2, 2), S, N(32, 2), C(32, 64, 2, 2), S, F, N(64, 2), L(64, 32), S, N(32, 2), L(32, 8), S, N(8, 2)],
    # CIFAR-10, lines 95-181 (the 'mlp' branch: the list before the unrunnable MLP-Mixer overwrite)
    ('cifar10', 'mlp'): [F, L(3072, 1024), S, L(1024, 512), S, L(512, 512), S, L(512, 256), S, L(256, 128)],
    ('cifar10', 'conv1'): [P, C(3, 27, 3, 2), S, P, C(27, 64, 3, 2), S, P, C(64, 100, 3, 2), S, P, C(100, 112, 3, 2), S,
                           C(112, 128, 2, 2), S, F] + [L(128, 128), S] * 10,
    ('cifar10', 'conv2'): [C(3, 12, 2, 2), S, C(12, 48, 2, 2), S, C(48, 100, 2, 2), S, C(100, 112, 2, 2), S, C(112, 128, 2, 2), S, F]
                          + [L(128, 128), S] * 12,
    ('cifar10', 'conv1-nsf'): [P, C(3, 27, 3, 2), S, N(27, 4), P, C(27, 48, 3, 2), S, N(48, 4), P, C(48, 72, 3, 2), S, N(72, 4),
                               P, C(72, 96, 3, 2), S, C(96, 128, 2, 2), S, F, N(128, 8)],
    ('cifar10', 'conv2-nsf'): [C(3, 12, 2, 2), S, N(12, 4), C(12, 48, 2, 2), S, N(48, 4), C(48, 72, 2, 2), S, N(72, 4),
                               C(72, 96, 2, 2), S, C(96, 128, 2, 2), S, F, N(128, 6)],
}
SHAPES = {'mnist': (1, 28, 28), 'cifar10': (3, 32, 32)}
LATENT = {'mnist': 8, 'cifar10': 128}


def describe(flow) -> list:
    "The flow's layers after the dequantization in the tables' notation, checking each layer's settings on the way"
    out, layers = [], list(flow.transform)
    assert isinstance(layers[0], UniformDequantization) and layers[0].bins == 256
    i = 1
    while i < len(layers):
        t = layers[i]
        if isinstance(t, RQSpline):
            assert (t.features, t.bins, t.bound) == (None, 10, 2.0), 'the paper spline: shared, 10 bins on [-2, 2]'
            out.append(S)
        elif isinstance(t, FlowPad2d): out.append(('pad', t.padding))
        elif isinstance(t, FlowConv2d):
            assert t.padding == (0, 0) and t.kernel_size[0] == t.kernel_size[1] and t.stride[0] == t.stride[1]
            out.append(C(t.in_channels, t.out_channels, t.kernel_size[0], t.stride[0]))
        elif isinstance(t, FlowLinear): out.append(L(t.in_features, t.out_features))
        elif isinstance(t, Flatten): out.append(F)
        elif isinstance(t, SplineCoupling):
            n, features = 0, t.features
            while i < len(layers) and isinstance(layers[i], (SplineCoupling, Permutation)):
                s = layers[i]
                if isinstance(s, SplineCoupling):
                    assert (s.features, s.bins, s.bound, s.swap) == (features, 5, 3.0, False)
                    n += 1
                else: assert s.perm.tolist() == list(range(features))[::-1], 'reversed between couplings'
                i += 1
            assert isinstance(layers[i - 1], SplineCoupling), 'no permutation after the last coupling'
            out.append(N(features, n)); continue
        else: raise AssertionError(f'unexpected layer {type(t).__name__}')
        i += 1
    return out


@pytest.mark.parametrize('data,arch', list(OFFICIAL), ids=[f'{d}-{a}' for d, a in OFFICIAL])
def test_layer_by_layer(data, arch):
    torch.manual_seed(0)
    flow = create_model(f'flowification-{arch}', SHAPES[data], 256)
    assert describe(flow) == OFFICIAL[data, arch]
    assert latent_shape(flow) == (LATENT[data],)
    assert type(flow.base).__name__ == 'StandardNormal'


def test_conditioner_widths_follow_the_official_formula():
    "max(3·max(2(D_in−D_out), D_in), 64) wide; hidden layers 1, 3, 5 or 7 as the width is over 200, 100, 50 or not"
    flow = create_model('flowification-conv2', SHAPES['mnist'], 256)
    for t in flow.transform:
        if isinstance(t, FlowLinear) and t.in_features > t.out_features:
            d_in, d_out = t.in_features, t.out_features
            width = max(3 * max(2 * (d_in - d_out), d_in), 64)
            linears = [m for m in t.dropped.net if isinstance(m, torch.nn.Linear)]
            assert linears[0].out_features == width
            assert len(linears) - 1 == 1 + (0 if width > 200 else 2 if width > 100 else 4 if width > 50 else 6)
        if isinstance(t, FlowConv2d) and t.dropped is not None:
            assert t.dropped.net[0].out_channels == 2 * t.in_channels + t.out_channels


def test_exactness_is_what_the_geometry_says():
    assert continuous_part_exact(create_model('flowification-mlp', SHAPES['mnist'], 256))
    assert not continuous_part_exact(create_model('flowification-conv2', SHAPES['mnist'], 256))   # the 7 → 8 padding
    assert continuous_part_exact(create_model('flowification-conv2', SHAPES['cifar10'], 256))     # no padding needed
    assert not continuous_part_exact(create_model('flowification-conv1', SHAPES['mnist'], 256))   # overlapping kernels


def test_the_paper_spline_starts_where_nflows_starts():
    "nflows draws every raw parameter from U[0, 1): slopes softplus(U) + 1e-3 in (0.69, 1.31), not the identity"
    torch.manual_seed(0)
    spline = paper_spline()
    x = torch.linspace(-1.9, 1.9, 200).reshape(-1, 1)
    z, ldj = spline(x)
    slopes = ldj.exp()
    assert slopes.min() > 0.3 and slopes.max() < 3.0 and not torch.allclose(z, x)
    assert torch.equal(spline(torch.tensor([[-5.0], [5.0]]))[0], torch.tensor([[-5.0], [5.0]]))   # identity tails


def test_recipe_is_the_papers():
    assert FLOWIFICATION_RECIPE == {'optimizer': 'adam', 'lr': 5e-4, 'weight_decay': 0.0, 'batch_size': 128, 'epochs': 300, 'grad_clip': 0.0}


@pytest.mark.parametrize('shape,bins', [((1, 8, 8), 17), ((3, 28, 28), 256), ((784,), None)])
def test_other_data_is_refused_with_a_pointer(shape, bins):
    with pytest.raises(ValueError, match=r'defined for data of shape \(1, 28, 28\) or \(3, 32, 32\) only|needs image data'):
        create_model('flowification-mlp', shape, bins)
