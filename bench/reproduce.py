"""Reproduce a paper's experiment by name: the models it compares, trained the same way through `flownb.train` (a
validation split selects the epoch kept, the test split is evaluated once, of the selected model), written as one
result table, one figure and one JSON file.

    python bench/reproduce.py --list
    python bench/reproduce.py funnels-mnist                       # --scale cpu: minutes on a 2-core CPU
    python bench/reproduce.py funnels-mnist --scale full --device cuda   # the paper's recipe, for a GPU
    python bench/reproduce.py all --data-dir ../shared/data/mnist

At `--scale cpu` every model of an experiment gets the same budget (`--time-budget` seconds of training, wall clock, by
default 300, one thread each) and the same recipe (the first model's registry recipe at a CPU batch size, or flownb's
defaults), so the comparison is the one the paper makes, at a budget far below the paper's; the numbers say which
way it goes at this budget, not what the paper's models reach. With `--jobs 2` (default) two models train at once,
one per core. At `--scale full` each model trains with its registry recipe (the paper's where the registry records
one), for a GPU.

MNIST is read from `--data-dir` (IDX files; ../shared/data/mnist when it is there); without it the MNIST experiments
say so and stop, and `--data digits` runs them on the bundled 8×8 digits instead.

Writes `bench/results/reproduce/<experiment>.{json,md,png}`; `--table` prints the README table of every result there.
"""
import argparse, json, multiprocessing, os, platform, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / 'bench' / 'results' / 'reproduce'
SHARED_MNIST = ROOT.parent / 'shared' / 'data' / 'mnist'

# name -> what the paper compares. 'thesis' is the paper's point as flownb reads its text (not a number from it), and
# 'claim' that thesis as a test of the numbers ('<=' with a slack: "does as well", within that many bits/dim; '<': beats);
# 'published' holds a number only where one was found in the paper for this exact setting (else the string 'not found').
EXPERIMENTS = {
    'funnels-mnist': {
        'paper': 'Funnels (Klein et al. 2021)', 'data': 'mnist',
        'models': ['funnels-conv', 'funnels-glow'],
        'question': "does the paper's convolutional funnel (latent 64) match the same Glow network without funnels (latent 1024)?",
        'claim': ('funnels-conv', '<=', 'funnels-glow', 0.05), 'thesis': 'funnels reduce the latent without costing likelihood',
        'published': 'not found'},
    'survae-maxpool': {
        'paper': 'SurVAE Flows (Nielsen et al. 2020)', 'data': 'mnist',
        'models': ['maxpool', 'slice'],
        'question': 'does max pooling do as well as slicing as the dimension-reducing step of the same image flow?',
        'claim': ('maxpool', '<=', 'slice', 0.05), 'thesis': 'max pooling can replace slicing in a multi-scale flow',
        'full': {'dequantization': 'flow'},   # the paper's image runs dequantize with a flow (survae_flows: --dequant flow)
        'published': 'not found'},
    'drf-lcma': {
        'paper': 'Dimensionality Reduction Flows (Das, Abbeel, Spanos 2019)', 'data': 'mnist',
        'models': ['lcma', 'multiscale', 'lcma-train'],
        # an arm that is not a registry name: its model and the TrainConfig fields it sets beyond the shared settings
        'arms': {'lcma-train': {'model': 'lcma', 'lcma': 'train'}},   # the scores accumulated over the first 100 steps, then frozen
        'question': 'does a factor-out chosen by likelihood contribution beat the static half of the same multi-scale flow?',
        'claim': ('lcma', '<', 'multiscale', 0.0), 'thesis': 'a factor-out chosen by likelihood contribution beats the static one',
        'published': 'not found'},
}
CPU_BATCH = 128


def commit() -> str:
    "The commit the code came from, `+dirty` when flownb/ or bench/ had uncommitted changes"
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip() or 'unknown'
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'flownb', 'bench'], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return head + ('+dirty' if dirty else '')
    except OSError: return 'unknown'


