"""flownb's benchmarks in one command: likelihood at a fixed CPU budget against zuko and nflows baselines, the price of
flowification, the cost of the orthogonal factors as d grows, sampling throughput and training-step memory.

    python bench/run.py --quick          # digits only, short budgets: under 5 minutes on 2 CPU cores
    python bench/run.py                  # + MNIST (../shared/data/mnist or --mnist-dir), longer budgets
    python bench/run.py --device cuda    # on a GPU: absolute times are then meaningful (name the device)
    python bench/run.py --models flowify-mlp,flowify-conv2   # re-measure these rows only, in the existing results
    python bench/run.py --quick --time-budget 30        # another CPU-second budget per model
    python bench/run.py --quick --max-steps 1000        # the same number of optimizer steps for every model instead

The budget is what every model gets, named as `flownb train` names its budgets: `--time-budget SECONDS` (CPU seconds of
this process; the default, 15 quick, 60 on the digits and 180 on MNIST in the full run) or `--max-steps N` (optimizer
steps, for a comparison that does not depend on the machine's speed). There are no epoch counts: a benchmark compares
models at an equal budget, never at an equal number of passes over data of different sizes.

With `--models`, only the likelihood rows of the named models are trained and evaluated again (same budgets, data and
rules); they replace those rows in the existing `run.json`, the other rows and the cost measurements stay, and the
table says which rows were re-measured at which commit.

The peers are optional: `pip install zuko nflows` (a missing one is skipped with a message).

Fairness rules, the same for every model:
- one thread (`torch.set_num_threads(1)`) and a budget in *CPU seconds of this process* (`time.process_time`), so other
  jobs on a shared machine slow every model's clock the same way instead of stealing one model's budget (on a GPU the
  budget is wall-clock seconds);
- the same data, batch size (128), optimizer (AdamW, lr 1e-3, weight decay 1e-5, constant), gradient clipping (10),
  seed, and the same uniform dequantization and logit front for every model (the peers' flows model the logit-space
  data; their log-density gets the front's exact log-determinant), so every number is the same kind of bound;
- the peers are matched to the parameter count of flownb's `flowify-mlp` on the same data, and zuko once more
  (`zuko-realnvp-large`) to that of flownb's own `realnvp`, so each flownb model has a baseline of comparable size;
- evaluation (full test split) is outside the budget.

Writes `bench/results/*.json`, plots, and `bench/results/TABLE.md` (the README's tables). Nothing here asserts a time.
"""
import argparse, copy, importlib.util, json, math, platform, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import flownb.models as M
from flownb.core import Compose
from flownb.data import load_data
from flownb.dequantization import UniformDequantization
from flownb.bijections import Logit
from flownb.flowify_linear import FlowLinear
from flownb.train import evaluate

OUT = Path('bench/results')
FLOWNB_MODELS = ['flowify-mlp', 'flowify-conv2', 'flowify-conv1', 'funnel', 'maxpool', 'realnvp']
PEERS = ['zuko-realnvp', 'nflows-realnvp', 'zuko-realnvp-large']


# ---------------------------------------------------------------- peers, behind the same dequantization front
class PeerFlow(nn.Module):
    "A peer library's flow on flattened logit-space data, with flownb's dequantization + logit front in front of it"
    def __init__(self, library: str, shape, bins: int, hidden: int):
        super().__init__()
        self.front, self.shape, self.library = Compose([UniformDequantization(bins, shape), Logit(0.05)]), tuple(shape), library
        d = math.prod(shape)
        if library == 'zuko':
            import zuko
            self.flow = zuko.flows.RealNVP(d, transforms=4, hidden_features=(hidden, hidden))
        else:
            from nflows.flows.realnvp import SimpleRealNVP
            self.flow = SimpleRealNVP(d, hidden, num_layers=4, num_blocks_per_layer=2)
        self.exact = False   # dequantized: a bound, like every model here

    def _log_prob_latent(self, y):
        return self.flow().log_prob(y) if self.library == 'zuko' else self.flow.log_prob(y)

    def log_prob(self, x, k=None, k_chunk=None):
        y, ldj = self.front(x)
        return self._log_prob_latent(y.flatten(1)) + ldj

    def forward(self, x): return self.log_prob(x)

    @torch.no_grad()
    def sample(self, n):
        y = self.flow().sample((n,)) if self.library == 'zuko' else self.flow.sample(n)
        return self.front.inverse(y.reshape(n, *self.shape))


