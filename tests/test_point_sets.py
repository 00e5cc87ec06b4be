"""Point sets (nbs/07a_point_sets.ipynb) beyond the notebook: SortFlow's exact invariance and PermuteFlow's bound on
the registry models, bad input, SpatialMNIST from the IDX files, training and exact resume on the bundled digits' sets,
and the command line. The layers' contract (shapes, inverses, ldj against autograd, normalisation) is in
tests/test_contract.py through tests/layers.py."""
import json, math
from pathlib import Path

import pytest
import torch

from flownb.checks import check_iw_bound
from flownb.data import DataError, load_data
from flownb.models import create_model
from flownb.point_sets import PointCoupling, SetTransformer, SortPoints, ShufflePoints, spatial_points
from flownb.train import TrainConfig, load_checkpoint, train

MNIST = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'mnist'
SMALL = {'steps': 2, 'd_model': 16, 'heads': 2}   # the registry's architecture, shrunk so a test trains in seconds


def _moved(flow, seed=0, scale=0.05):
    "The couplings moved off their identity initialisation (zero output layers), the normalisations initialised on data"
    torch.manual_seed(seed)
    with torch.no_grad():
        flow.log_prob(torch.rand(64, *flow.base.shape, dtype=next(flow.parameters()).dtype) * 28)
        for m in flow.modules():
            if isinstance(m, SetTransformer): m.out.weight.normal_(0, scale)
    return flow


@pytest.mark.parametrize('points', [4, 50])
def test_sortflow_gives_every_order_of_a_set_the_same_log_likelihood(points):
    flow = _moved(create_model('sortflow', (points, 2), **SMALL).double())
    x = torch.rand(16, points, 2, dtype=torch.float64) * 28
    with torch.no_grad():
        reference = flow.log_prob(x)
        for seed in range(3):
            order = torch.randperm(points, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(flow.log_prob(x[:, order]), reference, rtol=1e-10, atol=1e-8)
            rows = torch.argsort(torch.rand(16, points, generator=torch.Generator().manual_seed(seed)), 1)   # a different order per set
            torch.testing.assert_close(flow.log_prob(torch.gather(x, 1, rows[..., None].expand_as(x))), reference, rtol=1e-10, atol=1e-8)


def test_permuteflow_bound_rises_with_k_towards_the_symmetrised_density():
    "Two points: the exact density averages the two orders; the importance-weighted bounds rise with K and stay below it"
    torch.manual_seed(0)
    inner = _moved(create_model('sortflow', (2, 2), **SMALL).double(), scale=0.3)   # any non-symmetric flow after the shuffle
    body = [t for t in inner.transform.transforms if not isinstance(t, SortPoints) and type(t).__name__ != 'SortedPointsToReal']
    from flownb.core import Compose, Flow
    plain = Flow(inner.base, Compose(*body)).double()
    shuffled = Flow(inner.base, Compose(ShufflePoints(2, 2), *body)).double()
    x = torch.rand(64, 2, 2, dtype=torch.float64) * 28
    with torch.no_grad():
        exact = torch.logsumexp(torch.stack([plain.log_prob(x), plain.log_prob(x.flip(1))]), 0) - math.log(2)
    report = check_iw_bound(shuffled, x, ks=(1, 2, 16), reference=exact)
    assert report.passed, report


def test_bad_point_set_input_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"needs point sets \(points, point_features\); got event shape \(50,\)"):
        create_model('permuteflow', (50,))
    with pytest.raises(ValueError, match='continuous sets; got data with 256 levels'):
        create_model('sortflow', (50, 2), 256)
    with pytest.raises(ValueError, match='looks like point sets'):
        create_model('maxpool', (50, 2))
    flow = create_model('sortflow', (50, 2), **SMALL)
    with pytest.raises(ValueError, match=r'SortPoints: expected input \(batch, 50, 2\), got \(4, 49, 2\)'):
        flow.log_prob(torch.rand(4, 49, 2))
    with pytest.raises(ValueError, match='even number of points'):
        create_model('sortflow', (51, 2))
    with pytest.raises(ValueError, match='needs at least 2 coordinates'):
        PointCoupling(4, 1, split='coordinates')
    with pytest.raises(ValueError, match='image 1 has no lit pixel'):
        spatial_points(torch.cat([torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)]))
    with pytest.raises(DataError, match='mnist'):
        load_data('spatial-mnist', data_dir='/nonexistent/folder')


@pytest.mark.skipif(not (MNIST / 't10k-images-idx3-ubyte.gz').exists(), reason='MNIST not in ../shared/data/mnist')
def test_spatial_mnist_from_the_idx_files():
    data = load_data('spatial-mnist', data_dir=MNIST)
    assert data.shape == (50, 2) and data.bins is None and len(data.test) == 10_000
    assert len(data.train) + len(data.valid) == len(load_data('mnist', data_dir=MNIST, validation=False).train)
    assert data.train.min() >= 0 and data.train.max() <= 28
    # a digit with at least 50 lit pixels gets 50 distinct ones; the few with fewer (10 of MNIST's test digits) repeat some
    lit = (load_data('mnist', data_dir=MNIST, validation=False).test[:200].flatten(1) > 0).sum(1)
    distinct = torch.tensor([len(set(map(tuple, c.tolist()))) for c in data.test[:200].floor().long()])
    assert (distinct[lit >= 50] == 50).all() and (distinct[lit < 50] <= lit[lit < 50]).all() and (lit < 50).any()


def test_train_a_bound_on_point_sets_and_resume_exactly(tmp_path):
    "PermuteFlow draws a shuffle in every forward pass: the checkpoint's random state must still make resuming exact"
    cfg = dict(model='permuteflow', data='spatial-digits', epochs=2, batch_size=256, model_options=SMALL, eval_k=4)
    whole = train(TrainConfig(**cfg), tmp_path / 'whole', progress=False)
    assert 'iw_4' in whole['test'] and whole['test']['iw_4']['kind'] == 'IW-4' and whole['test']['kind'] == 'ELBO'
    assert whole['test']['iw_4']['bits_per_dim'] <= whole['test']['bits_per_dim'] + 0.01   # K = 4 no looser than the ELBO, up to noise
    assert (tmp_path / 'whole' / 'samples.png').stat().st_size > 0
    part = train(TrainConfig(**cfg, max_steps=7), tmp_path / 'run', progress=False)
    assert part['stopped'] == 'max_steps'
    resumed = train(TrainConfig(**cfg), tmp_path / 'run', resume=True, progress=False)
    assert resumed['test'] == whole['test'] and resumed['selected'] == whole['selected']
    a, b = (load_checkpoint(p / 'checkpoint.pt')['model_state'] for p in (tmp_path / 'whole', tmp_path / 'run'))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_command_line_trains_samples_and_evaluates_point_sets(tmp_path):
    run = tmp_path / 'sets'
    from cli_runner import run_flownb
    def flownb(*args): return run_flownb(*args).stdout
    out = flownb('train', '--model', 'sortflow', '--data', 'spatial-digits', '--max-steps', '2', '--batch-size', '64', '--out', run, '--quiet')
    assert 'per sample' in out or 'bits/dim' in out
    assert (run / 'samples.png').stat().st_size > 0
    assert 'exact' in flownb('eval', run)
    flownb('sample', run, '--n', '16', '--out', tmp_path / 'drawn.png')
    assert (tmp_path / 'drawn.png').stat().st_size > 0
    assert 'sortflow' in flownb('models', '--data', 'spatial-digits')
    result = json.loads((run / 'metrics.json').read_text())['result']
    assert result['test']['kind'] == 'exact' and result['latent'] == 100
