"""Samples of a trained Flowification-paper network at lower temperatures and with every layer's noise at its mean, from
the weights `bench/paper.py --save DIR` wrote: one row of 12 samples per setting, the same base draws in every row.

    python bench/paper_samples.py --weights DIR --models conv1,conv1-nsf [--out bench/results/paper] [--suffix _long]

Writes `<out>/<arch><suffix>_temperatures.png`. Temperature T scales every Gaussian the sampler draws from (the base and
each layer's dropped directions); below 1 the samples are no longer the model's, only its typical set, sharpened.
"""
import argparse, json, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flownb.core import noise_mean
from flownb.models import create_model

SETTINGS = [(1.0, False), (0.8, False), (0.6, False), (1.0, True), (0.6, True)]


def load(path: Path):
    state = torch.load(path, map_location='cpu', weights_only=False)
    flow = create_model(state['model'], state['shape'], state['bins'])
    flow.load_state_dict(state['state_dict']); flow.eval()
    return flow, state


def trained(result: dict) -> str:
    "How long a run trained, counting the runs it was warm-restarted from (`bench/paper.py --init`)"
    runs, r = [], result
    while r is not None: runs.append(r); r = r.get('earlier')
    runs = runs[::-1]
    steps, cpu = (' + '.join(f"{r[k]:,.0f}" for r in runs) for k in ('steps', 'cpu_seconds'))
    return f"{steps} steps, {cpu} CPU-s" + (' (warm restarts)' if len(runs) > 2 else ' (a warm restart)' if len(runs) == 2 else '')


def grid(arch: str, flow, state, out: Path, n: int = 12, seed: int = 0):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    rows = []
    for temperature, mean in SETTINGS:
        torch.manual_seed(seed)   # the same base draws in every row
        with torch.no_grad():
            if mean:
                with noise_mean(flow): x = flow.sample(n, temperature=temperature)
            else: x = flow.sample(n, temperature=temperature)
        rows.append(((x.float() + 0.5) / state['bins']).clamp(0, 1))
    result = state['result']
    fig, axs = plt.subplots(len(rows), 1, figsize=(10, 1.0 * len(rows) + 0.6))
    for ax, images, (temperature, mean) in zip(axs, rows, SETTINGS):
        ax.imshow(make_grid(images, nrow=n, pad_value=0.5).permute(1, 2, 0).numpy(), cmap='gray')
        ax.set_xticks([]); ax.set_yticks([])
        ax.set_ylabel(f"T={temperature:g}" + (",\nnoise mean" if mean else ''), rotation=0, ha='right', va='center', fontsize=8)
    fig.suptitle(f"{result['model']} after {trained(result)} ({result['test_bpd']:.3f} test bits/dim): "
                 "samples at lower temperature and with the noise at its mean", fontsize=8)
    plt.tight_layout(rect=(0, 0, 1, 0.95)); fig.savefig(out, dpi=100); plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--weights', required=True, help="the folder `bench/paper.py --save` wrote <arch>.pt files into")
    p.add_argument('--models', default='conv1,conv1-nsf', help="comma-separated: mlp, conv1, conv2, conv1-nsf, conv2-nsf")
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'paper'))
    p.add_argument('--suffix', default='', help="appended to the file names, e.g. _long for a longer run's grids")
    args = p.parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    for arch in args.models.split(','):
        path = Path(args.weights) / f'{arch}.pt'
        if not path.exists(): raise SystemExit(f"{path} not found: train it with bench/paper.py --models {arch} --save {args.weights}")
        flow, state = load(path)
        grid(arch, flow, state, out / f'{arch}{args.suffix}_temperatures.png')
        print(f"wrote {out / f'{arch}{args.suffix}_temperatures.png'} ({json.dumps({k: state['result'][k] for k in ('steps', 'test_bpd')})})")


if __name__ == '__main__':
    main()
