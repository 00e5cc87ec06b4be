"""Reference numbers from the Flowification paper's own code (Máté et al., NeurIPS 2022; github balintmate/flowification),
for side-by-side comparison with flownb. This script runs the AUTHORS' code from a path the user gives (`--official`, an
exported copy of that repository); flownb ships none of it and does not import it anywhere else.

What it does, for one MNIST architecture (mlp, conv1, conv2, conv1_nsf, conv2_nsf):
- builds the model with the official `experiments/architectures.py:getArchitecture('mnist', arch)` wrapped as in
  `experiments/image_generation.py` (`Flow(CompositeTransform(layers), LogNormal(latent_dim))`); the first layer is the
  official `Dequantize` (x + U[0,1)/256, log-lik -784 ln 256);
- feeds it MNIST read from IDX files (`--data-dir`), scaled k/255 as torchvision's `ToTensor()` does, shuffled batches of
  128 as the official loader; nothing is downloaded;
- trains with the official recipe: Adam lr 5e-4 (default betas, no weight decay, no clipping), loss -mean log-lik,
  `CosineAnnealingWarmRestarts` stepped every iteration. The official T_0 is epochs x batches per epoch (one cosine cycle
  over the whole run). Here the run is a CPU-time budget, so T_0 is the number of steps the budget allows, estimated from
  the CPU time of the first 20 steps (those 20 run at lr 5e-4, where the planned cosine is within 0.3% of it); training
  stops when the training CPU time (time.process_time, one torch thread) reaches the budget or the planned cycle ends;
- evaluates test bits/dim over the full test split with ONE stochastic forward pass (flag 'sample': dequantisation,
  padding/tiling and dimension-increase noise drawn once). That is a one-sample ELBO, the same estimate the official
  evaluation loop reports as "BPD test" (no importance sampling there either);
- draws 64 samples with the official inverse (z ~ N(0, I), flag 'sample'), clamps them to [0, 1] and saves an 8x8 grid.

The official code needs `nflows` (and not `wandb`: it only calls `wandb.log`, which this script replaces with a no-op
module in sys.modules before importing it). Run it in an environment of its own, e.g.

    python3 -m venv /tmp/offvenv && /tmp/offvenv/bin/pip install torch torchvision nflows numpy
    git -C <bare clone of balintmate/flowification> archive HEAD | tar -x -C /tmp/official
    OMP_NUM_THREADS=1 /tmp/offvenv/bin/python bench/official_flowification.py --official /tmp/official --arch mlp \\
        --cpu-seconds 600 --data-dir ../shared/data/mnist --out bench/results/official

Writes `<out>/<arch>.json` (arch, steps, cpu_seconds, seconds_per_step, test_bpd, n_train, n_test, versions, official
commit, ...) and `<out>/<arch>_samples.png`.
"""
import argparse, gzip, importlib.metadata, json, math, platform, subprocess, sys, time, types
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.utils import save_image

ARCHS = ['mlp', 'conv1', 'conv2', 'conv1_nsf', 'conv2_nsf']
PLAN_STEPS = 20


def read_idx_images(path):
    "uint8 images from an IDX3 file (gzip or not) as a float tensor N x 1 x H x W scaled k/255, like ToTensor()"
    raw = Path(path).read_bytes()
    if raw[:2] == b'\x1f\x8b': raw = gzip.decompress(raw)
    magic, n, h, w = (int.from_bytes(raw[i:i + 4], 'big') for i in range(0, 16, 4))
    if magic != 2051: raise ValueError(f"read_idx_images: expected IDX3 magic 2051 in {path}, got {magic}")
    x = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if x.size != n * h * w: raise ValueError(f"read_idx_images: header of {path} says {n}x{h}x{w}, file has {x.size} bytes")
    return torch.from_numpy(x.reshape(n, 1, h, w).astype(np.float32) / 255.)


def find(data_dir, stem):
    for name in (stem, stem + '.gz'):
        if (Path(data_dir) / name).exists(): return Path(data_dir) / name
    raise FileNotFoundError(f"no {stem}[.gz] in {data_dir}")


def import_official(root):
    "Put the official repository on sys.path (its modules import each other as `models.…`) with wandb as a no-op"
    wandb = types.ModuleType('wandb')
    wandb.log = lambda *a, **k: None
    sys.modules['wandb'] = wandb
    sys.path.insert(0, str(Path(root).resolve()))
    from experiments.architectures import getArchitecture
    from models.transforms import CompositeTransform
    from models.flows import Flow
    from models.distributions.standard_normal import LogNormal
    return getArchitecture, CompositeTransform, Flow, LogNormal


