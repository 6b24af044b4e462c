"""Unit tests of modelmon.alerts.detectors: the CUSUM's Markov chain against a dense linear solve and
Monte Carlo, the bank's false-alarm rate on clean streams, the exact Poisson interval against scipy and
published tables, and the robust z-score against numpy."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import orjson
import pytest
from scipy.stats import entropy, poisson

from modelmon.alerts.detectors import (
    BernoulliCusum,
    CusumBank,
    cusum_arl,
    cusum_threshold,
    expected_delay_labels,
    kl_bernoulli,
    lorden_delay_bound,
    poisson_interval,
    robust_z,
)

# --------------------------------------------------------------------------------------------------------
# Oracles


def lattice(det: BernoulliCusum) -> tuple[int, int, int]:
    d = det.to_dict()
    return d["inc_wrong"], d["inc_right"], d["states"]


def dense_arl(inc_wrong: int, inc_right: int, states: int, p: float, batch: int = 1) -> float:
    """Zero-state ARL in labels by a dense solve of (I - Q) L = 1, Q built label by label (brute force)."""
    e = 1.0 - p
    q = np.zeros((states, states))
    for i in range(states):
        for w in range(batch + 1):
            prob = math.comb(batch, w) * e**w * (1 - e) ** (batch - w)
            j = i + w * inc_wrong + (batch - w) * inc_right
            if j < states:
                q[i, max(j, 0)] += prob
    return batch * float(np.linalg.solve(np.eye(states) - q, np.ones(states))[0])


def simulate_run_lengths(
    inc_wrong: int, inc_right: int, states: int, p: float, streams: int, rng: np.random.Generator
) -> np.ndarray:
    """Labels until the first alarm of the per-label lattice CUSUM, vectorised over streams."""
    s = np.zeros(streams, dtype=np.int64)
    rl = np.zeros(streams, dtype=np.int64)
    active = np.arange(streams)
    t = 0
    while active.size:
        t += 1
        wrong = rng.random(active.size) < 1.0 - p
        s[active] = np.maximum(0, s[active] + np.where(wrong, inc_wrong, inc_right))
        done = s[active] >= states
        rl[active[done]] = t
        active = active[~done]
    return rl


def simulate_bank(
    bank: CusumBank, p: float, sizes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Replica of CusumBank.update (pending labels included) over many streams at once.

    ``sizes``: (streams, windows) labels per window. Returns (alarm episodes per stream, alarm window of
    the first episode or -1); an episode starts when the bank goes from no alarm to alarm."""
    iw, ir, hs = (np.array(x) for x in zip(*(lattice(d) for d in bank.detectors), strict=True))
    batch = bank.batch or 1
    streams, windows = sizes.shape
    s = np.zeros((streams, len(hs)), dtype=np.int64)
    pn = np.zeros(streams, dtype=np.int64)
    pw = np.zeros(streams, dtype=np.int64)
    alarm = np.zeros(streams, dtype=bool)
    episodes = np.zeros(streams, dtype=np.int64)
    first = np.full(streams, -1)
    for t in range(windows):
        n = sizes[:, t]
        pn += n
        pw += rng.binomial(n, 1.0 - p)
        go = pn >= batch
        s[go] = np.clip(s[go] + pw[go, None] * iw + (pn[go] - pw[go])[:, None] * ir, 0, hs)
        pn[go] = 0
        pw[go] = 0
        now = (s >= hs).any(axis=1)
        new = now & ~alarm
        episodes += new
        first[new & (first < 0)] = t
        alarm = now
    return episodes, first


# --------------------------------------------------------------------------------------------------------
# Threshold and Markov chain


