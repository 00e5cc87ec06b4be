"""The main job end to end: the `flownb` command, kill-and-resume, corrupt checkpoints, torchrun with two CPU
processes (gloo), and the default run against the diagonal-Gaussian baseline. A run keeps best.pt (the epoch of lowest
validation bits/dim, which it reports on test) next to checkpoint.pt (the latest, for --resume).

Commands run in this process (tests/cli_runner.py: a subprocess spends about 2 CPU-seconds importing torch), each test
in a folder of its own; kills, torchrun and the module entry point run in processes of their own."""
import json, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from flownb.train import load_checkpoint, model_from_checkpoint
from cli_runner import ENV, free_port, run_flownb as flownb   # in this process; fresh_process=True where the boundary matters

MNIST = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'mnist'


@pytest.fixture(autouse=True)
def in_a_fresh_folder(tmp_path, monkeypatch):
    "Commands without --out write runs/latest under the current folder: give each test its own (tests run side by side under pytest -n)"
    monkeypatch.chdir(tmp_path)


def metrics(run: Path) -> dict:
    return json.loads((run / 'metrics.json').read_text())['result']


@pytest.mark.parametrize('args, expected', [
    (['train', '--model', 'nope'], "unknown model 'nope'"),
    (['train', '--data', 'imagenet'], "unknown dataset 'imagenet'"),
    (['train', '--epochs', '-2'], 'epochs must be a positive integer, got -2'),
    (['train', '--batch-size', '0'], 'batch_size must be a positive integer, got 0'),
    (['train', '--lr', 'fast'], "invalid float value: 'fast'"),
    (['train', '--data', 'mnist', '--data-dir', '/nonexistent/folder'], 'is not a directory'),
    (['train', '--device', 'tpu:7'], "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (['eval', 'no/such/checkpoint.pt'], 'checkpoint not found'),
    (['sample', 'no/such/checkpoint.pt'], 'checkpoint not found'),
    (['models', '--data', 'imagenet'], "unknown dataset 'imagenet'"),
    (['launch'], "unknown command 'launch'"),
    (['train', '--lcma', 'sometimes'], "lcma must be 'init' or 'train', got 'sometimes'"),
    (['train', '--lcma', 'train'], "lcma='train' needs a model with LCMASplit factor-outs"),
    (['train', '--compile', 'fastest'], "compile must be a torch.compile backend ("),
    (['train', '--model-options', 'hidden'], "--model-options: expected KEY=VALUE pairs separated by commas"),
    (['train', '--model', 'realnvp-lcma', '--model-options', 'width=8'], "model 'realnvp-lcma' has no option 'width'; its options: hidden, res_blocks, factor_outs"),
    (['train', '--model-options', 'slope=0'], "slope must be a positive number (the LeakyReLU's slope for negative inputs; 0 is not invertible), got 0"),
    (['train', '--mean-gradient-power', '1.5'], 'mean_gradient_power must be a number in [0, 1] (0: maximum likelihood), got 1.5'),
    (['train', '--mean-gradient-only', 'transform.transforms.3.dropped'], 'but mean_gradient_power is 0'),
    (['train', '--mean-gradient-power', '0.5', '--mean-gradient-only', 'transform.7'],
     "'transform.7' is not a ConditionalNormal of this Flow; its conditionals are transform.transforms.3.dropped, transform.transforms.5.dropped"),
])
def test_bad_arguments_give_one_line(args, expected):
    r = flownb(*args, check=False)
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr, r.stderr
    assert expected in r.stderr.strip().splitlines()[-1], r.stderr


def test_mnist_without_files_says_where_it_looked(tmp_path):
    r = flownb('train', '--data', 'mnist', '--data-dir', tmp_path, check=False)
    assert r.returncode == 1 and 'mnist not found: looked in' in r.stderr and '--data-dir' in r.stderr


def test_models_lists_every_model():
    from flownb.models import MODELS
    out = flownb('models', '--data', 'mnist', fresh_process=True).stdout   # the module entry point, in a process of its own
    for name in MODELS: assert f'  {name} ' in out


def test_kill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    args = ['train', '--model', 'realnvp', '--epochs', '5', '--batch-size', '64', '--quiet', '--seed', '3']
    flownb(*args, '--out', tmp_path / 'whole')
    run = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, '-m', 'flownb.cli', *args, '--out', str(run)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = run / 'checkpoint.pt', time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                if load_checkpoint(ckpt)['epoch'] >= 2: break
            except Exception: pass   # a reader may see the file between rename steps only if writes were not atomic
        time.sleep(0.05)
    assert proc.poll() is None, 'the run finished before it could be interrupted; make it longer'
    time.sleep(0.3)                  # somewhere inside the next epoch
    proc.send_signal(signal.SIGKILL); proc.wait()
    state = load_checkpoint(ckpt)    # the checkpoint survived the kill intact, and so did best.pt
    assert 2 <= state['epoch'] < 5 and load_checkpoint(run / 'best.pt')['epoch'] <= state['epoch']
    flownb(*args, '--out', run, '--resume')
    assert metrics(run)['test'] == metrics(tmp_path / 'whole')['test']
    assert metrics(run)['selected'] == metrics(tmp_path / 'whole')['selected']
    a, b = load_checkpoint(tmp_path / 'whole' / 'checkpoint.pt'), load_checkpoint(ckpt)
    assert a['epoch'] == b['epoch'] == 5
    assert all(torch.equal(a['model_state'][k], b['model_state'][k]) for k in a['model_state'])


def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    run = tmp_path / 'run'
    flownb('train', '--epochs', '2', '--out', run, '--quiet')
    ckpt = run / 'checkpoint.pt'
    ckpt.write_bytes(ckpt.read_bytes()[:3000])
    before = ckpt.read_bytes()
    for args in (['eval', ckpt], ['sample', ckpt], ['train', '--epochs', '2', '--out', run, '--resume', '--quiet']):
        r = flownb(*args, check=False)
        assert r.returncode == 1 and 'corrupt or truncated' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert ckpt.read_bytes() == before   # nothing overwritten
    (tmp_path / 'foreign.pt').write_bytes(b'')
    torch.save({'weights': torch.zeros(3)}, tmp_path / 'foreign.pt')
    r = flownb('eval', tmp_path / 'foreign.pt', check=False)
    assert r.returncode == 1 and 'is not a flownb checkpoint' in r.stderr


def test_resume_with_other_settings_is_refused(tmp_path):
    run = tmp_path / 'run'
    flownb('train', '--epochs', '1', '--out', run, '--quiet')
    r = flownb('train', '--epochs', '1', '--out', run, '--quiet', '--model', 'gaussian', '--resume', check=False)
    assert r.returncode == 1 and "was trained with model='flowify-mlp' but this run asks for model='gaussian'" in r.stderr
    r = flownb('train', '--epochs', '1', '--out', run, '--quiet', check=False)
    assert r.returncode == 1 and 'already exists; pass --resume' in r.stderr


def test_nan_loss_names_the_layer_and_keeps_the_checkpoint(tmp_path):
    from flownb.train import train, TrainConfig, NonFiniteLossError
    run = tmp_path / 'run'
    train(TrainConfig(model='realnvp', epochs=1, batch_size=256), run, progress=False)
    before = (run / 'checkpoint.pt').read_bytes()
    with pytest.raises(NonFiniteLossError, match=r'first non-finite: (layer \d+ \(\w+\)|the base density)'):
        train(TrainConfig(model='realnvp', epochs=2, batch_size=256, lr=1e30, grad_clip=0), tmp_path / 'nan', progress=False)
    assert (run / 'checkpoint.pt').read_bytes() == before


def test_eval_and_sample_from_a_checkpoint(tmp_path):
    run = tmp_path / 'run'
    flownb('train', '--model', 'flowify-conv1', '--epochs', '2', '--out', run, '--quiet', '--k', '4')
    assert 'iw_4' in metrics(run)['test'] and metrics(run)['continuous_part_exact'] is False
    out = flownb('eval', run / 'checkpoint.pt', '--k', '4').stdout
    assert "(ELBO: of the dequantization and of the model's own bounded layers)" in out and '(IW-4)' in out
    out = flownb('eval', run, '--k', '4').stdout   # a run folder: its best.pt, and the numbers train reported for it
    assert 'best.pt, epoch ' in out and f"{metrics(run)['test']['iw_4']['bits_per_dim']:.4f} bits/dim (IW-4)" in out
    flownb('sample', run / 'checkpoint.pt', '--n', '9', '--out', tmp_path / 'grid.png')
    assert (tmp_path / 'grid.png').stat().st_size > 100
    flownb('sample', run / 'checkpoint.pt', '--n', '5', '--out', tmp_path / 'samples.pt')
    samples = torch.load(tmp_path / 'samples.pt')
    assert samples.shape == (5, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16


def test_eval_ood_scores_outliers_and_refuses_what_it_cannot(tmp_path):
    "--ood: the AUROC line and a histogram for each kind of outlier, a dataset resized to the model's shape, clear refusals"
    run = tmp_path / 'run'
    flownb('train', '--epochs', '3', '--out', run, '--quiet')
    for kind in ('inverted', 'noised', 'uniform', 'shuffled'):
        out = flownb('eval', run, '--ood', kind).stdout
        auroc = float(out.split('AUROC ')[1].split(';')[0])
        assert 0 <= auroc <= 1 and (run / f'ood-{kind}.png').stat().st_size > 1000, out
    assert float(flownb('eval', run, '--ood', 'uniform').stdout.split('AUROC ')[1].split(';')[0]) > 0.9   # noise is easy to tell apart
    r = flownb('eval', run, '--ood', 'nope', check=False)
    assert r.returncode != 0 and "--ood must be one of inverted, noised, uniform, shuffled or a dataset name" in r.stderr
    r = flownb('eval', run, '--ood', 'moons', check=False)
    assert r.returncode != 0 and "cannot be brought to the model's (1, 8, 8)" in r.stderr
    flownb('train', '--epochs', '1', '--out', tmp_path / 'cond', '--quiet', '--conditional')
    r = flownb('eval', tmp_path / 'cond', '--ood', 'inverted', check=False)
    assert r.returncode != 0 and 'the model is class-conditional' in r.stderr


@pytest.mark.skipif(not MNIST.exists(), reason='needs ../shared/data/mnist')
def test_eval_ood_digits_against_an_mnist_model(tmp_path):
    "The bundled digits, resized from 8×8 to 28×28 and rescaled from 17 to 256 levels, as outliers of an MNIST model"
    run = tmp_path / 'mnist'
    flownb('train', '--data', 'mnist', '--data-dir', MNIST, '--model', 'gaussian', '--epochs', '1', '--out', run, '--quiet')
    out = flownb('eval', run, '--ood', 'digits', '--batch-size', '2000').stdout
    assert 'digits test, resized 8×8 → 28×28' in out and (run / 'ood-digits.png').exists()


def test_toy_data_trains_and_samples(tmp_path):
    run = tmp_path / 'moons'
    flownb('train', '--data', 'moons', '--model', 'realnvp', '--epochs', '2', '--out', run, '--quiet')
    assert metrics(run)['unit'] == 'bits/dim (continuous)' and (run / 'samples.png').exists()


def test_torchrun_two_cpu_processes(tmp_path):
    run = tmp_path / 'ddp'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
                        '-m', 'flownb.cli', 'train', '--epochs', '2', '--batch-size', '64', '--device', 'cpu',
                        '--out', str(run), '--quiet'], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '2 processes' in r.stdout
    assert metrics(run)['epochs_done'] == 2 and load_checkpoint(run / 'checkpoint.pt')['epoch'] == 2
    assert len(load_checkpoint(run / 'checkpoint.pt')['rng']) == 2   # one RNG state per process, for resume


def test_torchrun_time_budget_stops_every_process(tmp_path):
    "Rank 0's clock decides when a --time-budget run stops, so both processes stop at the same step and none waits for the other"
    run = tmp_path / 'ddp'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
                        '-m', 'flownb.cli', 'train', '--epochs', '50', '--batch-size', '64', '--device', 'cpu', '--time-budget', '1',
                        '--out', str(run), '--quiet'], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    m = metrics(run)
    assert m['stopped'] == 'time_budget' and 0 < m['steps'] < 50 * 21 and load_checkpoint(run / 'checkpoint.pt')['step'] == m['steps']