def official_commit(root, given):
    if given: return given
    try: return subprocess.run(['git', '-C', str(root), 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
    except Exception: return 'unknown'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--official', required=True, help='exported balintmate/flowification repository (not part of flownb)')
    p.add_argument('--official-commit', default='', help='commit of that export, recorded in the JSON (git rev-parse if empty)')
    p.add_argument('--arch', required=True, choices=ARCHS)
    p.add_argument('--cpu-seconds', type=float, default=600.)
    p.add_argument('--data-dir', default='../shared/data/mnist')
    p.add_argument('--out', default='bench/results/official')
    p.add_argument('--seed', type=int, default=0, help='ours; the official code sets no seed')
    p.add_argument('--official-epochs', type=int, default=0,
                   help='if > 0, T_0 = this many epochs of steps (the official default is 300, so over 10 CPU-minutes the lr '
                        'stays ~5e-4) instead of the budget plan; for diagnosis only')
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    getArchitecture, CompositeTransform, Flow, LogNormal = import_official(a.official)

    x_train = read_idx_images(find(a.data_dir, 'train-images-idx3-ubyte'))
    x_test = read_idx_images(find(a.data_dir, 't10k-images-idx3-ubyte'))
    dummy = lambda x: torch.zeros(len(x), dtype=torch.long)  # labels unused, as in the official loop
    trainloader = DataLoader(TensorDataset(x_train, dummy(x_train)), batch_size=128, shuffle=True)
    testloader = DataLoader(TensorDataset(x_test, dummy(x_test)), batch_size=128, shuffle=True)
    D = x_train[0].numel()

    layers, latent_dim = getArchitecture('mnist', a.arch)
    model = Flow(CompositeTransform(layers), LogNormal(latent_dim))
    n_params = sum(q.numel() for q in model.parameters() if q.requires_grad)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    # T_0 is re-set once the first PLAN_STEPS steps have been timed; until then the lr is 5e-4 (cos of ~0 steps)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, a.official_epochs * len(trainloader) or 10 ** 9)

    step, planned, losses, t0, wall0 = 0, None, [], time.process_time(), time.time()
    done = False
    while not done:
        for xb, _ in trainloader:
            z, logL = model.forward(xb)
            opt.zero_grad()
            (-logL.mean()).backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(-logL.mean().item() / math.log(2) / D)
            used = time.process_time() - t0
            if step == PLAN_STEPS:
                planned = max(PLAN_STEPS + 1, int(a.cpu_seconds / (used / PLAN_STEPS)))
                if a.official_epochs: planned = sched.T_0  # the official cycle; the budget ends the run long before
                else: sched.T_0 = sched.T_i = planned
            if step % 20 == 0: print(f"{a.arch} step {step}/{planned} cpu {used:.0f}s train bpd {np.mean(losses[-20:]):.3f} "
                                     f"lr {sched.get_last_lr()[0]:.2e}", flush=True)
            if used >= a.cpu_seconds or (planned is not None and step >= planned): done = True; break
    train_cpu, train_wall = time.process_time() - t0, time.time() - wall0

    t1 = time.process_time()
    with torch.no_grad():
        L_test = sum(model.forward(xb)[1].sum().item() for xb, _ in testloader)  # one pass, flag 'sample'
        test_bpd = -L_test / len(x_test) / math.log(2) / D
        samples = model.sample(z=torch.randn(64, latent_dim), flag='sample').clamp(0, 1)
    eval_cpu = time.process_time() - t1

    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    name = a.arch + (f'_T0_{a.official_epochs}ep' if a.official_epochs else '')
    save_image(samples, out / f'{name}_samples.png', nrow=8)
    res = dict(arch=a.arch, data='mnist', steps=step, planned_steps=planned, epochs=round(step / len(trainloader), 3),
               cpu_seconds=round(train_cpu, 1), wall_seconds=round(train_wall, 1), seconds_per_step=round(train_cpu / step, 4),
               test_bpd=round(test_bpd, 4), test_bpd_estimate='one-sample ELBO over the full test split (same as the official eval)',
               final_train_bpd_last20=round(float(np.mean(losses[-20:])), 4), eval_cpu_seconds=round(eval_cpu, 1),
               n_params=n_params, n_train=len(x_train), n_test=len(x_test), batch_size=128, lr=5e-4,
               schedule=(f'CosineAnnealingWarmRestarts(T_0={a.official_epochs} epochs x {len(trainloader)} steps, official), stepped per step'
                         if a.official_epochs else
                         f'CosineAnnealingWarmRestarts(T_0=planned_steps from the CPU time of the first {PLAN_STEPS} steps), stepped per step'),
               torch_threads=torch.get_num_threads(), seed=a.seed, torch=torch.__version__,
               nflows=importlib.metadata.version('nflows'), python=platform.python_version(), machine=platform.processor() or platform.machine(),
               official_repo='github balintmate/flowification', official_commit=official_commit(a.official, a.official_commit),
               samples_png=f'{name}_samples.png')
    (out / f'{name}.json').write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
