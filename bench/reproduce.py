"""Reproduce a paper's experiment by name: the models it compares, trained the same way through `flownb.train` (a
validation split selects the epoch kept, the test split is evaluated once, of the selected model), written as one
result table, one figure and one JSON file.

    python bench/reproduce.py --list
    python bench/reproduce.py funnels-mnist                       # --scale cpu: minutes on a 2-core CPU
    python bench/reproduce.py funnels-mnist --scale full --device cuda   # the paper's recipe, for a GPU
    python bench/reproduce.py all --data-dir ../shared/data/mnist
    python bench/reproduce.py drf-realnvp --time-budget 600      # a longer budget than the default 300 s

At `--scale cpu` every model of an experiment gets the same budget (`--time-budget` seconds of training, wall clock, by
default 300, one thread each) and the same recipe (the first model's registry recipe at a CPU batch size, or flownb's
defaults), so the comparison is the one the paper makes, at a budget far below the paper's; the numbers say which
way it goes at this budget, not what the paper's models reach. With `--jobs 2` (default) two models train at once,
one per core. At `--scale full` each model trains with its registry recipe (the paper's where the registry records
one), for a GPU.

MNIST is read from `--data-dir` (IDX files; ../shared/data/mnist when it is there); without it the MNIST experiments
say so and stop, and `--data digits` runs them on the bundled 8×8 digits instead.

`funnels-tabular` is the Funnels paper's UCI comparison (NSF, F-NSF, F-MLP). The UCI files are not here, so at
`--scale cpu` it runs on scikit-learn's bundled breast-cancer data (30 features, 569 rows); `--data power --data-dir
DIR` (or gas, hepmass, miniboone, bsds300) reads MAF's files, `--data power --synthetic` writes and reads synthetic
files in their format (the pipeline end to end; the numbers say nothing about the real data), and `--scale full`
trains the paper's 40,000 steps.

`survae-spatial` is SurVAE's SpatialMNIST comparison, SortFlow vs PermuteFlow, on 50-point sets drawn from MNIST
(`--data spatial-digits` draws them from the bundled digits); at `--scale cpu` both models are shrunk to 4 steps of
width 32 (the paper's 16 of width 64 cost over 5 s a step on one thread), and PermuteFlow is tested by the
importance-weighted bound with 10 samples, as the paper's code does.

`survae-toy` is SurVAE's 2-D Abs experiment: its models are not registry models but small flows built below from
flownb layers and trained with a short loop of their own (the same rules: validation selects, test is evaluated once),
one model at a time; `--steps` and `--samples` set its budget (2,000 steps at `--scale cpu`, the paper's 10 epochs of
1,000 batches at `--scale full`).

Writes `bench/results/reproduce/<experiment>.{json,md,png}`; `--table` prints the README table of every result there.
"""
import argparse, copy, json, math, multiprocessing, os, platform, subprocess, sys, time
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
        'models': ['poolflow-max', 'poolflow-slice'],
        'question': "does max pooling do as well as slicing as the dimension-reducing step of the same image flow (SurVAE's PoolFlow, DenseNet couplings)?",
        'claim': ('poolflow-max', '<=', 'poolflow-slice', 0.05), 'thesis': 'max pooling can replace slicing in a multi-scale flow',
        # at --scale cpu the paper's 2 x 12 steps of depth-10 DenseNets (80 million parameters) are shrunk to 2 x 4 steps of depth 2, growth 16, width 32
        'cpu': {'model_options': {'steps': 4, 'depth': 2, 'growth': 16, 'mid_channels': 32}},
        # the paper's image runs dequantize with a flow (survae_flows: --dequant flow) and report an IW bound with 1,000 samples
        'full': {'dequantization': 'flow', 'eval_k': 1000},
        'published': 'not found'},
    'drf-lcma': {
        'paper': 'Dimensionality Reduction Flows (Das, Abbeel, Spanos 2019)', 'data': 'mnist',
        'models': ['lcma', 'multiscale', 'lcma-train'],
        # an arm that is not a registry name: its model and the TrainConfig fields it sets beyond the shared settings
        'arms': {'lcma-train': {'model': 'lcma', 'lcma': 'train'}},   # the scores accumulated over the first 100 steps, then frozen
        'question': 'does a factor-out chosen by likelihood contribution beat the static half of the same multi-scale flow?',
        'claim': ('lcma', '<', 'multiscale', 0.0), 'thesis': 'a factor-out chosen by likelihood contribution beats the static one',
        'published': 'not found'},
    'drf-realnvp': {
        'paper': 'Dimensionality Reduction Flows (Das, Abbeel, Spanos 2019)', 'data': 'mnist',
        'models': ['realnvp-lcma', 'realnvp-multiscale', 'realnvp-lcma-train', 'realnvp-lcma-highest'],
        'arms': {'realnvp-lcma-train': {'model': 'realnvp-lcma', 'lcma': 'train'},   # scores accumulated over the first 100 steps, then frozen
                 # the other reading of the paper's heuristic: the highest-scoring dimensions continue (10_drf)
                 'realnvp-lcma-highest': {'model': 'realnvp-lcma', 'model_options': {'propagate': 'highest'}}},
        'question': "on RealNVP's multi-scale architecture at its own depth (MNIST: 16 couplings, 2 factor-outs), does a factor-out chosen by likelihood contribution beat the static half?",
        'claim': ('realnvp-lcma', '<', 'realnvp-multiscale', 0.0), 'thesis': 'a factor-out chosen by likelihood contribution beats the static one',
        # at --scale cpu RealNVP's conditioners (11 million parameters on MNIST, 8.8 s a step on one thread) are narrowed to 8 base
        # features and one residual block: the same 16 couplings and 2 factor-outs, 0.2 million parameters, about 0.45 s a step
        'cpu': {'model_options': {'hidden': 8, 'res_blocks': 1}},
        'published': 'not found'},
    'survae-toy': {
        'paper': 'SurVAE Flows (Nielsen et al. 2020)', 'data': 'toys', 'toy': True,
        'datasets': ['checkerboard', 'corners', 'eight_gaussians', 'four_circles'],
        'models': ['abs-flow', 'baseline'],
        'question': 'does an absolute-value surjection at the data end (AbsFlow) give a higher test likelihood than the same coupling flow without it, on 2-D densities with sign symmetries?',
        'claim': ('abs-flow', '<', 'baseline', 0.0), 'thesis': 'an Abs surjection that builds a known symmetry in is a better inductive bias than a flow that must learn it',
        'published': 'not found'},
    'funnels-tabular': {
        'paper': 'Funnels (Klein et al. 2021)', 'data': 'breast-cancer', 'tabular': True,
        'models': ['funnels-nsf', 'nsf', 'funnels-mlp'],
        'question': "does NSF with a funnel that drops 4 coordinates (F-NSF) match the same NSF without it, on tabular data?",
        'claim': ('funnels-nsf', '<=', 'nsf', 0.05), 'thesis': 'funnels reduce the latent without costing likelihood',
        # at --scale cpu the data here is small (scikit-learn's 569 breast-cancer rows): more epochs, the time budget still ends them
        'cpu': {'epochs': 1000},
        'full_steps': 40_000,   # funnels_repo experiments/uci.py: 40,000 steps of batch 512; the epochs follow from the data's size
        'published': 'not found'},
    'survae-spatial': {
        'paper': 'SurVAE Flows (Nielsen et al. 2020)', 'data': 'spatial-mnist', 'points': True,
        'models': ['sortflow', 'permuteflow'],
        'question': "on SpatialMNIST (each digit a set of 50 points), does a flow made permutation-invariant by stochastic permutations (PermuteFlow, a bound) do as well as one that sorts the points (SortFlow, exact)?",
        'claim': ('permuteflow', '<=', 'sortflow', 0.05), 'thesis': 'a stochastic permutation layer makes a flow permutation-invariant as well as sorting does, though it only gives a bound',
        # at --scale cpu the paper's 16 steps of width 64 take over 5 s a step on one thread: 4 steps of width 32 train ~0.6 s a step
        # and 4 epochs of the cosine schedule (about 500 steps) end close to the 300 s budget
        'cpu': {'model_options': {'steps': 4, 'd_model': 32, 'heads': 4}, 'eval_k': 10, 'epochs': 4},
        'full': {'eval_k': 10},   # survae_flows evaluates PermuteFlow by an importance-weighted bound with 10 samples (--iwbo_k 10)
        'published': 'not found'},
}
CPU_BATCH = 128
SYNTHETIC_ROWS = 20_000   # --synthetic: rows of each generated tabular file
SHARED_DATA = {'mnist', 'spatial-mnist'}   # read from MNIST's IDX files


