"""The rational-quadratic spline's two lookups: knots shared across elements (an activation's spline, one small stacked
table, read in the input's memory order) and knots per element (a coupling's conditioner output, gathers) must agree:
the same bins for the same knots, bit for bit, and the same spline to float rounding."""
import torch
from hypothesis import given, strategies as st

from flownb.bijections import rational_quadratic_spline, _bin_values, _knots


@given(batch=st.integers(1, 5), channels=st.integers(1, 4), size=st.integers(1, 4), bins=st.integers(2, 9),
       inverse=st.booleans(), seed=st.integers(0, 2**16))
def test_shared_knots_lookup_matches_per_element(batch, channels, size, bins, inverse, seed):
    torch.manual_seed(seed)
    x = (torch.randn(batch, channels, size, size, dtype=torch.float64) * 2.5).requires_grad_()
    x.data[0, 0, 0, 0] = 3.0; x.data[-1, -1, -1, -1] = -3.0             # the bound itself, where the first or last bin ends
    raw = [torch.randn(1, channels, 1, 1, k, dtype=torch.float64, requires_grad=True) for k in (bins, bins, bins - 1)]
    shared = rational_quadratic_spline(x, *raw, inverse=inverse)
    per_element = rational_quadratic_spline(x, *[r.expand(batch, channels, size, size, -1).contiguous() for r in raw], inverse=inverse)
    # the knots of the two come from softmaxes over differently shaped tensors, which may round differently in the last bit
    for a, b in zip(shared, per_element): torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    grads = [torch.autograd.grad(sum(o.sum() for o in out), [x, *raw]) for out in (shared, per_element)]
    for a, b in zip(*grads): torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@given(batch=st.integers(1, 4), channels=st.integers(1, 5), size=st.integers(1, 5), shared_by_layer=st.booleans(),
       seed=st.integers(0, 2**16))
def test_channels_last_input_gives_the_same_spline(batch, channels, size, shared_by_layer, seed):
    "A convolution's channels-last output is looked up in its own memory order: the same values, gradients to rounding"
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size, dtype=torch.float64) * 2.5
    shape = (1, 1, 1, 1) if shared_by_layer else (1, channels, 1, 1)
    raw = [torch.randn(*shape, k, dtype=torch.float64, requires_grad=True) for k in (6, 6, 5)]
    outs = []
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout).requires_grad_()
        y, logd = rational_quadratic_spline(xl, *raw, bound=2.0)
        outs.append((y, logd, torch.autograd.grad((y * y).sum() + logd.sum(), [xl, *raw])))
    (y1, l1, g1), (y2, l2, g2) = outs
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    for a, b in zip(g1, g2): torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@given(rows=st.integers(1, 6), columns=st.integers(2, 6), bins=st.integers(2, 9), seed=st.integers(0, 2**16))
def test_shared_and_gathered_bins_are_the_same(rows, columns, bins, seed):
    "For the same knots and tables, both lookups pick searchsorted's bin, at the knots themselves too"
    torch.manual_seed(seed)
    _, knots = _knots(torch.randn(rows, 1, bins, dtype=torch.float64), 3.0, 1e-3)            # shared along the columns
    tables = [torch.randn(rows, 1, bins, dtype=torch.float64) for _ in range(3)]
    x = torch.rand(rows, columns, dtype=torch.float64) * 6 - 3
    x[:, 0] = knots[:, 0, torch.randint(0, bins + 1, (1,)).item()]                         # a knot, exactly
    shared = _bin_values(x, knots, tables)
    gathered = _bin_values(x, knots.expand(rows, columns, bins + 1), [t.expand(rows, columns, bins).contiguous() for t in tables])
    for a, b in zip(shared, gathered): assert torch.equal(a, b)
