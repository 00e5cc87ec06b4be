"""How much arithmetic a flowified training step must do: the floating-point operations of its matrix products and
convolutions (forward and backward, counted by `torch.utils.flop_counter.FlopCounterMode`), as a ratio to the plain
network's. Issue 18's speed targets are ratios of step *times*. Where both steps are compute-bound, a time ratio cannot
fall below the FLOP ratio of the same two steps, on any machine; so this bench says which targets a parametrization
can meet at all, independent of this noisy CPU.

    python bench/flop_count.py [--batches 128,1024] [--paper conv2,mlp,conv1] [--paper-batch 128] [--out PATH]

Counted: `mm`, `addmm`, `bmm`, convolutions and their backward (what FlopCounterMode knows). Not counted: triangular
solves (the blocked reflections' S⁻¹, a k×k system per block of k = 64: a few percent of a block's products at 128
rows), elementwise work (activations, splines) and the optimizer. Rows:
- the flowified MLP 784-512-256-128-64-32-8 (`bench/flowify_cost.py`'s network, flownb's default blocked Householder
  factors) ÷ the plain MLP, and the floor (U, V as unconstrained d×d matrices: the SVD form's shapes, orthogonality
  free; not a flow) ÷ the plain MLP;
- with `--paper`, the Flowification paper's networks (registry `flowification-<arch>`, MNIST, batch 128 unless
  `--paper-batch`) and their floors ÷ the plain network of the same layers (its activations do not change the count).
Writes bench/results/flop_count.json (or --out) and flop_count_TABLE.md beside it. The counts do not depend on the
machine.
"""
import argparse, copy, json, subprocess, time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import flowify

from flowify_cost import plain_mlp, unconstrained_factors, paper_networks, WIDTHS


def step_flops(loss) -> int:
    "FLOPs of the matrix products and convolutions in `loss()` and its backward"
    with FlopCounterMode(display=False) as counter:
        loss().backward()
    return counter.get_total_flops()


def mlp_row(batch: int) -> dict:
    torch.manual_seed(0)
    x = torch.rand(batch, WIDTHS[0])
    plain = plain_mlp()
    flow = Flow(StandardNormal(WIDTHS[-1]), flowify(plain_mlp()))
    floor = unconstrained_factors(Flow(StandardNormal(WIDTHS[-1]), flowify(plain_mlp())))
    plain_f = step_flops(lambda: plain(x).square().mean())
    flow_f, floor_f = (step_flops(lambda m=m: -m.log_prob(x).mean()) for m in (flow, floor))
    return {'model': 'flowified MLP', 'batch': batch, 'plain_gflop': plain_f / 1e9, 'flowified_gflop': flow_f / 1e9,
            'floor_gflop': floor_f / 1e9, 'flowified_ratio': flow_f / plain_f, 'floor_ratio': floor_f / plain_f}


def paper_row(arch: str, batch: int) -> dict:
    nets = paper_networks(arch)
    pixels = torch.randint(0, 256, (batch, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float()
    flow, plain = nets['flowified'], nets['plain_leaky']
    with torch.no_grad(): flow.log_prob(pixels)   # initializes what initializes on first use
    floor = unconstrained_factors(copy.deepcopy(flow))
    plain_f = step_flops(lambda: plain(pixels / 255).square().mean())
    flow_f, floor_f = (step_flops(lambda m=m: -m.log_prob(pixels).mean()) for m in (flow, floor))
    return {'model': f'flowification-{arch}', 'batch': batch, 'plain_gflop': plain_f / 1e9, 'flowified_gflop': flow_f / 1e9,
            'floor_gflop': floor_f / 1e9, 'flowified_ratio': flow_f / plain_f, 'floor_ratio': floor_f / plain_f}


def table(rows) -> str:
    lines = ['| network | batch | plain step (GFLOP) | flowified step (GFLOP) | flowified ÷ plain | floor ÷ plain |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['plain_gflop']:.2f} | {r['flowified_gflop']:.2f} | {r['flowified_ratio']:.1f}× | {r['floor_ratio']:.1f}× |")
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batches', default='128,1024', help='batch sizes for the flowified MLP, comma-separated')
    ap.add_argument('--paper', default='conv2,mlp,conv1', help="the Flowification paper's networks at batch 128 ('' for none)")
    ap.add_argument('--paper-batch', type=int, default=128)
    ap.add_argument('--out', default='bench/results/flop_count.json')
    args = ap.parse_args(argv)
    known = ['mlp', 'conv1', 'conv2']
    archs = [a for a in args.paper.split(',') if a]
    unknown = [a for a in archs if a not in known]
    if unknown: ap.error(f"--paper: unknown architecture(s) {', '.join(unknown)}; expected a comma-separated list from {', '.join(known)}")
    rows = [mlp_row(int(b)) for b in args.batches.split(',')] + [paper_row(a, args.paper_batch) for a in archs]
    print(table(rows))
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'rows': rows, 'date': time.strftime('%Y-%m-%d'), 'commit': commit, 'torch': torch.__version__}, indent=1))
    out.with_name('flop_count_TABLE.md').write_text(table(rows) + '\n')
    print(f"wrote {out} and flop_count_TABLE.md")
    return rows


if __name__ == '__main__': main()