def peer_hidden(library, shape, bins, target):
    "The hidden width whose parameter count is closest to `target`"
    widths = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    return min(widths, key=lambda h: abs(M.num_parameters(PeerFlow(library, shape, bins, h)) - target))


def build(name, data, target_params):
    if name in PEERS:
        library = name.split('-')[0]
        if name.endswith('-large'): target_params = M.num_parameters(M.create_model('realnvp', data.shape, data.bins))
        return PeerFlow(library, data.shape, data.bins, peer_hidden(library, data.shape, data.bins, target_params))
    return M.create_model(name, data.shape, data.bins)


# ---------------------------------------------------------------- measurement helpers
def clock(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


@contextmanager
def saved_bytes():
    "Bytes of tensors autograd saves for backward inside the block: a training step's activation memory (CPU)"
    total = [0]
    def pack(t):
        total[0] += t.numel() * t.element_size(); return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): yield total


def step_memory_mb(model, x, device):
    "Peak memory of one training step in MiB: torch.cuda's peak on a GPU; parameters + Adam state + saved activations on CPU"
    model.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize(device); torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        (-model.log_prob(x).mean()).backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        model.zero_grad(set_to_none=True)
        return peak / 2**20
    with saved_bytes() as saved:
        loss = -model.log_prob(x).mean()
    loss.backward(); model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return (saved[0] + 4 * params) / 2**20    # weights, gradients, two Adam moments


@torch.no_grad()
def samples_per_second(model, device, n=500, repeats=3):
    model.eval(); best = float('inf')
    torch.manual_seed(0)
    for _ in range(repeats):
        t0 = clock(device); model.sample(n); best = min(best, clock(device) - t0)
    model.train()
    return n / best


def train_for(model, data, budget_s, device, batch_size=128, seed=0, max_steps=None):
    "Train for `budget_s` seconds of this process's CPU time (wall-clock on GPU), or `max_steps` steps if given; returns steps and seconds used"
    torch.manual_seed(seed)
    init = data.train[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:batch_size]].to(device)
    with torch.no_grad(): model.log_prob(init)   # data-dependent initialisation (ActNorm); harmless for the peers
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    dims = data.dims
    steps, used, last = 0, 0.0, float('nan')
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.train), batch_size=batch_size, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(seed))
    model.train()
    done = lambda: steps >= max_steps if max_steps is not None else used >= budget_s
    while not done():
        for (x,) in loader:
            t0 = clock(device)
            loss = -model.log_prob(x.to(device)).mean() / (dims * math.log(2))
            opt.zero_grad(set_to_none=True); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0); opt.step()
            used += clock(device) - t0; steps += 1; last = loss.item()
            if not math.isfinite(last): raise RuntimeError(f"non-finite loss after {steps} steps")
            if done(): break
    return steps, used, last


def likelihood(data, budget_s, device, eval_k, models, max_steps=None):
    torch.manual_seed(0)
    target = M.num_parameters(M.create_model('flowify-mlp', data.shape, data.bins))
    rows = []
    for name in models:
        if name.startswith('flowify-conv') or name == 'maxpool':
            if len(data.shape) != 3: continue
        if name in PEERS and importlib.util.find_spec(name.split('-')[0]) is None:
            print(f"  {name:15s} skipped: {name.split('-')[0]} is not installed (pip install zuko nflows)", flush=True)
            continue
        torch.manual_seed(0)
        model = build(name, data, target).to(device)
        steps, used, train_bpd = train_for(model, data, budget_s, device, max_steps=max_steps)
        model.eval()
        torch.manual_seed(1)
        test = evaluate(model, data.test, device=device)
        row = {'model': name, 'parameters': M.num_parameters(model),
               'latent': math.prod(M.latent_shape(model)) if name not in PEERS else data.dims,
               'steps': steps, 'budget_s': round(used, 1), 'steps_per_s': steps / used, 'train_bpd_last': train_bpd,
               'test_bpd': test['bits_per_dim'], 'kind': test['kind'] + ' (dequantization)',
               'continuous_part_exact': M.continuous_part_exact(model) if name not in PEERS else True}
        if eval_k and not row['continuous_part_exact']:
            torch.manual_seed(2)
            row[f'test_bpd_iw{eval_k}'] = evaluate(model, data.test, k=eval_k, device=device)['bits_per_dim']
        row['samples_per_s'] = samples_per_second(model, device)
        row['step_memory_mb'] = step_memory_mb(model, data.train[:128].to(device), device)
        rows.append(row)
        print(f"  {name:15s} {row['parameters']:>9,} params  latent {row['latent']:>4}  {steps:>6} steps "
              f"({row['steps_per_s']:6.1f}/s)  test {row['test_bpd']:.3f} bits/dim"
              + (f" (IW-{eval_k} {row[f'test_bpd_iw{eval_k}']:.3f})" if f'test_bpd_iw{eval_k}' in row else '')
              + f"  {row['samples_per_s']:8.0f} samples/s  step memory {row['step_memory_mb']:6.1f} MiB", flush=True)
    return {'data': data.name, 'data_note': data.note, 'train_size': len(data.train), 'test_size': len(data.test),
            'budget_s_per_model': None if max_steps is not None else budget_s, 'max_steps_per_model': max_steps,
            'peer_target_parameters': target, 'rows': rows}