def commit() -> str:
    "The commit the code came from, `+dirty` when flownb/ or bench/ had uncommitted changes (results written by earlier runs are not code)"
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip() or 'unknown'
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'flownb', 'bench', ':!bench/results'], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return head + ('+dirty' if dirty else '')
    except OSError: return 'unknown'


def settings(experiment: dict, scale: str, time_budget: float, epochs: int | None) -> dict:
    "The training settings every model of the experiment shares at this scale (None: each model's own recipe)"
    from flownb.models import MODELS
    if scale == 'full': return dict(experiment.get('full', {}))   # each model's recipe, plus what the paper's runs set
    recipe = MODELS[experiment['models'][0]].recipe or {}
    cpu = dict(experiment.get('cpu', {}))
    epochs = epochs or cpu.pop('epochs', 20)
    cpu.pop('epochs', None)   # given on the command line: it wins over the experiment's
    return {'optimizer': recipe.get('optimizer', 'adam'), 'lr': recipe.get('lr', 5e-4), 'weight_decay': recipe.get('weight_decay', 0.0),
            'grad_clip': recipe.get('grad_clip', 0.0), 'batch_size': CPU_BATCH, 'epochs': epochs, 'time_budget': time_budget, **cpu}


def full_epochs(experiment: dict, data: str, data_dir: str | None) -> int:
    "A recipe in steps (funnels-tabular: 40,000): the epochs of the recipe's batch size that make them on this data"
    from flownb.data import load_data
    from flownb.models import MODELS
    batch = MODELS[experiment['models'][0]].recipe.get('batch_size', CPU_BATCH)
    per_epoch = max(1, len(load_data(data, data_dir).train) // batch)
    return math.ceil(experiment['full_steps'] / per_epoch)


def train_one(model: str, data: str, data_dir: str | None, shared: dict, device: str, seed: int, out: str, threads: int,
              arm: dict | None = None) -> dict:
    "Train one arm: `model` is its row's name; `arm` (if given) its registry model and extra TrainConfig fields"
    import torch
    torch.set_num_threads(threads)
    from flownb.train import TrainConfig, train
    extra = dict(arm or {}); registry_model = extra.pop('model', model)
    fields = {k: v for k, v in extra.items() if k != 'model_options'}   # an arm's model options join the shared ones
    shared = {**shared, 'model_options': {**shared.get('model_options', {}), **extra.get('model_options', {})}}
    config = TrainConfig(model=registry_model, data=data, data_dir=data_dir, device=device, seed=seed, **shared, **fields)
    started = time.perf_counter()
    result = train(config, out=Path(out) / model, progress=False)
    test = result['test'].get(f'iw_{config.eval_k}', result['test'])   # a bound's importance-weighted number where one was asked for
    tighter = {'test_elbo_bpd': result['test']['bits_per_dim']} if test is not result['test'] else {}
    return {'model': model, **({'registry_model': registry_model, 'extra': extra} if arm else {}), 'test_bpd': test['bits_per_dim'], 'test_log_likelihood': test.get('log_prob'), 'kind': test['kind'], **tighter,
            'continuous_part_exact': result['continuous_part_exact'], 'valid_bpd': result['selected']['valid_bits_per_dim'],
            'selected_epoch': result['selected']['epoch'], 'epochs_done': result['epochs_done'], 'steps': result['steps'],
            'stopped': result['stopped_because'], 'parameters': result['parameters'], 'latent': result['latent'],
            'seconds': round(time.perf_counter() - started, 1), 'run': str(Path(out) / model)}


def verdict(rows: dict, experiment: dict) -> str:
    "Whether the paper's thesis shows in these numbers, said in both directions"
    if experiment.get('toy'): return toy_verdict(rows, experiment)
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
    if EXPERIMENTS[name].get('tabular'): return curves_figure(name, rows, path)
    fig, axs = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.9))
    for ax, (model, row) in zip(axs if len(rows) > 1 else [axs], rows.items()):
        samples = Path(row['run']) / 'samples.png'
        if samples.exists(): ax.imshow(plt.imread(samples))
        else: ax.text(0.5, 0.5, 'samples of this earlier run\nare not on this machine', ha='center', va='center', fontsize=8)
        ax.axis('off')
        ax.set_title(f"{model}: {row['test_bpd']:.3f} bits/dim\n({row['kind']}, latent {row['latent']})", fontsize=8)
    fig.suptitle(f'{name}: samples of the selected models', fontsize=9)
    plt.tight_layout(rect=(0, 0, 1, 0.94)); fig.savefig(path, dpi=110); plt.close(fig)   # the suptitle above the panels' titles


