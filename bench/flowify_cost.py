"""The price of flowification: time of one training step (forward, backward, Adam step) of a flowified MLP
784-512-256-128-64-32-8 at batch 128, divided by the time of the same plain MLP, measured in one run; with flownb's
blocked Householder reflections (the default), and torch's Cayley map, matrix exponential (two matrix_exps per layer,
as the paper's code) and Householder parametrizations. A last row is a floor, not a flow: the same flowified MLP with
U and V as plain d×d matrices that nothing keeps orthogonal, so the orthogonality costs nothing and only applying the
factors and the dropped coordinates' densities is left. Nothing that applies dense U and V can be cheaper.

`--paper conv2,mlp,conv1` times the Flowification paper's own networks instead (the registry's `flowification-*`, MNIST,
batch 128), each against two plain networks of the same layers: the network it was flowified from, whose activation is
the paper's spline (its value only, as a network that is never flowified computes it), and the same layers with
LeakyReLU, the cheap activation such a network would more likely use. Also timed: the floor above, and the flow with
flownb's `LeakyReLU` in place of its splines (what flowifying the layers costs without the spline). Rounds are
interleaved, in alternating order, and the median ratio of the rounds is reported.

    python bench/flowify_cost.py [--quick] [--out bench/results/flowify_cost.json]
    python bench/flowify_cost.py --paper conv2,mlp,conv1 --threads 1          # writes bench/results/flowify_cost_paper.json
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


class SplineValue(nn.Module):
    """The paper's spline as a plain network's activation: its value only. A flow also needs its log-derivative, which
    `RQSpline` always computes; a network that is never flowified would not"""
    def __init__(self, spline):
        super().__init__(); self.spline = spline

    def forward(self, x):
        from flownb.bijections import _spline_tables, _bin_values
        sp, bound = self.spline, self.spline.bound
        shape = (1,) * x.dim() if sp.features is None else (1, sp.features) + (1,) * (x.dim() - 2)
        raw = [t.reshape(*shape, t.shape[-1]) for t in (sp.raw_widths, sp.raw_heights, sp.raw_derivatives)]
        xk, _, tables = _spline_tables(*raw, bound, 1e-3, 1e-3)   # rational_quadratic_spline's min_size and min_derivative
        xc = x.clamp(-bound, bound)
        x0, y0, w, h, d0, d1 = _bin_values(xc, xk, tables)
        s = h / w
        xi = (xc - x0) / w
        xi1 = xi * (1 - xi)
        return torch.where(x.abs() <= bound, y0 + h * (s * xi ** 2 + d0 * xi1) / (s + (d0 + d1 - 2 * s) * xi1), x)


def _swap_splines(module, make):
    "Replace every `RQSpline` inside `module` by `make(spline)`"
    from flownb.bijections import RQSpline
    for name, child in module.named_children():
        if isinstance(child, RQSpline): setattr(module, name, make(child))
        else: _swap_splines(child, make)
    return module


def paper_networks(arch):
    """The registry's `flowification-<arch>` for MNIST; the same flow with `LeakyReLU` in place of its splines; and two
    plain networks of its layers, the one it was flowified from (spline activations, value only) and one with LeakyReLU"""
    from flownb.models import create_model, paper_network, FLOWIFICATION_ARCHITECTURES
    from flownb.bijections import LeakyReLU
    spec, shape = FLOWIFICATION_ARCHITECTURES['mnist', arch], (1, 28, 28)
    torch.manual_seed(0); flow = create_model(f'flowification-{arch}', shape, 256)
    torch.manual_seed(0); flow_leaky = _swap_splines(create_model(f'flowification-{arch}', shape, 256), lambda _: LeakyReLU(0.1))
    plain_spline = _swap_splines(paper_network(spec, shape), SplineValue)
    plain_leaky = _swap_splines(paper_network(spec, shape), lambda _: nn.LeakyReLU(0.1))
    return {'flowified': flow, 'flowified_leaky': flow_leaky, 'plain_spline': plain_spline, 'plain_leaky': plain_leaky}


def paper_rows(archs, batch, device, steps, rounds):
    """Training steps of each paper network, in rounds whose order alternates: flowified and its floor ÷ the plain network
    with its splines; flowified ÷ the plain network with LeakyReLU; the flow with LeakyReLU in place of its splines ÷ that"""
    import copy, statistics
    pixels = torch.randint(0, 256, (batch, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float().to(device)
    plain_loss, flow_loss = (lambda m, x: m(x / 255).square().mean()), (lambda m, x: -m.log_prob(x).mean())
    rows = []
    for arch in archs:
        models = {k: m.to(device) for k, m in paper_networks(arch).items()}
        for k in ('flowified', 'flowified_leaky'):
            with torch.no_grad(): models[k].log_prob(pixels)   # initializes what initializes on first use
        models['floor'] = unconstrained_factors(copy.deepcopy(models['flowified']))
        times = {k: [] for k in models}
        for r in range(rounds):
            for k in (list(models) if r % 2 == 0 else list(models)[::-1]):   # a fresh process's first steps run slow
                times[k].append(median_step(models[k], plain_loss if k.startswith('plain') else flow_loss, pixels, steps))
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
        row = {'model': f'flowification-{arch}', **{f'{k}_step_s': statistics.median(v) for k, v in times.items()},
               'ratio_to_plain_spline': ratio('flowified', 'plain_spline'), 'floor_ratio_to_plain_spline': ratio('floor', 'plain_spline'),
               'ratio_to_plain_leaky': ratio('flowified', 'plain_leaky'), 'leaky_ratio_to_plain_leaky': ratio('flowified_leaky', 'plain_leaky'),
               'plain_spline_over_plain_leaky': ratio('plain_spline', 'plain_leaky')}
        rows.append(row)
        print(f"flowification-{arch:6s} ÷ plain with its splines {row['ratio_to_plain_spline']:5.1f}x (floor {row['floor_ratio_to_plain_spline']:4.1f}x); "
              f"÷ plain with LeakyReLU {row['ratio_to_plain_leaky']:5.1f}x; with LeakyReLU for its splines ÷ plain with LeakyReLU "
              f"{row['leaky_ratio_to_plain_leaky']:5.1f}x; plain with splines ÷ plain with LeakyReLU {row['plain_spline_over_plain_leaky']:4.1f}x", flush=True)
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
    ap.add_argument('--out', default=None, help='default bench/results/flowify_cost.json (with --paper: flowify_cost_paper.json)')
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
        known = ['mlp', 'conv1', 'conv2']   # the *-nsf networks have coupling stacks, which have no plain counterpart
        unknown = [a for a in args.paper.split(',') if a not in known]
        if unknown: ap.error(f"--paper: unknown architecture(s) {', '.join(unknown)}; expected a comma-separated list from {', '.join(known)}")
        results = {'paper': paper_rows(args.paper.split(','), args.batch, args.device, steps, args.rounds), 'rounds': args.rounds}
        return write(results, args, steps, args.out or 'bench/results/flowify_cost_paper.json')
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
    results['widths'] = WIDTHS
    write(results, args, steps, args.out or 'bench/results/flowify_cost.json')


def write(results, args, steps, out):
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    results.update(date=time.strftime('%Y-%m-%d'), commit=commit, device=args.device, threads=torch.get_num_threads(),
                   machine=platform.machine(), torch=torch.__version__, batch=args.batch, steps=steps)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == '__main__':
    main()
