"""Numerical stability in float32: orthogonal factors stay orthogonal over a long run, log-scales are soft-bounded so
extreme inputs give finite numbers, and every model trains on the digits without a NaN."""
import json
import math
import pytest
import torch

from flownb.flowify import FlowLinear
from flownb.models import MODELS
from flownb.train import TrainConfig, train
from flownb.data import load_digits_data
from layers import BIJECTIONS, SURJECTIONS, make_input, build_surjection

STEPS = 10_000


@pytest.mark.slow   # about 5 CPU-minutes; run with --runslow
def test_orthogonal_factors_stay_orthogonal_for_10k_steps():
    "float32, Adam at a high learning rate: ||QᵀQ - I||_max of both orthogonal factors (the default map) after 10,000 steps"
    torch.manual_seed(0)
    layer = FlowLinear(48, 24, hidden_features=16)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(64, 48)
    for _ in range(STEPS):
        z, ldj = layer(x)
        loss = z.square().mean() - ldj.mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        errors = {name: (q.T @ q - torch.eye(q.shape[0])).abs().max().item()
                  for name, q in (('U', layer.svd.U.weight), ('V', layer.svd.V.weight))}
    assert all(e < 1e-5 for e in errors.values()), errors   # float32 rounding of a 48×48 product is ~1e-6


@pytest.mark.parametrize('scale', [1e2, 1e4])
@pytest.mark.parametrize('name', [n for n in BIJECTIONS if n not in ('Logit', 'Log', 'SortedToReal')] + list(SURJECTIONS))
def test_extreme_inputs_give_finite_numbers(name, scale):
    "Inputs far outside the training range: log-scales are soft-bounded, so the output and ldj stay finite (float32)"
    if name in BIJECTIONS:
        factory, kind = BIJECTIONS[name]
        layer, x = factory(3), make_input(kind, 4, 3, torch.float32)
        with torch.no_grad(): layer(x)   # initialise on ordinary data first
    else:
        layer, x, _, _ = build_surjection(name, 4, torch.float32)
    if 'Dequantization' in name: return   # discrete levels have a fixed range; out-of-range levels are refused (test_surjections)
    with torch.no_grad():
        z, ldj = layer(x * scale)
    assert torch.isfinite(ldj).all(), f"{name} at scale {scale:g}: ldj {ldj}"
    assert torch.isfinite(z).all(), f"{name} at scale {scale:g}: non-finite output"


@pytest.mark.slow   # about 5 CPU-minutes; run with --runslow
def test_long_training_on_digits_stays_finite(tmp_path):
    "3,300 steps (300 epochs) of the coupling-augmented flowified MLP at 3× the default learning rate: no NaN, and it learns"
    config = TrainConfig(model='flowify-mlp-coupling', data='digits', epochs=300, lr=3e-3, seed=1)
    result = train(config, out=tmp_path / 'long', progress=False, data=load_digits_data())
    history = json.loads((tmp_path / 'long' / 'metrics.json').read_text())['history']
    assert result['steps'] >= 3000
    assert all(math.isfinite(v) for v in history['train_bpd']), 'a training loss was not finite'
    assert math.isfinite(result['test']['bits_per_dim']) and result['test']['bits_per_dim'] < 2.9   # the Gaussian floor is 2.89


@pytest.mark.parametrize('model', [m for m, spec in MODELS.items() if spec.shapes is None and spec.data != 'points'])   # point sets: tests/test_point_sets.py   # the paper networks: tests/test_paper_models.py
def test_every_model_trains_without_nan(model, tmp_path):
    "Each registered model, 3 epochs (about 30 steps) on the digits at the default learning rate: finite losses, finite test bits/dim"
    result = train(TrainConfig(model=model, data='digits', epochs=3), out=tmp_path / model, progress=False, data=load_digits_data())
    history = json.loads((tmp_path / model / 'metrics.json').read_text())['history']
    assert all(math.isfinite(v) for v in history['train_bpd']) and math.isfinite(result['test']['bits_per_dim'])
