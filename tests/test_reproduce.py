"""`bench/reproduce.py`: the experiment list, refusals, and one experiment end to end on the bundled digits at a budget
of seconds (the numbers mean nothing; the files, the table and the verdict's wording are what is checked)."""
import importlib.util, json, math, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('reproduce', ROOT / 'bench' / 'reproduce.py')
reproduce = importlib.util.module_from_spec(spec); spec.loader.exec_module(reproduce)


def test_every_experiment_names_registered_models_and_a_claim_about_them():
    from flownb.models import MODELS
    for name, e in reproduce.EXPERIMENTS.items():
        registered = reproduce.TOY_MODELS if e.get('toy') else MODELS
        arms = e.get('arms', {})                         # an arm is a registered model trained with other settings
        assert all(arms[m]['model'] in registered if m in arms else m in registered for m in e['models']), name
        a, op, b, slack = e['claim']
        assert a in e['models'] and b in e['models'] and op in ('<', '<=') and slack >= 0, name
        assert e['published'], name                      # a number, or says it was not found


def test_list_and_refusals(capsys):
    reproduce.main(['--list'])
    assert 'funnels-mnist' in capsys.readouterr().out
    with pytest.raises(SystemExit): reproduce.main(['no-such-experiment'])
    with pytest.raises(SystemExit): reproduce.main([])