def curves_figure(name: str, rows: dict, path: Path):
    "Tabular data has no sample grid to look at: each model's validation bits/dim by step, the selected epoch marked"
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for model, row in rows.items():
        metrics = Path(row['run']) / 'metrics.json'
        if not metrics.exists(): continue
        h = json.loads(metrics.read_text())['history']
        line, = ax.plot(h['epoch_step'], h['valid_bpd'], label=f"{model} (latent {row['latent']}): test {row['test_bpd']:.3f}", lw=1.2)
        best = row['selected_epoch'] - 1
        if 0 <= best < len(h['valid_bpd']): ax.plot(h['epoch_step'][best], h['valid_bpd'][best], 'o', color=line.get_color())
    ax.set_yscale('symlog', linthresh=1.0)   # small data overfits: late epochs can be 100 times worse than the selected one
    ax.set_xlabel('optimizer steps'); ax.set_ylabel('validation bits/dim (continuous; symlog)')
    ax.set_title(f'{name}: validation curves, the selected epoch marked', fontsize=9); ax.legend(fontsize=7)
    plt.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def run(name: str, args) -> dict:
    experiment = EXPERIMENTS[name]
    if experiment.get('toy'): return run_toy(name, args)
    data = args.data or experiment['data']
    data_dir = args.data_dir
    described = data
    if args.synthetic:   # MAF-format files of a random mixture: the tabular pipeline end to end, where the real files are not at hand
        from flownb.data import TABULAR, write_synthetic_tabular
        if data not in TABULAR: raise SystemExit(f"{name}: --synthetic writes MAF's tabular files; --data must be one of {', '.join(TABULAR)}, got {data}")
        data_dir = str(write_synthetic_tabular(Path(args.runs) / 'synthetic-maf', rows=SYNTHETIC_ROWS, seed=args.seed))
        described = f"{data} (synthetic: a random Gaussian mixture in MAF's file format, {SYNTHETIC_ROWS:,} rows)"
    if data in SHARED_DATA and data_dir is None:
        if SHARED_MNIST.exists(): data_dir = str(SHARED_MNIST)
        else: raise SystemExit(f"{name}: MNIST needs --data-dir (IDX files); or run it on the bundled digits with --data digits")
    shared = settings(experiment, args.scale, args.time_budget, args.epochs)
    if args.scale == 'full' and experiment.get('full_steps'): shared['epochs'] = full_epochs(experiment, data, data_dir)
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
    record = {'experiment': name, 'paper': experiment['paper'], 'question': experiment['question'], 'data': described,
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
    if r.get('unit') == 'nats':
        return (f"{s['steps']:,} steps per model, batch {s['batch_size']}, {s['optimizer']} {s['lr']:g}, {s['train_samples']:,} train / "
                f"{s['valid_samples']:,} validation / {s['test_samples']:,} test samples, {r['device']}, {r['threads_per_model']} thread(s)")
    if not s or 'time_budget' not in s:
        return "each model's recipe" + ''.join(f", {k} {v}" for k, v in (s or {}).items())
    shrunk = ''.join(f", {k} {v}" for k, v in s.get('model_options', {}).items())
    return (f"{s['time_budget']:g} s or {s['epochs']} epochs, batch {s['batch_size']}, {s['optimizer']} {s['lr']:g}, {r['device']}, 1 thread"
            + (f", models shrunk to{shrunk[1:]}" if shrunk else ''))


def markdown(r: dict) -> str:
    if r.get('unit') == 'nats': return toy_markdown(r)
    tabular = EXPERIMENTS.get(r['experiment'], {}).get('tabular')
    points = EXPERIMENTS.get(r['experiment'], {}).get('points')
    per = 'point' if points else 'sample'
    ll = f' test log-likelihood (nats/{per}) |' if tabular or points else ''
    lines = [f"### {r['experiment']} ({r['paper']})", '', r['question'], '',
             f'| model | test bits/dim |{ll} kind | latent | parameters | steps | selected epoch (validation) | stopped |', '|---|---|---|---|---|---|---|---|' + '---|' * bool(tabular or points)]
    for m, row in r['rows'].items():
        kind = row['kind'] + ('' if row['continuous_part_exact'] else ', continuous part a bound')
        kind += f" (ELBO {row['test_elbo_bpd']:.3f})" if 'test_elbo_bpd' in row else ''
        lls = f" {row['test_log_likelihood'] / _points(r):.3f} |" if points else f" {row['test_log_likelihood']:.2f} |" if tabular else ''
        lines.append(f"| {m} | {row['test_bpd']:.3f} |{lls} {kind} | {row['latent']} | {row['parameters']:,} | {row['steps']} | "
                     f"{row['selected_epoch']} ({'not validated' if row['valid_bpd'] is None else format(row['valid_bpd'], '.3f')}) | {row['stopped']} |")
    if tabular: lines += ['', "Bits/dim here are of a continuous density (a negative log-likelihood per coordinate, lower is better); "
                          "the log-likelihood per sample, in nats, is the papers' unit for tabular data (higher is better)."]
    if points: lines += ['', f"Bits/dim here are of a continuous density over the {_points(r)}×2 coordinates of a set (lower is better); "
                         "the log-likelihood per point, in nats, is SurVAE's unit for SpatialMNIST (higher is better). A bound is "
                         "selected on its ELBO and tested by the importance-weighted bound of the recipe."]
    lines += [f"\n{m}: {row['run_note']}." for m, row in r['rows'].items() if row.get('run_note')]
    lines += [f"\n{m}: {row['registry_model']} with {', '.join(f'{k}={v!r}' for k, v in row['extra'].items())}." for m, row in r['rows'].items() if row.get('extra')]
    lines += ['', f"Budget: {budget_text(r)}; {r['data']}; {r['date']}, commit {r['flownb_commit']}, {r['machine']}. "
              f"Verdict: {r['verdict']}. Published number: {r['published']}.", '']
    return '\n'.join(lines)


def _points(r: dict) -> int:
    "Points per set of a point-set experiment's data"
    from flownb.data import dataset_shape
    return dataset_shape(r['data'])[0][0]


def table(out: Path = OUT) -> str:
    "One row per experiment, from the results written so far (the README's table)"
    lines = ['| experiment | paper | data, budget | flownb (test bits/dim unless marked) | the comparison, at this budget | published |', '|---|---|---|---|---|---|']
    for path in sorted(Path(out).glob('*.json')):
        r = json.loads(path.read_text())
        if r.get('unit') == 'nats':
            numbers = '; '.join(f"{d}: " + ', '.join(f"{m} {row['test_nats']:.3f}" for m, row in models.items()) for d, models in r['rows'].items()) + ' (test nats/sample)'
        elif EXPERIMENTS.get(r['experiment'], {}).get('tabular'):
            numbers = ', '.join(f"{m} {row['test_bpd']:.3f} ({row['test_log_likelihood']:.2f} nats)" for m, row in r['rows'].items()) + ' (continuous bits/dim; test log-likelihood per sample)'
        elif EXPERIMENTS.get(r['experiment'], {}).get('points'):
            numbers = ', '.join(f"{m} {row['test_log_likelihood'] / _points(r):.3f} ({row['kind']})" for m, row in r['rows'].items()) + ' (test nats per point)'
        else: numbers = ', '.join(f"{m} {row['test_bpd']:.3f}" for m, row in r['rows'].items())
        lines.append(f"| [{r['experiment']}](bench/results/reproduce/{r['experiment']}.md) | {r['paper']} | {r['data']}, {budget_text(r)} | "
                     f"{numbers} | {r['verdict']} | {r['published']} |")
    return '\n'.join(lines)


# ---- survae-toy: SurVAE's 2-D Abs experiments, with flows built here from flownb layers ----------------------------
# What survae_flows' experiments/toy builds (train_flow.py, train_abs_flow.py, train_abs_unif.py and the commands in its
# README), carried over as facts: 4 affine couplings on 2-D data, each changing one coordinate given the other (they
# alternate), MLP conditioners of hidden sizes [200, 100]; Adam at 1e-3, batches of 128, 10 epochs of 1,000 batches
# (128,000 training samples), tested on 128,000 more. The baseline is those couplings on a standard normal. The AbsFlow
# puts an Abs first: on checkerboard, |x1| alone with a learned classifier of x1's sign given (|x1|, x2), then a uniform
# base on the half-board [0, 4] x [-4, 4] and no couplings at all; on the others, |x| in both coordinates with fixed
# fair-coin signs, then x/4 and a logit onto R^2, then the couplings on a standard normal.
TOY_MODELS = ('abs-flow', 'baseline')
TOY_HIDDEN, TOY_COUPLINGS, TOY_LR, TOY_SAMPLES, TOY_CPU_STEPS, TOY_FULL_STEPS, TOY_GRID = 200, 4, 1e-3, 128_000, 2000, 10 * 1000, 200
# After the fold, the half-line onto R: x/4 then a logit, as SurVAE's default; eight_gaussians' tails pass 4 (4 of 128,000
# samples do, where the logit is undefined), so it takes SurVAE's other choice, an inverse softplus
TOY_RANGE = {'corners': 'logit', 'four_circles': 'logit', 'eight_gaussians': 'softplus'}
TOY_CLIM = {'checkerboard': 0.05, 'corners': 0.1, 'eight_gaussians': 0.15, 'four_circles': 0.2}   # their figures' colour limits
TOY_NOTE = ("abs-flow: on checkerboard, flownb's Abs(1, hidden_features=200, context_features=1) on x1 with x2 as its context (the classifier "
            "q(sign | |x1|, x2)) and a uniform base on [0, 4] x [-4, 4], no couplings (SurVAE's train_abs_unif.py); on the others "
            "Abs(2, hidden_features=0) with its sign probabilities frozen at 1/2 (SurVAE's SimpleAbsSurjection), then x/4 and a logit "
            "(corners, four_circles) or an inverse softplus (eight_gaussians, whose tails pass 4), then the couplings on a standard normal. "
            "baseline: the couplings on a standard normal. Couplings: 4 flownb AffineCoupling(2, hidden_features=200, num_layers=2), "
            "alternating; SurVAE's conditioners are [200, 100] ReLU MLPs with an exp (checkerboard) or softplus (the others) scale, "
            "flownb's are 200-200 SiLU MLPs, zero-initialised, with the exp of a soft-clamped log-scale. Data: SurVAE's definitions "
            "(flownb.data.toy_data; checkerboard is flownb's scaled by 4/3, SurVAE's [-4, 4] board); train, validation and test drawn "
            "with seeds s, s+1, s+2. The validation split is scored 10 times in a run; the best of those models is tested once.")


def _toy_layers():
    "The three small layers SurVAE's toy models need that flownb does not export, built on flownb's contract"
    import torch, torch.nn.functional as F
    from flownb.core import Bijection, Surjection, sum_per_sample
    from flownb.surjections import Abs

    class FirstAbs(Surjection):
        """|x1| of `(batch, 2)` data, x2 unchanged; the inverse draws x1's sign from flownb's `Abs` classifier given (|x1|, x2)
        (SurVAE's ElementAbsSurjection). Data -> latent; exact: ldj = log q(sign of x1 | |x1|, x2)."""
        exact, stochastic = True, 'inverse'
        context_features = 0     # the inner Abs reads x2 as its context; the layer itself reads none
        def __init__(self, hidden_features: int):
            super().__init__(); self.abs = Abs(1, hidden_features=hidden_features, context_features=1)
        def forward(self, x, context=None):
            z1, ldj = self.abs(x[:, :1], x[:, 1:])
            return torch.cat([z1, x[:, 1:]], 1), ldj
        def inverse(self, z, context=None): return torch.cat([self.abs.inverse(z[:, :1], z[:, 1:]), z[:, 1:]], 1)

    class Scale(Bijection):
        "z = x * scale, a fixed elementwise scale; ldj = sum log|scale|"
        def __init__(self, scale):
            super().__init__(); self.register_buffer('scale', torch.as_tensor(scale, dtype=torch.float32))
        def forward(self, x, context=None): return x * self.scale, self.scale.abs().log().sum().expand(x.shape[0])
        def inverse(self, z, context=None): return z / self.scale

    class SoftplusInverse(Bijection):
        "z = log(exp(x) - 1), from x > 0 onto R; ldj = -sum log(1 - exp(-x))"
        domain = torch.distributions.constraints.positive   # maps Abs's half-line back onto R: Flow sees no gap
        def forward(self, x, context=None):
            log_gap = torch.log(-torch.expm1(-x))
            return x + log_gap, -sum_per_sample(log_gap)
        def inverse(self, z, context=None): return F.softplus(z)

    return FirstAbs, Scale, SoftplusInverse


def toy_flow(model: str, dataset: str, hidden: int = TOY_HIDDEN, device: str = 'cpu'):
    "One of SurVAE's toy models ('abs-flow' or 'baseline') for `dataset`, built from flownb layers"
    import torch, torch.distributions as D
    from flownb.bijections import AffineCoupling, Logit
    from flownb.core import Flow
    from flownb.distributions import StandardNormal
    from flownb.surjections import Abs
    if model not in TOY_MODELS: raise ValueError(f"toy_flow: unknown model {model!r}; expected one of {', '.join(TOY_MODELS)}")
    FirstAbs, Scale, SoftplusInverse = _toy_layers()
    couplings = [AffineCoupling(2, hidden_features=hidden, num_layers=2, swap=i % 2 == 1) for i in range(TOY_COUPLINGS)]
    if model == 'baseline': return Flow(StandardNormal(2), couplings).to(device)
    if dataset == 'checkerboard':
        low, high = torch.tensor([0., -4.], device=device), torch.tensor([4., 4.], device=device)
        half_board = D.Independent(D.Uniform(low, high, validate_args=False), 1, validate_args=False)
        return Flow(half_board, [FirstAbs(hidden)]).to(device)
    fold = Abs(2, hidden_features=0)
    fold.logits.requires_grad_(False)          # fair-coin signs, as SurVAE's SimpleAbsSurjection
    onto_r = [Scale([0.25, 0.25]), Logit(alpha=0.0)] if TOY_RANGE[dataset] == 'logit' else [SoftplusInverse()]
    return Flow(StandardNormal(2), [fold, *onto_r, *couplings]).to(device)


def toy_samples(dataset: str, n: int, seed: int):
    "`n` samples of SurVAE's version of `dataset`"
    from flownb.data import toy_data
    x = toy_data(dataset, n, seed)
    return x * (4 / 3) if dataset == 'checkerboard' else x   # SurVAE's board spans [-4, 4]^2, flownb's [-3, 3]^2


def toy_grid(n: int = TOY_GRID):
    "Cell centres of an n x n grid on (-4, 4)^2 (rows: x2), and the cell area"
    import torch
    h = 8 / n
    axis = torch.linspace(-4 + h / 2, 4 - h / 2, n)
    x2, x1 = torch.meshgrid(axis, axis, indexing='ij')
    return torch.stack([x1.reshape(-1), x2.reshape(-1)], 1), h * h


def train_toy(dataset: str, model: str, steps: int, samples: int, seed: int, device: str, eval_every: int) -> dict:
    "Train one toy model with Adam; keep the model with the best validation score of the 10 checked; test it once"
    import torch
    from flownb.train import evaluate
    torch.manual_seed(seed)
    n_valid = max(samples // 10, 1)
    train_x, valid_x, test_x = toy_samples(dataset, samples, seed), toy_samples(dataset, n_valid, seed + 1), toy_samples(dataset, samples, seed + 2)
    flow = toy_flow(model, dataset, device=device)
    trainable = [p for p in flow.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=TOY_LR)
    order = torch.Generator().manual_seed(seed)
    best, curve, step, stopped, batches = None, [], 0, f'{steps:,} steps done', iter(())
    started = time.perf_counter()
    while step < steps:
        batch = next(batches, None)
        if batch is None: batches = iter(torch.randperm(len(train_x), generator=order).split(CPU_BATCH)); continue
        loss = -flow.log_prob(train_x[batch].to(device)).mean()
        if not torch.isfinite(loss): stopped = f'non-finite loss at step {step + 1}'; break
        optimizer.zero_grad(); loss.backward(); optimizer.step(); step += 1
        if step % eval_every == 0 or step == steps:
            valid_nats = -evaluate(flow, valid_x, 4096, device=device)['log_prob']
            curve.append([step, round(valid_nats, 4)])
            if best is None or valid_nats < best[0]: best = (valid_nats, step, copy.deepcopy(flow.state_dict()))
    if best is not None: flow.load_state_dict(best[2])
    test = evaluate(flow, test_x, 4096, device=device)
    grid, area = toy_grid()
    with torch.no_grad(): density = torch.cat([flow.log_prob(g.to(device)).exp().cpu() for g in grid.split(8192)]).reshape(TOY_GRID, TOY_GRID)
    per_bit = 2 * math.log(2)   # evaluate's bits/dim of 2-D samples back to nats per sample
    return {'model': model, 'dataset': dataset, 'test_nats': -test['log_prob'], 'kind': test['kind'],
            'test_median_nats': test['median_bits_per_dim'] * per_bit, 'test_worst_nats': test['max_bits_per_dim'] * per_bit,
            'valid_nats': best[0] if best else float('nan'), 'selected_step': best[1] if best else 0, 'steps': step, 'stopped': stopped,
            'validation_curve': curve, 'parameters': sum(p.numel() for p in trainable),
            'grid_mass': float(density.sum() * area), 'seconds': round(time.perf_counter() - started, 1), 'density': density.numpy()}


def toy_verdict(rows: dict, experiment: dict) -> str:
    "The claim tested on each dataset, both directions said"
    a, op, b, slack = experiment['claim']
    if not rows or any(a not in r or b not in r for r in rows.values()): return 'not run'
    won = [d for d, r in rows.items() if r[a]['test_nats'] < r[b]['test_nats'] - slack]
    lost = [d for d in rows if d not in won]
    head = (f'holds on all {len(rows)} datasets' if not lost else 'does not show on any dataset' if not won else
            f"holds on {len(won)} of {len(rows)} ({', '.join(won)}) and does not show on {', '.join(lost)}")
    each = '; '.join(f"{d} {a} {r[a]['test_nats']:.3f} vs {b} {r[b]['test_nats']:.3f}" for d, r in rows.items())
    return (f"{head} at this budget: {each} test nats/sample, lower is better (the paper's thesis, as flownb reads it: "
            f"{experiment['thesis']}; tested as {a} lower than {b} on each dataset)")


def toy_figure(name: str, rows: dict, densities: dict, path: Path, seed: int, samples: int):
    "Per dataset: test samples, the baseline's density and the AbsFlow's on the same colour scale"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(len(rows), 3, figsize=(7.2, 2.45 * len(rows)), squeeze=False)
    for i, (dataset, models) in enumerate(rows.items()):
        clim = TOY_CLIM.get(dataset, 0.1)
        x = toy_samples(dataset, samples, seed + 2).numpy()
        axs[i, 0].hist2d(x[:, 0], x[:, 1], bins=TOY_GRID, range=[[-4, 4], [-4, 4]], density=True, vmin=0, vmax=clim)
        axs[i, 0].set_title(f'{dataset}: test data', fontsize=8)
        for ax, model in zip(axs[i, 1:], ('baseline', 'abs-flow')):
            r = models[model]
            ax.imshow(densities[dataset][model], origin='lower', extent=(-4, 4, -4, 4), vmin=0, vmax=clim)
            ax.set_title(f"{model}: {r['test_nats']:.3f} nats ({r['kind']})", fontsize=8)
        for ax in axs[i]: ax.set_xticks([]); ax.set_yticks([]); ax.set_aspect('equal')
    fig.suptitle(f'{name}: densities on [-4, 4]$^2$ (colour 0 to each row\'s limit), test negative log-likelihood', fontsize=8)
    plt.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def run_toy(name: str, args) -> dict:
    import torch
    experiment = EXPERIMENTS[name]
    steps = args.steps or (TOY_FULL_STEPS if args.scale == 'full' else TOY_CPU_STEPS)
    samples = args.samples or TOY_SAMPLES
    eval_every = max(1, steps // 10)
    threads = 1 if args.scale == 'cpu' else args.threads
    print(f"{name}: {', '.join(experiment['models'])} on {', '.join(experiment['datasets'])}, {steps:,} steps each, one model at a time", flush=True)
    previous = torch.get_num_threads(); torch.set_num_threads(threads)
    rows, densities = {}, {}
    try:
        for dataset in experiment['datasets']:
            rows[dataset], densities[dataset] = {}, {}
            for model in experiment['models']:
                row = train_toy(dataset, model, steps, samples, args.seed, args.device, eval_every)
                densities[dataset][model] = row.pop('density'); rows[dataset][model] = row
                print(f"  {dataset:16s} {model:9s} test {row['test_nats']:.3f} nats ({row['kind']}), selected step {row['selected_step']}, "
                      f"{row['seconds']} s", flush=True)
    finally: torch.set_num_threads(previous)
    settings = {'steps': steps, 'batch_size': CPU_BATCH, 'optimizer': 'adam', 'lr': TOY_LR, 'train_samples': samples,
                'valid_samples': max(samples // 10, 1), 'test_samples': samples, 'validation_every': eval_every,
                'hidden_features': TOY_HIDDEN, 'couplings': TOY_COUPLINGS, 'seeds': [args.seed, args.seed + 1, args.seed + 2]}
    record = {'experiment': name, 'paper': experiment['paper'], 'question': experiment['question'], 'data': ', '.join(experiment['datasets']),
              'scale': args.scale, 'unit': 'nats', 'settings': settings, 'models': TOY_NOTE, 'rows': rows, 'verdict': verdict(rows, experiment),
              'published': experiment['published'], 'device': args.device if args.device == 'cpu' else torch.cuda.get_device_name(),
              'threads_per_model': threads, 'parallel_jobs': 1, 'machine': f"{platform.machine()}, {os.cpu_count()} cores",
              'torch': torch.__version__, 'flownb_commit': commit(), 'date': time.strftime('%Y-%m-%d')}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{name}.json').write_text(json.dumps(record, indent=1))
    (out / f'{name}.md').write_text(markdown(record))
    toy_figure(name, rows, densities, out / f'{name}.png', args.seed, samples)
    print(markdown(record), flush=True)
    return record


def toy_markdown(r: dict) -> str:
    lines = [f"### {r['experiment']} ({r['paper']})", '', r['question'], '',
             '| data | model | test nats/sample | kind | median, worst sample | parameters | steps | selected step (validation nats) | density mass on [-4, 4]² | seconds |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for dataset, models in r['rows'].items():
        for m, row in models.items():
            lines.append(f"| {dataset} | {m} | {row['test_nats']:.3f} | {row['kind']} | {row['test_median_nats']:.2f}, {row['test_worst_nats']:.1f} | "
                         f"{row['parameters']:,} | {row['steps']:,} | "
                         f"{row['selected_step']:,} ({row['valid_nats']:.3f}) | {row['grid_mass']:.3f} | {row['seconds']} |")
    lines += ['', f"Models: {r['models']}", '',
              f"Budget: {budget_text(r)}; {r['date']}, commit {r['flownb_commit']}, {r['machine']}. "
              f"Verdict: {r['verdict']}. Published number: {r['published']}.", '']
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('experiment', nargs='?', help=f"one of {', '.join(EXPERIMENTS)}, or 'all'")
    p.add_argument('--list', action='store_true', help='list the experiments and stop')
    p.add_argument('--table', action='store_true', help="print the README table of the results in bench/results/reproduce and stop")
    p.add_argument('--refresh', action='store_true', help="recompute the verdicts and rewrite the .md files from the .json results (after the claims' wording changed), and stop")
    p.add_argument('--scale', choices=['cpu', 'full'], default='cpu')
    p.add_argument('--data', default=None, help="override the experiment's dataset (e.g. digits, when MNIST is not at hand)")
    p.add_argument('--data-dir', default=None, help="the dataset's files: MNIST's IDX files (default: ../shared/data/mnist when present), or the folder with MAF's tabular files")
    p.add_argument('--synthetic', action='store_true', help="tabular experiments: generate MAF-format files of a random Gaussian mixture (flownb.data.write_synthetic_tabular) and read them, where the real files are not at hand")
    p.add_argument('--time-budget', type=float, default=300.0, help='seconds of training per model at --scale cpu')
    p.add_argument('--epochs', type=int, default=None, help="epochs of the cosine schedule at --scale cpu (default 20, funnels-tabular 1,000; the time budget usually ends it first)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1, help='torch threads per model at --scale full on the CPU')
    p.add_argument('--jobs', type=int, default=2, help='models trained at once on the CPU (one thread each)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--steps', type=int, default=None, help=f'toy experiments: training steps per model (default {TOY_CPU_STEPS:,} at --scale cpu, {TOY_FULL_STEPS:,} at --scale full)')
    p.add_argument('--samples', type=int, default=None, help=f'toy experiments: training and test samples per dataset, a tenth as many for validation (default {TOY_SAMPLES:,})')
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
