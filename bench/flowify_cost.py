"""The price of flowification: time of one training step (forward, backward, Adam step) of a flowified MLP
784-512-256-128-64-32-8 at batch 128, divided by the time of the same plain MLP, measured in one run; with flownb's
blocked Householder reflections (the default), and torch's Cayley map, matrix exponential (two matrix_exps per layer,
as the paper's code) and Householder parametrizations. A last row is a floor, not a flow: the same flowified MLP with
U and V as plain d×d matrices that nothing keeps orthogonal, so the orthogonality costs nothing and only applying the
factors and the dropped coordinates' densities is left. Nothing that applies dense U and V can be cheaper.

`--paper conv2,mlp,conv1` times the Flowification paper's own networks instead (the registry's `flowification-*`, MNIST,
batch 128), each against two plain networks of the same layers: the network it was flowified from, whose activation is
the paper's spline (applied as a plain function, no log-determinant), and the same layers with LeakyReLU, the cheap
activation a network that is never flowified would use; plus the floor above. Rounds are interleaved and the median
ratio of the rounds is reported.

    python bench/flowify_cost.py [--quick] [--out bench/results/flowify_cost.json]
    python bench/flowify_cost.py --paper conv2,mlp,conv1 --threads 1 --out bench/results/flowify_cost_paper.json
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


def _synchronize(x):
    "Wait for the GPU: CUDA runs kernels asynchronously, so a step is timed only once its kernels have finished"
    if x.is_cuda: torch.cuda.synchronize(x.device)


class ValueOnly(nn.Module):
    "A flownb bijection used as a plain activation: its output without the log-determinant"
    def __init__(self, bijection):
        super().__init__(); self.bijection = bijection
    def forward(self, x): return self.bijection(x)[0]


def paper_networks(arch):
    "The registry's `flowification-<arch>` for MNIST, the plain network it came from (spline activations), and the same layers with LeakyReLU"
    from flownb.models import create_model, paper_network, FLOWIFICATION_ARCHITECTURES
    from flownb.bijections import RQSpline
    spec, shape = FLOWIFICATION_ARCHITECTURES['mnist', arch], (1, 28, 28)
    with_spline = paper_network(spec, shape)
    with_leaky = paper_network(spec, shape)
    for net, act in ((with_spline, ValueOnly), (with_leaky, lambda _: nn.LeakyReLU(0.1))):
        for i, m in enumerate(net):
            if isinstance(m, RQSpline): net[i] = act(m)
    return create_model(f'flowification-{arch}', shape, 256), with_spline, with_leaky


def paper_rows(archs, batch, device, steps, rounds):
    "Training step of each paper network, flowified ÷ plain with its splines, ÷ plain with LeakyReLU, and the floor ÷ plain with splines"
    import copy, statistics
    pixels = torch.randint(0, 256, (batch, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float().to(device)
    plain_loss, flow_loss = (lambda m, x: m(x / 255).square().mean()), (lambda m, x: -m.log_prob(x).mean())
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        flow, with_spline, with_leaky = (m.to(device) for m in paper_networks(arch))
        with torch.no_grad(): flow.log_prob(pixels)   # initializes what initializes on first use
        floor = unconstrained_factors(copy.deepcopy(flow))
        times = {k: [] for k in ('flowified', 'plain_spline', 'plain_leaky', 'floor')}
        for _ in range(rounds):
            times['plain_spline'].append(median_step(with_spline, plain_loss, pixels, steps))
            times['plain_leaky'].append(median_step(with_leaky, plain_loss, pixels, steps))
            times['flowified'].append(median_step(flow, flow_loss, pixels, steps))
            times['floor'].append(median_step(floor, flow_loss, pixels, steps))
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
        row = {'model': f'flowification-{arch}', **{f'{k}_step_s': statistics.median(v) for k, v in times.items()},
               'ratio_to_plain_spline': ratio('flowified', 'plain_spline'), 'ratio_to_plain_leaky': ratio('flowified', 'plain_leaky'),
               'floor_ratio_to_plain_spline': ratio('floor', 'plain_spline')}
        rows.append(row)
        print(f"flowification-{arch:6s} step ÷ plain (its splines) = {row['ratio_to_plain_spline']:5.1f}x, ÷ plain (LeakyReLU) = "
              f"{row['ratio_to_plain_leaky']:5.1f}x; floor ÷ plain (its splines) = {row['floor_ratio_to_plain_spline']:5.1f}x", flush=True)
    return rows


def median_step(model, loss_fn, x, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        _synchronize(x); t0 = time.perf_counter()
        loss = loss_fn(model, x)
        opt.zero_grad(); loss.backward(); opt.step()
        _synchronize(x)
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
    ap.add_argument('--paper', default='', help="time the Flowification paper's networks instead, e.g. conv2,mlp,conv1")
    ap.add_argument('--rounds', type=int, default=3, help='interleaved rounds for --paper')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = 5 if args.quick else 15
    if args.paper:
        results = {'paper': paper_rows(args.paper.split(','), args.batch, args.device, steps, args.rounds), 'rounds': args.rounds}
        return write(results, args, steps)
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
    write(results, args, steps)


def write(results, args, steps):
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    results.update(date=time.strftime('%Y-%m-%d'), commit=commit, device=args.device, threads=torch.get_num_threads(),
                   machine=platform.machine(), torch=torch.__version__, batch=args.batch, widths=WIDTHS, steps=steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
