"""Bad input gets a clear error that names the layer, what was expected and what arrived, never a crash deep in torch."""
import math
import pytest
import torch
import torch.distributions as D

from flownb.core import Flow, bits_per_dim, validation
from flownb.distributions import StandardNormal, ConditionalNormal
from flownb.bijections import (LeakyReLU, RQSpline, ActNorm, AffineCoupling, Permutation, Squeeze, Reshape, Logit)
from flownb.checks import check_normalized, check_logdet, check_iw_bound
from layers import BIJECTIONS, make_input

NAMES = list(BIJECTIONS)


def layer_and_input(name):
    factory, kind = BIJECTIONS[name]
    return factory(3), make_input(kind, 4, 3, torch.float32)


def bad_inputs(x):
    "(label, bad tensor, error type, message fragment)"
    nan = x.contiguous().clone(); nan.view(-1)[0] = float("nan")
    inf = x.contiguous().clone(); inf.view(-1)[-1] = float("inf")
    return [
        ('integer dtype', x.to(torch.int64), TypeError, 'floating-point'),
        ('NaN', nan, ValueError, 'non-finite'),
        ('inf', inf, ValueError, 'non-finite'),
        ('empty batch', x[:0], ValueError, 'empty batch'),
    ]


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('case', range(4), ids=['int', 'nan', 'inf', 'empty'])
def test_bad_values_forward_and_inverse(name, case):
    layer, x = layer_and_input(name)
    label, bad, error, fragment = bad_inputs(x)[case]
    short = type(layer).__name__
    with pytest.raises(error, match=fragment) as info: layer(bad)
    assert short in str(info.value), f"{name} on {label}: message does not name the layer: {info.value}"
    with torch.no_grad(): z = layer(x)[0]
    label, bad_z, error, fragment = bad_inputs(z)[case]
    if label in ('empty batch', 'integer dtype'):
        with pytest.raises(error, match=fragment): layer.inverse(bad_z)


WRONG_SHAPES = {
    # name -> a wrongly shaped input and a fragment of the expected message
    'RQSpline': (torch.randn(4, 5), 'expected input (batch, 3) or (batch, 3, height, width), got (4, 5)'),
    'ActNorm': (torch.randn(4, 2, 3, 3), 'expected input (batch, 3) or (batch, 3, height, width), got (4, 2, 3, 3)'),
    'AffineCoupling': (torch.randn(4, 3, 2, 2), 'expected input (batch, 3), got (4, 3, 2, 2)'),
    'AffineCoupling-conv': (torch.randn(4, 3), 'expected input (batch, 3, height, width), got (4, 3)'),
    'SplineCoupling': (torch.randn(4, 3, 2, 2), 'expected input (batch, 3), got (4, 3, 2, 2)'),
    'SplineCoupling-conv': (torch.randn(4, 3), 'expected input (batch, 3, height, width), got (4, 3)'),
    'Conv1x1': (torch.randn(4, 5, 2, 2), 'got (4, 5, 2, 2)'),
    'Permutation': (torch.randn(4, 7), 'got (4, 7)'),
    'Squeeze': (torch.randn(4, 3, 5, 4), 'divisible by 2, got (4, 3, 5, 4)'),
    'Reshape': (torch.randn(4, 12), 'expected input (batch, 3, 2, 2), got (4, 12)'),
}


@pytest.mark.parametrize('name', list(WRONG_SHAPES))
def test_wrong_shapes(name):
    layer, _ = layer_and_input(name)
    bad, fragment = WRONG_SHAPES[name]
    with pytest.raises(ValueError, match=fragment.replace('(', r'\(').replace(')', r'\)')): layer(bad)


@pytest.mark.parametrize('name', NAMES)
def test_scalar_and_non_tensor_inputs(name):
    layer, _ = layer_and_input(name)
    with pytest.raises(TypeError, match='expected a torch.Tensor'): layer([[1.0, 2.0, 3.0]])
    with pytest.raises((ValueError, TypeError)): layer(torch.tensor(1.0))


