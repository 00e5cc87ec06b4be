"""Does the spline's hand-written backward pay? Times forward + backward of the rational-quadratic spline with
`_RQForward` (the default) and with autograd differentiating the same operations one by one: the Flowification
networks' activation (one spline shared by a layer, 10 bins on [-2, 2], `paper_spline`) at the paper's conv2 activation
shapes, a per-channel `RQSpline`, a coupling's per-element spline (`packed_spline`), and the training step of
`flowification-conv2` (MNIST shape, batch 128); the two variants interleaved over `--rounds` rounds in one run, one thread.

    python bench/spline_backward.py [--quick] [--rounds N] [--out bench/results/spline_backward.json]
"""
import argparse, json, platform, subprocess, sys, time
from pathlib import Path

import torch

import flownb.bijections as bijections
from flownb.bijections import RQSpline, packed_spline
from flownb.models import paper_spline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flowify_cost import median_time
from spline_lookup import training_step


def timed(make_step, repeats, rounds):
    "Median over rounds of the median step time, hand-written backward against autograd, interleaved"
    out = {'hand_written': [], 'autograd': []}
    for _ in range(rounds):
        for name in out:
            bijections._SPLINE_BACKWARD['hand_written'] = name == 'hand_written'
            out[name].append(median_time(make_step(), repeats))
    bijections._SPLINE_BACKWARD['hand_written'] = True
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


def activation(shape, spline):
    def make():
        torch.manual_seed(0)
        layer, x = spline(), (torch.randn(*shape) * 1.5).requires_grad_()
        def step():
            y, ldj = layer(x); (y.square().sum() - ldj.sum()).backward()
        return step
    return make


def coupling_spline(batch, features, bins):
    "A coupling's spline: parameters per element, as a conditioner emits them"
    def make():
        torch.manual_seed(0)
        x = torch.randn(batch, features).requires_grad_()
        raw = torch.randn(batch, features, 3 * bins - 1).requires_grad_()
        def step():
            y, logd = packed_spline(x, raw, 3.0); (y.square().sum() - logd.sum()).backward()
        return step
    return make


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='fewer repeats, no training step')
    ap.add_argument('--out', default='bench/results/spline_backward.json')
    ap.add_argument('--rounds', type=int, default=None, help='interleaved rounds (default 3, quick 2)')
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats, rounds = (5, 2) if args.quick else (15, 3)
    rounds = args.rounds or rounds
    cases = [(f'shared spline (paper_spline) {tuple(s)}', activation(s, paper_spline)) for s in ([128, 4, 14, 14], [128, 16, 7, 7], [128, 32, 4, 4])]
    cases += [('per-channel RQSpline(16, bins=10) (128, 16, 7, 7)', activation([128, 16, 7, 7], lambda: RQSpline(16, bins=10))),
              ('per-element spline (packed_spline, 8 bins) (128, 392)', coupling_spline(128, 392, 8))]
    if not args.quick: cases.append(('flowification-conv2 training step, batch 128', training_step('flowification-conv2', 128)))
    rows = []
    print('| forward + backward | autograd (ms) | hand-written (ms) | hand-written ÷ autograd |\n|---|---|---|---|')
    for label, make in cases:
        t = timed(make, repeats, rounds)
        rows.append(dict(case=label, **{f'{k}_s': v for k, v in t.items()}, ratio=t['hand_written'] / t['autograd']))
        print(f"| {label} | {t['autograd'] * 1e3:.1f} | {t['hand_written'] * 1e3:.1f} | {t['hand_written'] / t['autograd']:.2f} |", flush=True)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    result = dict(rows=rows, date=time.strftime('%Y-%m-%d'), commit=commit, threads=1, machine=platform.machine(),
                  torch=torch.__version__, repeats=repeats, rounds=rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
