"""Faults around a run rather than inside the model: two runs on one run folder, the folder's lock (held for the
whole run, released on errors and Ctrl-C, not left behind by a killed process, taken by rank 0 alone under
torchrun), run folders that are files or cannot be written, a disk that fills up during a save, devices that cannot
be used, crafted checkpoints, and the temporary file a killed save leaves behind. Every user error must be one line,
`flownb CMD: error: ...`, with exit status 1 and no traceback.

Most cases call `flownb.cli.main` in this process (no interpreter start-up: a few tenths of a second each); the
two-run and torchrun cases start real processes. New names are imported inside the tests, so that each test, not the
collection, fails on code without them."""
import errno, fcntl, json, os, signal, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from cli_runner import ENV, free_port, run_flownb
FAST = ['--model', 'gaussian', '--batch-size', '256', '--quiet']   # 5 steps an epoch on the digits, ~0.1 s
# a CUDA device that cannot be used here: any CUDA without a GPU, else an index past the last GPU
NO_CUDA = 'cuda' if not torch.cuda.is_available() else f'cuda:{torch.cuda.device_count()}'


def cli(capsys, *argv) -> tuple[int, str, str]:
    "Run `flownb ARGV` in this process; return (status, stdout, stderr)"
    from flownb.cli import main
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def one_line_error(status: int, err: str, cmd: str, expected: str) -> str:
    "The CLI's promise: exit 1, exactly one non-empty line on stderr, `flownb CMD: error: ...` containing `expected`"
    lines = [l for l in err.splitlines() if l.strip()]
    assert status == 1, (status, err)
    assert 'Traceback' not in err and len(lines) == 1, err
    assert lines[0].startswith(f'flownb {cmd}: error: ') and expected in lines[0], lines[0]
    return lines[0]


@contextmanager
def held_lock(folder: Path, pid: int = 4242):
    "Hold `folder/.lock` the way a running `flownb train` does (flock, and its pid, host and start time in the file)"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / '.lock', os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({'pid': pid, 'host': 'elsewhere', 'started': '2000-01-01 00:00:00'}).encode())
    try: yield
    finally: os.close(fd)


def lock_is_held(folder: Path) -> bool:
    "Whether some open file holds a flock on `folder/.lock` (tried from a fresh file description, never waiting)"
    try: fd = os.open(folder / '.lock', os.O_RDWR)
    except FileNotFoundError: return False
    try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError: return True
    finally: os.close(fd)
    return False


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    "A real one-epoch checkpoint of the smallest model"
    from flownb.train import train, TrainConfig
    run = tmp_path_factory.mktemp('ckpt') / 'run'
    train(TrainConfig(model='gaussian', epochs=1, batch_size=256), run, progress=False)
    return run / 'checkpoint.pt'


# ---------------------------------------------------------------- A. one run per folder

