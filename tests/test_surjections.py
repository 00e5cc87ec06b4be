"""Bad input for every surjection (SurVAE layers, dequantization, flowified layers, funnels, LCMA split) and their
constructors. The contract itself (shapes, dtypes, round trips, exactness, serialization) is in test_contract.py."""
import pytest
import torch

import flownb.surjections as S
import flownb.surjections as DQ

from layers import SURJECTIONS, build_surjection as build

NAMES = list(SURJECTIONS)


@pytest.mark.parametrize('name', [n for n in NAMES if 'Dequantization' not in n])
def test_bad_float_inputs(name):
    layer, x, _, _ = build(name, 3, torch.float32)
    nan = x.clone(); nan.view(-1)[0] = float('nan')
    with pytest.raises(ValueError, match='non-finite'): layer(nan)
    with pytest.raises(TypeError, match='floating-point'): layer(x.to(torch.int64))
    with pytest.raises(ValueError, match='empty batch'): layer(x[:0])
    with pytest.raises(ValueError, match='expected input'): layer(x.reshape(3, -1)[:, :1] if x.dim() > 2 else x[:, :1].unsqueeze(-1))


@pytest.mark.parametrize('name', ['UniformDequantization', 'VariationalDequantization'])
def test_bad_levels(name):
    layer, x, _, _ = build(name, 3, torch.float32)
    with pytest.raises(ValueError, match=r'expected levels in 0..15, got min 0, max 16'): layer(torch.full_like(x, 16.0).index_fill_(0, torch.tensor([0]), 0.0))
    with pytest.raises(ValueError, match='non-integer'): layer(x.clamp(max=14) + 0.5)
    with pytest.raises(ValueError, match=r'expected input \(batch, 1, 3, 3\)'): layer(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match='expected levels'): layer(torch.full_like(x, float('nan')))
    layer(x.to(torch.int64))   # integer tensors are the natural input


def test_constructor_errors():
    cases = [(lambda: S.Slice(3, 3), 'drops dimensions'), (lambda: S.Augment(3, 2), 'adds dimensions'),
             (lambda: DQ.UniformDequantization(1), 'an integer >= 2'), (lambda: DQ.VariationalDequantization((2, 3)), 'shape must be')]
    for make, fragment in cases:
        with pytest.raises(ValueError, match=fragment): make()
    with pytest.raises(ValueError, match=r'divisible by the window 2×2, got \(1, 1, 3, 4\)'): S.MaxPool2d(1, 2)(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match='strictly increasing'): S.SortedToReal(2)(torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match='positive'): S.Log()(torch.tensor([[0.0]]))
