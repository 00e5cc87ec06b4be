"""How the tests run the `flownb` command.

`run_flownb` calls `flownb.cli.main` in the test's own process, as a fresh process would see it: stdout and stderr
captured as text, one torch thread (what `OMP_NUM_THREADS=1` gives the subprocesses), warnings printed to stderr with
Python's default filters, argparse's exit turned into a return code. A subprocess pays about 2 CPU-seconds to import
torch before it does anything, and the CLI tests run dozens of commands; in-process the suite takes minutes less.

Where the process boundary is what a test is about (a kill, a file lock held by another process, torchrun, the console
script itself), the test passes `fresh_process=True`, or starts the process itself."""
import contextlib, io, os, socket, subprocess, sys, warnings

import torch

ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}


def free_port() -> int:
    "A TCP port nobody listens on, so that torchrun tests running side by side (pytest -n) do not collide"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _print_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_flownb(*args, check: bool = True, timeout: float = 600, cwd=None, fresh_process: bool = False) -> subprocess.CompletedProcess:
    "Run `flownb ARGS` in folder `cwd` (in this process unless `fresh_process`; `timeout` bounds a fresh process only); raise with its output if it fails and `check`"
    argv = [str(a) for a in args]
    if fresh_process:
        r = subprocess.run([sys.executable, '-m', 'flownb.cli', *argv], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)
    else:
        from flownb.cli import main
        out, err, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.resetwarnings()   # a fresh interpreter's filters: every warning shown once, deprecations hidden
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                    warnings.simplefilter('ignore', category)
                warnings.simplefilter('default', UserWarning)
                warnings.showwarning = _print_warning
                try: rc = main(argv)
                except SystemExit as e: rc = e.code if isinstance(e.code, int) else 1   # argparse: usage and one error line
        finally: torch.set_num_threads(threads)
        r = subprocess.CompletedProcess(['flownb', *argv], rc, out.getvalue(), err.getvalue())
    if check and r.returncode != 0:
        raise AssertionError(f"flownb {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r
