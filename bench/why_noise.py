"""Why the flowify-* models' MNIST samples look like salt-and-pepper noise: a measurement, before any change.

Three models trained the same way (flownb's defaults: AdamW 1e-3, batch 128, one thread, `--steps` steps on the
MNIST training split from `--data-dir`), then measured on 1,000 test images and 64 samples:

- `flowify-mlp` as it was registered when this was measured: dequantize, logit(0.05), the flowified 784-512-…-8 MLP with
  LeakyReLU(0.1), a final spline (built with `slope=0.1`: the registry's default has been 0.5 since, because of this measurement);
- the same network without the logit (pixels in [0, 1) go straight into the first FlowLinear);
- `flowification-mlp`: the paper's network (no logit, its shared spline activation, its wide conditioners).

For each: test bits/dim (one-pass dequantization ELBO), and of the samples the fraction of pixels at the extremes
(< 0.02 or > 0.98 of the range; MNIST itself has about 80% there, nearly all of them 0) and the mean absolute difference
between horizontally neighbouring pixels (salt and pepper is high, digits are low), next to the same numbers for the
data. Per flowified layer: the learned scale of the dropped directions' Gaussian against the spread of what it scores
(the residual c - mu(z) on test data), and the share of the sampled image's variance that the dropped directions put
there. Writes `bench/results/why_noise.json` and one sample grid per model.

    OMP_NUM_THREADS=1 python bench/why_noise.py --data-dir ../shared/data/mnist --steps 600
"""
import argparse, json, math, sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flownb.bijections import Logit
from flownb.data import load_data, save_image_grid
from flownb.flowify import FlowLinear
from flownb.models import create_model
from flownb.train import evaluate


def sample_stats(levels: torch.Tensor, bins: int) -> dict:
    x = levels.float() / (bins - 1)
    return {'extreme_fraction': round(((x < 0.02) | (x > 0.98)).float().mean().item(), 3),
            'mean_abs_neighbour_difference': round((x[..., 1:] - x[..., :-1]).abs().mean().item(), 4),
            'mean': round(x.mean().item(), 3)}


@torch.no_grad()
def dropped_calibration(flow, x: torch.Tensor) -> list:
    "Per FlowLinear: the mean learned scale of the dropped directions vs the RMS of the residual it scores on data"
    rows, h = [], x
    for t in flow.transform:
        if isinstance(t, FlowLinear) and t.dropped is not None:
            y = t.svd.rotate_in(h)
            c, z = y[:, t.out_features:], t(h)[0]
            loc, log_scale = t.dropped.params(z)
            rows.append({'layer': t._name(), 'learned_scale': round(log_scale.exp().mean().item(), 4),
                         'residual_rms': round((c - loc).square().mean().sqrt().item(), 4),
                         'dropped_rms': round(c.square().mean().sqrt().item(), 4)})
        h = t(h)[0]
    return rows


def train(flow, data, steps: int, seed: int):
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(data.train), batch_size=128, shuffle=True, drop_last=True)
    with torch.no_grad(): flow.log_prob(data.train[:128])   # data-dependent initialisation
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    step, dims = 0, math.prod(data.shape)
    while step < steps:
        for (x,) in loader:
            loss = -flow.log_prob(x).mean() / (dims * math.log(2))
            opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0); opt.step(); sched.step()
            step += 1
            if step >= steps: break
    return flow


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data-dir', required=True); p.add_argument('--steps', type=int, default=600)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--out', default=str(Path(__file__).parent / 'results'))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_data('mnist', args.data_dir)
    test = data.test[:1000]
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    results = {'steps': args.steps, 'data': sample_stats(data.test[:64], data.bins), 'models': {}}
    for label in ('flowify-mlp', 'flowify-mlp without logit', 'flowification-mlp'):
        torch.manual_seed(args.seed)
        flow = (create_model('flowification-mlp', data.shape, data.bins) if label == 'flowification-mlp'
                else create_model('flowify-mlp', data.shape, data.bins, slope=0.1))
        if label.endswith('without logit'):
            flow.transform.transforms = torch.nn.ModuleList([t for t in flow.transform if not isinstance(t, Logit)])
        train(flow, data, args.steps, args.seed)
        flow.eval()
        torch.manual_seed(1)
        bpd = evaluate(flow, test)['bits_per_dim']
        with torch.no_grad():
            torch.manual_seed(0); samples = flow.sample(64)
        tag = label.replace(' ', '_')
        save_image_grid(samples, data.bins, out / f'why_noise_{tag}.png')
        results['models'][label] = {'test_bpd_1000': round(bpd, 4), 'samples': sample_stats(samples, data.bins),
                                    'dropped_directions': dropped_calibration(flow, test[:256])}
        print(label, json.dumps(results['models'][label]), flush=True)
    (out / 'why_noise.json').write_text(json.dumps(results, indent=1))


if __name__ == '__main__': main()