# ---------------------------------------------------------------- the price of flowification
def _plain_module(name, shape, bins):
    "The plain `nn.Sequential` a registered flowified model was built from (captured while the model is built)"
    captured = {}
    original = M._flowified
    def spy(shape_, bins_, module, latent, hidden, *rest):
        captured['module'] = copy.deepcopy(module)
        return original(shape_, bins_, module, latent, hidden, *rest)
    M._flowified = spy
    try: flow = M.create_model(name, shape, bins)
    finally: M._flowified = original
    return captured['module'], flow


def median_step(model, loss_fn, x, repeats):
    "Median time of a training step: CPU time of this (one-thread) process on CPU, so other jobs do not distort it"
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 2):
        t0 = clock(x.device)
        loss = loss_fn(model, x); opt.zero_grad(); loss.backward(); opt.step()
        if i >= 2: times.append(clock(x.device) - t0)
    return sorted(times)[len(times) // 2]


def flowify_price(device, repeats):
    rows = []
    x = torch.randint(0, 256, (128, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float().to(device)
    for name in ['flowify-mlp', 'flowify-conv1', 'flowify-conv2']:
        torch.manual_seed(0)
        plain, flow = _plain_module(name, (1, 28, 28), 256)
        plain, flow = plain.to(device), flow.to(device)
        with torch.no_grad(): flow.log_prob(x)   # ActNorm init
        t_plain = median_step(plain, lambda m, x: m(x / 255).square().mean(), x, repeats)
        t_flow = median_step(flow, lambda m, x: -m.log_prob(x).mean(), x, repeats)
        rows.append({'model': name, 'plain_step_s': t_plain, 'flowified_step_s': t_flow, 'ratio': t_flow / t_plain})
        print(f"  {name:22s} flowified step / plain step = {t_flow / t_plain:6.1f}x", flush=True)
    return {'batch': 128, 'shape': [1, 28, 28], 'rows': rows}


def orthogonal_cost(device, dims, repeats):
    "FlowLinear(d, d) forward + backward (its orthogonal factors included) against nn.Linear(d, d), batch 128"
    rows = []
    for d in dims:
        x = torch.randn(128, d, device=device)
        plain = nn.Linear(d, d).to(device)
        fl = FlowLinear(d, d).to(device)
        def fwd_bwd(m, fn, reps):
            times = []
            for i in range(reps + 2):
                t0 = clock(x.device); fn(m).backward()
                if i >= 2: times.append(clock(x.device) - t0)
                m.zero_grad(set_to_none=True)
            return sorted(times)[len(times) // 2]
        t_plain = fwd_bwd(plain, lambda m: m(x).square().mean(), repeats)
        t_flow = fwd_bwd(fl, lambda m: _flowlinear_loss(m, x), repeats)
        rows.append({'d': d, 'plain_s': t_plain, 'flowlinear_s': t_flow, 'ratio': t_flow / t_plain})
        print(f"  d={d:5d}  FlowLinear fwd+bwd / nn.Linear = {t_flow / t_plain:7.1f}x", flush=True)
    return {'batch': 128, 'rows': rows}


def _flowlinear_loss(m, x):
    z, ldj = m(x)
    return z.square().mean() - ldj.mean()


def plot(results, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = results['orthogonal_cost']['rows']
    axes[0].loglog([r['d'] for r in rows], [r['ratio'] for r in rows], 'o-', label='FlowLinear(d, d) ÷ nn.Linear(d, d)')
    axes[0].axhline(2, color='gray', ls='--', lw=0.8, label='2×')
    axes[0].set_xlabel('d'); axes[0].set_ylabel('forward+backward time ratio'); axes[0].legend(fontsize=8)
    axes[0].set_title('cost of the orthogonal factors (batch 128)', fontsize=9)
    for key, marker in (('likelihood_digits', 'o'), ('likelihood_mnist', 's')):
        if key not in results: continue
        for r in results[key]['rows']:
            axes[1].scatter(r['steps_per_s'], r['test_bpd'], marker=marker, color='C3' if r['model'] in PEERS else 'C0')
            axes[1].annotate(f"{r['model']} ({key.split('_')[1]})", (r['steps_per_s'], r['test_bpd']), fontsize=6)
    axes[1].set_xscale('log'); axes[1].set_xlabel('training steps per CPU second'); axes[1].set_ylabel('test bits/dim')
    axes[1].set_title('fixed budget: flownb (blue) vs peers (red)', fontsize=9)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def _budget(res, unit):
    "The budget every model of a likelihood table got, in words"
    steps = res.get('max_steps_per_model')
    return f"{steps:,} steps" if steps is not None else f"{res['budget_s_per_model']} {unit}"


def table(results):
    meta = results['meta']
    lines = [f"Measured {meta['date']} at commit `{meta['commit']}` on {meta['machine']} ({meta['device']}, "
             f"{meta['threads']} thread, torch {meta['torch']}) with `python bench/run.py{' --quick' if meta['quick'] else ''}"
             + (f" --time-budget {meta['time_budget']:g}" if meta.get('time_budget') else '') + (f" --max-steps {meta['max_steps']}" if meta.get('max_steps') else '') + "`."
             + ''.join(f" Rows of {', '.join(r['models'])} re-measured {r['date']} at commit `{r['commit']}` "
                       f"(`--models`, same budgets and rules)." for r in meta.get('reruns', [])), '']
    for key in ('likelihood_digits', 'likelihood_mnist'):
        if key not in results: continue
        res = results[key]
        unit = 'CPU seconds' if meta['device'] == 'cpu' else 'seconds'
        note = res['data_note'] or f"{res['train_size']:,} train / {res['test_size']:,} test"
        lines += [f"**{res['data']}** ({note}; "
                  f"full {res['test_size']:,}-image test split), {_budget(res, unit)} of training per model, batch 128:", '',
                  '| model | parameters | latent | steps | steps/s | test bits/dim | samples/s | step memory (MiB) |', '|---|---|---|---|---|---|---|---|']
        for r in res['rows']:
            iw = [k for k in r if k.startswith('test_bpd_iw')]
            bpd = f"{r['test_bpd']:.3f}" + (f" (IW-{iw[0][11:]}: {r[iw[0]]:.3f})" if iw else '')
            name = r['model'] if r['model'] not in PEERS else f"{r['model'].split('-')[0]} RealNVP{' large' if r['model'].endswith('large') else ''} (baseline)"
            lines.append(f"| {name} | {r['parameters']:,} | {r['latent']} | {r['steps']} | {r['steps_per_s']:.1f} | {bpd} | "
                         f"{r['samples_per_s']:,.0f} | {r['step_memory_mb']:.1f} |")
        lines += ['', 'Each flownb model against the zuko baseline closest to it in parameter count (bits/dim ratio; below 1 is better):']
        zukos = [r for r in res['rows'] if r['model'].startswith('zuko')]
        for r in res['rows']:
            if r['model'] in PEERS or not zukos: continue
            z = min(zukos, key=lambda q: abs(math.log(q['parameters'] / r['parameters'])))
            lines.append(f"{r['model']} {r['test_bpd']:.3f} vs zuko {z['parameters']:,} params {z['test_bpd']:.3f}: "
                         f"{r['test_bpd'] / z['test_bpd']:.3f}" + ('' if abs(math.log(z['parameters'] / r['parameters'])) < math.log(2)
                                                                else ' (sizes differ by more than 2×)') + ';  ')
        lines.append('')
    if meta['device'] == 'cpu': lines += ['Step memory on CPU: activations autograd saves for backward, plus weights, gradients and two Adam moments.', '']
    lines += ['| training step, MNIST shape, batch 128 | flowified ÷ the plain network it came from |', '|---|---|']
    lines += [f"| {r['model']} | {r['ratio']:.1f}× |" for r in results['flowify_price']['rows']]
    lines += ['', '| d | FlowLinear(d, d) ÷ nn.Linear(d, d), forward + backward, batch 128 |', '|---|---|']
    lines += [f"| {r['d']} | {r['ratio']:.1f}× |" for r in results['orthogonal_cost']['rows']]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='digits only, short budgets (< 5 min on CPU)')
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument('--time-budget', '--budget', dest='budget', type=float,
                        help='CPU seconds of training per model (default: 15 quick; 60 digits and 180 MNIST in the full run)')
    budget.add_argument('--max-steps', type=int, help='optimizer steps per model instead of a time budget')
    ap.add_argument('--mnist-dir', default='../shared/data/mnist', help='folder with the MNIST IDX files (full run)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--out', default=str(OUT))
    ap.add_argument('--models', help='comma-separated: re-measure only these models\' likelihood rows in the existing results')
    args = ap.parse_args()
    if args.budget is not None and not args.budget > 0: ap.error(f"--time-budget must be positive, got {args.budget}")
    if args.max_steps is not None and args.max_steps < 1: ap.error(f"--max-steps must be a positive integer, got {args.max_steps}")
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): ap.error("--device cuda asked for, but CUDA is not available")
    torch.set_num_threads(1)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    machine = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or platform.machine())
    results = {'meta': {'date': time.strftime('%Y-%m-%d'), 'commit': commit, 'machine': machine, 'device': device.type,
                        'threads': torch.get_num_threads(), 'torch': torch.__version__, 'quick': args.quick,
                        'time_budget': args.budget, 'max_steps': args.max_steps,
                        'python': sys.version.split()[0]}}
    started = time.perf_counter()
    models = FLOWNB_MODELS + PEERS
    if args.models:
        if args.budget is not None or args.max_steps is not None:
            ap.error("--models re-measures rows at the budget the existing results state; drop --time-budget/--max-steps")
        chosen = args.models.split(',')
        unknown = [m for m in chosen if m not in models]
        if unknown: ap.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(models)}")
        previous = out / f"{'run_quick' if args.quick else 'run'}.json"
        if not previous.exists(): ap.error(f"--models re-measures rows of an existing {previous}; run the whole benchmark first")
        return rerun_rows(args, json.loads(previous.read_text()), chosen, results['meta'], device, out)
    print(f"== likelihood at a fixed budget: digits", flush=True)
    results['likelihood_digits'] = likelihood(load_data('digits'), args.budget or (15 if args.quick else 60), device,
                                              0 if args.quick else 16, models, args.max_steps)
    if not args.quick:
        print(f"== likelihood at a fixed budget: MNIST", flush=True)
        results['likelihood_mnist'] = likelihood(load_data('mnist', args.mnist_dir), args.budget or 180, device, 16, models, args.max_steps)
    print("== the price of flowification", flush=True)
    results['flowify_price'] = flowify_price(device, 3 if args.quick else 10)
    print("== orthogonal factors as d grows", flush=True)
    results['orthogonal_cost'] = orthogonal_cost(device, [64, 256, 784] if args.quick else [64, 128, 256, 512, 1024, 2048],
                                                 3 if args.quick else 7)
    results['meta']['total_s'] = time.perf_counter() - started
    name = write_outputs(results, out, args.quick)
    print(f"wrote {out / name}.json, .png, _TABLE.md in {results['meta']['total_s']:.0f} s")


def rerun_rows(args, results, chosen, meta, device, out):
    "Train and evaluate `chosen` again and put their rows in place of the old ones; everything else stays"
    data_keys = [('likelihood_digits', lambda: load_data('digits'), 0 if args.quick else 16)]
    if not args.quick: data_keys.append(('likelihood_mnist', lambda: load_data('mnist', args.mnist_dir), 16))
    for key, load, eval_k in data_keys:   # each model gets the budget the existing rows had (the table states it)
        if key not in results: continue
        print(f"== re-measuring {', '.join(chosen)}: {key}", flush=True)
        res = results[key]
        fresh = {r['model']: r for r in likelihood(load(), res['budget_s_per_model'], device, eval_k, chosen, res.get('max_steps_per_model'))['rows']}
        res['rows'] = [fresh.get(r['model'], r) for r in res['rows']]
    reruns = results['meta'].setdefault('reruns', [])
    reruns.append({'models': chosen, 'date': meta['date'], 'commit': meta['commit']})
    write_outputs(results, out, args.quick)


def write_outputs(results, out, quick):
    "Write `run[_quick].json`, its plot and its markdown table into `out`, print the table; returns the file stem"
    name = 'run_quick' if quick else 'run'
    (out / f'{name}.json').write_text(json.dumps(results, indent=1))
    plot(results, out / f'{name}.png')
    text = table(results)
    (out / f'{name}_TABLE.md').write_text(text)
    print('\n' + text)
    return name


if __name__ == '__main__':
    main()