def test_constructor_arguments():
    cases = [
        (lambda: LeakyReLU(0.0), 'must be > 0'), (lambda: LeakyReLU(-1.0), 'finite number > 0'),
        (lambda: RQSpline(2, bins=1), 'an integer >= 2'), (lambda: RQSpline(2, bound=0), 'bound must be a finite number > 0'),
        (lambda: AffineCoupling(1), 'at least 2 features'), (lambda: Squeeze(1), 'an integer >= 2'),
        (lambda: Reshape((2, 3), (7,)), 'has 6 elements'), (lambda: Logit(0.5), r'alpha must be in \[0, 0.5\)'),
        (lambda: Permutation(3, [0, 1, 1]), 'permutation of range'), (lambda: Permutation(3, 'sideways'), "'random', 'reverse'"),
        (lambda: StandardNormal(0), 'positive size'), (lambda: StandardNormal((2, -1)), 'positive size'),
    ]
    for make, fragment in cases:
        with pytest.raises(ValueError, match=fragment): make()


def test_logit_range():
    with pytest.raises(ValueError, match=r'Logit\(alpha=0\): expected values in \(0, 1\), got min -0.1'):
        Logit(0.0)(torch.tensor([[-0.1, 0.5]]))
    with pytest.raises(ValueError, match=r'expected values in \[0, 1\], got min 0, max 1.5'):
        Logit(0.05)(torch.tensor([[0.0, 1.5]]))
    Logit(0.05)(torch.tensor([[0.0, 1.0]]))  # end points are fine with a squeeze


def test_actnorm_init_needs_two_values():
    with pytest.raises(ValueError, match='at least 2 values per feature'): ActNorm(3)(torch.randn(1, 3))
    ActNorm(3)(torch.randn(1, 3, 2, 2))  # one image has 4 values per channel: fine


def test_flow_errors():
    flow = Flow(StandardNormal(2), [AffineCoupling(2)])
    with pytest.raises(ValueError, match=r'layer 0 \(AffineCoupling\): AffineCoupling\(2\): expected input \(batch, 2\), got \(5, 3\)'):
        flow.log_prob(torch.randn(5, 3))
    conditional = Flow(StandardNormal(2), [AffineCoupling(2, context_features=1)])
    with pytest.raises(ValueError, match='context has batch size 2 but the input has 5'):
        conditional.log_prob(torch.randn(5, 2), context=torch.randn(2, 1))
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='positive integer'): flow.sample(n)
    with pytest.raises(ValueError, match='context has 3 rows but n=4'): conditional.sample(4, context=torch.zeros(3, 1))
    with pytest.raises(ValueError, match='give the number of samples'): flow.sample()
    with pytest.raises(TypeError, match='base must be'): Flow('normal', [AffineCoupling(2)])
    with pytest.raises(TypeError, match='item 0 is a Linear'): Flow(StandardNormal(2), [torch.nn.Linear(2, 2)])
    torch_base = Flow(D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1), [Permutation(2)])
    with pytest.raises(ValueError, match=r'produced latents of shape \(batch, 2\) but the base distribution expects \(batch, 3\)'):
        torch_base.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match='k must be a positive integer'):
        Flow(StandardNormal(2), [_Bounded()]).log_prob(torch.randn(3, 2), k=-2)


class _Bounded(Permutation.__mro__[1]):  # a minimal non-exact layer for the k check
    exact = False
    def __init__(self): super().__init__()
    def forward(self, x, context=None): return x, x.new_zeros(x.shape[0])
    def inverse(self, z, context=None): return z


def test_conditional_normal_errors():
    cond = ConditionalNormal(2, 3, context_features=4)
    with pytest.raises(ValueError, match='no context was given'): cond.log_prob(torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r'context: expected input \(batch, 4\), got \(5, 2\)'):
        cond.log_prob(torch.randn(5, 3), torch.randn(5, 2), context=torch.randn(5, 2))
    with pytest.raises(ValueError, match=r'ConditionalNormal\(2→3\): expected input \(batch, 3\), got \(5, 2\)'):
        cond.log_prob(torch.randn(5, 2), torch.randn(5, 2), context=torch.randn(5, 4))