def test_two_processes_on_one_folder(tmp_path):
    "A second `flownb train` on a folder a running one holds is refused, naming it; a SIGKILLed holder blocks nothing"
    from flownb.train import train, TrainConfig, load_checkpoint
    run = tmp_path / 'run'
    args = ['train', *FAST, '--epochs', '2000', '--out', run]   # far longer than the test: it is killed below
    first = subprocess.Popen([sys.executable, '-m', 'flownb.cli', *map(str, args)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def wait_for(*names):   # the lock file appears within the first run's first second, its checkpoint later
            deadline = time.time() + 120
            while time.time() < deadline and first.poll() is None and not any((run / n).exists() for n in names): time.sleep(0.05)
            assert first.poll() is None and any((run / n).exists() for n in names), f'the first run ended or never wrote {names}'
        wait_for('.lock', 'checkpoint.pt')
        second = run_flownb(*args, check=False, timeout=120, fresh_process=True)   # another process: the lock is per process
        line = one_line_error(second.returncode, second.stderr, 'train', f'is in use by another flownb run (pid {first.pid} on ')
        assert 'started 20' in line, line
        # resuming is refused too; stop_after_steps bounds the damage where the lock does not hold
        cfg = TrainConfig(model='gaussian', epochs=2000, batch_size=256)
        with pytest.raises(OSError, match=f'in use by another flownb run \\(pid {first.pid} '):
            train(cfg, run, resume=True, progress=False, stop_after_steps=1)
        wait_for('checkpoint.pt')
        first.send_signal(signal.SIGKILL); first.wait()
        assert (run / '.lock').exists()                     # a killed run leaves its lock file behind,
        state = load_checkpoint(run / 'checkpoint.pt')
        train(cfg, run, resume=True, progress=False, stop_after_steps=state['step'] + 5)   # but not its lock: one more epoch
        assert load_checkpoint(run / 'checkpoint.pt')['epoch'] == state['epoch'] + 1
        assert not (run / '.lock').exists() and not lock_is_held(run)
    finally:
        if first.poll() is None: first.kill(); first.wait()


@pytest.mark.parametrize('resume', [False, True])
def test_held_folder_refuses_train_and_resume(tmp_path, capsys, checkpoint, resume):
    run = tmp_path / 'run'
    if resume:   # a finished one-epoch run to resume
        run.mkdir(); (run / 'checkpoint.pt').write_bytes(checkpoint.read_bytes())
    with held_lock(run):
        status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', run, *(['--resume'] if resume else []))
    one_line_error(status, err, 'train', 'is in use by another flownb run (pid 4242 on elsewhere, started 2000-01-01 00:00:00)')
    assert not (run / 'metrics.json').exists()


@pytest.mark.parametrize('interrupt', [KeyboardInterrupt, RuntimeError])
def test_lock_held_during_the_run_and_released_after_errors(tmp_path, capsys, monkeypatch, interrupt):
    "The lock is held while training (checked from inside the loop) and released on Ctrl-C and on a bug's exception"
    import flownb.train
    run, seen = tmp_path / 'run', []
    def evaluate_then_fail(*a, **k):   # the loop evaluates after each epoch, holding the folder
        seen.append(lock_is_held(run)); raise interrupt('stop here')
    monkeypatch.setattr(flownb.train, 'evaluate', evaluate_then_fail)
    if interrupt is KeyboardInterrupt:
        status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', run)
        assert status == 130 and 'interrupted' in err
    else:
        with pytest.raises(RuntimeError, match='stop here'): cli(capsys, 'train', *FAST, '--epochs', '1', '--out', run)
    assert seen == [True]
    assert not lock_is_held(run) and not (run / '.lock').exists()


def test_torchrun_refused_in_every_process(tmp_path):
    "Under torchrun rank 0 alone takes the lock; a refusal ends both processes with the same line instead of a hang"
    run = tmp_path / 'ddp'
    port = free_port()
    with held_lock(run):
        r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(port),
                            '-m', 'flownb.cli', 'train', *FAST, '--epochs', '1', '--device', 'cpu', '--out', str(run)],
                           capture_output=True, text=True, env=ENV, timeout=180)
    assert r.returncode != 0, r.stdout + r.stderr
    assert r.stderr.count('flownb train: error: ') == 2, r.stderr               # one line from each process
    assert r.stderr.count('is in use by another flownb run (pid 4242 ') == 2, r.stderr
    assert not (run / 'checkpoint.pt').exists()


# ---------------------------------------------------------------- B. file systems

def test_out_is_an_existing_file(tmp_path, capsys):
    (tmp_path / 'file').write_text('not a folder')
    status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', tmp_path / 'file')
    one_line_error(status, err, 'train', f'run folder {tmp_path / "file"} is an existing file; expected a folder')
    assert (tmp_path / 'file').read_text() == 'not a folder'


def test_out_under_a_file(tmp_path, capsys):
    "Root can write anywhere chmod allows nothing; a path under a file cannot be created by anyone"
    (tmp_path / 'file').write_text('')
    status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', tmp_path / 'file' / 'run')
    one_line_error(status, err, 'train', f'cannot create the run folder {tmp_path / "file" / "run"}: Not a directory')


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders; test_out_under_a_file and the save faults cover it')
def test_out_in_a_read_only_folder(tmp_path, capsys):
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o500)
    try:
        status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', ro / 'run')
        one_line_error(status, err, 'train', f'cannot create the run folder {ro / "run"}: Permission denied')
    finally: ro.chmod(0o700)


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_save_fails_midway(tmp_path, capsys, monkeypatch, code):
    "A disk that fills up (or turns read-only) during the second save: one line naming the checkpoint; epoch 1's is kept"
    import flownb.train
    from flownb.train import load_checkpoint
    real_save, calls = torch.save, []
    def save_then_fail(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 2: return real_save(obj, f, *a, **k)
        f.write(b'PK\x03\x04 half a checkpoint'); raise OSError(code, os.strerror(code))
    monkeypatch.setattr(flownb.train.torch, 'save', save_then_fail)
    run = tmp_path / 'run'
    status, out, err = cli(capsys, 'train', *FAST, '--epochs', '2', '--out', run)
    line = one_line_error(status, err, 'train', f'{run / "checkpoint.pt"}: ')
    assert os.strerror(code) in line, line
    monkeypatch.undo()
    assert load_checkpoint(run / 'checkpoint.pt')['epoch'] == 1                  # the previous checkpoint, intact
    assert not list(run.glob('.checkpoint.pt.*.tmp')) and not (run / '.lock').exists()


def test_sample_out_is_a_folder(tmp_path, capsys, checkpoint):
    status, out, err = cli(capsys, 'sample', checkpoint, '--out', tmp_path)
    one_line_error(status, err, 'sample', f'--out {tmp_path} is a folder; expected a file name')


def test_sample_out_under_a_file(tmp_path, capsys, checkpoint):
    (tmp_path / 'file').write_text('')
    status, out, err = cli(capsys, 'sample', checkpoint, '--out', tmp_path / 'file' / 'grid.png')
    one_line_error(status, err, 'sample', 'lies under a file; expected a path in a folder')


# ---------------------------------------------------------------- B. devices, one check for all commands

@pytest.mark.parametrize('cmd, device, expected', [
    ('eval', NO_CUDA, f"device '{NO_CUDA}' asked for, but"),
    ('sample', NO_CUDA, f"device '{NO_CUDA}' asked for, but"),
    ('eval', 'nope', "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'nope'"),
    ('sample', 'nope', "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'nope'"),
    ('eval', 'meta', "device 'meta' holds shapes but no numbers"),
    ('train', 'meta', "device 'meta' holds shapes but no numbers"),
    ('train', 'xpu', "device 'xpu': flownb runs on the CPU or on CUDA GPUs"),
    ('train', NO_CUDA, f"device '{NO_CUDA}' asked for, but"),
])
def test_unusable_device(tmp_path, capsys, checkpoint, cmd, device, expected):
    argv = ['train', *FAST, '--epochs', '1', '--out', tmp_path / 'run'] if cmd == 'train' else [cmd, checkpoint]
    status, out, err = cli(capsys, *argv, '--device', device)
    one_line_error(status, err, cmd, expected)
    assert not (tmp_path / 'run').exists()   # refused before anything was written


# ---------------------------------------------------------------- B. crafted checkpoints

def craft(checkpoint: Path, folder: Path, change) -> Path:
    "A copy of a real checkpoint with one field changed by `change(state)`, saved the way flownb saves"
    state = torch.load(checkpoint, weights_only=True)
    change(state)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / 'checkpoint.pt')
    return folder / 'checkpoint.pt'