def test_default_run_beats_the_gaussian_baseline(tmp_path):
    flownb('train', '--out', tmp_path / 'default', '--quiet')                   # exactly what the README says
    flownb('train', '--model', 'gaussian', '--out', tmp_path / 'gaussian', '--quiet')
    ours, baseline = metrics(tmp_path / 'default'), metrics(tmp_path / 'gaussian')
    assert ours['model'] == 'flowify-mlp' and ours['data'] == 'digits'
    assert ours['test']['bits_per_dim'] < baseline['test']['bits_per_dim'] - 0.2, (ours['test'], baseline['test'])
    assert ours['selected']['why'] == 'lowest validation bits/dim' and ours['config']['epochs'] == 300
    for f in ('samples.png', 'curves.png', 'checkpoint.pt', 'best.pt'): assert (tmp_path / 'default' / f).exists()


def test_lcma_accumulated_during_training_is_recorded_and_kept_on_resume(tmp_path):
    "--lcma train: the factor-out scores accumulate over the first --lcma-steps steps; the checkpoint records it"
    run = tmp_path / 'lcma'
    flownb('train', '--model', 'lcma', '--lcma', 'train', '--lcma-steps', '4', '--epochs', '1', '--max-steps', '6', '--out', run, '--quiet')
    state = torch.load(run / 'best.pt', map_location='cpu', weights_only=False)
    assert state['config']['lcma'] == 'train' and state['config']['lcma_steps'] == 4
    r = flownb('train', '--model', 'lcma', '--lcma', 'init', '--epochs', '1', '--max-steps', '8', '--out', run, '--resume', '--quiet', check=False)
    assert r.returncode == 1 and "lcma='train'" in r.stderr and "lcma='init'" in r.stderr, r.stderr   # given, and not the run's: refused
    flownb('train', '--out', run, '--resume', '--max-steps', '8', '--quiet')                          # not given: the run's own
    assert metrics(run)['config']['lcma'] == 'train' and metrics(run)['steps'] == 8



