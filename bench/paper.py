"""The Flowification paper's networks in flownb (`flowification-*` in the registry), trained with the paper's recipe on
MNIST at a fixed budget, beside the official code run the same way (`bench/official_flowification.py`).

    # one thread, 10 CPU-minutes per model, MNIST from a folder (the 17,435-image training split in ../shared/data here)
    OMP_NUM_THREADS=1 python bench/paper.py --data-dir ../shared/data/mnist --models mlp,conv2 --cpu-seconds 600
    # the paper's full recipe (300 epochs of the full training split) on a GPU
    python bench/paper.py --data-dir DIR --models mlp,conv2 --full --device cuda

Rules, the same as the official runner's so that the two rows compare: Adam at 5e-4, batch 128, no weight decay, no
clipping, one cosine decay over the planned run. With a CPU budget the planned number of steps is estimated from the
process CPU time of the first 20 steps (those run at lr 5e-4, where the planned cosine is within 0.3% of it), and
training stops when the budget is spent. Nothing is selected: the model at the end of the budget is evaluated once on the
full test split with one stochastic pass (the dequantization ELBO; for the bounded models also the padding and
copy-noise terms), the estimate the official code reports. 64 samples are drawn from the base through the inverses.

Writes `<out>/<model>.json` and `<out>/<model>_samples.png` (default `bench/results/paper`).
"""
import argparse, json, math, platform, subprocess, sys, time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flownb.data import load_data, save_image_grid
from flownb.models import create_model, num_parameters, continuous_part_exact, FLOWIFICATION_RECIPE
from flownb.train import evaluate
from flownb.distributions import balance_mean_gradients

PLAN_STEPS = 20


def commit() -> str:
    try: return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError: return 'unknown'


def run(arch: str, data, cpu_seconds: float | None, epochs: int | None, device: str, seed: int, out: Path,
        save: Path | None = None, init: Path | None = None, lr: float | None = None, beta: float = 0.0, beta_only: str | None = None) -> dict:
    name = f'flowification-{arch}'
    torch.manual_seed(seed)
    flow = create_model(name, data.shape, data.bins).to(device)
    balance_mean_gradients(flow, beta, None if beta_only is None else [beta_only])   # beta 0: maximum likelihood; a wrong name lists the conditionals
    earlier = None
    if init is not None:   # a warm restart: the weights of an earlier run (--save), a fresh Adam and a new cosine cycle
        saved = torch.load(init / f'{arch}.pt', map_location=device, weights_only=False)
        if saved['model'] != name: raise ValueError(f"{init / (arch + '.pt')} holds {saved['model']}, not {name}")
        flow.load_state_dict(saved['state_dict'])
        earlier = {k: saved['result'][k] for k in ('steps', 'cpu_seconds', 'test_bpd', 'flownb_commit', 'earlier') if k in saved['result']}
    recipe = FLOWIFICATION_RECIPE if lr is None else {**FLOWIFICATION_RECIPE, 'lr': lr}
    train = data.train if getattr(data, 'valid', None) is None else torch.cat([data.train, data.valid])   # all of it, as the official code
    loader = DataLoader(TensorDataset(train), batch_size=recipe['batch_size'], shuffle=True, drop_last=True)
    optimizer = torch.optim.Adam(flow.parameters(), lr=recipe['lr'])
    dims = math.prod(data.shape)
    cpu, step, curve = 0.0, 0, []
    planned = None if epochs is None else epochs * len(loader)
    # one cosine decay over the planned steps; until the plan is known (the first 20 steps of a CPU budget) the factor is 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if planned is None else 0.5 * (1 + math.cos(math.pi * min(s, planned) / planned)))
    started_wall = time.perf_counter()
    done = False
    while not done:
        for (x,) in loader:
            t0 = time.process_time()
            loss = -flow.log_prob(x.to(device)).mean() / (dims * math.log(2))
            optimizer.zero_grad(set_to_none=True); loss.backward(); optimizer.step()
            scheduler.step()
            if device.startswith('cuda'): torch.cuda.synchronize()
            cpu += time.process_time() - t0; step += 1
            curve.append(round(loss.item(), 4))
            if not math.isfinite(curve[-1]): raise RuntimeError(f"{name}: non-finite loss at step {step}")
            if planned is None and step == PLAN_STEPS:
                planned = max(PLAN_STEPS + 1, int(cpu_seconds / (cpu / step)))
            if (cpu_seconds is not None and cpu >= cpu_seconds) or (planned is not None and step >= planned): done = True; break
            if step % 200 == 0: print(f"{name}: step {step}/{planned}, train {sum(curve[-200:]) / 200:.3f} bits/dim, {cpu:.0f} CPU-s", flush=True)
    flow.eval()
    torch.manual_seed(seed + 1)
    test = evaluate(flow, data.test, batch_size=500, device=torch.device(device))
    with torch.no_grad():
        torch.manual_seed(0)
        samples = flow.sample(64).cpu()
    out.mkdir(parents=True, exist_ok=True)
    save_image_grid(samples, data.bins, out / f'{arch}_samples.png')
    result = {'model': name, 'arch': arch, 'steps': step, 'planned_steps': planned, 'cpu_seconds': round(cpu, 1),
              'wall_seconds': round(time.perf_counter() - started_wall, 1), 'seconds_per_step': round(cpu / step, 4),
              'test_bpd': round(test['bits_per_dim'], 4), 'kind': f"{test['kind']} (one pass; continuous part {'exact' if continuous_part_exact(flow) else 'a bound'})",
              'parameters': num_parameters(flow), 'n_train': len(train), 'n_test': len(data.test), 'data_note': data.note,
              'recipe': recipe, 'threads': torch.get_num_threads(), 'device': device if device == 'cpu' else torch.cuda.get_device_name(),
              'seed': seed, 'mean_gradient_power': beta, 'beta_only': beta_only, 'earlier': earlier, 'flownb_commit': commit(), 'torch': torch.__version__, 'machine': platform.machine(), 'train_curve_every_50': curve[::50]}
    (out / f'{arch}.json').write_text(json.dumps(result, indent=1))
    if save is not None:   # the trained weights, to draw more samples later (e.g. at a lower temperature) without retraining
        save.mkdir(parents=True, exist_ok=True)
        torch.save({'model': name, 'shape': data.shape, 'bins': data.bins, 'state_dict': flow.state_dict(), 'result': result}, save / f'{arch}.pt')
    print(f"{name}: {result['test_bpd']:.3f} test bits/dim ({result['kind']}) after {step} steps, {cpu:.0f} CPU-s, "
          f"{result['seconds_per_step']:.3f} s/step; wrote {out / (arch + '.json')}", flush=True)
    return result


