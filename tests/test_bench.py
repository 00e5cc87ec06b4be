"""The benchmark scripts run (bench/sampling.py, compile_cost.py, flowify_cost.py --paper, flop_count.py, paper.py --init, paper_samples.py, reconstruction.py, refit_means.py, flowify_samples.py): smoke runs that measure nothing worth quoting and
assert no time, only that each script produces the rows and tables the README is generated from."""
import importlib.util, json, sys
from pathlib import Path

import pytest
import torch

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


@pytest.mark.slow   # about half a minute: aot_eager traces the whole flowification-conv2; run with --runslow
def test_compile_cost_times_a_registry_model_eager_and_compiled():
    res = _script('compile_cost').main(['--quick', '--model', 'flowification-conv2', '--batches', '4', '--backend', 'aot_eager'])
    row, = res['rows']
    assert row['model'] == 'flowification-conv2' and row['batch'] == 4 and row['eager_s'] > 0 and row['compiled_s'] > 0


def test_flowify_cost_prices_a_paper_network_against_both_plain_networks():
    "The plain networks keep the flowified one's layers: its 19 splines as value-only activations, or LeakyReLU in their place"
    flowify_cost = _script('flowify_cost')
    models = flowify_cost.paper_networks('conv2')
    spline_values = [m for m in models['plain_spline'] if isinstance(m, flowify_cost.SplineValue)]
    assert len(spline_values) == 19
    layers = lambda net, act: [type(m) for m in net if not isinstance(m, act)]
    assert layers(models['plain_spline'], flowify_cost.SplineValue) == layers(models['plain_leaky'], torch.nn.LeakyReLU)
    x = torch.randn(3, 4, 5, 5) * 2
    torch.testing.assert_close(spline_values[0](x), spline_values[0].spline(x)[0])            # the spline's value, nothing else
    assert not any(type(m).__name__ == 'RQSpline' for m in models['flowified_leaky'].modules())
    row, = flowify_cost.paper_rows(['conv2'], batch=4, device='cpu', steps=1, rounds=2)
    assert row['model'] == 'flowification-conv2'
    assert all(row[k] > 0 for k in ('ratio_to_plain_spline', 'floor_ratio_to_plain_spline', 'ratio_to_plain_leaky', 'leaky_ratio_to_plain_leaky'))


def test_paper_samples_draws_a_temperature_grid_from_saved_weights(tmp_path):
    "bench/paper_samples.py: from the weights bench/paper.py --save writes, one row per temperature (and noise-mean) setting"
    import torch
    from flownb.models import create_model
    flow = create_model('flowification-conv2', (1, 28, 28), 256)
    result = {'model': 'flowification-conv2', 'steps': 0, 'cpu_seconds': 0.0, 'test_bpd': 8.0}
    torch.save({'model': 'flowification-conv2', 'shape': (1, 28, 28), 'bins': 256, 'state_dict': flow.state_dict(), 'result': result},
               tmp_path / 'conv2.pt')
    _script('paper_samples').main(['--weights', str(tmp_path), '--models', 'conv2', '--out', str(tmp_path), '--suffix', '_untrained'])
    assert (tmp_path / 'conv2_untrained_temperatures.png').stat().st_size > 1000


def test_paper_warm_restart_names_the_runs_it_continues(tmp_path):
    "bench/paper.py --init: refuses weights of another network; the grids' titles count the earlier runs' steps and CPU time"
    import pytest, torch
    from types import SimpleNamespace
    torch.save({'model': 'flowification-conv2', 'state_dict': {}, 'result': {}}, tmp_path / 'conv1.pt')
    data = SimpleNamespace(shape=(1, 28, 28), bins=256, train=torch.zeros(1, 1, 28, 28), valid=None)
    with pytest.raises(ValueError, match='holds flowification-conv2, not flowification-conv1'):
        _script('paper').run('conv1', data, 1.0, None, 'cpu', 0, tmp_path, init=tmp_path)
    with pytest.raises(ValueError, match=r"'transforms.4' is not a ConditionalNormal of this Flow; its conditionals are transform.transforms.4.dropped"):
        _script('paper').run('conv1', data, 1.0, None, 'cpu', 0, tmp_path, beta=0.5, beta_only='transforms.4')
    trained = _script('paper_samples').trained
    assert trained({'steps': 7181, 'cpu_seconds': 2400.4}) == '7,181 steps, 2,400 CPU-s'
    assert trained({'steps': 12745, 'cpu_seconds': 3600.2, 'earlier': {'steps': 7181, 'cpu_seconds': 2400.4}}) == \
        '7,181 + 12,745 steps, 2,400 + 3,600 CPU-s (a warm restart)'