def test_model_options_build_the_model_are_recorded_and_rebuild_it(tmp_path):
    "--model-options KEY=VALUE,...: the builder's options, in the checkpoint, so eval and sample rebuild the same model; a resume may not change them"
    run = tmp_path / 'narrow'
    flownb('train', '--model', 'realnvp-lcma', '--model-options', 'hidden=4,res_blocks=1', '--max-steps', '3', '--out', run, '--quiet')
    state = torch.load(run / 'best.pt', map_location='cpu', weights_only=False)
    assert state['config']['model_options'] == {'hidden': 4, 'res_blocks': 1}
    assert metrics(run)['parameters'] < 20_000   # 14,668 here; the default widths (32 features, 4 blocks) give 2.5 million on the digits
    assert 'bits/dim' in flownb('eval', run).stdout
    r = flownb('train', '--model', 'realnvp-lcma', '--model-options', 'hidden=8,res_blocks=1', '--max-steps', '4', '--out', run, '--resume', '--quiet', check=False)
    assert r.returncode == 1 and 'model_options' in r.stderr, r.stderr

def test_checkpoint_from_before_a_default_changed_is_rebuilt_as_trained(tmp_path):
    """flowify-*'s LeakyReLU slope went from 0.1 to 0.5: a checkpoint records its builder's defaults, and one written
    before it did is rebuilt with the old slope (the model's `earlier_defaults`) by eval, sample and a resume, not silently with 0.5"""
    run = tmp_path / 'old'
    flownb('train', '--model-options', 'slope=0.1', '--epochs', '1', '--batch-size', '64', '--max-steps', '3', '--out', run, '--quiet')
    before = flownb('eval', run).stdout
    for name in ('checkpoint.pt', 'best.pt'):   # as an older flownb wrote it: no recorded defaults, no options given
        state = torch.load(run / name, map_location='cpu', weights_only=False)
        state.pop('model_defaults', None); state['config']['model_options'] = {}   # best.pt may be a hard link of checkpoint.pt
        torch.save(state, run / name)
    flow, _ = model_from_checkpoint(run / 'best.pt')
    assert {m.negative_slope for m in flow.modules() if type(m).__name__ == 'LeakyReLU'} == {0.1}
    assert flownb('eval', run).stdout == before   # the same number from the same weights
    resumed = flownb('train', '--epochs', '1', '--batch-size', '64', '--max-steps', '6', '--out', run, '--resume')
    assert "built as the checkpoint was: slope=0.1 (a default that has changed since)" in resumed.stdout, resumed.stdout
    assert load_checkpoint(run / 'checkpoint.pt')['model_defaults'] == {'latent': 8, 'hidden': 64, 'slope': 0.1}
    new = tmp_path / 'new'
    flownb('train', '--epochs', '1', '--batch-size', '64', '--max-steps', '2', '--out', new, '--quiet')
    assert load_checkpoint(new / 'best.pt')['model_defaults'] == {'latent': 8, 'hidden': 64, 'slope': 0.5}
    flow, _ = model_from_checkpoint(new / 'best.pt')
    assert {m.negative_slope for m in flow.modules() if type(m).__name__ == 'LeakyReLU'} == {0.5}

