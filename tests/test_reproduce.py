"""`bench/reproduce.py`: the experiment list, refusals, and one experiment end to end on the bundled digits at a budget
of seconds (the numbers mean nothing; the files, the table and the verdict's wording are what is checked)."""
import importlib.util, json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('reproduce', ROOT / 'bench' / 'reproduce.py')
reproduce = importlib.util.module_from_spec(spec); spec.loader.exec_module(reproduce)


def test_every_experiment_names_registered_models_and_a_claim_about_them():
    from flownb.models import MODELS
    for name, e in reproduce.EXPERIMENTS.items():
        assert all(m in MODELS for m in e['models']), name
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
    assert set(record['rows']) == {'maxpool', 'slice'} and record['data'] == 'digits' and record['scale'] == 'cpu'
    assert record['settings']['time_budget'] == 2 and record['settings']['batch_size'] == reproduce.CPU_BATCH
    assert record['verdict'].split(' at this budget')[0] in ('holds', 'does not show')
    assert (tmp_path / 'out' / 'survae-maxpool.png').stat().st_size > 0
    assert '| maxpool |' in (tmp_path / 'out' / 'survae-maxpool.md').read_text()
    assert 'survae-maxpool' in reproduce.table(tmp_path / 'out')
