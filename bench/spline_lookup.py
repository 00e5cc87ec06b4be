"""Does the spline activation's shared-table lookup pay? Times forward + backward of the Flowification paper's activation
(`paper_spline`: one spline shared by a layer) at its conv2 network's activation shapes, on channels-last inputs as that
network's convolutions produce them, and of a per-channel `RQSpline` on a contiguous input; and the training step of
`flowification-conv2` (MNIST shape, batch 128). Each with `_bin_values`' shared-knots path (the default: a row per
table, read in the input's memory order), with the first version of that path (a row per element, the tables strided
in it), and with the per-element gather both replaced; the variants interleaved over `--rounds` rounds in one run,
one thread.

    python bench/spline_lookup.py [--quick] [--rounds N] [--out bench/results/spline_lookup.json]
"""
import argparse, json, math, platform, subprocess, sys, time
from pathlib import Path

import torch

import flownb.bijections as bijections
from flownb.bijections import RQSpline
from flownb.models import create_model, paper_spline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flowify_cost import median_time

SHARED = bijections._bin_values


def gathered(xc, knots, tables):
    """The lookup `_bin_values` replaced for shared knots, as it was: searchsorted over the knots expanded to x's size and
    one gather per table. (Calling `_bin_values` with its arguments expanded to x's size also takes a gather path, but
    measured 1.6 to 1.8 times slower than this code at (128, 16, 7, 7), so it would not be the baseline that was replaced.)"""
    k = tables[0].shape[-1]
    idx = (torch.searchsorted(knots.expand(*xc.shape, k + 1).contiguous(), xc.unsqueeze(-1).contiguous()) - 1).clamp(0, k - 1)
    return [torch.gather(t.expand(*xc.shape, k), -1, idx).squeeze(-1) for t in tables]


def strided_rows(xc, knots, tables):
    """The shared-knots path as first adopted (2026-12-07, 8049533): the tables stacked along the last dimension, one row
    per element indexed, then unbound into six strided views (its backward stacks six gradients and index_puts them)"""
    k = tables[0].shape[-1]
    shape = torch.broadcast_shapes(knots.shape[:-1], *(t.shape[:-1] for t in tables))
    rows = torch.arange(math.prod(shape), device=xc.device).reshape(shape) * k + (xc.unsqueeze(-1) > knots[..., 1:-1]).sum(-1)
    return torch.stack(torch.broadcast_tensors(*tables), -1).reshape(-1, len(tables))[rows].unbind(-1)


def timed(make_step, repeats, rounds):
    "Median over rounds of the median step time, each lookup interleaved"
    out = {'shared': [], 'strided_rows': [], 'gather': []}
    for _ in range(rounds):
        for name, fn in (('shared', SHARED), ('strided_rows', strided_rows), ('gather', gathered)):
            bijections._bin_values = fn
            out[name].append(median_time(make_step(), repeats))
    bijections._bin_values = SHARED
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


def activation(shape, shared_by_layer=False):
    def make():
        torch.manual_seed(0)
        spline, x = (paper_spline() if shared_by_layer else RQSpline(shape[1], bins=10)), torch.randn(*shape) * 2
        if shared_by_layer: x = x.contiguous(memory_format=torch.channels_last)   # as flowification-conv2's activations get it
        x.requires_grad_()
        def step():
            y, ldj = spline(x); (y.sum() + ldj.sum()).backward()
        return step
    return make


def training_step(name, batch):
    def make():
        torch.manual_seed(0)
        model = create_model(name, (1, 28, 28), bins=256)
        opt, x = torch.optim.Adam(model.parameters(), lr=1e-4), torch.randint(0, 256, (batch, 1, 28, 28)).float()
        def step():
            loss = -model.log_prob(x).mean(); opt.zero_grad(); loss.backward(); opt.step()
        return step
    return make


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='fewer repeats, no training step')
    ap.add_argument('--out', default='bench/results/spline_lookup.json')
    ap.add_argument('--rounds', type=int, default=None, help='interleaved rounds (default 3, quick 2)')
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats, rounds = (5, 2) if args.quick else (15, 3)
    rounds = args.rounds or rounds
    rows = []
    print('| case | gather (ms) | shared, strided rows (ms) | shared, a row per table (ms) | ÷ gather | ÷ strided rows |\n|---|---|---|---|---|---|')
    cases = [(f'paper_spline, channels-last {tuple(s)}', activation(s, shared_by_layer=True)) for s in ([128, 4, 14, 14], [128, 16, 7, 7], [128, 32, 4, 4])]
    cases.append(('RQSpline(16, bins=10), contiguous (128, 16, 7, 7)', activation([128, 16, 7, 7])))
    if not args.quick: cases.append(('flowification-conv2 training step, batch 128', training_step('flowification-conv2', 128)))
    for label, make in cases:
        t = timed(make, repeats, rounds)
        rows.append(dict(case=label, **{f'{k}_s': v for k, v in t.items()}))
        print(f"| {label} | {t['gather'] * 1e3:.1f} | {t['strided_rows'] * 1e3:.1f} | {t['shared'] * 1e3:.1f} | "
              f"{t['shared'] / t['gather']:.2f} | {t['shared'] / t['strided_rows']:.2f} |", flush=True)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    result = dict(rows=rows, date=time.strftime('%Y-%m-%d'), commit=commit, threads=1, machine=platform.machine(),
                  torch=torch.__version__, repeats=repeats, rounds=rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