def test_balanced_mean_gradients_are_announced_recorded_and_resume_exactly(tmp_path):
    """--mean-gradient-power on one conditional: the settings line says so, the checkpoint records it, a run stopped and
    resumed ends with the weights of the run never stopped (the power is put back on resume), and a resume may not change it"""
    only = 'transform.transforms.5.dropped'
    args = ('--epochs', '1', '--batch-size', '64', '--mean-gradient-power', '0.5', '--mean-gradient-only', only, '--quiet')
    whole = flownb('train', *args, '--max-steps', '6', '--out', tmp_path / 'whole')
    assert f"mean gradients balanced with beta 0.5 on {only}" in whole.stdout, whole.stdout
    flownb('train', *args, '--max-steps', '3', '--out', tmp_path / 'split')
    flownb('train', *args, '--max-steps', '6', '--out', tmp_path / 'split', '--resume')
    a, b = (torch.load(tmp_path / run / 'checkpoint.pt', map_location='cpu', weights_only=False) for run in ('whole', 'split'))
    assert a['config']['mean_gradient_power'] == 0.5 and a['config']['mean_gradient_only'] == [only]
    assert all(torch.equal(a['model_state'][k], b['model_state'][k]) for k in a['model_state'])
    flownb('train', '--epochs', '1', '--batch-size', '64', '--max-steps', '6', '--out', tmp_path / 'plain', '--quiet')
    c = torch.load(tmp_path / 'plain' / 'checkpoint.pt', map_location='cpu', weights_only=False)
    assert not torch.equal(a['model_state'][only + '.net.0.weight'], c['model_state'][only + '.net.0.weight'])
    r = flownb('train', '--epochs', '1', '--batch-size', '64', '--max-steps', '8', '--mean-gradient-power', '0.3', '--out', tmp_path / 'whole', '--resume', '--quiet', check=False)
    assert r.returncode == 1 and 'mean_gradient_power=0.5' in r.stderr, r.stderr   # given, and not the run's: refused