@pytest.mark.parametrize(
    ("p0", "p1", "arl0", "batch"),
    [
        (0.9, 0.8, 300, None),
        (0.7, 0.5, 150, None),
        (0.6, 0.7, 200, None),
        (0.9, 0.7, 400, 5),
        (0.8, 0.6, 500, 10),
        (0.6, 0.7, 300, 4),
        (0.9, 0.8, 3000, 100),
    ],
)
def test_chain_matches_dense_solve(p0, p1, arl0, batch):
    det = BernoulliCusum(p0, p1, arl0, batch=batch)
    iw, ir, states = lattice(det)
    b = batch or 1
    want = dense_arl(iw, ir, states, p0, b)
    assert want >= arl0  # the threshold reaches the target ...
    assert dense_arl(iw, ir, states - 1, p0, b) < arl0  # ... and is the smallest lattice value that does
    assert cusum_arl(p0, p1, det.h, batch=batch) == pytest.approx(want, rel=1e-6)
    for pt in (p1, (p0 + p1) / 2):
        assert cusum_arl(p0, p1, det.h, p_true=pt, batch=batch) == pytest.approx(
            dense_arl(iw, ir, states, pt, b), rel=1e-6
        )


@pytest.mark.parametrize(("p0", "p1", "arl0"), [(0.9, 0.8, 2000), (0.95, 0.9, 4000), (0.7, 0.5, 1000)])
def test_in_control_arl_monte_carlo(p0, p1, arl0):
    det = BernoulliCusum(p0, p1, arl0)
    iw, ir, states = lattice(det)
    rl = simulate_run_lengths(iw, ir, states, p0, 2500, np.random.default_rng(1))
    chain = cusum_arl(p0, p1, det.h)
    assert arl0 <= chain <= 1.05 * arl0
    assert rl.mean() == pytest.approx(chain, rel=0.10)  # ~5 standard errors


def test_out_of_control_delay_monte_carlo():
    h = cusum_threshold(0.9, 0.8, 432_000)
    det = BernoulliCusum(0.9, 0.8, 432_000)
    iw, ir, states = lattice(det)
    rl = simulate_run_lengths(iw, ir, states, 0.8, 4000, np.random.default_rng(2))
    delay = expected_delay_labels(0.9, 0.8, 0.8, h)
    assert rl.mean() == pytest.approx(delay, rel=0.03)
    # a real CUSUM, not a crude bound: close to (below, at this ARL0) Lorden's asymptotic bound
    assert 0.5 < delay / lorden_delay_bound(0.9, 0.8, 432_000) < 1.0


