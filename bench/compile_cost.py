"""Does `torch.compile` make the flowified training step cheaper? Eager against compiled, measured in one run.

    python bench/compile_cost.py [--quick] [--batches 128,1024] [--threads 1] [--backend inductor]
    python bench/compile_cost.py --model flowification-conv2 [--batches 128]   # a registry model, eager against compiled

The model is `bench/flowify_cost.py`'s: the MLP 784-512-256-128-64-32-8 flowified (`flowify`, blocked Householder
factors, a standard normal base), and the same plain MLP. A step is forward, backward and an Adam step; its time is
the median over the steps after two warm-up steps (perf_counter, this process only). The compiled model is
`torch.compile(flow, backend=...)` (the whole `Flow.log_prob`, with autograd through AOTAutograd); its first call,
where the compile happens, is reported separately as the compile time (inductor's caches off, so it is the cold
compile a first run pays; a second run on the same machine reuses the cache and compiles in seconds). Graph breaks are counted with
`torch._dynamo.explain`.

Writes bench/results/compile_cost.json and compile_cost_TABLE.md (the README's table). Nothing asserts a time.
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

os.environ.setdefault('TORCHINDUCTOR_FORCE_DISABLE_CACHES', '1')   # a cold compile every time: the compile time a first run pays
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flowify_cost import WIDTHS, median_step, plain_mlp

from flownb.core import Flow
from flownb.distributions import StandardNormal
from flownb.flowify import flowify


def flowified():
    torch.manual_seed(0)
    return Flow(StandardNormal(WIDTHS[-1]), flowify(plain_mlp()))


def nll(model, x): return -model(x).mean()
def squared(model, x): return model(x).square().mean()


def timed_first_call(model, loss_fn, x):
    t0 = time.perf_counter(); loss_fn(model, x).backward(); return time.perf_counter() - t0


def registry_model_rows(name, batches, backend, steps):
    "A registry model at MNIST's shape (256 levels): its training step eager (the faster of a timing before and one after compiling) and compiled, and the cold compile time"
    from flownb.models import create_model
    def build():
        torch.manual_seed(0); model = create_model(name, (1, 28, 28), 256)
        with torch.no_grad(): model(x)   # what initializes on first use, before compiling
        return model
    rows = []
    for batch in batches:
        torch.manual_seed(0); x = torch.randint(0, 256, (batch, 1, 28, 28)).float()
        torch._dynamo.reset()
        eager = build()
        row = {'model': name, 'batch': batch, 'eager_before_s': median_step(eager, nll, x, steps)}
        compiled = torch.compile(build(), backend=backend)
        row['compile_s'] = timed_first_call(compiled, nll, x)
        row['compiled_s'] = median_step(compiled, nll, x, steps)
        # eager timed again after compiling: the first steps of a fresh process run slow for a while, which would flatter compile
        row['eager_after_s'] = median_step(eager, nll, x, steps)
        row['eager_s'] = min(row['eager_before_s'], row['eager_after_s'])
        row['compile_speedup'] = row['eager_s'] / row['compiled_s']
        rows.append(row)
        print(f"{name}, batch {batch}: step eager {row['eager_s'] * 1e3:.1f} ms, compiled {row['compiled_s'] * 1e3:.1f} ms "
              f"({row['compile_speedup']:.2f}× faster; compile {row['compile_s']:.0f} s)", flush=True)
    return rows


def _run_facts(args, steps) -> dict:
    "When, where and how a run was measured, recorded with its rows"
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    return {'date': time.strftime('%Y-%m-%d'), 'commit': commit, 'device': 'cpu', 'machine': platform.machine(),
            'threads': args.threads, 'torch': torch.__version__, 'backend': args.backend, 'steps': steps}


def table(res) -> str:
    "The README's table: step times eager and compiled, as ratios to the plain MLP's eager step, at each batch size"
    lines = [f"| training step, MLP {'-'.join(map(str, res['widths']))} ({res['threads']} thread{'s' if res['threads'] > 1 else ''}, torch.compile backend {res['backend']}) "
             "| batch | eager ÷ plain eager | compiled ÷ plain eager | compiled ÷ plain compiled | compile speed-up | compile time |",
             '|---|---|---|---|---|---|---|']
    for r in res['rows']:
        lines.append(f"| flowified (blocked Householder factors) | {r['batch']} | {r['flowified_eager_s'] / r['plain_eager_s']:.1f}× "
                     f"| {r['flowified_compiled_s'] / r['plain_eager_s']:.1f}× | {r['flowified_compiled_s'] / r['plain_compiled_s']:.1f}× "
                     f"| {r['flowified_eager_s'] / r['flowified_compiled_s']:.2f}× | {r['flowified_compile_s']:.0f} s |")
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batches', default='128,1024')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--backend', default='inductor', help="torch.compile backend ('inductor' needs a C++ compiler on CPU)")
    ap.add_argument('--quick', action='store_true', help='fewer steps')
    ap.add_argument('--out', default=None, help='default bench/results/compile_cost.json (with --model: compile_cost_<model>.json)')
    ap.add_argument('--model', default=None, help='a registry model (MNIST shape) to time eager and compiled instead of the MLPs')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 4 if args.quick else 12
    if args.model:
        res = {**_run_facts(args, steps), 'rows': registry_model_rows(args.model, list(map(int, args.batches.split(','))), args.backend, steps)}
        if not args.quick:
            out = Path(args.out or f'bench/results/compile_cost_{args.model}.json')
            out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=1) + '\n')
            print(f"wrote {out}")
        return res
    explanation = torch._dynamo.explain(flowified())(torch.rand(8, WIDTHS[0]))
    breaks = explanation.graph_break_count
    print(f"torch._dynamo.explain: {explanation.graph_count} graph(s), {breaks} graph break(s)", flush=True)
    for reason in explanation.break_reasons[:5]: print('  break:', str(reason.reason).splitlines()[0][:160])
    rows = []
    for batch in map(int, args.batches.split(',')):
        torch.manual_seed(0); x = torch.rand(batch, WIDTHS[0])
        row = {'batch': batch}
        for kind, build, loss_fn in (('plain', plain_mlp, squared), ('flowified', flowified, nll)):
            torch._dynamo.reset()
            row[f'{kind}_eager_s'] = median_step(build(), loss_fn, x, steps)
            compiled = torch.compile(build(), backend=args.backend)
            row[f'{kind}_compile_s'] = timed_first_call(compiled, loss_fn, x)
            row[f'{kind}_compiled_s'] = median_step(compiled, loss_fn, x, steps)
        row['flowified_over_plain_eager'] = row['flowified_eager_s'] / row['plain_eager_s']
        row['flowified_compiled_over_plain_eager'] = row['flowified_compiled_s'] / row['plain_eager_s']
        row['compile_speedup_flowified'] = row['flowified_eager_s'] / row['flowified_compiled_s']
        rows.append(row)
        print(f"batch {batch:5d}: flowified step eager {row['flowified_eager_s'] * 1e3:7.1f} ms, compiled {row['flowified_compiled_s'] * 1e3:7.1f} ms "
              f"({row['compile_speedup_flowified']:.2f}× faster; compile {row['flowified_compile_s']:.0f} s); "
              f"÷ plain eager: {row['flowified_over_plain_eager']:.1f}× eager, {row['flowified_compiled_over_plain_eager']:.1f}× compiled", flush=True)
    res = {**_run_facts(args, steps), 'widths': WIDTHS, 'graphs': explanation.graph_count, 'graph_breaks': breaks, 'rows': rows}
    if not args.quick:
        out = Path(args.out or 'bench/results/compile_cost.json')
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + '\n')
        out.with_name('compile_cost_TABLE.md').write_text(table(res) + '\n')
        print(f"wrote {out} and compile_cost_TABLE.md")
    print(table(res))
    return res


if __name__ == '__main__': main()