def settings(experiment: dict, scale: str, time_budget: float, epochs: int) -> dict:
    "The training settings every model of the experiment shares at this scale (None: each model's own recipe)"
    from flownb.models import MODELS
    if scale == 'full': return dict(experiment.get('full', {}))   # each model's recipe, plus what the paper's runs set
    recipe = MODELS[experiment['models'][0]].recipe or {}
    return {'optimizer': recipe.get('optimizer', 'adam'), 'lr': recipe.get('lr', 5e-4), 'weight_decay': recipe.get('weight_decay', 0.0),
            'grad_clip': recipe.get('grad_clip', 0.0), 'batch_size': CPU_BATCH, 'epochs': epochs, 'time_budget': time_budget}


def train_one(model: str, data: str, data_dir: str | None, shared: dict, device: str, seed: int, out: str, threads: int,
              arm: dict | None = None) -> dict:
    "Train one arm: `model` is its row's name; `arm` (if given) its registry model and extra TrainConfig fields"
    import torch
    torch.set_num_threads(threads)
    from flownb.train import TrainConfig, train
    extra = dict(arm or {}); registry_model = extra.pop('model', model)
    config = TrainConfig(model=registry_model, data=data, data_dir=data_dir, device=device, seed=seed, **shared, **extra)
    started = time.perf_counter()
    result = train(config, out=Path(out) / model, progress=False)
    return {'model': model, **({'registry_model': registry_model, 'extra': extra} if arm else {}), 'test_bpd': result['test']['bits_per_dim'], 'kind': result['test']['kind'],
            'continuous_part_exact': result['continuous_part_exact'], 'valid_bpd': result['selected']['valid_bits_per_dim'],
            'selected_epoch': result['selected']['epoch'], 'epochs_done': result['epochs_done'], 'steps': result['steps'],
            'stopped': result['stopped_because'], 'parameters': result['parameters'], 'latent': result['latent'],
            'seconds': round(time.perf_counter() - started, 1), 'run': str(Path(out) / model)}


def verdict(rows: dict, experiment: dict) -> str:
    "Whether the paper's thesis shows in these numbers, said in both directions"
    a, op, b, slack = experiment['claim']
    if a not in rows or b not in rows: return 'not run'
    x, y = rows[a]['test_bpd'], rows[b]['test_bpd']
    holds = x <= y + slack if op == '<=' else x < y - slack
    test = f"{a} within {slack:g} bits/dim of {b} or better" if op == '<=' else f"{a} lower than {b}"
    sa, sb = rows[a].get('steps'), rows[b].get('steps')
    steps = (f"; equal time, not equal steps: {a} {sa}, {b} {sb} steps, so the slower model per step is handicapped"
             if sa and sb and abs(sa - sb) > 0.1 * max(sa, sb) else '')
    return (f"{'holds' if holds else 'does not show'} at this budget: {a} {x:.3f} vs {b} {y:.3f} bits/dim "
            f"(the paper's thesis, as flownb reads it: {experiment['thesis']}; tested as {test}{steps})")


