"""Samples of every `flowify-*` model on MNIST after the same short budget: does each draw digits?

    # one thread per process; two processes side by side split the six models
    OMP_NUM_THREADS=1 python bench/flowify_samples.py --data-dir ../shared/data/mnist --models flowify-mlp,flowify-conv2,flowify-conv1
    OMP_NUM_THREADS=1 python bench/flowify_samples.py --data-dir ../shared/data/mnist --models flowify-mlp-coupling,flowify-conv2-coupling,flowify-conv1-coupling
    python bench/flowify_samples.py --figure     # only the figure, from the results already written

Each model is trained by `flownb.train` exactly as `flownb train --model NAME --data mnist --time-budget SECONDS` trains
it (flownb's defaults: AdamW 1e-3, batch 128, the 300-epoch cosine, of which a 300-s budget runs a few epochs; the
validation split selects the epoch kept), and the selected model's test bits/dim (one pass of the dequantization ELBO;
a bound for the overlapping convolutions) and 64 samples at temperature 1 are kept. The budget is wall-clock seconds of
training, so a busy machine buys fewer steps: each row records its steps.

Writes `<out>/<model>.json` (the run's metrics without the per-step history), `<out>/<model>_samples.png` and
`<out>/samples.png`, all models' grids in one figure (default `bench/results/flowify`).
"""
import argparse, json, shutil, sys, tempfile
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from flownb.train import TrainConfig, train
from paper import commit   # the short hash of HEAD, as every bench result records it

MODELS = ['flowify-mlp', 'flowify-conv2', 'flowify-conv1', 'flowify-mlp-coupling', 'flowify-conv2-coupling', 'flowify-conv1-coupling']


def run(name: str, data_dir: str, seconds: float, out: Path) -> dict:
    "Train `name` for `seconds` of training, keep its metrics and samples.png under `out`"
    with tempfile.TemporaryDirectory() as scratch:
        result = train(TrainConfig(model=name, data='mnist', data_dir=data_dir, time_budget=seconds), Path(scratch) / name, progress=False)
        shutil.copy(Path(scratch) / name / 'samples.png', out / f'{name}_samples.png')
    result = {**result, 'commit': commit(), 'budget_seconds': seconds}
    (out / f'{name}.json').write_text(json.dumps(result, indent=1) + '\n')
    return result


def figure(out: Path) -> Path:
    "All the models' sample grids that `out` holds, in one figure, each titled with its test number and steps"
    done = [m for m in MODELS if (out / f'{m}.json').exists()]
    if not done: raise SystemExit(f"no results in {out}: run with --models first")
    cols = 3
    rows = -(-len(done) // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(4 * cols, 4.9 * rows), squeeze=False)
    for ax in axs.flat: ax.set_axis_off()
    for ax, name in zip(axs.flat, done):
        r = json.loads((out / f'{name}.json').read_text())
        ax.imshow(plt.imread(out / f'{name}_samples.png'))
        ax.set_title(f"{name}\n{r['test']['bits_per_dim']:.3f} bits/dim ({r['test']['kind']}), {r['steps']:,} steps", fontsize=10)
    fig.suptitle(f"flowify-* on MNIST after {r['budget_seconds']:.0f} s of training (one thread), temperature 1", fontsize=11)
    fig.tight_layout(h_pad=3.5, rect=(0, 0, 1, 0.97))
    fig.savefig(out / 'samples.png', dpi=90)
    return out / 'samples.png'


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default='../shared/data/mnist', help='folder with the MNIST IDX files')
    ap.add_argument('--models', default=','.join(MODELS), help='comma-separated flowify-* models')
    ap.add_argument('--seconds', type=float, default=300, help='seconds of training per model (wall clock, as --time-budget)')
    ap.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'flowify'))
    ap.add_argument('--figure', action='store_true', help='only draw the figure from the results in --out')
    args = ap.parse_args()
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    if not args.figure:
        for name in args.models.split(','):
            if name not in MODELS: raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
            r = run(name, args.data_dir, args.seconds, out)
            print(f"{name}: {r['steps']} steps, test {r['test']['bits_per_dim']:.3f} bits/dim ({r['test']['kind']})", flush=True)
    print('wrote', figure(out))
