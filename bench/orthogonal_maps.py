"""Which orthogonal parametrization should FlowLinear use? Times flownb's blocked Householder reflections and
`torch.nn.utils.parametrizations.orthogonal` with each of its maps (matrix_exp, cayley, householder) against a plain
nn.Linear, forward + backward at batch 128, as ratios measured in one run, and the float32 orthogonality error
||Q^T Q - I||_max after optimizer steps.

    python bench/orthogonal_maps.py [--quick] [--out bench/results/orthogonal_maps.json]
"""
import argparse, json, platform, time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from flownb.flowify_linear import BlockHouseholder

MAPS = ['blocked_householder', 'matrix_exp', 'cayley', 'householder']


class Blocked(nn.Module):
    "x -> x Q with flownb's BlockHouseholder, as a layer"
    def __init__(self, d):
        super().__init__(); self.q = BlockHouseholder(d)
    def forward(self, x): return self.q.right(x)
    @property
    def weight(self): return self.q.weight


def layer(orthogonal_map, d):
    if orthogonal_map == 'blocked_householder': return Blocked(d)
    return orthogonal(nn.Linear(d, d, bias=False), orthogonal_map=orthogonal_map)


def step_time(module, x, repeats):
    "Median seconds of forward + backward"
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        module(x).square().mean().backward()
        if i >= 2: times.append(time.perf_counter() - t0)
        module.zero_grad(set_to_none=True)
    times.sort()
    return times[len(times) // 2]


def drift(orthogonal_map, d, steps):
    torch.manual_seed(0)
    lay = layer(orthogonal_map, d)
    opt = torch.optim.Adam(lay.parameters(), lr=1e-2)
    x = torch.randn(128, d)
    target = torch.randn(128, d)
    for _ in range(steps):
        loss = (lay(x) - target).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): q = lay.weight
    return (q.T @ q - torch.eye(d)).abs().max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--out', default='bench/results/orthogonal_maps.json')
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dims = [64, 256, 784] if args.quick else [64, 128, 256, 512, 784, 1024, 2048]
    repeats = 3 if args.quick else 7
    rows = []
    for d in dims:
        x = torch.randn(128, d)
        plain = step_time(nn.Linear(d, d), x, repeats)
        row = {'d': d, 'plain_linear_s': plain}
        for m in MAPS:
            t = step_time(layer(m, d), x, repeats)
            row[f'{m}_ratio'] = t / plain
        rows.append(row)
        print(f"d={d:5d}  " + '  '.join(f"{m}: {row[f'{m}_ratio']:7.1f}x" for m in MAPS) + f"   (ratios to nn.Linear fwd+bwd, batch 128)")
    steps = 200 if args.quick else 2000
    drifts = {m: drift(m, 128, steps) for m in MAPS}
    print(f"float32 max |Q^T Q - I| after {steps} Adam steps (d=128): " + ', '.join(f'{m} {v:.1e}' for m, v in drifts.items()))
    result = {'date': time.strftime('%Y-%m-%d'), 'machine': platform.processor() or platform.machine(), 'device': 'cpu',
              'threads': torch.get_num_threads(), 'torch': torch.__version__, 'rows': rows, 'drift_steps': steps, 'drift': drifts}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
