"""RDRW (paper eq. 5-6): the piecewise weight at and around its breakpoints, the quantile window, the EOS cosine."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from trainer.rdrw import QuantileTracker, eos_similarity, rdrw_weight

LAM = 12.0
Q25, Q50, Q75 = 0.25, 0.5, 0.75  # exactly representable, so "at the breakpoint" is exact


def eq6(sim: float, q25: float, q50: float, q75: float, lam: float = LAM) -> float:
    """Eq. 6 written out."""
    if sim < q25:
        return 1.0
    if sim > q75:
        return 0.5
    return 0.5 + 0.5 / (1.0 + math.exp(lam * (sim - q50)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weight_at_and_around_breakpoints(dtype):
    def w(x: float) -> float:
        return rdrw_weight(torch.tensor([x], dtype=dtype), Q25, Q50, Q75, lam=LAM).item()

    below, above = np.nextafter(Q25, -1.0), np.nextafter(Q75, 2.0)
    if dtype == torch.float32:
        below, above = float(np.nextafter(np.float32(Q25), np.float32(-1))), float(
            np.nextafter(np.float32(Q75), np.float32(2)))
    assert w(-1.0) == 1.0 and w(0.0) == 1.0 and w(below) == 1.0  # full penalty below Q25
    assert w(1.0) == 0.5 and w(0.9) == 0.5 and w(above) == 0.5  # half penalty above Q75
    assert w(Q50) == 0.75  # the sigmoid's midpoint
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    # At Q25 and Q75 themselves the middle (sigmoid) branch applies: Q25 <= sim <= Q75.
    at_q25 = 0.5 + 0.5 / (1.0 + math.exp(LAM * (Q25 - Q50)))
    at_q75 = 0.5 + 0.5 / (1.0 + math.exp(LAM * (Q75 - Q50)))
    assert w(Q25) == pytest.approx(at_q25, abs=tol) and at_q25 < 1.0
    assert w(Q75) == pytest.approx(at_q75, abs=tol) and at_q75 > 0.5
    for x in [Q25 + 1e-3, 0.3, 0.4, 0.49, 0.51, 0.6, 0.7, Q75 - 1e-3]:
        assert w(x) == pytest.approx(eq6(x, Q25, Q50, Q75), abs=tol)


def test_weight_matches_eq6_on_a_grid_and_is_monotone():
    sims = torch.linspace(-1.0, 1.0, 4001, dtype=torch.float64)
    for q25, q50, q75, lam in [(Q25, Q50, Q75, LAM), (-0.1, 0.2, 0.3, LAM), (0.1, 0.15, 0.9, 3.0)]:
        got = rdrw_weight(sims, q25, q50, q75, lam=lam)
        expected = torch.tensor([eq6(s, q25, q50, q75, lam) for s in sims.tolist()], dtype=torch.float64)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        assert (got[1:] <= got[:-1]).all()  # non-increasing in sim, jumps at Q25 and Q75 included
        assert got.max() <= 1.0 and got.min() >= 0.5
    # Default lambda is the paper's 12.
    torch.testing.assert_close(rdrw_weight(sims, Q25, Q50, Q75), rdrw_weight(sims, Q25, Q50, Q75, lam=12.0))


def test_weight_keeps_shape():
    sims = torch.rand(3, 5)
    assert rdrw_weight(sims, 0.2, 0.5, 0.8).shape == (3, 5)


def quartiles_of(values) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return tuple(float(q) for q in np.quantile(arr, [0.25, 0.5, 0.75]))


def assert_quartiles(tracker: QuantileTracker, values) -> None:
    got = tracker.quartiles()
    t = torch.tensor(np.asarray(values), dtype=torch.float32)
    torch_q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75])).tolist()
    assert got == pytest.approx(quartiles_of(values), abs=1e-6)
    assert got == pytest.approx(torch_q, abs=1e-6)


@pytest.mark.parametrize(("warmup", "window"), [(10, 10), (10, 16), (6, 6)])
def test_tracker_warmup_then_sliding_window(warmup, window):
    rng = np.random.default_rng(warmup + window)
    stream = rng.uniform(-0.2, 0.9, 200).astype(np.float32)
    tracker = QuantileTracker(warmup=warmup, window=window)
    probe = torch.tensor([[-0.5, 0.0, 0.3], [0.5, 0.7, 1.0]])
    seen = 0

    def feed(n):
        nonlocal seen
        chunk = torch.from_numpy(stream[seen:seen + n].copy())
        tracker.update(chunk.reshape(-1, 1) if n % 2 == 0 else chunk)  # any shape is flattened
        seen += n

    # Warm-up: weights are all exactly 1, whatever the similarities.
    feed(3)
    assert not tracker.ready
    assert torch.equal(tracker.weights(probe), torch.ones_like(probe))
    feed(warmup - 4)
    assert not tracker.ready
    assert torch.equal(tracker.weights(probe), torch.ones_like(probe))
    feed(1)  # exactly `warmup` pairs seen
    assert tracker.ready and tracker.seen == warmup
    assert_quartiles(tracker, stream[:warmup])  # the baseline distribution: the first N pairs
    torch.testing.assert_close(tracker.weights(probe), rdrw_weight(probe, *quartiles_of(stream[:warmup])),
                               rtol=0, atol=1e-6)

    # Then the quartiles follow the most recent `window` similarities.
    for n in [3, 5, 1, window - 1, 2 * window + 3, 7]:  # includes an update bigger than the window
        feed(n)
        recent = stream[max(0, seen - window):seen]
        assert tracker.seen == seen
        assert_quartiles(tracker, recent)
        torch.testing.assert_close(tracker.weights(probe), rdrw_weight(probe, *quartiles_of(recent)),
                                   rtol=0, atol=1e-6)


def test_tracker_big_first_update():
    """A first update larger than both warm-up and window: ready at once, quartiles of its last `window` values."""
    values = torch.linspace(0.0, 1.0, 50)[torch.randperm(50, generator=torch.Generator().manual_seed(0))]
    tracker = QuantileTracker(warmup=8, window=12)
    tracker.update(values)
    assert tracker.ready
    assert_quartiles(tracker, values[-12:].numpy())


def test_tracker_weights_carry_no_gradient():
    tracker = QuantileTracker(warmup=4, window=4)
    tracker.update(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    sims = torch.tensor([0.0, 0.25, 0.9], requires_grad=True)
    w = tracker.weights(sims)
    assert not w.requires_grad


def test_tracker_state_dict_round_trip():
    rng = np.random.default_rng(0)
    stream = torch.from_numpy(rng.uniform(-1, 1, 100).astype(np.float32))
    a = QuantileTracker(warmup=9, window=13)
    a.update(stream[:20])
    state = a.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf)
    a.update(stream[20:21])  # the saved state is a copy, not a view of the live buffer
    b = QuantileTracker(warmup=1, window=1)
    b.load_state_dict(loaded)
    assert (b.warmup, b.window, b.seen) == (9, 13, 20)
    assert torch.equal(loaded["buffer"], _replay(stream[:20], 9, 13).buffer)
    a2 = QuantileTracker()
    a2.load_state_dict(state)
    for tracker in (a2, b):
        assert tracker.quartiles() == _replay(stream[:20], 9, 13).quartiles()
    # Identical behaviour from here on: same updates give the same quartiles and weights as a run never saved.
    ref = _replay(stream[:20], 9, 13)
    probe = torch.linspace(-1, 1, 21)
    for lo, hi in [(20, 23), (23, 24), (24, 50), (50, 100)]:
        for tracker in (ref, b):
            tracker.update(stream[lo:hi])
        assert ref.quartiles() == b.quartiles()
        assert torch.equal(ref.weights(probe), b.weights(probe))
        assert ref.seen == b.seen

    # A restored tracker still in warm-up stays in warm-up.
    c = QuantileTracker(warmup=30, window=30)
    c.update(stream[:5])
    d = QuantileTracker()
    d.load_state_dict(c.state_dict())
    assert not d.ready and torch.equal(d.weights(probe), torch.ones_like(probe))
    d.update(stream[5:30])
    assert d.ready
    assert_quartiles(d, stream[:30].numpy())


def _replay(values: torch.Tensor, warmup: int, window: int) -> QuantileTracker:
    t = QuantileTracker(warmup=warmup, window=window)
    t.update(values)
    return t


def test_tracker_rejects_bad_sizes():
    with pytest.raises(ValueError):
        QuantileTracker(warmup=0)
    with pytest.raises(ValueError):
        QuantileTracker(window=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_eos_similarity_is_a_loop_of_cosines(dtype):
    g = torch.Generator().manual_seed(0)
    s, n, d = 3, 5, 16
    h_w = torch.randn(s, d, generator=g).to(dtype)
    h_l = torch.randn(s, n, d, generator=g).to(dtype)
    h_l[0, 0] = h_w[0] * 4.0  # same direction (exact in any dtype): 1
    h_l[0, 1] = -h_w[0]  # opposite: -1
    sims = eos_similarity(h_w, h_l)
    assert sims.shape == (s, n) and sims.dtype == torch.float32
    for i in range(s):
        a = [float(x) for x in h_w[i].tolist()]
        for j in range(n):
            b = [float(x) for x in h_l[i, j].tolist()]
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            cos = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
            assert sims[i, j].item() == pytest.approx(cos, abs=1e-6)
    assert sims[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert sims[0, 1].item() == pytest.approx(-1.0, abs=1e-6)


def test_sid_vectors_sum_each_levels_centroid():
    from trainer.rdrw import SidVectors

    rng = np.random.default_rng(0)
    cents = [rng.standard_normal((k, 5)).astype(np.float32) for k in (4, 3, 2)]
    offsets = (10, 14, 17)  # level l, code c <-> token id offsets[l] + c
    vec = SidVectors(cents, offsets)
    codes = np.array([[0, 0, 0], [3, 2, 1], [1, 0, 1]])
    got = vec(torch.as_tensor(codes + np.array(offsets)))
    want = np.stack([sum(cents[lvl][c[lvl]] for lvl in range(3)) for c in codes])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    with pytest.raises(ValueError, match="2 centroid levels for 3"):
        SidVectors(cents[:2], offsets)