@pytest.mark.skipif(not (MNIST / 't10k-images-idx3-ubyte.gz').exists(), reason='MNIST not in ../shared/data/mnist')
def test_mnist_one_epoch(tmp_path):
    run = tmp_path / 'mnist'
    flownb('train', '--data', 'mnist', '--data-dir', MNIST, '--epochs', '1', '--out', run, '--quiet', timeout=1200)
    m = metrics(run)
    assert m['epochs_done'] == 1 and 'reduced training split' in m['data_note'] and m['test']['n'] == 10000
    assert m['test']['bits_per_dim'] < 8   # better than a uniform guess over 256 levels


def test_variational_dequantization_run(tmp_path):
    from flownb.train import model_from_checkpoint
    run = tmp_path / 'vdq'
    flownb('train', '--dequantization', 'variational', '--epochs', '2', '--out', run, '--quiet')
    flow, state = model_from_checkpoint(run / 'checkpoint.pt')
    assert type(flow.transform[0]).__name__ == 'VariationalDequantization' and state['config']['dequantization'] == 'variational'
    assert '(IW-4)' in flownb('eval', run / 'checkpoint.pt', '--k', '4').stdout
    r = flownb('train', '--dequantization', 'gaussian', check=False)
    assert r.returncode == 1 and "dequantization must be one of 'uniform', 'variational', 'flow'" in r.stderr


