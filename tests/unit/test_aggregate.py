"""Unit tests of the mergeable accumulators (modelmon.aggregate), each checked against an independent oracle
(sklearn, numpy, math.fsum) or against accumulating the same events in one accumulator."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import orjson
import pytest
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
)

from modelmon.aggregate import (
    HISTOGRAM_SPECS,
    OTHER,
    ClassificationAccumulator,
    ConfusionCounts,
    LogHistogram,
    RegressionAccumulator,
    WindowAccumulator,
    canonical_label,
    exact_sum_from_json,
    exact_sum_to_json,
    score_terms,
)

TOL = {"rel": 1e-9, "abs": 1e-12}


def roundtrip(obj):
    """to_dict -> orjson bytes -> from_dict, as a Faust table / Kafka topic would do."""
    return type(obj).from_dict(orjson.loads(orjson.dumps(obj.to_dict())))


# ------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cat", "cat"),
        ("1", "1"),
        (1, "1"),
        (1.0, "1"),
        (-3, "-3"),
        (0.5, "0.5"),
        (True, "true"),
        (False, "false"),
        ("true", "true"),
        ("True", "True"),
        (None, "null"),
        (np.int64(7), "7"),
        (np.float64(2.0), "2"),
        (np.bool_(True), "true"),
        (np.str_("x"), "x"),
        (float("nan"), "nan"),
    ],
)
def test_canonical_label(value, expected):
    assert canonical_label(value) == expected
    assert type(canonical_label(value)) is str


@pytest.mark.parametrize("value", [[1], {"a": 1}, b"x", (1, 2)])
def test_canonical_label_rejects_containers(value):
    with pytest.raises(ValueError):
        canonical_label(value)


# --------------------------------------------------------------------------------------- exact sums
def test_exact_sums_are_correctly_rounded_and_order_free():
    rng = np.random.default_rng(1)
    xs = list(rng.normal(0, 1, 500) * 10.0 ** rng.integers(-300, 300, 500))
    xs += [5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308, 0.0]
    from modelmon.aggregate import _exact, _exact_value

    total = sum(_exact(x) for x in xs)
    assert _exact_value(total) == math.fsum(xs)
    random.Random(2).shuffle(xs)
    assert sum(_exact(x) for x in xs) == total
    for x in xs[:50]:
        v = _exact(x)
        assert _exact_value(v) == x
        assert exact_sum_from_json(exact_sum_to_json(v)) == v
    assert exact_sum_to_json(0) == "0"
    assert exact_sum_to_json(_exact(1.5)) == "3p-1"
    assert exact_sum_to_json(_exact(-1.5)) == "-3p-1"


# ---------------------------------------------------------------------------------------- histogram
def test_bucket_layout_brackets_every_value():
    rng = np.random.default_rng(3)
    for spec in HISTOGRAM_SPECS.values():
        assert spec.ratio == pytest.approx(2 ** (1 / 16))
        xs = np.exp(rng.uniform(math.log(spec.lo / 10), math.log(spec.hi * 10), 5000))
        xs = [*xs.tolist(), *spec.edges, 0.0, spec.lo, spec.hi, np.nextafter(spec.hi, 0)]
        for x in xs:
            i = spec.index(x)
            lo, hi = spec.bounds(i)
            assert lo <= x < hi
            if 0 < i <= spec.nb:
                assert hi / lo <= spec.ratio * (1 + 1e-12)


def _check_quantile(h: LogHistogram, xs: np.ndarray, q: float) -> None:
    spec = h.spec
    r = spec.ratio
    est = h.quantile(q)
    true = float(np.quantile(xs, q))
    s = np.sort(xs)
    n = len(s)
    j = math.floor((n - 1) * q)
    a, b = s[j], s[min(j + 1, n - 1)]
    if a >= spec.lo and b < spec.hi:
        assert true / r * (1 - 1e-12) <= est <= true * r * (1 + 1e-12), (q, true, est)
    elif b < spec.hi:
        assert abs(est - true) <= (r - 1) * true + spec.lo + 1e-12, (q, true, est)
    else:
        assert min(a, spec.hi) * (1 - 1e-12) <= est <= s[-1], (q, true, est)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 5000])
@pytest.mark.parametrize("dist", ["lognormal", "exponential", "uniform", "zeros_mix", "tiny", "constant"])
def test_histogram_quantiles_within_documented_bound(seed, n, dist):
    rng = np.random.default_rng(seed)
    xs = {
        "lognormal": lambda: rng.lognormal(3.0, 1.2, n),
        "exponential": lambda: rng.exponential(40.0, n),
        "uniform": lambda: rng.uniform(0.5, 5.0, n),
        "zeros_mix": lambda: np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(0, 2, n)),
        "tiny": lambda: rng.uniform(0.0, 0.05, n),  # straddles lo = 0.01
        "constant": lambda: np.full(n, 12.345),
    }[dist]()
    h = LogHistogram("latency_ms")
    for x in xs.tolist():
        h.update(x)
    assert h.n == n
    assert h.min == xs.min() and h.max == xs.max()
    assert h.sum == math.fsum(xs.tolist())
    assert h.mean == pytest.approx(float(np.mean(xs)), **TOL)
    for q in [*np.linspace(0, 1, 41).tolist(), 0.95, 0.99, 0.999]:
        _check_quantile(h, xs, q)
    if dist == "constant":
        assert h.quantile(0.5) == 12.345


def test_histogram_overflow_and_weights():
    h = LogHistogram("latency_ms")
    xs = [5e5, 2e6, 3e7, 1.0]
    for x in xs:
        h.update(x)
    h.update(2.0, n=3)
    full = np.array([*xs, 2.0, 2.0, 2.0])
    assert h.n == 7 and h.max == 3e7 and h.min == 1.0
    assert h.sum == math.fsum(full.tolist())
    for q in np.linspace(0, 1, 13):
        _check_quantile(h, full, float(q))
    assert h.quantile(1.0) == 3e7 and h.quantile(0.0) == 1.0


def test_histogram_empty_and_invalid():
    h = LogHistogram("label_delay_s")
    assert h.quantile(0.5) is None and h.mean is None and h.n == 0
    assert h.to_dict()["buckets"] == {}
    for bad in [-1.0, float("nan"), float("inf"), "3", True]:
        with pytest.raises(ValueError):
            h.update(bad)
    assert h.n == 0 and h.counts == {}
    with pytest.raises(ValueError):
        h.quantile(1.5)
    with pytest.raises(ValueError):
        LogHistogram("nope")
    with pytest.raises(ValueError):
        h.merge(LogHistogram("latency_ms"))


def test_histogram_merge_and_roundtrip_exact():
    rng = np.random.default_rng(11)
    xs = rng.lognormal(2, 2, 3000).tolist()
    whole = LogHistogram("latency_ms")
    for x in xs:
        whole.update(x)
    parts = [LogHistogram("latency_ms") for _ in range(7)]
    for x in xs:
        parts[int(rng.integers(7))].update(x)
    order = rng.permutation(7)
    merged = LogHistogram("latency_ms")
    for i in order:
        merged.merge(roundtrip(parts[i]))
    assert merged.to_dict() == whole.to_dict()
    assert roundtrip(whole).to_dict() == whole.to_dict()
    assert merged.quantiles([0.5, 0.99]) == whole.quantiles([0.5, 0.99])


def test_histogram_negative_zero_is_zero():
    a, b = LogHistogram("label_delay_s"), LogHistogram("label_delay_s")
    a.update(0.0)
    a.update(-0.0)
    b.update(-0.0)
    b.update(0.0)
    assert a.to_dict() == b.to_dict()
    assert math.copysign(1, a.min) == 1.0


# ----------------------------------------------------------------------------------------- confusion
def _oracle_cells(pairs):
    return Counter((canonical_label(t), canonical_label(p)) for t, p in pairs)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_confusion_counts_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    pool = ["a", "b", "c", "d", "e"]
    n = int(rng.integers(1, 400))
    y = rng.choice(pool[:4], n)
    p = np.where(rng.random(n) < 0.6, y, rng.choice(pool, n))  # "e" is predicted, never true
    cc = ConfusionCounts()
    for t, q in zip(y.tolist(), p.tolist(), strict=True):
        cc.update(t, q)
    labels = cc.labels()
    assert labels == sorted(set(y.tolist()) | set(p.tolist()))
    expected = confusion_matrix(y, p, labels=labels)
    assert cc.matrix(labels) == expected.tolist()
    assert cc.n == n and cc.n_correct == int((y == p).sum())


def test_confusion_bool_and_int_labels():
    cc = ConfusionCounts()
    pairs = [(True, True), (True, False), (1, 1), ("1", 1), (1.0, "1"), (False, False), (0, False)]
    for t, p in pairs:
        cc.update(t, p)
    assert cc.labels() == ["0", "1", "false", "true"]
    assert cc.count(1, 1) == 3  # 1, "1" and 1.0 are one class
    assert cc.count(True, False) == 1
    assert cc.count(0, False) == 1  # 0 and False are different classes
    assert cc.n_correct == 5


def test_confusion_revert_undoes_update():
    rng = np.random.default_rng(5)
    cc = ConfusionCounts()
    for _ in range(300):
        cc.update(str(rng.integers(6)), str(rng.integers(6)))
    before = cc.to_dict()
    cc.update("new-label", "5")
    cc.update("2", "2", n=3)
    cc.revert("2", "2", n=3)
    cc.revert("new-label", "5")
    assert cc.to_dict() == before
    assert "new-label" not in cc.labels()
    with pytest.raises(ValueError):
        cc.revert("never", "seen")
    assert cc.to_dict() == before


def test_class_cap_bounds_memory_and_conserves_counts():
    rng = np.random.default_rng(7)
    n = 30_000
    cap = 256
    y = [f"id-{v}" for v in rng.integers(0, 10_000, n).tolist()]
    p = [
        t if r < 0.5 else f"id-{v}"
        for t, r, v in zip(y, rng.random(n), rng.integers(0, 10_000, n).tolist(), strict=True)
    ]
    cc = ConfusionCounts(cap)
    for t, q in zip(y, p, strict=True):
        cc.update(t, q)
    labels = cc.labels()
    assert len(labels) <= cap + 1 and labels[-1] == OTHER
    assert len(cc._labels) <= cap + 1
    assert len(cc._m) <= cap + 1 and all(len(r) <= cap + 1 for r in cc._m.values())
    # oracle: the cap smallest labels are kept, everything else is folded
    kept = set(sorted(set(y) | set(p))[:cap])
    assert set(labels[:-1]) == kept
    fold = Counter((t if t in kept else OTHER, q if q in kept else OTHER) for t, q in zip(y, p, strict=True))
    got = {(t, q): c for t, r in cc.rows().items() for q, c in r.items()}
    assert got == dict(fold)
    assert sum(got.values()) == cc.n == n
    assert cc.n_correct == sum(t == q for t, q in zip(y, p, strict=True))
    # the same state whatever the split and the merge order
    parts = [ConfusionCounts(cap) for _ in range(5)]
    for i, (t, q) in enumerate(zip(y, p, strict=True)):
        parts[(i * 7919) % 5].update(t, q)
    merged = ConfusionCounts(cap)
    for i in [3, 0, 4, 1, 2]:
        merged.merge(roundtrip(parts[i]))
    assert merged.to_dict() == cc.to_dict()


def test_class_cap_eviction_keeps_smallest_regardless_of_order():
    labels = [f"L{i:03d}" for i in range(40)]
    for seed in range(5):
        order = labels[:]
        random.Random(seed).shuffle(order)
        cc = ConfusionCounts(cap=8)
        for lab in order:
            cc.update(lab, lab)
            cc.update(lab, "L000")
        assert cc.labels() == [*labels[:8], OTHER]
        assert cc.count("L003", "L003") == 1
        assert cc.count(OTHER, OTHER) == 32
        assert cc.count(OTHER, "L000") == 32
        assert cc.n == 80 and cc.n_correct == 41


def test_confusion_merge_rejects_different_caps():
    with pytest.raises(ValueError):
        ConfusionCounts(4).merge(ConfusionCounts(5))


# ------------------------------------------------------------------------------------ classification
def _dirichlet_scores(rng, classes, n, boost=None):
    probs = rng.dirichlet(np.ones(len(classes)), n)
    if boost is not None:
        probs[np.arange(n), boost] += 1.0
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_log_loss_and_brier_match_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    classes = [f"c{i}" for i in range(k)]  # sorted order == sklearn's column order
    n = int(rng.integers(5, 300))
    yi = rng.integers(0, k, n)
    y = np.array(classes)[yi]
    probs = _dirichlet_scores(rng, classes, n, boost=np.where(rng.random(n) < 0.7, yi, rng.integers(0, k, n)))
    probs[0] = 0.0
    probs[0, (yi[0] + 1) % k] = 1.0  # a confidently wrong sample: clipped to eps
    if n > 1:
        probs[1] = 0.0
        probs[1, yi[1]] = 1.0  # a perfect one: clipped to 1 - eps
    acc = ClassificationAccumulator()
    for t, row in zip(y.tolist(), probs.tolist(), strict=True):
        scores = dict(zip(classes, row, strict=True))
        acc.update(t, max(scores, key=scores.get), scores)
    assert acc.n_scored == n
    assert acc.log_loss_sum / n == pytest.approx(log_loss(y, probs, labels=classes), **TOL)
    expected_brier = brier_score_loss(y, probs, labels=classes, scale_by_half=False)
    assert acc.brier_sum / n == pytest.approx(expected_brier, **TOL)
    if k == 2:  # the usual binary Brier score is half of ours
        binary = brier_score_loss(y, probs[:, 1], pos_label="c1")
        assert acc.brier_sum / n / 2 == pytest.approx(binary, **TOL)


def test_binary_single_score_means_positive_class_probability():
    rng = np.random.default_rng(4)
    n = 200
    y = rng.random(n) < 0.4
    p = np.clip(np.where(y, rng.beta(5, 2, n), rng.beta(2, 5, n)), 0, 1)
    acc = ClassificationAccumulator()
    for t, pp in zip(y.tolist(), p.tolist(), strict=True):
        acc.update(t, pp >= 0.5, {True: pp})  # only P(true) given
    assert acc.log_loss_sum / n == pytest.approx(log_loss(y, p, labels=[False, True]), **TOL)
    assert acc.brier_sum / n / 2 == pytest.approx(brier_score_loss(y, p, pos_label=True), **TOL)


def test_unnormalised_and_missing_scores_numpy_oracle():
    eps = np.finfo(np.float64).eps
    cases = [
        ("a", {"a": 2.0, "b": 6.0}),  # renormalised: p(a) = 0.25
        ("c", {"a": 0.5, "b": 0.5}),  # true label missing: p = 0 -> clipped to eps, Brier adds 1
        ("b", {"a": 1, "b": 3, "c": 0}),  # ints accepted
        ("1", {1: 0.2, "1": 0.3, 2: 0.5}),  # keys canonicalised, duplicates added up
    ]
    for y, scores in cases:
        keys = [canonical_label(k) for k in scores]
        agg = {}
        for key, v in zip(keys, scores.values(), strict=True):
            agg[key] = agg.get(key, 0.0) + float(v)
        lab = np.array(list(agg))
        p = np.array(list(agg.values())) / sum(agg.values())
        onehot = (lab == y).astype(float)
        p_true = float(p[lab == y][0]) if y in agg else 0.0
        exp_ll = -math.log(min(max(p_true, eps), 1 - eps))
        exp_brier = float(np.sum((p - onehot) ** 2)) + (0.0 if y in agg else 1.0)
        ll, br = score_terms(y, scores)
        assert ll == pytest.approx(exp_ll, **TOL)
        assert br == pytest.approx(exp_brier, **TOL)


@pytest.mark.parametrize(
    "scores",
    [
        {"a": -0.1, "b": 1.1},
        {"a": float("nan"), "b": 0.5},
        {"a": 0.0, "b": 0.0},
        {"a": 1.5},
        {"a": "x", "b": 1},
    ],
)
def test_invalid_scores_rejected_without_side_effects(scores):
    acc = ClassificationAccumulator()
    acc.update("a", "b", {"a": 0.4, "b": 0.6})
    before = acc.to_dict()
    with pytest.raises(ValueError):
        acc.update("a", "a", scores)
    assert acc.to_dict() == before


def test_classification_revert_undoes_update():
    rng = np.random.default_rng(9)
    acc = ClassificationAccumulator()
    classes = ["x", "y", "z"]
    for row in _dirichlet_scores(rng, classes, 50).tolist():
        acc.update(rng.choice(classes), rng.choice(classes), dict(zip(classes, row, strict=True)))
    before = acc.to_dict()
    s = {"x": 0.1, "y": 0.2, "z": 0.7}
    acc.update("y", "z", s)
    acc.update("w", "x")
    acc.revert("y", "z", s)
    acc.revert("w", "x")
    assert acc.to_dict() == before


# ---------------------------------------------------------------------------------------- regression
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_regression_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    y = rng.normal(10, 50, n)
    y[rng.random(n) < 0.1] = 0.0  # zero labels: excluded from MAPE
    pred = y + rng.normal(0.5, 3, n)
    acc = RegressionAccumulator()
    for a, b in zip(y.tolist(), pred.tolist(), strict=True):
        acc.update(a, b)
    assert acc.n == n
    assert acc.mae() == pytest.approx(mean_absolute_error(y, pred), **TOL)
    assert acc.mse() == pytest.approx(mean_squared_error(y, pred), **TOL)
    assert acc.mean_error() == pytest.approx(float(np.mean(pred - y)), **TOL)
    nz = np.abs(y) >= 1e-12
    assert acc.n_zero_label == int((~nz).sum())
    if nz.any():
        assert acc.mape() == pytest.approx(mean_absolute_percentage_error(y[nz], pred[nz]), **TOL)
    else:
        assert acc.mape() is None


def test_regression_invalid_and_revert():
    acc = RegressionAccumulator()
    acc.update(1, 2.5)
    acc.update(0.0, 1.0)
    before = acc.to_dict()
    for bad in [(float("nan"), 1.0), (1.0, float("inf")), ("1", 2.0), (True, 1.0), (1e300, -1e300)]:
        with pytest.raises(ValueError):
            acc.update(*bad)
    assert acc.to_dict() == before
    acc.update(3.0, -7.25, n=4)
    acc.revert(3.0, -7.25, n=4)
    assert acc.to_dict() == before
    with pytest.raises(ValueError):
        acc.revert(0.0, 5.0, n=3)
    only_zero = RegressionAccumulator().update(0.0, 3.0)
    assert only_zero.mape() is None and only_zero.mae() == 3.0
    assert RegressionAccumulator().mae() is None


# ------------------------------------------------------------------------------------------- windows
def _random_events(rng: np.random.Generator, n: int, n_classes: int = 4):
    classes = [f"k{i}" for i in range(n_classes)] + [True, False, 3, "3"]
    events = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            lat = None if rng.random() < 0.05 else float(rng.lognormal(2, 1.5))
            events.append(("pred", lat, bool(rng.random() < 0.03)))
        elif r < 0.75:
            t = classes[int(rng.integers(len(classes)))]
            p = t if rng.random() < 0.6 else classes[int(rng.integers(len(classes)))]
            scores = None
            if rng.random() < 0.7:
                probs = rng.dirichlet(np.ones(3)).tolist()
                scores = dict(zip([canonical_label(t), canonical_label(p), "k0"], probs, strict=True))
            delay = float(rng.exponential(300)) - 5.0 if rng.random() < 0.9 else None
            events.append(("outcome", "classification", p, t, scores, delay))
        elif r < 0.93:
            y = 0.0 if rng.random() < 0.1 else float(rng.normal(100, 30))
            events.append(
                ("outcome", "regression", y + float(rng.normal(0, 5)), y, None, float(rng.exponential(60)))
            )
        else:
            name = [
                "duplicates",
                "relabels",
                "unmatched_predictions",
                "orphan_labels",
                "late_labels",
                "invalid:schema",
            ][int(rng.integers(6))]
            events.append(("counter", name, int(rng.integers(1, 3))))
    return events


def _apply(w: WindowAccumulator, ev) -> None:
    if ev[0] == "pred":
        w.add_prediction(ev[1], ev[2])
    elif ev[0] == "outcome":
        w.add_outcome(*ev[1:])
    else:
        w.add_counter(ev[1], ev[2])


def _random_tree_merge(parts, rng):
    parts = list(parts)
    while len(parts) > 1:
        i, j = sorted(rng.choice(len(parts), 2, replace=False).tolist())
        b = parts.pop(j)
        a = parts.pop(i)
        if rng.random() < 0.5:
            a, b = b, a
        parts.append(roundtrip(a).merge(b) if rng.random() < 0.5 else a.copy().merge(b))
    return parts[0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("cap", [256, 3])
def test_window_merge_exact_for_any_split_and_order(seed, cap):
    from modelmon.stats import summarize

    rng = np.random.default_rng(seed)
    events = _random_events(rng, int(rng.integers(50, 1500)))
    whole = WindowAccumulator(cap)
    for ev in events:
        _apply(whole, ev)
    P, W = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    parts = {(p, w): WindowAccumulator(cap) for p in range(P) for w in range(W)}
    for ev in events:
        _apply(parts[(int(rng.integers(P)), int(rng.integers(W)))], ev)
    partials = [roundtrip(parts[k]) for k in parts]
    rng.shuffle(partials)
    merged = _random_tree_merge(partials, rng)
    assert merged.to_dict() == whole.to_dict()
    assert summarize(merged, 60.0) == summarize(whole, 60.0)
    assert orjson.dumps(merged.to_dict(), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        whole.to_dict(), option=orjson.OPT_SORT_KEYS
    )


@pytest.mark.parametrize("seed", [5, 6])
def test_window_merge_is_associative_and_commutative(seed):
    rng = np.random.default_rng(seed)
    a, b, c = (WindowAccumulator(4) for _ in range(3))
    for w in (a, b, c):
        for ev in _random_events(rng, int(rng.integers(0, 300)), n_classes=6):
            _apply(w, ev)
    ab_c = a.copy().merge(b).merge(c)
    a_bc = a.copy().merge(b.copy().merge(c))
    assert ab_c.to_dict() == a_bc.to_dict()
    assert a.copy().merge(b).to_dict() == b.copy().merge(a).to_dict()
    assert c.copy().merge(a).merge(b).to_dict() == ab_c.to_dict()
    assert a.copy().merge(WindowAccumulator(4)).to_dict() == a.to_dict()


def test_window_roundtrip_through_orjson():
    rng = np.random.default_rng(12)
    w = WindowAccumulator()
    for ev in _random_events(rng, 800):
        _apply(w, ev)
    d = w.to_dict()
    raw = orjson.dumps(d)
    w2 = WindowAccumulator.from_dict(orjson.loads(raw))
    assert w2.to_dict() == d
    assert orjson.dumps(w2.to_dict()) == raw
    assert w2 == w
    empty = WindowAccumulator()
    assert empty.is_empty()
    assert roundtrip(empty).to_dict() == empty.to_dict()
    assert len(orjson.dumps(empty.to_dict())) < 100


def test_window_counts_and_invalid_input_never_raise():
    w = WindowAccumulator()
    w.add_prediction(12.0, False)
    w.add_prediction(None, True)
    w.add_prediction(-3.0, False)  # invalid latency, prediction still counted
    w.add_prediction(float("nan"), False)
    assert w.predictions == 4 and w.errors == 1 and w.latency.n == 1
    assert w.counters == {"rejected:latency": 2}
    assert w.add_outcome("classification", "a", "a", {"a": 0.9, "b": 0.1}, 4.0)
    assert w.add_outcome("binary", True, False, {"true": float("nan")}, -2.0)  # bad scores, kept unscored
    assert not w.add_outcome("classification", [1], "a")
    assert not w.add_outcome("ranking", 1, 2)
    assert not w.add_outcome("regression", "x", 2.0)
    assert w.add_outcome("regression", 1.5, 2.0, None, float("inf"))  # bad delay: outcome kept
    assert w.labelled == 3
    assert w.classification.n == 2 and w.classification.n_scored == 1
    assert w.label_delay.n == 2 and w.label_delay.min == 0.0  # negative delay clipped at 0
    assert w.counters == {
        "rejected:latency": 2,
        "rejected:scores": 1,
        "rejected:label": 1,
        "rejected:task": 1,
        "rejected:regression_value": 1,
        "rejected:label_delay": 1,
    }
    w.add_counter("duplicates")
    w.add_counter("orphan_labels", 3)
    w.add_counter("relabels", 0)
    w.add_counter("invalid:schema", 2)
    assert w.counters["duplicates"] == 1 and w.counters["orphan_labels"] == 3 and "relabels" not in w.counters
    # signed changes (a counter moving between windows) are fine while the counter stays >= 0
    w.add_counter("orphan_labels", -1)
    w.add_counter("late_labels", 2)
    w.add_counter("late_labels", -2)
    assert w.counters["orphan_labels"] == 2 and "late_labels" not in w.counters
    before = dict(w.counters)
    for bad, n in [("dupes", 1), ("invalid:", 1), ("", 1), ("rejected:latency", 1), ("duplicates", -2)]:
        with pytest.raises(ValueError):
            w.add_counter(bad, n)
    with pytest.raises(ValueError):
        w.add_counter("duplicates", 1.0)
    assert w.counters == before
    assert not w.is_empty()


def test_window_replace_outcome():
    base = WindowAccumulator()
    base.add_outcome("classification", "a", "b", {"a": 0.7, "b": 0.3}, 1.0)
    replaced = base.copy()
    assert replaced.replace_outcome("classification", "a", "b", "a", {"a": 0.7, "b": 0.3})
    direct = WindowAccumulator()
    direct.add_outcome("classification", "a", "a", {"a": 0.7, "b": 0.3}, 1.0)
    assert replaced.to_dict() == direct.to_dict()
    assert not replaced.replace_outcome("classification", "a", "zzz", "b", {"a": 0.7, "b": 0.3})
    assert replaced.to_dict() == direct.to_dict()
    r = WindowAccumulator()
    r.add_outcome("regression", 2.0, 1.0, None, 3.0)
    assert r.replace_outcome("regression", 2.0, 1.0, 4.0)
    r2 = WindowAccumulator()
    r2.add_outcome("regression", 2.0, 4.0, None, 3.0)
    assert r.to_dict() == r2.to_dict()


def test_get_returns_derived_values():
    xs = [1.0, 2.0, 3.0, 4.0]
    h = LogHistogram("latency_ms")
    for x in xs:
        h.update(x)
    g = h.get()
    assert g["n"] == 4 and g["mean"] == 2.5 and g["min"] == 1.0 and g["max"] == 4.0
    assert np.quantile(xs, 0.5) / h.spec.ratio <= g["p50"] <= np.quantile(xs, 0.5) * h.spec.ratio
    assert LogHistogram().get()["p99"] is None
    cc = ConfusionCounts().update("a", "a").update("a", "b")
    assert cc.get() == {"n": 2, "correct": 1, "accuracy": 0.5}
    acc = ClassificationAccumulator().update("a", "a", {"a": 0.8, "b": 0.2}).update("b", "a")
    g = acc.get()
    assert g["n"] == 2 and g["accuracy"] == 0.5 and g["n_scored"] == 1
    assert g["log_loss"] == pytest.approx(-math.log(0.8), **TOL)
    assert g["brier"] == pytest.approx(0.2**2 + 0.2**2, **TOL)
    assert ClassificationAccumulator().get()["accuracy"] is None
    r = RegressionAccumulator().update(2.0, 3.0).update(4.0, 2.0)
    assert r.get() == {"n": 2, "mae": 1.5, "mse": 2.5, "mape": pytest.approx(0.5), "mean_error": -0.5}
