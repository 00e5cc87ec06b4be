"""Dimensionality Reduction Flows: the likelihood-contribution factor-out (LCMASplit, fit_lcma) over random shapes,
the learned low-dimensional prior, the multi-scale models through `train`, and the tabular loaders' bad input."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributions as D
from hypothesis import given, settings, strategies as st

from flownb.core import Flow
from flownb.bijections import ActNorm, AffineCoupling
from flownb.drf import LCMASplit, LowDimPrior, fit_lcma, likelihood_contributions
from flownb.data import DataError, load_tabular, load_data
from flownb.models import create_model
from flownb.train import TrainConfig, train, load_checkpoint


@st.composite
def split_shapes(draw):
    if draw(st.booleans()):
        d = draw(st.integers(2, 9)); return (d,), draw(st.integers(1, d - 1))
    c = draw(st.integers(2, 5)); h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (c, h, w), draw(st.integers(1, c - 1))


@settings(max_examples=40, deadline=None)
@given(shape_keep=split_shapes(), batch=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_lcma_split_keeps_the_lowest_scores_and_scores_the_rest(shape_keep, batch, seed):
    shape, keep = shape_keep
    torch.manual_seed(seed)
    split = LCMASplit(shape, keep, hidden_features=8)
    with torch.no_grad():
        for p in split.parameters(): p.add_(0.2 * torch.randn_like(p))
    scores = torch.randn(shape)
    split.fit(scores)
    x = torch.randn(batch, *shape)
    z, ldj = split(x)
    assert z.shape == (batch, keep, *shape[1:]) and ldj.shape == (batch,)
    # brute force: per position, the kept values are those of the `keep` lowest scores, in ascending score order
    order = scores.argsort(dim=0, stable=True)
    expected_z = x.gather(1, order[:keep].expand(batch, keep, *shape[1:]))
    dropped = x.gather(1, order[keep:].expand(batch, shape[0] - keep, *shape[1:]))
    torch.testing.assert_close(z, expected_z)
    loc, log_scale = split.dropped.params(expected_z)
    by_hand = D.Normal(loc, log_scale.exp()).log_prob(dropped).reshape(batch, -1).sum(1)
    torch.testing.assert_close(ldj, by_hand)
    # the kept part survives the stochastic inverse exactly; the dropped part is resampled
    back = split.inverse(z)
    torch.testing.assert_close(back[:, split.kept_mask], x[:, split.kept_mask])
    torch.testing.assert_close(split(back)[0], z)


def test_lcma_selection_travels_with_state_dict_and_is_not_refit():
    torch.manual_seed(0)
    flow = create_model('lcma', (1, 8, 8), 17)
    x = torch.randint(0, 17, (32, 1, 8, 8)).float()
    with torch.no_grad(): flow.log_prob(x)
    splits = fit_lcma(flow, x)
    assert len(splits) == 2 and all(bool(s.fitted) for s in splits)
    assert fit_lcma(flow, x) == []                      # fitted splits stay frozen unless refit=True
    orders = [s.order.clone() for s in splits]
    torch.manual_seed(1)
    copy = create_model('lcma', (1, 8, 8), 17)
    copy.load_state_dict(flow.state_dict())
    for s, o in zip([m for m in copy.modules() if isinstance(m, LCMASplit)], orders):
        assert bool(s.fitted) and torch.equal(s.order, o)
    torch.manual_seed(2); a = flow.log_prob(x)
    torch.manual_seed(2); b = copy.log_prob(x)
    torch.testing.assert_close(a, b)


def test_likelihood_contributions_of_a_coupling_match_the_full_jacobian_diagonal():
    torch.manual_seed(0)
    coupling = AffineCoupling(4, 8)
    with torch.no_grad():
        for p in coupling.parameters(): p.add_(0.5 * torch.randn_like(p))
    u = torch.randn(5, 4)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: coupling(v[None])[0][0], row) for row in u])
    h = coupling(u)[0].detach()
    expected = (D.Normal(0., 1.).log_prob(h) + jac.diagonal(dim1=1, dim2=2).abs().log()).mean(0)
    torch.testing.assert_close(likelihood_contributions(coupling, u), expected, rtol=1e-4, atol=1e-5)


def test_lcma_bad_input():
    with pytest.raises(ValueError, match='keep must be in 1..1'): LCMASplit(2, 2)
    with pytest.raises(ValueError, match='keep must be in'): LCMASplit((3, 2, 2), 0)
    split = LCMASplit((3, 2, 2), 1)
    with pytest.raises(ValueError, match="scores must have the input's shape"): split.fit(torch.randn(3))
    with pytest.raises(ValueError, match='NaN or inf'): split.fit(torch.full((3, 2, 2), float('inf')))
    with pytest.raises(TypeError, match='floating-point'): split(torch.ones(2, 3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'\(batch, 1, 2, 2\)'): split.inverse(torch.randn(2, 2, 2, 2))


def test_low_dim_prior_linear_is_exact_and_nonlinear_is_a_conditional_bound():
    torch.manual_seed(0)
    prior = LowDimPrior(4, 2, linear=True)
    flow = Flow(prior, [ActNorm(4)])
    x = torch.randn(16, 4)
    assert flow.exact
    torch.testing.assert_close(flow.log_prob(x, k=8), flow.log_prob(x))     # exact: K changes nothing
    cond = Flow(LowDimPrior(4, 1, hidden_features=8, context_features=3), [ActNorm(4)])
    assert not cond.exact
    c = torch.randn(16, 3)
    lp = cond.log_prob(x, c, k=4)
    assert lp.shape == (16,) and torch.isfinite(lp).all()
    with torch.no_grad(): assert cond.sample(5, torch.randn(5, 3)).shape == (5, 4)
    with pytest.raises(ValueError, match='context'): cond.log_prob(x, torch.randn(16, 2))


def test_train_fits_lcma_once_and_resume_keeps_the_selection(tmp_path):
    config = TrainConfig(model='lcma', epochs=2, batch_size=128, model_options={'hidden': 16, 'blocks': 1})
    train(config, tmp_path / 'run', progress=False, stop_after_steps=14)      # stopped in epoch 2, checkpoint after epoch 1
    state = load_checkpoint(tmp_path / 'run' / 'checkpoint.pt')['model_state']
    fitted = [k for k in state if k.endswith('.fitted')]
    assert len(fitted) == 2 and all(bool(state[k]) for k in fitted)
    identity = torch.arange(4).reshape(4, 1, 1).expand(4, 4, 4)
    first_order = next(state[k] for k in state if k.endswith('.order'))
    assert not torch.equal(first_order, identity)       # the digits' selection is not the static split
    train(config, tmp_path / 'run', resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / 'run' / 'checkpoint.pt')
    assert resumed['epoch'] == 2
    for k in state:
        if k.endswith('.order') or k.endswith('.fitted'): assert torch.equal(state[k], resumed['model_state'][k])


# --- tabular loaders: bad files give one clear DataError -------------------------------------------------------

def test_tabular_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match='give the folder'): load_tabular('gas')
    with pytest.raises(DataError, match='files not found'): load_tabular('hepmass', tmp_path)
    (tmp_path / 'gas').mkdir(); (tmp_path / 'gas' / 'ethylene_CO.pickle').write_bytes(b'\x80garbage')
    with pytest.raises(DataError, match='not a readable pandas pickle'): load_tabular('gas', tmp_path)
    pd = pytest.importorskip('pandas')
    pd.DataFrame({'a': np.arange(50.0)}).to_pickle(tmp_path / 'gas' / 'ethylene_CO.pickle')
    with pytest.raises(DataError, match=r"lacks the columns \['Eth', 'Meth', 'Time'\]"): load_tabular('gas', tmp_path)
    h5py = pytest.importorskip('h5py')
    (tmp_path / 'BSDS300').mkdir()
    with h5py.File(tmp_path / 'BSDS300' / 'BSDS300.hdf5', 'w') as f: f['train'] = np.zeros((4, 63))
    with pytest.raises(DataError, match='train/validation/test'): load_tabular('bsds300', tmp_path)
    (tmp_path / 'miniboone').mkdir(); np.save(tmp_path / 'miniboone' / 'data.npy', np.random.default_rng(0).normal(size=(5, 43)))
    with pytest.raises(DataError, match='only 5 rows'): load_tabular('miniboone', tmp_path)
    (tmp_path / 'power').mkdir(); np.save(tmp_path / 'power' / 'data.npy', np.zeros(100))
    with pytest.raises(DataError, match=r'expected \(rows, 8\)'): load_tabular('power', tmp_path)


def test_miniboone_preprocessing_matches_maf():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 43)) * 3 + 1
    import tempfile, pathlib
    root = pathlib.Path(tempfile.mkdtemp())
    (root / 'miniboone').mkdir(); np.save(root / 'miniboone' / 'data.npy', data)
    loaded = load_tabular('miniboone', root)
    test, rest = data[-20:], data[:-20]
    train, valid = rest[:-18], rest[-18:]
    mu, s = rest.mean(0), rest.std(0)
    np.testing.assert_allclose(loaded.test.numpy(), (test - mu) / s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.valid.numpy(), (valid - mu) / s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.train.numpy(), (train - mu) / s, rtol=1e-5, atol=1e-5)


def test_cli_names_the_missing_tabular_folder(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'flownb.cli', 'train', '--data', 'power', '--out', str(tmp_path / 'x')],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert 'power: give the folder of MAF' in r.stderr


def test_sklearn_tabular_trains_with_a_vector_model(tmp_path):
    data = load_data('wine')
    flow = create_model('lcma', data.shape, None, hidden=16, blocks=1)
    with torch.no_grad(): flow.log_prob(data.train[:64])
    fit_lcma(flow, data.train[:32])
    lp = flow.log_prob(data.test)
    assert lp.shape == (len(data.test),) and torch.isfinite(lp).all()


# --- lcma='train': the factor-out accumulated during training, then frozen (10_drf, 13_train) -----------------

def _lcma_state(state):
    return {k: v for k, v in state.items() if k.rsplit('.', 1)[-1] in ('order', 'fitted', 'scores', 'seen')}

def test_train_accumulates_lcma_then_freezes_before_evaluation(tmp_path):
    config = TrainConfig(model='lcma', epochs=2, batch_size=128, lcma='train', lcma_steps=6, lcma_every=2,
                         model_options={'hidden': 16, 'blocks': 1})
    result = train(config, tmp_path / 'run', progress=False)
    state = load_checkpoint(tmp_path / 'run' / 'best.pt')['model_state']
    lcma = _lcma_state(state)
    assert all(bool(v) for k, v in lcma.items() if k.endswith('.fitted'))           # frozen in what was validated and tested
    assert all(int(v) == 3 for k, v in lcma.items() if k.endswith('.seen'))          # steps 0, 2, 4 of the window of 6
    assert load_checkpoint(tmp_path / 'run' / 'best.pt')['config']['lcma'] == 'train'
    assert math.isfinite(result['test']['bits_per_dim'])
    # the same run fitted once at initialisation scores one batch: seen 1
    once = train(replace_config(config, lcma='init'), tmp_path / 'once', progress=False)
    state_once = load_checkpoint(tmp_path / 'once' / 'best.pt')['model_state']
    assert all(int(v) == 1 for k, v in _lcma_state(state_once).items() if k.endswith('.seen'))
    assert once['test']['bits_per_dim'] != result['test']['bits_per_dim']

def replace_config(config, **changes):
    import dataclasses
    return dataclasses.replace(config, **changes)

def test_lcma_train_window_longer_than_an_epoch_freezes_at_the_first_validation(tmp_path):
    config = TrainConfig(model='lcma', epochs=1, batch_size=128, lcma='train', lcma_steps=10_000, lcma_every=3,
                         model_options={'hidden': 16, 'blocks': 1})
    train(config, tmp_path / 'run', progress=False)
    ckpt = load_checkpoint(tmp_path / 'run' / 'checkpoint.pt')
    steps = ckpt['step']
    lcma = _lcma_state(ckpt['model_state'])
    assert all(bool(v) for k, v in lcma.items() if k.endswith('.fitted'))
    assert all(int(v) == len(range(0, steps, 3)) for k, v in lcma.items() if k.endswith('.seen'))

def test_lcma_train_resume_inside_the_window_reproduces_the_mask_and_numbers(tmp_path):
    config = TrainConfig(model='lcma', epochs=2, batch_size=128, lcma='train', lcma_steps=8, lcma_every=2,
                         model_options={'hidden': 16, 'blocks': 1})
    whole = train(config, tmp_path / 'whole', progress=False)
    train(config, tmp_path / 'cut', progress=False, stop_after_steps=3)               # stopped inside the window
    mid = _lcma_state(load_checkpoint(tmp_path / 'cut' / 'checkpoint.pt')['model_state'])
    assert not any(bool(v) for k, v in mid.items() if k.endswith('.fitted'))        # the checkpoint keeps accumulating ...
    assert all(int(v) == 2 for k, v in mid.items() if k.endswith('.seen'))           # ... after steps 0 and 2
    resumed = train(config, tmp_path / 'cut', resume=True, progress=False)
    a = load_checkpoint(tmp_path / 'whole' / 'checkpoint.pt')['model_state']
    b = load_checkpoint(tmp_path / 'cut' / 'checkpoint.pt')['model_state']
    for k in _lcma_state(a): assert torch.equal(a[k], b[k]), k
    assert resumed['test']['bits_per_dim'] == whole['test']['bits_per_dim']
    assert resumed['steps'] == whole['steps']

def test_lcma_train_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="lcma must be 'init' or 'train'"): TrainConfig(lcma='during').validate()
    with pytest.raises(ValueError, match='lcma_steps must be a positive integer'): TrainConfig(lcma_steps=0).validate()
    with pytest.raises(ValueError, match='lcma_every must be a positive integer'): TrainConfig(lcma_every=True).validate()
    with pytest.raises(ValueError, match="lcma='train' needs a model with LCMASplit"):
        train(TrainConfig(model='multiscale', epochs=1, lcma='train', model_options={'hidden': 16, 'blocks': 1}), tmp_path / 'x', progress=False)
    config = TrainConfig(model='lcma', epochs=2, batch_size=128, model_options={'hidden': 16, 'blocks': 1})
    train(config, tmp_path / 'run', progress=False, stop_after_steps=3)
    from flownb.train import CheckpointError
    with pytest.raises(CheckpointError, match="lcma='init'"):
        train(replace_config(config, lcma='train'), tmp_path / 'run', resume=True, progress=False)