def test_one_experiment_end_to_end_on_digits(tmp_path):
    reproduce.main(['survae-maxpool', '--data', 'digits', '--time-budget', '2', '--epochs', '1', '--jobs', '1',
                    '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    record = json.loads((tmp_path / 'out' / 'survae-maxpool.json').read_text())
    assert set(record['rows']) == {'poolflow-max', 'poolflow-slice'} and record['data'] == 'digits' and record['scale'] == 'cpu'
    assert record['settings']['time_budget'] == 2 and record['settings']['batch_size'] == reproduce.CPU_BATCH
    assert record['verdict'].split(' at this budget')[0] in ('holds', 'does not show')
    assert (tmp_path / 'out' / 'survae-maxpool.png').stat().st_size > 0
    assert '| poolflow-max |' in (tmp_path / 'out' / 'survae-maxpool.md').read_text()
    assert 'survae-maxpool' in reproduce.table(tmp_path / 'out')


def test_survae_toy_end_to_end(tmp_path):
    "SurVAE's toy Abs experiment at 12 steps on 512 samples: every dataset and model, the JSON's fields, the files and the table"
    reproduce.main(['survae-toy', '--steps', '12', '--samples', '512', '--out', str(tmp_path / 'out')])
    record = json.loads((tmp_path / 'out' / 'survae-toy.json').read_text())
    assert record['unit'] == 'nats' and record['scale'] == 'cpu' and record['published'] == 'not found'
    assert record['settings']['steps'] == 12 and record['settings']['train_samples'] == 512 and record['settings']['valid_samples'] == 51
    assert list(record['rows']) == ['checkerboard', 'corners', 'eight_gaussians', 'four_circles']
    for dataset, models in record['rows'].items():
        assert set(models) == {'abs-flow', 'baseline'}, dataset
        for m, row in models.items():
            assert row['kind'] == 'exact' and row['steps'] == 12 and row['dataset'] == dataset, (dataset, m)
            assert 1 <= row['selected_step'] <= 12 and len(row['validation_curve']) == 12   # scored every step at this budget
            assert min(v for _, v in row['validation_curve']) == pytest.approx(row['valid_nats'], abs=1e-3)
            assert 0 < row['test_nats'] < 10 and 0 < row['grid_mass'] < 1.05 and row['test_median_nats'] <= row['test_worst_nats']
    # the checkerboard's AbsFlow is a uniform density on the half-board: its mass on [-4, 4]^2 is 1 to the grid's precision
    assert record['rows']['checkerboard']['abs-flow']['grid_mass'] == pytest.approx(1.0, abs=1e-3)
    assert record['verdict'].startswith(('holds on all 4 datasets at this budget', 'does not show on any dataset at this budget', 'holds on '))
    assert all(f"{d} abs-flow" in record['verdict'] for d in record['rows'])
    assert (tmp_path / 'out' / 'survae-toy.png').stat().st_size > 0
    assert '| corners | abs-flow |' in (tmp_path / 'out' / 'survae-toy.md').read_text()
    assert 'test nats/sample' in reproduce.table(tmp_path / 'out')


def test_funnels_tabular_end_to_end(tmp_path):
    "The Funnels paper's UCI comparison on scikit-learn's breast-cancer data at 2 epochs: its three models, the log-likelihood column, the curves"
    reproduce.main(['funnels-tabular', '--time-budget', '20', '--epochs', '2', '--jobs', '1',
                    '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    record = json.loads((tmp_path / 'out' / 'funnels-tabular.json').read_text())
    assert list(record['rows']) == ['funnels-nsf', 'nsf', 'funnels-mlp'] and record['data'] == 'breast-cancer'
    assert record['settings']['epochs'] == 2 and record['settings']['grad_clip'] == 5.0   # the paper's clip, from the recipe
    latents = {m: row['latent'] for m, row in record['rows'].items()}
    assert latents == {'funnels-nsf': 26, 'nsf': 30, 'funnels-mlp': 28}
    for m, row in record['rows'].items():
        assert row['kind'] == 'exact' and row['continuous_part_exact'], m
        # bits/dim of a continuous density and the log-likelihood per sample are the same number in two units
        assert row['test_log_likelihood'] == pytest.approx(-row['test_bpd'] * 30 * math.log(2), rel=1e-6), m
    assert '| funnels-nsf |' in (tmp_path / 'out' / 'funnels-tabular.md').read_text()
    assert (tmp_path / 'out' / 'funnels-tabular.png').stat().st_size > 0
    assert 'nats) (continuous bits/dim; test log-likelihood per sample)' in reproduce.table(tmp_path / 'out')


def test_a_recipe_in_steps_sets_the_epochs_at_full_scale():
    "--scale full: funnels-tabular's 40,000 steps of batch 512 become epochs of the data at hand"
    e = reproduce.EXPERIMENTS['funnels-tabular']
    assert reproduce.full_epochs(e, 'breast-cancer', None) == 40_000                     # 411 rows: one step per epoch
    assert reproduce.full_epochs({**e, 'full_steps': 10}, 'digits', None) == 5           # digits: 1,348 rows, two steps of 512 per epoch


def test_funnels_tabular_on_synthetic_maf_files(tmp_path):
    "--synthetic: MAF-format files of a random mixture are written, read through MAF's preprocessing and trained on"
    reproduce.main(['funnels-tabular', '--data', 'power', '--synthetic', '--time-budget', '10', '--epochs', '1', '--jobs', '1',
                    '--only', 'nsf', '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    record = json.loads((tmp_path / 'out' / 'funnels-tabular.json').read_text())
    assert record['data'].startswith('power (synthetic') and list(record['rows']) == ['nsf']
    assert record['rows']['nsf']['latent'] == 6 and math.isfinite(record['rows']['nsf']['test_bpd'])
    assert (tmp_path / 'runs' / 'synthetic-maf' / 'power' / 'data.npy').exists()
    with pytest.raises(SystemExit, match='--synthetic writes'):
        reproduce.main(['funnels-tabular', '--synthetic', '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])


def test_survae_spatial_end_to_end_on_the_bundled_digits(tmp_path):
    "SortFlow vs PermuteFlow on 50-point sets of the bundled digits: nats per point, PermuteFlow tested by its IW bound"
    reproduce.main(['survae-spatial', '--data', 'spatial-digits', '--time-budget', '5', '--epochs', '1', '--jobs', '1',
                    '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    record = json.loads((tmp_path / 'out' / 'survae-spatial.json').read_text())
    rows = record['rows']
    assert list(rows) == ['sortflow', 'permuteflow'] and record['settings']['eval_k'] == 10
    assert rows['sortflow']['kind'] == 'exact' and rows['permuteflow']['kind'] == 'IW-10' and 'test_elbo_bpd' in rows['permuteflow']
    for row in rows.values():   # bits/dim over 100 coordinates and nats over the set: the same number in two units
        assert row['test_log_likelihood'] == pytest.approx(-row['test_bpd'] * 100 * math.log(2), rel=1e-6)
    text = (tmp_path / 'out' / 'survae-spatial.md').read_text()
    assert 'test log-likelihood (nats/point)' in text and '(test nats per point)' in reproduce.table(tmp_path / 'out')
