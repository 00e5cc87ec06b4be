"""Sampling throughput of every registry model, beside zuko's RealNVP of matched size, measured in one run.

    python bench/sampling.py                     # MNIST-shaped models (1×28×28, 256 levels), one thread, CPU
    python bench/sampling.py --quick             # fewer, smaller draws (a smoke run; do not quote its numbers)
    python bench/sampling.py --device cuda       # on a GPU: absolute rates are then meaningful (name the device)
    python bench/sampling.py --table             # the table of the last results, from bench/results/sampling.json

Every model is built as `create_model` builds it for MNIST-shaped data (the point-set models for SpatialMNIST's 50
points in 2-D), initialised on one batch of random data (ActNorm's data-dependent start), untrained: the cost of
drawing a sample does not depend on the weights. zuko's `RealNVP` (4 couplings, two hidden layers) runs behind the same
dequantization and logit front as in `bench/run.py`, at the width whose parameter count is closest to flownb's
`flowify-mlp` (`zuko-realnvp`) and to flownb's `realnvp` (`zuko-realnvp-large`). A rate is samples per second of this
process's CPU time (`time.process_time`, so other jobs on a shared machine do not count against a model; on a GPU,
wall-clock), the best of three draws of `--n` samples after one warm-up draw. Ratios to zuko are what to compare;
absolute CPU rates depend on the machine.

Writes bench/results/sampling.json and bench/results/sampling_TABLE.md (the README's table). Nothing asserts a time.
"""
import argparse, importlib.util, json, platform, subprocess, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench_run   # bench/run.py: PeerFlow, peer_hidden (the zuko baseline behind flownb's front), clock

import flownb.models as M

OUT = Path('bench/results')
IMAGE, POINTS = (1, 28, 28), (50, 2)


@torch.no_grad()
def rate(model, n, device, repeats=3):
    "Samples per second: the best of `repeats` draws of `n`, after one warm-up draw"
    model.eval(); torch.manual_seed(0)
    model.sample(min(n, 8))
    best = float('inf')
    for _ in range(repeats):
        t0 = bench_run.clock(device); model.sample(n); best = min(best, bench_run.clock(device) - t0)
    return n / best


def build(name, device):
    "The model, its event shape, and a batch of random data of that shape for the data-dependent initialisation"
    torch.manual_seed(0)
    if name.startswith('zuko'):
        target = M.num_parameters(M.create_model('realnvp' if name.endswith('-large') else 'flowify-mlp', IMAGE, 256))
        model, shape, bins = bench_run.PeerFlow('zuko', IMAGE, 256, bench_run.peer_hidden('zuko', IMAGE, 256, target)), IMAGE, 256
    else:
        points = M.MODELS[name].data == 'points'
        shape, bins = (POINTS, None) if points else (IMAGE, 256)
        model = M.create_model(name, shape, bins)
    model = model.to(device)
    x = torch.rand(64, *shape, device=device) if bins is None else torch.randint(0, bins, (64, *shape), device=device).float()
    with torch.no_grad(): model.log_prob(x)   # ActNorm and friends initialise on their first batch
    return model, shape


def table(res) -> str:
    zuko = {r['model']: r['samples_per_s'] for r in res['rows'] if r['model'].startswith('zuko')}
    ref = zuko.get('zuko-realnvp')
    lines = [f"| model ({res['shape']}) | parameters | samples/s ({res['device_name']}, {res['threads']} thread{'s' if res['threads'] > 1 else ''}) | ÷ zuko-realnvp |",
             '|---|---|---|---|']
    for r in sorted(res['rows'], key=lambda r: -r['samples_per_s']):
        ratio = f"{r['samples_per_s'] / ref:.2g}×" if ref else 'n/a'
        lines.append(f"| {r['model']}{' (points 50×2)' if r['shape'] == list(POINTS) else ''} | {r['parameters']:,} | {r['samples_per_s']:,.0f} | {ratio} |")
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=256, help='samples per draw')
    ap.add_argument('--quick', action='store_true', help='draws of 16, a few models: a smoke run')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--models', default=None, help='comma-separated registry names (default: all, and the zuko baselines)')
    ap.add_argument('--out', default=str(OUT))
    ap.add_argument('--table', action='store_true', help='print the table of the results in --out and rewrite sampling_TABLE.md; measure nothing')
    args = ap.parse_args(argv)
    if args.table:
        res = json.loads((Path(args.out) / 'sampling.json').read_text())
        (Path(args.out) / 'sampling_TABLE.md').write_text(table(res) + '\n'); print(table(res)); return res
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models.split(',') if args.models else list(M.MODELS) + ['zuko-realnvp', 'zuko-realnvp-large']
    if args.quick: names, args.n = names[:3], 16
    if importlib.util.find_spec('zuko') is None:
        print('zuko is not installed (pip install zuko): its rows are skipped', flush=True)
        names = [n for n in names if not n.startswith('zuko')]
    rows = []
    for name in names:
        model, shape = build(name, device)
        r = {'model': name, 'parameters': M.num_parameters(model), 'shape': list(shape), 'samples_per_s': rate(model, args.n, device)}
        rows.append(r)
        print(f"  {name:26s} {r['parameters']:>11,} params  {r['samples_per_s']:10,.0f} samples/s", flush=True)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'flownb', 'bench'], capture_output=True, text=True).stdout.strip()
    res = {'date': time.strftime('%Y-%m-%d'), 'commit': commit + ('+dirty' if dirty else ''), 'device': device.type,
           'device_name': torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{platform.machine()} CPU',
           'threads': args.threads, 'torch': torch.__version__, 'n': args.n, 'shape': 'MNIST 1×28×28, 256 levels', 'rows': rows}
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    if args.quick: print(table(res)); return res
    (out / 'sampling.json').write_text(json.dumps(res, indent=1) + '\n')
    (out / 'sampling_TABLE.md').write_text(table(res) + '\n')
    print(table(res))
    return res


if __name__ == '__main__': main()
