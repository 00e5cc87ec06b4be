"""The price of flowification: time of one training step (forward, backward, Adam step) of a flowified MLP
784-512-256-128-64-32-8 at batch 128, divided by the time of the same plain MLP, measured in one run; with flownb's
blocked Householder reflections (the default), and torch's Cayley map, matrix exponential (two matrix_exps per layer,
as the paper's code) and Householder parametrizations. A last row is a floor, not a flow: the same flowified MLP with
U and V as plain d×d matrices that nothing keeps orthogonal, so the orthogonality costs nothing and only applying the
factors and the dropped coordinates' densities is left. Nothing that applies dense U and V can be cheaper.

    python bench/flowify_cost.py [--quick] [--out bench/results/flowify_cost.json]
    python bench/flowify_cost.py --batch 1024 --maps blocked_householder --threads 1 --out bench/results/flowify_cost_1thread_1024.json
"""
import argparse, json, platform, subprocess, time
from pathlib import Path

import torch
from torch import nn

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import flowify
from flownb.flowify_linear import SVDFactors

WIDTHS = [784, 512, 256, 128, 64, 32, 8]


def plain_mlp():
    layers = []
    for a, b in zip(WIDTHS[:-1], WIDTHS[1:]): layers += [nn.Linear(a, b), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers[:-1])


def unconstrained_factors(flow):
    "The floor: every SVDFactors' U and V replaced by a plain (unconstrained) d×d matrix with the same initial value"
    for m in flow.modules():
        if isinstance(m, SVDFactors):
            for name in ('U', 'V'):
                q = getattr(m, name)
                plain = nn.Linear(q.d, q.d, bias=False, device=q.signs.device)
                with torch.no_grad(): plain.weight.copy_(q.weight)
                setattr(m, name, plain)
    return flow


def median_time(f, repeats):
    "Median seconds of `repeats` calls of `f`, after two warm-up calls"
    for _ in range(2): f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def median_step(model, loss_fn, x, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = loss_fn(model, x)
        opt.zero_grad(); loss.backward(); opt.step()
        if i >= 2: times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='fewer repeats')
    ap.add_argument('--out', default='bench/results/flowify_cost.json')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--maps', default='blocked_householder,cayley,matrix_exp,householder', help='orthogonal maps to time, comma-separated')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = 5 if args.quick else 15
    x = torch.rand(args.batch, 784, device=args.device)
    plain = plain_mlp().to(args.device)
    results = {'plain_step_s': median_step(plain, lambda m, x: m(x).square().mean(), x, steps)}
    for name in args.maps.split(','):
        flow = Flow(StandardNormal(8), flowify(plain_mlp(), linear_options={'orthogonal_map': name})).to(args.device)
        t = median_step(flow, lambda m, x: -m.log_prob(x).mean(), x, steps)
        results[f'{name}_step_s'] = t
        results[f'{name}_ratio'] = t / results['plain_step_s']
        print(f"flowified MLP ({name:19s}) training step / plain MLP step = {t / results['plain_step_s']:6.1f}x")
    floor = unconstrained_factors(Flow(StandardNormal(8), flowify(plain_mlp())).to(args.device))
    t = median_step(floor, lambda m, x: -m.log_prob(x).mean(), x, steps)
    results.update(unconstrained_floor_step_s=t, unconstrained_floor_ratio=t / results['plain_step_s'])
    print(f"floor: U, V plain matrices (not orthogonal)   / plain MLP step = {t / results['plain_step_s']:6.1f}x")
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    results.update(date=time.strftime('%Y-%m-%d'), commit=commit, device=args.device, threads=torch.get_num_threads(),
                   machine=platform.machine(), torch=torch.__version__, batch=args.batch, widths=WIDTHS, steps=steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
