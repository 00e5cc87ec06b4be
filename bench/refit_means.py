"""Refit the output bias of every dropped-direction conditional's mean by maximum likelihood on the training images, then
measure again: test bits/dim, the reconstructions' lattice (`bench/reconstruction.py`) and samples.

    python bench/refit_means.py --weights DIR --data-dir ../shared/data/mnist --models conv1-nsf [--out OUT] [--suffix S]

Why: a constant offset of a conditional's mean by a fraction of its standard deviation costs the likelihood almost
nothing (0.5·δ² nats per coordinate), so gradient steps leave it, but a sampler that fills those coordinates in places
the same offset at every position, which a strided convolution's inverse turns into a periodic pattern. With everything
else fixed, the bias b of a Gaussian mean μ(h) + b has a closed-form maximum-likelihood value: each coordinate's
residual c − μ(h) averaged with weights 1/σ(h)², over the training images and, for a convolution, over positions. One
such step is a coordinate ascent on the training objective; nothing is chosen on the test split.

Writes `<out>/<arch><S>_refit.json` (the shifts, the test bits/dim before and after, the reconstructions' column
profile) and `<out>/<arch><S>_refit_temperatures.png`.
"""
import argparse, json, math, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flownb.data import load_data
from flownb.distributions import ConditionalNormal
from flownb.train import evaluate
from paper_samples import load, grid
from reconstruction import report


def dropped_conditionals(flow) -> dict[str, ConditionalNormal]:
    "The Gaussians of the directions each layer drops (`<layer>.dropped`), by module name"
    return {name: m for name, m in flow.named_modules() if isinstance(m, ConditionalNormal) and name.endswith('dropped')}


def refit_mean_biases(flow, images: torch.Tensor, batch_size: int = 256, seed: int = 0, unweighted: dict | None = None) -> dict[str, float]:
    """Set each dropped-direction conditional's mean bias to its maximum-likelihood value given the rest of the model
    (the training forward pass, noise drawn); returns the largest shift of each, in units of that coordinate's mean σ.
    A dict passed as `unweighted` receives, per conditional, the largest plain mean residual c − μ(h) in the same units:
    where it is large and the shift is not, the mean is off where σ is wide, which the likelihood weighs by 1/σ²"""
    conditionals = dropped_conditionals(flow)
    sums = {name: [0., 0., 0., 0.] for name in conditionals}   # Σ r/σ², Σ 1/σ², Σ σ, Σ r (per coordinate), with a count
    counts = dict.fromkeys(conditionals, 0)
    originals = {}
    for name, cond in conditionals.items():
        def recording(c, h, context=None, _name=name, _cond=cond):
            loc, log_scale = _cond.params(h, context)
            precision = (-2 * log_scale).exp()
            dims = [0] + list(range(2, c.dim()))          # over the batch and, for images, the positions
            s = sums[_name]
            s[0] = s[0] + ((c - loc) * precision).sum(dims); s[1] = s[1] + precision.sum(dims); s[2] = s[2] + log_scale.exp().sum(dims)
            s[3] = s[3] + (c - loc).sum(dims)
            counts[_name] += math.prod(c.shape[d] for d in dims)
            return torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), loc.dim() - 1).log_prob(c)
        originals[name] = cond.log_prob
        cond.log_prob = recording
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size): flow.log_prob(images[i:i + batch_size])
    finally:
        for name, cond in conditionals.items(): cond.log_prob = originals[name]
    shifts = {}
    with torch.no_grad():
        for name, cond in conditionals.items():
            if counts[name] == 0: continue
            delta = sums[name][0] / sums[name][1]
            last = cond.net[-1]
            last.bias[:cond.out_features] += delta
            shifts[name] = round((delta.abs() / (sums[name][2] / counts[name])).max().item(), 4)
            if unweighted is not None: unweighted[name] = round((sums[name][3].abs() / sums[name][2]).max().item(), 4)
    return shifts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--weights', required=True, help="the folder `bench/paper.py --save` wrote <arch>.pt files into")
    p.add_argument('--data-dir', required=True, help="MNIST IDX files (e.g. ../shared/data/mnist)")
    p.add_argument('--models', default='conv1-nsf')
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'paper'))
    p.add_argument('--suffix', default='')
    args = p.parse_args(argv)
    data = load_data('mnist', args.data_dir)
    train = data.train if getattr(data, 'valid', None) is None else torch.cat([data.train, data.valid])   # what paper.py trained on
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    for arch in args.models.split(','):
        flow, state = load(Path(args.weights) / f'{arch}.pt')
        torch.manual_seed(1)
        before = evaluate(flow, data.test, batch_size=500, device=torch.device('cpu'))['bits_per_dim']
        rec_before = report(flow, data.test[:256])
        offsets = {}
        shifts = refit_mean_biases(flow, train, unweighted=offsets)
        torch.manual_seed(1)
        after = evaluate(flow, data.test, batch_size=500, device=torch.device('cpu'))['bits_per_dim']
        rec_after = report(flow, data.test[:256])
        res = {'model': state['model'], 'test_bpd_before': round(before, 4), 'test_bpd_after': round(after, 4),
               'largest_shift_in_sigma': shifts, 'largest_plain_mean_residual_in_sigma': offsets, 'n_train': len(train),
               'reconstruction_before': rec_before, 'reconstruction_after': rec_after}
        (out / f'{arch}{args.suffix}_refit.json').write_text(json.dumps(res, indent=1))
        state = {**state, 'result': {**state['result'], 'test_bpd': after, 'model': state['model'] + ' (mean biases refitted)'}}
        grid(arch, flow, state, out / f'{arch}{args.suffix}_refit_temperatures.png')
        print(f"{arch}: test bits/dim {before:.4f} → {after:.4f} after refitting {len(shifts)} conditionals' mean biases "
              f"(largest shift {max(shifts.values()):.3f} σ, in {max(shifts, key=shifts.get)}; largest plain mean residual "
              f"{max(offsets.values()):.3f} σ, in {max(offsets, key=offsets.get)})")
        for r0, r1 in zip(rec_before['prefixes'], rec_after['prefixes']):
            print(f"  through {r0['layers']:2d} layers: columns mod 4 {r0['noise_mean']['columns_mod_4']} → {r1['noise_mean']['columns_mod_4']}, "
                  f"|error| {r0['noise_mean']['mean_abs_error']} → {r1['noise_mean']['mean_abs_error']}")


if __name__ == '__main__': main()
