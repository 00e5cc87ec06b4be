"""Every registry model on CUDA: a float32 training step, the same log-likelihood as on the CPU, a bf16-autocast forward
that stays finite, and sampling. Skipped without a CUDA device; `bench/gpu.sh` runs this file (and the CUDA cases of
the contract suite, `-k cuda`) on a GPU machine."""
import math
import pytest
import torch

from flownb.models import MODELS, create_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')


def _case(name):
    spec = MODELS[name]
    if spec.shapes: return spec.shapes[0], 256
    if spec.data == 'points': return (50, 2), None
    return ((1, 8, 8), 17) if spec.data == 'image' else ((6,), None)


def _batch(shape, bins, n=16):
    g = torch.Generator().manual_seed(0)
    if bins: return torch.randint(0, bins, (n, *shape), generator=g).float()
    return torch.randn(n, *shape, generator=g)


@pytest.mark.parametrize('name', list(MODELS))
def test_registry_model_on_cuda(name):
    shape, bins = _case(name)
    torch.manual_seed(0)
    model = create_model(name, shape, bins).to('cuda')
    x = _batch(shape, bins).to('cuda')
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = -model.log_prob(x).mean() / math.prod(shape)
    assert torch.isfinite(loss), f"{name}: loss {loss.item()} on CUDA"
    opt.zero_grad(); loss.backward(); opt.step()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients on CUDA in {bad[:3]}"
    with torch.no_grad():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            lp = model.log_prob(x)
        assert torch.isfinite(lp).all(), f"{name}: non-finite log_prob under bf16 autocast"
        samples = model.sample(4)
        assert samples.shape == (4, *shape) and samples.device.type == 'cuda'


@pytest.mark.parametrize('name', [n for n in MODELS if MODELS[n].data != 'image' or not MODELS[n].shapes])
def test_cuda_log_prob_matches_cpu(name):
    "The exact and bounded parts compute the same numbers on both devices (float64; bounds with one seeded draw each)"
    shape, bins = _case(name)
    torch.manual_seed(0)
    model = create_model(name, shape, bins).double().eval()
    x = _batch(shape, bins).double()
    with torch.no_grad():
        torch.manual_seed(1); cpu = model.log_prob(x)
        if not model.exact: pytest.skip(f"{name} is a bound: its one-sample estimate draws different noise on each device")
        gpu = model.to('cuda').log_prob(x.to('cuda')).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-6)