# the README table's rows: flownb's run (bench/results/paper/ARCH.json) beside the official one (bench/results/official/ARCH.json)
TABLE_ROWS = {'mlp': 'mlp (exact continuous part)', 'conv2': 'conv2 (a bound on MNIST: one padding)', 'conv1': 'conv1 (a bound: overlaps, padding)',
              'conv2-nsf': 'conv2-nsf (a bound on MNIST)', 'conv1-nsf': 'conv1-nsf (a bound)'}


def table(results: Path = Path(__file__).parent / 'results') -> str:
    "The README table of flownb's and the official code's runs, from their JSON files (rows whose two files are both there)"
    lines = ['| model | flownb: steps, s/step | flownb test bits/dim | official: steps, s/step | official test bits/dim |',
             '|---|---|---|---|---|']
    for arch, label in TABLE_ROWS.items():
        ours, theirs = results / 'paper' / f'{arch}.json', results / 'official' / f"{arch.replace('-', '_')}.json"
        if not (ours.exists() and theirs.exists()): continue
        a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
        lines.append(f"| {label} | {a['steps']:,}, {a['seconds_per_step']:.2f} | **{a['test_bpd']:.3f}** | "
                     f"{b['steps']:,}, {b['seconds_per_step']:.2f} | {b['test_bpd']:.3f} |")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--table', action='store_true', help="print the README table of the results in bench/results/{paper,official} and stop")
    p.add_argument('--data-dir', help="MNIST IDX files (e.g. ../shared/data/mnist)")
    p.add_argument('--models', default='mlp,conv2', help="comma-separated: mlp, conv1, conv2, conv1-nsf, conv2-nsf")
    p.add_argument('--cpu-seconds', type=float, default=600, help="training budget per model in process CPU seconds (CPU runs)")
    p.add_argument('--full', action='store_true', help="the paper's recipe: 300 epochs, no time budget (for a GPU)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'paper'))
    p.add_argument('--save', default=None, help="a folder to save each trained model's weights in (<model>.pt; not committed)")
    p.add_argument('--lr', type=float, default=None, help="the peak learning rate of the cosine (default: the paper's 5e-4)")
    p.add_argument('--beta', type=float, default=0.0, help="balance_mean_gradients: the dropped directions' means learn with "
                                                           "their gradient scaled by sigma^(2 beta) (0: maximum likelihood, the paper's)")
    p.add_argument('--beta-only', default=None, help="apply --beta to one module only, by name (e.g. transform.transforms.4.dropped: "
                                                      "the conditional of conv1's second convolution)")
    p.add_argument('--init', default=None, help="a --save folder of an earlier run: start from its weights (a warm restart with a "
                                                "fresh Adam and a new cosine cycle; the JSON records the earlier run under 'earlier')")
    args = p.parse_args(argv)
    if args.table: print(table()); return
    if args.data_dir is None: p.error('--data-dir is required to train (MNIST IDX files, e.g. ../shared/data/mnist)')
    torch.set_num_threads(args.threads)
    data = load_data('mnist', args.data_dir)
    for arch in args.models.split(','):
        run(arch.strip(), data, None if args.full else args.cpu_seconds, FLOWIFICATION_RECIPE['epochs'] if args.full else None,
            args.device, args.seed, Path(args.out), None if args.save is None else Path(args.save),
            None if args.init is None else Path(args.init), args.lr, args.beta, args.beta_only)


if __name__ == '__main__': main()
