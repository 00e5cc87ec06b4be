"""The benchmark scripts run (bench/sampling.py, bench/compile_cost.py): smoke runs that measure nothing worth quoting and
assert no time, only that each script produces the rows and tables the README is generated from."""
import importlib.util, json, sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'bench'


def _script(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f'bench_{name}', BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module


def test_sampling_rows_and_table(tmp_path):
    sampling = _script('sampling')
    res = sampling.main(['--quick', '--out', str(tmp_path)])
    assert [r['model'] for r in res['rows']] == ['gaussian', 'realnvp', 'flowify-mlp']
    assert all(r['samples_per_s'] > 0 and r['parameters'] > 0 for r in res['rows'])
    (tmp_path / 'sampling.json').write_text(json.dumps(res))
    table = sampling.main(['--table', '--out', str(tmp_path)])
    assert (tmp_path / 'sampling_TABLE.md').read_text().startswith('| model (MNIST 1×28×28, 256 levels) |') and table == res
    points = sampling.main(['--quick', '--models', 'sortflow', '--out', str(tmp_path)])
    assert points['rows'][0]['shape'] == [50, 2]


def test_compile_cost_runs_with_a_backend_that_needs_no_compiler():
    res = _script('compile_cost').main(['--quick', '--batches', '8', '--backend', 'aot_eager'])
    assert res['graph_breaks'] == 0 and res['graphs'] == 1
    row, = res['rows']
    assert row['batch'] == 8 and row['flowified_compiled_s'] > 0 and row['plain_eager_s'] > 0