def test_threshold_properties_and_cache():
    hs = [cusum_threshold(0.9, 0.85, a) for a in (1e3, 1e4, 1e5, 1e6)]
    assert hs == sorted(hs) and hs[0] > 0
    # h grows like log(ARL0): one decade adds about log(10)
    assert all(1.5 < b - a < 2.6 for a, b in itertools.pairwise(hs))
    # batched checks need a lower threshold for the same false-alarm rate
    assert cusum_threshold(0.9, 0.85, 1e5, batch=100) < cusum_threshold(0.9, 0.85, 1e5)
    t0 = time.perf_counter()
    cusum_threshold(0.9123, 0.8623, 431_999.0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(100):
        cusum_threshold(0.9123, 0.8623, 432_000.0)  # rounds to the same cache entry
    assert (time.perf_counter() - t0) / 100 < 1e-3
    assert first < 1.0  # typically ~10 ms
    with pytest.raises(ValueError):
        cusum_threshold(1.0, 0.9, 1000)
    with pytest.raises(ValueError):
        cusum_threshold(0.9, 0.9, 1000)
    with pytest.raises(ValueError):
        cusum_threshold(0.9, 0.8, 0.5)
    with pytest.raises(ValueError):
        cusum_threshold(0.9, 0.8, 1000, batch=0)


def test_increments_are_the_log_likelihood_ratios():
    det = BernoulliCusum(0.9, 0.85, 1e5)
    a, b = det.increments
    assert b / a == pytest.approx(math.log(0.85 / 0.9) / math.log(0.15 / 0.1), rel=1e-3)
    assert kl_bernoulli(0.85, 0.9) == pytest.approx(entropy([0.85, 0.15], [0.9, 0.1]), rel=1e-12)
    assert lorden_delay_bound(0.9, 0.85, 144_000) == pytest.approx(math.log(144_000) / 0.012228, rel=1e-3)


# --------------------------------------------------------------------------------------------------------
# Bank


def test_bank_false_alarms_per_label_calibration():
    """Calibrated per label (the default), batched windows raise fewer false alarms than the target."""
    arl0 = 20_000
    bank = CusumBank(0.9, (0.05, 0.10, 0.20), arl0)
    sizes = np.random.default_rng(3).poisson(100, size=(400, 1000))
    episodes, _ = simulate_bank(bank, 0.9, sizes, np.random.default_rng(4))
    assert episodes.sum() / sizes.sum() <= 1.0 / arl0


@pytest.mark.parametrize("traffic", ["fixed", "poisson", "sparse"])
def test_bank_false_alarms_batch_calibration(traffic):
    """Calibrated for 100-label windows: at most one false alarm per arl0 labels with 100 labels per
    window, with Poisson traffic, and with sparse windows (held back until 100 labels are pending)."""
    arl0 = 20_000
    bank = CusumBank(0.9, (0.05, 0.10, 0.20), arl0, batch=100)
    rng = np.random.default_rng(5)
    shape = (400, 800)
    sizes = {
        "fixed": np.full(shape, 100),
        "poisson": rng.poisson(100, shape),
        "sparse": rng.poisson(20, shape),
    }[traffic]
    episodes, _ = simulate_bank(bank, 0.9, sizes, rng)
    far = episodes.sum() / sizes.sum()
    assert far <= 1.0 / arl0
    assert far >= 0.2 / arl0  # ... but not wildly conservative (the union bound costs ~2x)


def test_single_design_batch_arl_monte_carlo():
    det = BernoulliCusum(0.9, 0.85, 20_000, batch=100)
    chain = cusum_arl(0.9, 0.85, det.h, batch=100)
    assert 20_000 <= chain <= 1.15 * 20_000
    bank = CusumBank.__new__(CusumBank)
    bank.detectors, bank.batch = [det], 100
    sizes = np.full((3000, 1500), 100)
    _, first = simulate_bank(bank, 0.9, sizes, np.random.default_rng(6))
    done = first >= 0
    # survival is ~exponential: estimate the mean from the censored sample (exposure / events)
    exposure = ((first[done] + 1).sum() + (~done).sum() * sizes.shape[1]) * 100
    assert exposure / done.sum() == pytest.approx(chain, rel=0.08)
    delay = expected_delay_labels(0.9, 0.85, 0.8, det.h, batch=100)
    _, first = simulate_bank(bank, 0.8, np.full((4000, 100), 100), np.random.default_rng(7))
    assert (first >= 0).all()
    assert (first.mean() + 1) * 100 == pytest.approx(delay, rel=0.03)


def test_bank_detects_drops_quickly():
    """The benchmark's setting: 100 labels per window, one false alarm per day of 1440 windows."""
    bank = CusumBank(0.9, (0.05, 0.10, 0.20), 144_000, batch=100)
    rng = np.random.default_rng(8)
    for p1, max_ratio in ((0.85, 1.0), (0.80, 1.1), (0.70, 1.5)):
        _, first = simulate_bank(bank, p1, np.full((3000, 60), 100), rng)
        assert (first >= 0).all()
        windows = first.mean() + 1
        assert windows <= max_ratio * lorden_delay_bound(0.9, p1, 144_000) / 100


def test_bank_semantics_and_roundtrip():
    bank = CusumBank(0.9, (0.05, 0.2), 10_000)
    assert bank.get() == 0.0 and not bank.alarm and bank.clear
    bank.update(100, 10)
    assert bank.get() == 0.0  # in control: stays at zero
    bank.update(100, 40)
    assert bank.alarm and bank.get() == 1.0 and not bank.clear
    stat = [d.statistic for d in bank.detectors]
    assert stat == pytest.approx(bank.thresholds)  # clamped at h
    restored = CusumBank.from_dict(orjson.loads(orjson.dumps(bank.to_dict())))
    assert restored == bank and restored.get() == 1.0
    for _ in range(30):
        bank.update(100, 10)
    assert bank.clear and not bank.alarm
    # the per-design statistic follows S = clamp(S + wrong * a + right * b, 0, h)
    det = BernoulliCusum(0.9, 0.8, 10_000)
    a, b = det.increments
    s = 0.0
    rng = np.random.default_rng(9)
    for n in rng.integers(0, 50, 200):
        w = int(rng.binomial(n, 0.13))
        det.update(int(n), w)
        s = min(det.h, max(0.0, s + w * a + (n - w) * b))
        assert det.statistic == pytest.approx(s, abs=1e-9)
    with pytest.raises(ValueError):
        det.update(5, 6)
    with pytest.raises(ValueError):
        CusumBank(0.1, (0.2,), 1000)


def test_bank_batch_holds_labels_back():
    bank = CusumBank(0.9, (0.2,), 10_000, batch=100)
    bank.update(60, 30)
    assert bank.detectors[0].pending == 60 and bank.get() == 0.0
    state = orjson.loads(orjson.dumps(bank.to_dict()))
    bank.update(60, 30)  # 120 labels, 60 wrong: applied together
    assert bank.detectors[0].pending == 0 and bank.alarm
    restored = CusumBank.from_dict(state).update(60, 30)
    assert restored == bank


# --------------------------------------------------------------------------------------------------------
# Poisson interval and robust z


@pytest.mark.parametrize(
    ("k", "lo", "hi"),
    # Garwood 95 % limits as tabulated (e.g. Ulm 1990, Table 1; Sahai & Khurshid 1993)
    [(0, 0.0, 3.689), (1, 0.0253, 5.572), (2, 0.2422, 7.225), (5, 1.6235, 11.668), (10, 4.7954, 18.390)],
)
def test_poisson_interval_table(k, lo, hi):
    got = poisson_interval(k, 0.95)
    assert got[0] == pytest.approx(lo, abs=6e-4)
    assert got[1] == pytest.approx(hi, abs=6e-4)


@pytest.mark.parametrize("conf", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("k", [0, 1, 3, 17, 250])
def test_poisson_interval_defining_equations(k, conf):
    lo, hi = poisson_interval(k, conf)
    a = (1 - conf) / 2
    assert poisson.cdf(k, hi) == pytest.approx(a, rel=1e-6)
    if k:
        assert poisson.sf(k - 1, lo) == pytest.approx(a, rel=1e-6)
    else:
        assert lo == 0.0
    with pytest.raises(ValueError):
        poisson_interval(-1, conf)


def test_robust_z():
    rng = np.random.default_rng(10)
    hist = rng.normal(5.0, 2.0, 101).tolist()
    med = np.median(hist)
    mad = np.median(np.abs(np.array(hist) - med))
    assert robust_z(hist, 9.0) == pytest.approx((9.0 - med) / (1.4826 * mad), rel=1e-12)
    # an outlier in the history barely moves it
    assert robust_z([*hist[:-1], 1e9], 9.0) == pytest.approx(robust_z(hist, 9.0), rel=0.05)
    assert robust_z([1.0, 2.0, 3.0, 4.0], 10.0) is None
    assert robust_z([1.0, 2.0, 3.0, 4.0, float("nan")], 10.0) is None
    flat = robust_z([3.0] * 10, 3.0 + 1e-6)
    assert flat is not None and math.isfinite(flat) and flat > 100
    assert robust_z([0.0] * 10, 0.0) == 0.0
    assert robust_z([0.0] * 10, 1.0) > 1e9
