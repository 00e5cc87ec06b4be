"""Where a flowified image model's sampling goes wrong: test images encoded through its first k layers and decoded back
through the same layers' inverses, with every layer's noise at its mean (and drawn), for the weights `bench/paper.py
--save DIR` wrote.

    python bench/reconstruction.py --weights DIR --data-dir ../shared/data/mnist --models conv1,conv1-nsf

A layer whose inverse only loses what it dropped gives back a blurred image with the data's statistics; a layer whose
dropped-direction conditional is off shows it here, before the base or the layers above it play any part. The script
reports, for every prefix that ends after a convolution, the mean absolute error of the reconstruction (pixel levels,
0–255) and its mean intensity in each column class c mod 4 (a lattice: the images' own mean is flat over the four), the
period of the first two strides, and writes `<out>/<arch>_reconstruction.json`.
"""
import argparse, json, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flownb.core import noise_mean
from flownb.data import load_data
from paper_samples import load


def column_profile(x: torch.Tensor, period: int = 4) -> list[float]:
    "Mean intensity of the columns c with c mod `period` = 0, 1, ...: flat for the data, a lattice where it is not"
    x = x.float().flatten(0, -3)
    return [round(x[..., i::period].mean().item(), 2) for i in range(period)]


def reconstruct(flow, x: torch.Tensor, k: int, mean: bool, seed: int = 0) -> torch.Tensor:
    "x through the first k layers of `flow` and back through their inverses (every layer's noise at its mean if `mean`)"
    layers = list(flow.transform.transforms)[:k]
    torch.manual_seed(seed)
    with torch.no_grad():
        with noise_mean(flow, mean):
            h = x
            for layer in layers: h, _ = layer(h)
            for layer in reversed(layers): h = layer.inverse(h)
    return h


def report(flow, x: torch.Tensor) -> dict:
    "Reconstruction error and column profile for every prefix of the flow that ends after a FlowConv2d"
    layers = list(flow.transform.transforms)
    rows = []
    for k, layer in enumerate(layers, 1):
        if type(layer).__name__ != 'FlowConv2d': continue
        row = {'layers': k, 'last': layer._name()}
        for mean in (True, False):
            h = reconstruct(flow, x, k, mean)
            key = 'noise_mean' if mean else 'drawn'
            row[key] = {'mean_abs_error': round((h.float() - x.float()).abs().mean().item(), 2), 'columns_mod_4': column_profile(h)}
        rows.append(row)
    return {'data_columns_mod_4': column_profile(x), 'prefixes': rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--weights', required=True, help="the folder `bench/paper.py --save` wrote <arch>.pt files into")
    p.add_argument('--data-dir', required=True, help="MNIST IDX files (e.g. ../shared/data/mnist)")
    p.add_argument('--models', default='conv1,conv1-nsf')
    p.add_argument('--n', type=int, default=256, help="test images to reconstruct")
    p.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'paper'))
    p.add_argument('--suffix', default='')
    args = p.parse_args(argv)
    data = load_data('mnist', args.data_dir)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    results = {}
    for arch in args.models.split(','):
        path = Path(args.weights) / f'{arch}.pt'
        if not path.exists(): raise SystemExit(f"{path} not found: train it with bench/paper.py --models {arch} --save {args.weights}")
        flow, state = load(path)
        res = {'model': state['model'], 'run': state['result'].get('test_bpd'), 'n': args.n, **report(flow, data.test[:args.n])}
        (out / f'{arch}{args.suffix}_reconstruction.json').write_text(json.dumps(res, indent=1))
        for row in res['prefixes']:
            m = row['noise_mean']
            print(f"{arch}: through {row['layers']:2d} layers (… {row['last']}): |error| {m['mean_abs_error']:5.1f}, "
                  f"columns mod 4 {m['columns_mod_4']} (data {res['data_columns_mod_4']})")
        results[arch] = res
    return results


if __name__ == '__main__': main()