def test_flow_dequantization_run_resumes_exactly(tmp_path):
    "--dequantization flow: trained with the model, recorded in the checkpoint, restored by eval and by --resume"
    from flownb.train import model_from_checkpoint
    run = tmp_path / 'fdq'
    flownb('train', '--model', 'maxpool', '--dequantization', 'flow', '--epochs', '2', '--out', run, '--quiet')
    flow, state = model_from_checkpoint(run / 'checkpoint.pt')
    assert type(flow.transform[0]).__name__ == 'FlowDequantization' and state['config']['dequantization'] == 'flow'
    assert '(dequantization ELBO)' in flownb('eval', run).stdout
    r = flownb('train', '--model', 'maxpool', '--dequantization', 'uniform', '--epochs', '3', '--out', run, '--resume', '--quiet', check=False)
    assert r.returncode == 1 and 'dequantization' in r.stderr   # a resumed run keeps its dequantization


def test_ctrl_c_mid_epoch_saves_the_place_and_resume_matches_uninterrupted(tmp_path):
    "SIGINT asks the run to stop after its step: the place is saved mid-epoch (no epoch had ended), and --resume ends as a run never stopped"
    args = ['train', '--model', 'realnvp', '--epochs', '2', '--batch-size', '16', '--max-steps', '120', '--quiet', '--seed', '3']   # 84 steps an epoch
    flownb(*args, '--out', tmp_path / 'whole')
    run = tmp_path / 'stopped'
    proc = subprocess.Popen([sys.executable, '-m', 'flownb.cli', *args, '--out', str(run)], env={**ENV, 'PYTHONUNBUFFERED': '1'},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:                              # the run announces its settings, then trains
        if line.startswith('settings:'): break
    time.sleep(0.5)                                       # into the first epoch (84 steps of a few hundredths of a second or more): no checkpoint yet
    assert proc.poll() is None and not (run / 'checkpoint.pt').exists(), 'the run saved before it could be interrupted; make it longer'
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 'flownb train: interrupted by SIGINT in epoch 1, at step' in err and "the run's place is saved in" in err, err
    state = load_checkpoint(run / 'checkpoint.pt')
    assert state['epoch'] == 0 and state['batch'] > 0 and state['batch'] == state['step']
    flownb('train', '--out', run, '--resume', '--quiet')   # the run's settings, its unreached --max-steps 120 too
    assert metrics(run)['steps'] == metrics(tmp_path / 'whole')['steps'] == 120
    assert metrics(run)['test'] == metrics(tmp_path / 'whole')['test']
    assert metrics(run)['selected'] == metrics(tmp_path / 'whole')['selected']


def test_interrupt_before_any_checkpoint_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    import flownb.train
    from flownb.cli import main
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(flownb.train, 'load_data', interrupted)
    assert main(['train', '--out', str(tmp_path / 'run'), '--quiet']) == 130
    assert 'interrupted before the run saved a checkpoint: there is nothing to resume' in capsys.readouterr().err


def test_eval_on_valid_reproduces_the_number_that_selected_best(tmp_path):
    run = tmp_path / 'run'
    flownb('train', '--model', 'realnvp', '--epochs', '2', '--batch-size', '64', '--quiet', '--out', run)
    out = flownb('eval', run, '--split', 'valid').stdout
    assert f"{metrics(run)['selected']['valid_bits_per_dim']:.4f} bits/dim (dequantization ELBO)" in out, out


def test_a_bounded_model_is_not_called_a_dequantization_elbo(tmp_path):
    run = tmp_path / 'run'
    out = flownb('train', '--model', 'flowify-conv1', '--max-steps', '2', '--quiet', '--out', run).stdout
    assert "(ELBO: of the dequantization and of the model's own bounded layers;" in out, out
    assert "(ELBO: of the dequantization and of the model's own bounded layers)" in flownb('eval', run).stdout


def test_sample_refuses_a_file_type_its_writer_cannot_write(tmp_path):
    "Image grids are written by PIL, scatter plots by matplotlib: each is checked against its own writer, before sampling"
    run = tmp_path / 'run'
    flownb('train', '--model', 'gaussian', '--max-steps', '1', '--quiet', '--out', run)
    for suffix in ('.txt', '.svg'):   # .svg: matplotlib writes it, PIL does not
        r = flownb('sample', run, '--out', tmp_path / f's{suffix}', check=False)
        assert r.returncode == 1 and f'unknown file type {suffix}; expected .pt (the samples as a tensor) or a picture: ' in r.stderr, r.stderr
        assert '.png' in r.stderr and not (tmp_path / f's{suffix}').exists()
    flownb('sample', run, '--out', tmp_path / 's.PT', '--n', '4')
    assert torch.load(tmp_path / 's.PT').shape == (4, 1, 8, 8)


def test_a_run_on_data_of_its_own_is_not_resumed_or_evaluated_on_the_named_dataset(tmp_path):
    "Trained from Python on 600 of the digits' images under the name 'digits': reloading 'digits' by name is refused where it differs"
    import dataclasses
    from flownb.data import load_data
    from flownb.train import TrainConfig, train, CheckpointError
    digits = load_data('digits')
    subset = dataclasses.replace(digits, train=digits.train[:600], train_labels=digits.train_labels[:600], valid=None, valid_labels=None)
    run, config = tmp_path / 'run', TrainConfig(model='gaussian', epochs=2, batch_size=256)
    train(config, run, progress=False, data=subset, stop_after_steps=2)
    with pytest.raises(CheckpointError, match=r'was trained on other data than this run has: its train / valid split\(s\) had 540 / 60 items, these have 1,348 / 149;'):
        train(config, run, resume=True, progress=False)
    train(config, run, resume=True, progress=False, data=subset)                  # the same data: resumed
    r = flownb('eval', run, '--split', 'valid', check=False)
    assert r.returncode == 1 and 'was trained on other data than --data digits loads here: its valid split(s) had 60 items, these have 149' in r.stderr, r.stderr
    assert 'bits/dim' in flownb('eval', run).stdout                                # the test split is the digits' own: evaluated


def test_resume_needs_only_the_run_folder(tmp_path):
    "Settings not given on the resuming command line are the run's own; one given explicitly that differs is refused"
    run = tmp_path / 'run'
    flownb('train', '--model', 'realnvp', '--epochs', '2', '--batch-size', '64', '--seed', '5', '--max-steps', '10', '--quiet', '--out', run)
    out = flownb('train', '--out', run, '--resume', '--quiet').stdout
    assert f"resuming {run} with its own model realnvp, epochs 2, batch-size 64," in out and 'seed 5' in out, out
    assert metrics(run)['steps'] == 2 * 21 and metrics(run)['model'] == 'realnvp'   # a budget is not inherited: on to the end of epoch 2
    for flag in ('--epochs', '--epoch'):                                          # abbreviated too: argparse accepts it
        r = flownb('train', '--out', run, '--resume', flag, '5', check=False)
        assert r.returncode == 1 and 'was trained with epochs=2 but this run asks for epochs=5' in r.stderr, r.stderr
    sources = metrics(run)['config_sources']                                      # not relabelled by the resume
    assert sources['epochs'] == sources['batch_size'] == 'set' and sources['lr'] in ('recipe', 'default'), sources


@pytest.mark.parametrize('budget, expected', [(5, 'returns'), (None, 'pauses')])
def test_a_signal_during_validation(tmp_path, monkeypatch, budget, expected):
    "A run whose budget ended at this epoch goes on to its report; one that had not reached it is paused, after the epoch"
    import os
    import flownb.train
    from flownb.train import TrainConfig, train, TrainingInterrupted
    real, calls = flownb.train.evaluate, []
    def signalled(*a, **k):
        if not calls: os.kill(os.getpid(), signal.SIGINT)   # once, while the first epoch's validation runs: handled after the epoch
        calls.append(1); return real(*a, **k)
    monkeypatch.setattr(flownb.train, 'evaluate', signalled)
    config = TrainConfig(model='gaussian', epochs=3, batch_size=256, max_steps=budget)   # 5 steps an epoch on the digits
    if expected == 'returns':
        assert train(config, tmp_path / 'run', progress=False)['stopped'] == 'max_steps'
    else:
        with pytest.raises(TrainingInterrupted, match=r'SIGINT after epoch 1, at step 5: '): train(config, tmp_path / 'run', progress=False)
        assert load_checkpoint(tmp_path / 'run' / 'checkpoint.pt')['epoch'] == 1