def test_check_functions_reject_misuse():
    with pytest.raises(ValueError, match='dimension-preserving'):
        check_logdet(Reshape((2, 2), (4,)).double(), torch.randn(2, 2, 2, dtype=torch.float64)) if False else \
        check_logdet(_Dropper(), torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match='lo < hi'): check_normalized(Flow(StandardNormal(2), [Permutation(2)]), 1, -1)
    with pytest.raises(ValueError, match='the flow is exact'): check_iw_bound(Flow(StandardNormal(2), [Permutation(2)]), torch.randn(3, 2))


class _Dropper(Permutation.__mro__[1]):
    "An (exact-flagged) layer that maps 3 dims to 2, which has no log-determinant"
    def forward(self, x, context=None): return x[:, :2], x.new_zeros(x.shape[0])


def test_bits_per_dim_arguments():
    with pytest.raises(ValueError, match='dims must be positive'): bits_per_dim(0.0, 0)
    with pytest.raises(ValueError, match='bins must be at least 1'): bits_per_dim(0.0, 4, bins=0)
    assert math.isclose(float(bits_per_dim(-4 * math.log(2), 4, bins=1)), 1.0)  # already-discrete log-probability
    assert math.isclose(float(bits_per_dim(0.0, 10, bins=256)), 8.0)


def test_validation_switch_skips_checks_and_restores():
    layer = LeakyReLU(0.1)
    bad = torch.tensor([[float('nan')]])
    with validation(False): layer(bad)
    with pytest.raises(ValueError, match='non-finite'): layer(bad)


# ---------------------------------------------------------------- the full matrix: every registered layer, forward and inverse
from layers import SURJECTIONS, build_surjection

ANY_SHAPE = {'LeakyReLU', 'RQSpline-shared', 'PReLU-shared', 'Logit', 'Log', 'Tanh', 'Sigmoid', 'ELU'}   # elementwise layers: any event shape is valid
ANY_CHANNELS = {'Squeeze'}   # forward takes any number of channels
ANY_POINTS = {'PointActNorm'}   # one scale per coordinate, shared by the points: any number of points, both ways
# channels on dim 1 and any number of positions per channel after it, as torch's functional batch_norm reads them
ANY_POSITIONS = {'FlowBatchNorm', 'FlowBatchNorm-image', 'FlowBatchNorm-negative'}


def _all_layers():
    return [pytest.param(name, id=name) for name in (*BIJECTIONS, *SURJECTIONS)]


def _layer_input(name):
    if name in BIJECTIONS:
        layer, x = layer_and_input(name)
    else:
        layer, x, _, _ = build_surjection(name, 4, torch.float32)
    return layer, x


def _wrong_shapes(x):
    "(label, tensor): one more dimension, one fewer, and one more feature in the first event dimension"
    fewer = x.flatten(1) if x.dim() > 2 else x[:, 0]
    return [('extra dimension', x.unsqueeze(-1)), ('missing dimension', fewer), ('wrong size', torch.cat([x, x[:, :1]], 1))]


def _assert_clear(error, layer, label):
    "The error is a ValueError or TypeError from flownb (not torch's internals) that names the layer"
    assert isinstance(error, (ValueError, TypeError)), f"{label}: {type(error).__name__}: {error}"
    assert type(layer).__name__ in str(error), f"{label}: the message does not name {type(layer).__name__}: {error}"


def _expect_clear_error(fn, layer, label):
    with pytest.raises(Exception) as info: fn()
    _assert_clear(info.value, layer, label)