def test_reconstruction_reports_every_convolution_prefix():
    "bench/reconstruction.py: an untrained flowification-conv1 gives one row per convolution, its exact first layer loses nothing"
    import torch
    from flownb.models import create_model
    torch.manual_seed(0)
    flow = create_model('flowification-conv1', (1, 28, 28), 256).eval()
    x = torch.randint(0, 256, (4, 1, 28, 28)).float()
    rec = _script('reconstruction')
    res = rec.report(flow, x)
    assert [r['layers'] for r in res['prefixes']] == [3, 5, 7, 9, 11]
    first = res['prefixes'][0]['noise_mean']   # dequantize, pad, 1→16 conv: nothing dropped, so x comes back
    assert first['mean_abs_error'] < 1e-2 and first['columns_mod_4'] == res['data_columns_mod_4']
    assert rec.column_profile(torch.ones(2, 1, 8, 8)) == [1.0, 1.0, 1.0, 1.0]


def test_refit_means_is_a_fixed_point_after_one_step():
    "bench/refit_means.py: the closed-form bias step moves an untrained conditional; a second step on the same draws moves nothing"
    import torch
    from flownb.models import create_model
    torch.manual_seed(0)
    flow = create_model('flowification-conv2', (1, 28, 28), 256).eval()
    with torch.no_grad():
        for m in flow.modules():
            if type(m).__name__ == 'ConditionalNormal': m.net[-1].bias.normal_()   # random biases: something for the first step to correct
    x = torch.randint(0, 256, (64, 1, 28, 28)).float()
    refit = _script('refit_means').refit_mean_biases
    offsets = {}
    first = refit(flow, x, seed=0, unweighted=offsets)
    second = refit(flow, x, seed=0)
    assert len(first) >= 4 and max(first.values()) > 0.1 and offsets.keys() == first.keys()
    assert max(second.values()) < 1e-3


MNIST = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'mnist'


@pytest.mark.skipif(not (MNIST / 't10k-images-idx3-ubyte.gz').exists(), reason='MNIST not in ../shared/data/mnist')
def test_flowify_samples_trains_keeps_and_draws(tmp_path):
    "bench/flowify_samples.py: a 1-s run of one model keeps its metrics and samples, and the figure titles it with its number"
    script = _script('flowify_samples')
    r = script.run('flowify-mlp', str(MNIST), 1, tmp_path)
    assert r['stopped'] == 'time_budget' and r['test']['n'] == 10_000 and (tmp_path / 'flowify-mlp_samples.png').exists()
    assert json.loads((tmp_path / 'flowify-mlp.json').read_text())['budget_seconds'] == 1
    assert script.figure(tmp_path).exists()


def test_flop_count_counts_the_plain_mlp_exactly_and_prices_the_flows(tmp_path):
    "The plain MLP's step is 2·batch·(3·Σ d_in·d_out − the first layer's input gradient) FLOPs; the flows cost more than their floors"
    rows = _script('flop_count').main(['--batches', '8', '--paper', 'conv2', '--paper-batch', '4', '--out', str(tmp_path / 'f.json')])
    mlp, conv2 = rows
    from flowify_cost import WIDTHS
    macs = sum(a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:]))
    assert mlp['plain_gflop'] * 1e9 == pytest.approx(2 * 8 * (3 * macs - WIDTHS[0] * WIDTHS[1]), rel=1e-12)
    assert mlp['flowified_ratio'] > mlp['floor_ratio'] > 1 and conv2['flowified_ratio'] > conv2['floor_ratio'] > 1
    assert (tmp_path / 'flop_count_TABLE.md').read_text().startswith('| network | batch |')
