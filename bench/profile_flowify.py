"""Where a flowified training step spends its time: `torch.profiler` over training steps (forward, backward, Adam) of
the flowified MLP 784-512-256-128-64-32-8 (the same network `bench/flowify_cost.py` times, flownb's default blocked
Householder factors), beside the plain MLP, at one batch size, one thread. Writes the top operators by self CPU time
of both and the share each takes, so a change to the hot path can be judged by what it removes.

    python bench/profile_flowify.py [--batch 128] [--steps 20] [--out bench/results/flowify_profile.md]

Self CPU time is the time an operator spends outside the operators it calls; the shares of one model add up to 100%
of its profiled steps (the profiler's own overhead is in them, the same for both models).
"""
import argparse, platform, subprocess, time
from pathlib import Path

import torch
from torch.profiler import profile, ProfilerActivity

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import flowify

from flowify_cost import plain_mlp, WIDTHS


def profiled(step, steps: int):
    "Run `step` twice to warm up, then `steps` times under the profiler; the key averages and the wall time per step"
    for _ in range(2): step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps): step()
        wall = (time.perf_counter() - t0) / steps
    return prof.key_averages(), wall


def table(events, top: int) -> list[str]:
    rows = sorted((e for e in events if e.self_cpu_time_total > 0), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    lines = ['| operator | calls | self CPU (ms, all steps) | share |', '|---|---|---|---|']
    for e in rows[:top]:
        lines.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.1f}% |")
    lines.append(f"| (all {len(rows)} operators) | {sum(e.count for e in rows)} | {total / 1e3:.1f} | 100% |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--top', type=int, default=15)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default='bench/results/flowify_profile.md')
    args = ap.parse_args()
    torch.set_num_threads(args.threads); torch.manual_seed(0)
    x = torch.rand(args.batch, WIDTHS[0])
    plain = plain_mlp()
    flow = Flow(StandardNormal(WIDTHS[-1]), flowify(plain_mlp()))
    results = {}
    for name, model, loss_fn in (('plain MLP (squared output as a stand-in loss)', plain, lambda: plain(x).pow(2).mean()),
                                 ('flowified MLP (negative log-likelihood)', flow, lambda: -flow.log_prob(x).mean())):
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        def step():
            loss = loss_fn(); opt.zero_grad(); loss.backward(); opt.step()
        results[name] = profiled(step, args.steps)
    (plain_events, plain_wall), (flow_events, flow_wall) = results.values()
    try: commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    except OSError: commit = 'unknown'
    lines = [f"# Where the flowified MLP's training step spends its time", '',
             f"`python bench/profile_flowify.py --batch {args.batch} --steps {args.steps}`: {time.strftime('%Y-%m-%d')}, commit {commit}, "
             f"{platform.machine()} CPU, {args.threads} thread(s), torch {torch.__version__}. Wall time per step under the profiler: "
             f"flowified {flow_wall * 1e3:.1f} ms, plain {plain_wall * 1e3:.1f} ms (ratio {flow_wall / plain_wall:.1f}×; the profiler "
             "adds overhead per operator, so this ratio is above `bench/flowify_cost.py`'s).", '']
    for (name, (events, _)) in results.items():
        lines += [f"## {name}", ''] + table(events, args.top) + ['']
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__': main()