@pytest.mark.parametrize('name', _all_layers())
@pytest.mark.parametrize('side', ['forward', 'inverse'])
def test_bad_input_matrix(name, side):
    "Every layer, both directions: wrong rank, wrong size, integer dtype, NaN, ±inf, empty batch, a list, a scalar"
    layer, x = _layer_input(name)
    if side == 'inverse':
        with torch.no_grad(): x = layer(x)[0]
    fn = layer if side == 'forward' else layer.inverse
    discrete = 'Dequantization' in name and side == 'forward'
    cases = [('a list', x.tolist()), ('a scalar', torch.tensor(1.0)), ('empty batch', x[:0])]
    if not discrete: cases.append(('integer dtype', x.round().to(torch.int64)))
    for label, fill in (('NaN', float('nan')), ('inf', float('inf')), ('-inf', float('-inf'))):
        bad = x.detach().float().contiguous().clone(); bad.view(-1)[-1] = fill; cases.append((label, bad))
    if name not in ANY_SHAPE: cases += [c for c in _wrong_shapes(x.detach()) if not (c[0] == 'wrong size' and (name in ANY_CHANNELS and side == 'forward' or name in ANY_POINTS))
                                        and not (c[0] == 'extra dimension' and name in ANY_POSITIONS)]
    for label, bad in cases:
        _expect_clear_error(lambda: fn(bad), layer, f"{name}.{side} on {label}")


# ---------------------------------------------------------------- data loaders
MNIST_FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']


@pytest.mark.parametrize('damage', ['not gzip', 'truncated gzip', 'gzip of garbage', 'plain garbage'])
def test_damaged_image_files_give_a_data_error(damage, tmp_path, monkeypatch):
    import gzip
    from flownb.data import load_data, DataError
    monkeypatch.setenv('FLOWNB_CACHE', str(tmp_path / 'cache'))
    folder = tmp_path / 'mnist'; folder.mkdir()
    for stem in MNIST_FILES:
        if damage == 'not gzip': (folder / f'{stem}.gz').write_bytes(b'this is not gzip at all')
        elif damage == 'truncated gzip': (folder / f'{stem}.gz').write_bytes(gzip.compress(b'\x00\x00\x08\x03' + bytes(5000))[:40])
        elif damage == 'gzip of garbage': (folder / f'{stem}.gz').write_bytes(gzip.compress(b'garbage'))
        else: (folder / stem).write_bytes(b'garbage')
    with pytest.raises(DataError, match='corrupt'): load_data('mnist', folder)


def test_loader_arguments(tmp_path):
    from flownb.data import load_data, DataError
    with pytest.raises(DataError, match="unknown dataset 'mnsit'; choose from"): load_data('mnsit')
    with pytest.raises(DataError, match='is not a directory'): load_data('mnist', tmp_path / 'nowhere')
    with pytest.raises(DataError, match='mnist not found: looked in'): load_data('mnist', tmp_path)


def test_two_processes_unpacking_the_same_files_do_not_collide(tmp_path, monkeypatch):
    "Ranks of a torchrun job load MNIST at the same time: one unpacking must not pull the other's temporary file away"
    import gzip, shutil
    import flownb.data as data
    monkeypatch.setenv('FLOWNB_CACHE', str(tmp_path / 'cache'))
    folder = tmp_path / 'mnist'; folder.mkdir()
    for stem in MNIST_FILES: (folder / f'{stem}.gz').write_bytes(gzip.compress(stem.encode() * 100))
    copy, nested = shutil.copyfileobj, []
    def interleaved(src, dst, *args):
        "While the first unpacking writes its first file, a second one (the other rank) runs from start to end"
        copy(src, dst, *args)
        if not nested:
            nested.append(True)
            data._torchvision_root('mnist', folder, download=False)
    monkeypatch.setattr(shutil, 'copyfileobj', interleaved)
    root, _ = data._torchvision_root('mnist', folder, download=False)
    raw = root / 'MNIST' / 'raw'
    assert nested, 'the second unpacking did not run'
    for stem in MNIST_FILES: assert (raw / stem).read_bytes() == stem.encode() * 100
    assert not list(raw.glob('*.tmp')), 'temporary files were left behind'