def figure(name: str, rows: dict, path: Path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.9))
    for ax, (model, row) in zip(axs if len(rows) > 1 else [axs], rows.items()):
        samples = Path(row['run']) / 'samples.png'
        if samples.exists(): ax.imshow(plt.imread(samples))
        else: ax.text(0.5, 0.5, 'samples of this earlier run\nare not on this machine', ha='center', va='center', fontsize=8)
        ax.axis('off')
        ax.set_title(f"{model}: {row['test_bpd']:.3f} bits/dim\n({row['kind']}, latent {row['latent']})", fontsize=8)
    fig.suptitle(f'{name}: samples of the selected models', fontsize=9)
    plt.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def run(name: str, args) -> dict:
    experiment = EXPERIMENTS[name]
    data = args.data or experiment['data']
    data_dir = args.data_dir
    if data == 'mnist' and data_dir is None:
        if SHARED_MNIST.exists(): data_dir = str(SHARED_MNIST)
        else: raise SystemExit(f"{name}: MNIST needs --data-dir (IDX files); or run it on the bundled digits with --data digits")
    shared = settings(experiment, args.scale, args.time_budget, args.epochs)
    runs = Path(args.runs) / name
    print(f"{name}: {', '.join(experiment['models'])} on {data} at scale {args.scale} ({shared or 'each model its recipe'})", flush=True)
    arms = experiment.get('arms', {})
    chosen = experiment['models'] if not args.only else [m for m in experiment['models'] if m in args.only.split(',')]
    if args.only and len(chosen) != len(args.only.split(',')):
        raise SystemExit(f"{name}: --only {args.only}: its arms are {', '.join(experiment['models'])}")
    jobs = [(m, data, data_dir, shared, args.device, args.seed, str(runs), 1 if args.scale == 'cpu' else args.threads, arms.get(m)) for m in chosen]
    if args.jobs > 1 and args.device == 'cpu':
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context('spawn')) as pool: results = list(pool.map(train_one, *zip(*jobs)))
    else: results = [train_one(*j) for j in jobs]
    rows = {r['model']: r for r in results}
    import torch
    out = Path(args.out)
    if args.only and (out / f'{name}.json').exists():   # keep the arms recorded before; say which run each row came from
        before = json.loads((out / f'{name}.json').read_text())
        if before['settings'] != shared: raise SystemExit(f"{name}: --only needs the settings of the recorded run ({before['settings']}), got {shared}")
        for r in rows.values(): r['run_note'] = (f"trained alone on {time.strftime('%Y-%m-%d')}, commit {commit()}, {args.jobs if len(rows) > 1 else 1} "
                                                 f"at a time; the other rows are from {before['date']}, commit {before['flownb_commit']}")
        rows = {**before['rows'], **rows}
        rows = {m: rows[m] for m in experiment['models'] if m in rows}
    record = {'experiment': name, 'paper': experiment['paper'], 'question': experiment['question'], 'data': data,
              'scale': args.scale, 'settings': shared, 'rows': rows, 'verdict': verdict(rows, experiment),
              'published': experiment['published'], 'device': args.device if args.device == 'cpu' else torch.cuda.get_device_name(),
              'threads_per_model': 1 if args.scale == 'cpu' else args.threads, 'parallel_jobs': args.jobs,
              'machine': f"{platform.machine()}, {os.cpu_count()} cores", 'torch': torch.__version__, 'flownb_commit': commit(),
              'date': time.strftime('%Y-%m-%d')}
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{name}.json').write_text(json.dumps(record, indent=1))
    (out / f'{name}.md').write_text(markdown(record))
    figure(name, rows, out / f'{name}.png')
    print(markdown(record), flush=True)
    return record


def budget_text(r: dict) -> str:
    s = r['settings']
    if not s or 'time_budget' not in s:
        return "each model's recipe" + ''.join(f", {k} {v}" for k, v in (s or {}).items())
    return f"{s['time_budget']:g} s or {s['epochs']} epochs, batch {s['batch_size']}, {s['optimizer']} {s['lr']:g}, {r['device']}, 1 thread"


def markdown(r: dict) -> str:
    lines = [f"### {r['experiment']} ({r['paper']})", '', r['question'], '',
             '| model | test bits/dim | kind | latent | parameters | steps | selected epoch (validation) | stopped |', '|---|---|---|---|---|---|---|---|']
    for m, row in r['rows'].items():
        kind = row['kind'] + ('' if row['continuous_part_exact'] else ', continuous part a bound')
        lines.append(f"| {m} | {row['test_bpd']:.3f} | {kind} | {row['latent']} | {row['parameters']:,} | {row['steps']} | "
                     f"{row['selected_epoch']} ({row['valid_bpd']:.3f}) | {row['stopped']} |")
    lines += [f"\n{m}: {row['run_note']}." for m, row in r['rows'].items() if row.get('run_note')]
    lines += [f"\n{m}: {row['registry_model']} with {', '.join(f'{k}={v!r}' for k, v in row['extra'].items())}." for m, row in r['rows'].items() if row.get('extra')]
    lines += ['', f"Budget: {budget_text(r)}; {r['data']}; {r['date']}, commit {r['flownb_commit']}, {r['machine']}. "
              f"Verdict: {r['verdict']}. Published number: {r['published']}.", '']
    return '\n'.join(lines)


