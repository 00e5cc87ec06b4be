"""Is the hand-written backward of the blocked reflections worth having? Times forward + backward of `BlockHouseholder.right`
(x -> xQ) with `hand_written_backward` on (the default) and off (autograd on the plain operations), beside a dense
x @ W of the same size, and the training step of the flowified paper MLP 784-512-256-128-64-32-8 both ways beside the
plain MLP's; everything in one run, the variants interleaved over three rounds (two with --quick), one thread.

    python bench/reflections_backward.py [--quick] [--out bench/results/reflections_backward.json]
"""
import argparse, json, platform, subprocess, sys, time
from pathlib import Path

import torch

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import flowify
from flownb.flowify_linear import BlockHouseholder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flowify_cost import plain_mlp, median_step, median_time


def factor_times(d, rows, repeats, rounds):
    "Median seconds of forward + backward of x -> xQ, per variant, interleaved over `rounds`"
    torch.manual_seed(0)
    q, x = BlockHouseholder(d), torch.randn(rows, d, requires_grad=True)
    dense = torch.randn(d, d, requires_grad=True)
    def run(hand_written):
        def step():
            q.hand_written_backward = hand_written
            q.right(x).square().sum().backward()
        return step
    variants = {'dense': lambda: (x @ dense).square().sum().backward(), 'hand_written': run(True), 'autograd': run(False)}
    out = {k: [] for k in variants}
    for _ in range(rounds):
        for k, f in variants.items(): out[k].append(median_time(f, repeats))
    BlockHouseholder.hand_written_backward = True
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


def step_times(batch, steps, rounds):
    "Median seconds of a training step: plain MLP, flowified with the hand-written backward, flowified with autograd"
    torch.manual_seed(0)
    x = torch.rand(batch, 784)
    nll = lambda m, x: -m.log_prob(x).mean()
    out = {'plain': [], 'hand_written': [], 'autograd': []}
    for _ in range(rounds):
        out['plain'].append(median_step(plain_mlp(), lambda m, x: m(x).square().mean(), x, steps))
        for k, flag in (('hand_written', True), ('autograd', False)):
            BlockHouseholder.hand_written_backward = flag
            out[k].append(median_step(Flow(StandardNormal(8), flowify(plain_mlp())), nll, x, steps))
    BlockHouseholder.hand_written_backward = True
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='fewer sizes and repeats')
    ap.add_argument('--out', default='bench/results/reflections_backward.json')
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats, rounds, steps = (5, 2, 5) if args.quick else (15, 3, 10)
    sizes = [(128, 256), (128, 784)] if args.quick else [(128, 256), (128, 512), (128, 784), (1024, 512), (1024, 784)]
    results = {'factor': [], 'step': []}
    print('| rows | d | autograd ÷ dense | hand-written ÷ dense | hand-written ÷ autograd |\n|---|---|---|---|---|')
    for rows, d in sizes:
        t = factor_times(d, rows, repeats, rounds)
        results['factor'].append(dict(rows=rows, d=d, **{f'{k}_s': v for k, v in t.items()}))
        print(f"| {rows} | {d} | {t['autograd'] / t['dense']:.2f}× | {t['hand_written'] / t['dense']:.2f}× | {t['hand_written'] / t['autograd']:.2f} |")
    print('\n| batch | flowified MLP step ÷ plain, autograd | hand-written | hand-written ÷ autograd |\n|---|---|---|---|')
    for batch in ([128] if args.quick else [128, 1024]):
        t = step_times(batch, steps, rounds)
        results['step'].append(dict(batch=batch, **{f'{k}_s': v for k, v in t.items()}))
        print(f"| {batch} | {t['autograd'] / t['plain']:.2f}× | {t['hand_written'] / t['plain']:.2f}× | {t['hand_written'] / t['autograd']:.2f} |")
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    results.update(date=time.strftime('%Y-%m-%d'), commit=commit, threads=1, machine=platform.machine(), torch=torch.__version__,
                   repeats=repeats, rounds=rounds, steps=steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