CRAFTED = {
    'config is a list': (lambda s: s.update(config=['flowify-mlp']), "its 'config' should be a dict of the run's settings, got list"),
    'shape is a string': (lambda s: s.update(shape='1x8x8'), "its 'shape' should be a list of positive integers"),
    'shape has a zero': (lambda s: s.update(shape=[1, 0, 8]), "its 'shape' should be a list of positive integers"),
    'config has no model': (lambda s: s['config'].pop('model'), "its config has no 'model'"),
    'config has no data': (lambda s: s['config'].pop('data'), "its config has no 'data'"),
    'model is a number': (lambda s: s['config'].update(model=7), "its config['model'] should be a model name, got int 7"),
    'model_options is a list': (lambda s: s['config'].update(model_options=[1]), "its config['model_options'] should be a dict of options"),
    'model_state is a list': (lambda s: s.update(model_state=[]), "its 'model_state' should be a dict of tensors"),
    'bins is a string': (lambda s: s.update(bins='17'), "its 'bins' should be None or an integer > 1"),
    'epoch is a string': (lambda s: s.update(epoch='1'), "its 'epoch' should be a non-negative integer"),
    'model_defaults is a list': (lambda s: s.update(model_defaults=[0.1]), "its 'model_defaults' should be a dict of the model's option defaults"),
}


@pytest.mark.parametrize('case', list(CRAFTED))
@pytest.mark.parametrize('cmd', ['eval', 'sample', 'train'])
def test_crafted_checkpoint(tmp_path, capsys, checkpoint, cmd, case):
    change, expected = CRAFTED[case]
    path = craft(checkpoint, tmp_path / 'run', change)
    argv = ['train', *FAST, '--epochs', '1', '--out', path.parent, '--resume'] if cmd == 'train' else [cmd, path, '--out', tmp_path / 's.png'] if cmd == 'sample' else [cmd, path]
    status, out, err = cli(capsys, *argv)
    one_line_error(status, err, cmd, f'{path}: ' + expected if 'has no' not in expected else expected)


def test_checkpoint_without_training_state_cannot_be_resumed(tmp_path, capsys, checkpoint):
    path = craft(checkpoint, tmp_path / 'run', lambda s: [s.pop(k) for k in ('optimizer_state', 'rng')])
    status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', path.parent, '--resume')
    one_line_error(status, err, 'train', "cannot be resumed: it has no ['optimizer_state', 'rng']")
    assert cli(capsys, 'eval', path)[0] == 0   # its weights still evaluate


# ---------------------------------------------------------------- C. what a killed save leaves

@pytest.mark.parametrize('resume', [False, True])
def test_stale_temporary_checkpoint_is_removed(tmp_path, capsys, checkpoint, resume):
    run = tmp_path / 'run'; run.mkdir()
    if resume: (run / 'checkpoint.pt').write_bytes(checkpoint.read_bytes())   # finished: resuming only evaluates
    stale = [run / '.checkpoint.pt.4242.tmp', run / '.checkpoint.pt.99999.tmp']
    kept = [run / 'notes.tmp', run / '.samples.png.4242.tmp', run / 'checkpoint.pt.4242.tmp']   # not flownb's temporaries
    for p in stale + kept: p.write_bytes(b'')
    status, out, err = cli(capsys, 'train', *FAST, '--epochs', '1', '--out', run, *(['--resume'] if resume else []))
    assert status == 0, err
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert 'removed 2 temporary file(s)' in out