def table(out: Path = OUT) -> str:
    "One row per experiment, from the results written so far (the README's table)"
    lines = ['| experiment | paper | data, budget | flownb (test bits/dim) | the comparison, at this budget | published |', '|---|---|---|---|---|---|']
    for path in sorted(Path(out).glob('*.json')):
        r = json.loads(path.read_text())
        numbers = ', '.join(f"{m} {row['test_bpd']:.3f}" for m, row in r['rows'].items())
        lines.append(f"| [{r['experiment']}](bench/results/reproduce/{r['experiment']}.md) | {r['paper']} | {r['data']}, {budget_text(r)} | "
                     f"{numbers} | {r['verdict']} | {r['published']} |")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('experiment', nargs='?', help=f"one of {', '.join(EXPERIMENTS)}, or 'all'")
    p.add_argument('--list', action='store_true', help='list the experiments and stop')
    p.add_argument('--table', action='store_true', help="print the README table of the results in bench/results/reproduce and stop")
    p.add_argument('--refresh', action='store_true', help="recompute the verdicts and rewrite the .md files from the .json results (after the claims' wording changed), and stop")
    p.add_argument('--scale', choices=['cpu', 'full'], default='cpu')
    p.add_argument('--data', default=None, help="override the experiment's dataset (e.g. digits, when MNIST is not at hand)")
    p.add_argument('--data-dir', default=None, help='MNIST IDX files (default: ../shared/data/mnist when present)')
    p.add_argument('--time-budget', type=float, default=300.0, help='seconds of training per model at --scale cpu')
    p.add_argument('--epochs', type=int, default=20, help='epochs of the cosine schedule at --scale cpu (the time budget usually ends it first)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1, help='torch threads per model at --scale full on the CPU')
    p.add_argument('--jobs', type=int, default=2, help='models trained at once on the CPU (one thread each)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--only', default=None, help="comma-separated arms of one experiment to train; the rows already recorded for its other arms are kept")
    p.add_argument('--runs', default='runs/reproduce', help='where the run folders (checkpoints, samples) go')
    p.add_argument('--out', default=str(OUT), help='where the results go (<experiment>.json, .md, .png)')
    args = p.parse_args(argv)
    if args.list:
        for name, e in EXPERIMENTS.items(): print(f"{name:16s} {e['paper']}: {', '.join(e['models'])} on {e['data']}. {e['question']}")
        return
    if args.table: print(table(args.out)); return
    if args.refresh:
        for path in sorted(Path(args.out).glob('*.json')):
            r = json.loads(path.read_text())
            if r['experiment'] not in EXPERIMENTS: continue
            r['verdict'] = verdict(r['rows'], EXPERIMENTS[r['experiment']])
            r['question'] = EXPERIMENTS[r['experiment']]['question']
            path.write_text(json.dumps(r, indent=1)); path.with_suffix('.md').write_text(markdown(r)); print(f"rewrote {path.with_suffix('.md')}")
        return
    if args.experiment is None: p.error('name an experiment (see --list), or all')
    if args.experiment != 'all' and args.experiment not in EXPERIMENTS:
        p.error(f"unknown experiment {args.experiment!r}; expected one of {', '.join(EXPERIMENTS)} or all")
    for name in (EXPERIMENTS if args.experiment == 'all' else [args.experiment]): run(name, args)


if __name__ == '__main__': main()
