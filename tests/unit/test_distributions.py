"""Feature, score and prediction distributions: bucket functions, bounded counts, their exact merge, the
stage-1 bucketing and fold, and the read side — each against numpy / Counter oracles built from the events.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from decimal import Context, Decimal

import numpy as np
import orjson
import pytest

from modelmon import join
from modelmon.aggregate import (
    OTHER,
    SIGNED_LOG_EDGES,
    SIGNED_LOG_MAX_BUCKET,
    BinCounts,
    CategoryCounts,
    FeatureStats,
    WindowAccumulator,
    canonical_label,
    signed_log_bounds,
    signed_log_bucket,
    unit_bounds,
    unit_bucket,
)
from modelmon.partition import PartitionState
from modelmon.rollup import metric_event, new_value
from modelmon.schemas import GroundTruth, Prediction, validate_output
from modelmon.stats import (
    feature_distribution,
    feature_missing,
    prediction_distribution,
    score_distribution,
    summarize,
)

WINDOW = 60.0
HORIZON = 600.0


def roundtrip(obj):
    """to_dict -> orjson bytes -> from_dict, as a Kafka topic or a Faust table would do."""
    return type(obj).from_dict(orjson.loads(orjson.dumps(obj.to_dict())))


def tree_merge(parts: list, rng: random.Random):
    """Merge parts pairwise in a random order and grouping, sometimes through a serialisation round trip."""
    parts = list(parts)
    while len(parts) > 1:
        a = parts.pop(rng.randrange(len(parts)))
        b = parts.pop(rng.randrange(len(parts)))
        parts.append((roundtrip(a) if rng.random() < 0.5 else a.copy()).merge(b))
    return parts[0]


# ------------------------------------------------------------------------------------- bucket functions
def np_signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) * (1 + floor(log2(|x| / 1e-9) * 8)), clipped to +-641; 0 for |x| < 1e-9 (numpy)."""
    ax = np.abs(x)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        b = 1 + np.floor(np.log2(ax / 1e-9) * 8)
    b = np.clip(np.nan_to_num(b, posinf=641, neginf=0), 0, 641)
    b = np.where(ax < 1e-9, 0, b)
    return (np.sign(x) * b).astype(np.int64)


def near_edge(x: float, rel: float = 1e-12) -> bool:
    """Whether |x| is within a relative 1e-12 of a bucket edge (where the float formula may round across)."""
    ax = abs(x)
    i = int(np.searchsorted(SIGNED_LOG_EDGES, ax))
    return any(
        0 <= j < len(SIGNED_LOG_EDGES) and abs(ax - SIGNED_LOG_EDGES[j]) <= rel * SIGNED_LOG_EDGES[j]
        for j in (i - 1, i)
    )


def test_signed_log_bucket_matches_numpy_over_the_whole_range():
    rng = np.random.default_rng(1)
    mags = 10.0 ** rng.uniform(-14, 18, 200_000)
    xs = mags * rng.choice([-1.0, 1.0], mags.size)
    xs = np.concatenate(
        [xs, [0.0, -0.0, 1e-9, -1e-9, 0.999e-9, 1.0, -1.0, 2e-9, 1e15, 1.3e15, 1e300, 5e-324]]
    )
    want = np_signed_log(xs)
    got = np.array([signed_log_bucket(float(x)) for x in xs])
    off = got != want
    assert all(near_edge(float(x)) for x in xs[off]), xs[off][:5]
    assert off.sum() <= 2  # random draws practically never land within an ulp of an edge
    assert signed_log_bucket(1e-9) == 1 and signed_log_bucket(2e-9) == 9 and signed_log_bucket(-2e-9) == -9
    assert signed_log_bucket(0.999e-9) == 0 and signed_log_bucket(-0.0) == 0
    assert signed_log_bucket(1.0) == 1 + math.floor(math.log2(1e9) * 8)


MIN = 1e-9  # the double, as the formula uses it


def exact_bucket(x: float) -> int:
    """The formula in 80-digit decimal arithmetic: exact for every double not on an edge."""
    ctx = Context(prec=80)
    ax = abs(Decimal(x))
    if ax < Decimal(MIN):
        return 0
    b = min(
        1 + int(ctx.multiply(ctx.divide(ctx.ln(ctx.divide(ax, Decimal(MIN))), ctx.ln(Decimal(2))), 8)), 641
    )
    return b if x > 0 else -b


def test_signed_log_bucket_is_the_exact_formula_even_next_to_edges():
    rng = np.random.default_rng(4)
    xs = (10.0 ** rng.uniform(-10, 16, 3000) * rng.choice([-1.0, 1.0], 3000)).tolist()
    for edge in SIGNED_LOG_EDGES[1:]:
        if edge not in (1e-9 * 2.0**k for k in range(81)):  # exact powers of two sit on the edge
            xs += [edge, math.nextafter(edge, 0.0), -edge]
    for x in xs:
        assert signed_log_bucket(x) == exact_bucket(x), x


def test_signed_log_edges_bounds_and_order():
    for j, edge in enumerate(SIGNED_LOG_EDGES):
        assert signed_log_bucket(edge) == j + 1
        assert signed_log_bucket(-edge) == -(j + 1)
        below = math.nextafter(edge, 0.0)
        assert signed_log_bucket(below) == j
        # the formula in floating point rounds at most one bucket away, and only at the edge itself
        assert abs(int(np_signed_log(np.array([edge]))[0]) - (j + 1)) <= 1
        assert int(np_signed_log(np.array([edge * (1 + 1e-12)]))[0]) == j + 1
    rng = np.random.default_rng(2)
    xs = sorted((10.0 ** rng.uniform(-12, 17, 20_000) * rng.choice([-1.0, 1.0], 20_000)).tolist())
    buckets = [signed_log_bucket(x) for x in xs]
    assert buckets == sorted(buckets)  # order of keys == order of values
    for x, b in zip(xs, buckets, strict=True):
        lo, hi = signed_log_bounds(b)
        if b > 0:
            assert lo <= x < hi
        elif b < 0:
            assert lo < x <= hi
        else:
            assert lo < x < hi
    assert signed_log_bounds(0) == (-1e-9, 1e-9)
    assert signed_log_bounds(SIGNED_LOG_MAX_BUCKET)[1] == math.inf
    assert signed_log_bounds(-SIGNED_LOG_MAX_BUCKET)[0] == -math.inf
    with pytest.raises(ValueError):
        signed_log_bounds(SIGNED_LOG_MAX_BUCKET + 1)


@pytest.mark.parametrize(
    ("x", "want"),
    [
        (math.inf, 641),
        (-math.inf, -641),
        (1e300, 641),
        (10**400, 641),
        (-(10**400), -641),
        (2**53 + 1, int(np_signed_log(np.array([2.0**53]))[0])),
        (3, int(np_signed_log(np.array([3.0]))[0])),
        (-7, int(np_signed_log(np.array([-7.0]))[0])),
        (0, 0),
        (np.float32(0.5), int(np_signed_log(np.array([0.5]))[0])),
    ],
)
def test_signed_log_bucket_of_ints_huge_and_infinite_values(x, want):
    assert signed_log_bucket(x) == want


def test_bucket_functions_reject_nan_and_strings():
    for f in (signed_log_bucket, unit_bucket):
        with pytest.raises(ValueError):
            f(float("nan"))
    with pytest.raises(ValueError):
        signed_log_bucket("1.5")


def test_unit_bucket_matches_numpy_and_its_bounds():
    rng = np.random.default_rng(3)
    ps = np.concatenate([rng.random(100_000), [0.0, 1.0, 0.5, 0.999999, 1e-300, -0.2, 1.7]])
    want = np.clip(np.floor(ps * 100), 0, 100).astype(int)
    got = np.array([unit_bucket(float(p)) for p in ps])
    off = got != want
    # only where p * 100 rounds across an integer, i.e. p within an ulp of an edge k / 100
    assert all(abs(p * 100 - round(p * 100)) < 1e-12 for p in ps[off])
    for k in range(101):
        edge = k / 100
        assert unit_bucket(edge) == k
        if k:
            assert unit_bucket(math.nextafter(edge, 0.0)) == k - 1
        assert abs(int(np.floor(edge * 100)) - k) <= 1  # 0.29 * 100 == 28.999...: numpy says 28
    for p, b in zip(ps.tolist(), got.tolist(), strict=True):
        lo, hi = unit_bounds(b)
        assert (lo <= p < hi) or (b == 100 and p >= 1.0) or (b == 0 and p < 0.0)
    assert unit_bounds(100) == (1.0, 1.0) and unit_bounds(0) == (0.0, 0.01)
    with pytest.raises(ValueError):
        unit_bounds(101)


# ----------------------------------------------------------------------------------------- bin counts
@pytest.mark.parametrize("seed", range(5))
def test_bin_counts_merge_exactly_and_equal_a_counter(seed):
    rng = random.Random(seed)
    values = [rng.randint(-30, 30) for _ in range(rng.randint(0, 2000))]
    whole = BinCounts()
    for v in values:
        whole.update(v)
    parts = [BinCounts() for _ in range(rng.randint(1, 7))]
    for v in values:
        rng.choice(parts).update(v)
    merged = tree_merge(parts, rng)
    assert merged.to_dict() == whole.to_dict() and merged == whole
    assert merged.counts() == dict(sorted(Counter(values).items()))
    assert merged.n == len(values)
    assert list(merged.counts()) == sorted(merged.counts())
    assert roundtrip(whole) == whole
    with pytest.raises(ValueError):
        BinCounts().update(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BinCounts().update(1, 0)
    assert BinCounts().update(4, 3).counts() == {4: 3}


# ------------------------------------------------------------------------------------ category counts
def category_oracle(values: list[str], cap: int) -> dict[str, int]:
    counts = Counter(v for v in values if v != OTHER)
    kept = sorted(counts)[:cap]
    out = {k: counts[k] for k in kept}
    other = len(values) - sum(out.values())
    if other:
        out[OTHER] = other
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cap", [1, 3, 64])
def test_category_counts_cap_folding_is_exact_under_any_split(seed, cap):
    rng = random.Random(seed * 100 + cap)
    pool = [f"v{i:03d}" for i in range(rng.choice([2, 10, 150]))] + [OTHER, "", "Zed", "ä"]
    values = [rng.choice(pool) for _ in range(rng.randint(0, 1500))]
    whole = CategoryCounts(cap)
    for v in values:
        whole.update(v)
    assert whole.counts() == category_oracle(values, cap)
    assert whole.n == len(values)
    parts = [CategoryCounts(cap) for _ in range(rng.randint(1, 6))]
    for v in values:
        rng.choice(parts).update(v)
    merged = tree_merge(parts, rng)
    assert merged.to_dict() == whole.to_dict() and merged == whole
    ordered = CategoryCounts(cap)  # the worst order for eviction: largest first
    for v in sorted(values, reverse=True):
        ordered.update(v)
    assert ordered == whole


def test_category_counts_validation():
    with pytest.raises(ValueError):
        CategoryCounts(0)
    with pytest.raises(ValueError):
        CategoryCounts().update(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CategoryCounts(2).merge(CategoryCounts(3))
    with pytest.raises(ValueError):
        CategoryCounts.from_dict({"counts": {"a": 1, "b": 1}, "other": 0, "cap": 1})
    cc = CategoryCounts(2).update("b", 5).update("a").update("c", 2)
    assert cc.counts() == {"a": 1, "b": 5, OTHER: 2} and cc.to_dict()["cap"] == 2
    assert "cap" not in CategoryCounts().to_dict()


# -------------------------------------------------------------------------------------- feature stats
def random_feature_maps(rng: random.Random, n: int, n_names: int) -> list[dict]:
    names = [f"f{i:02d}" for i in range(n_names)]
    maps = []
    for _ in range(n):
        m: dict = {}
        for name in rng.sample(names, rng.randint(0, len(names))):
            kind = int(name[1:]) % 3
            if kind == 0:
                m[name] = rng.randint(-5, 5)
            elif kind == 1:
                m[name] = f"c{rng.randint(0, 90)}"  # beyond the default category cap of 64
            else:
                m[name] = rng.choice([rng.randint(0, 3), "true", "false"])  # mixed kinds
        if rng.random() < 0.01:
            m[OTHER] = 3  # stage 1 dropped names of this prediction
        maps.append(m)
    return maps


def feature_oracle(maps: list[dict], cap: int) -> tuple[dict, dict, dict, bool]:
    """(present, numeric counts, categorical counts, folded) straight from the maps."""
    names = sorted({k for m in maps for k in m if k != OTHER})
    kept = names[:cap]
    folded = len(names) > cap or any(OTHER in m for m in maps)
    present = {k: sum(1 for m in maps if k in m) for k in kept}
    numeric = {}
    categorical = {}
    for k in kept:
        ints = [m[k] for m in maps if type(m.get(k)) is int]
        strs = [m[k] for m in maps if type(m.get(k)) is str]
        if ints:
            numeric[k] = dict(sorted(Counter(ints).items()))
        if strs:
            categorical[k] = category_oracle(strs, 64)
    return present, numeric, categorical, folded


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("cap", "n_names"), [(64, 9), (4, 9), (1, 3)])
def test_feature_stats_match_the_oracle_and_merge_exactly(seed, cap, n_names):
    rng = random.Random(seed * 7 + cap)
    maps = random_feature_maps(rng, rng.randint(0, 600), n_names)
    whole = FeatureStats(cap)
    for m in maps:
        whole.update(m)
    present, numeric, categorical, folded = feature_oracle(maps, cap)
    assert whole.present == present
    assert {k: v.counts() for k, v in whole.numeric.items()} == numeric
    assert {k: v.counts() for k, v in whole.categorical.items()} == categorical
    assert whole.folded == folded
    parts = [FeatureStats(cap) for _ in range(rng.randint(1, 6))]
    for m in maps:
        rng.choice(parts).update(m)
    merged = tree_merge(parts, rng)
    assert merged.to_dict() == whole.to_dict()
    assert roundtrip(whole) == whole


def test_feature_stats_tracks_names_only_below_the_cap():
    fs = FeatureStats(2)
    fs.update({"b": 1, "c": "x"})
    assert fs.tracks("a") and fs.tracks("zzz") and not fs.folded  # not full: anything unseen is missing
    fs.update({"a": 2, "d": 3})
    assert fs.names() == ["a", "b"] and fs.folded
    assert fs.tracks("a") and fs.tracks("aa") and not fs.tracks("c") and not fs.tracks("zzz")
    with pytest.raises(ValueError):
        FeatureStats(2).merge(FeatureStats(3))
    with pytest.raises(ValueError):
        FeatureStats.from_dict({"numeric": {"a": {"buckets": {"1": 1}}, "b": {"buckets": {"1": 1}}},
                                "categorical": {}, "folded": False, "cap": 1})  # fmt: skip


# ------------------------------------------------------------------------------ window accumulator
def random_window_events(rng: random.Random, n: int) -> list[tuple]:
    events = []
    for _ in range(n):
        task = rng.choice(["classification", "classification", "regression", "binary"])
        err = rng.random() < 0.05
        feats = random_feature_maps(rng, 1, 8)[0] or None
        if task == "regression":
            y = None if err else rng.choice([0.0, -3.5, 1e6, 42.0, rng.gauss(100, 30)])
            scores = None
        else:
            y = None if err else rng.choice(["a", "b", "c", True, 3])
            scores = None
            if rng.random() < 0.8:
                raw = [rng.random() for _ in range(3)]
                scores = {k: v / sum(raw) for k, v in zip(["a", "b", "c"], raw, strict=True)}
                if rng.random() < 0.1:
                    scores = {"a": rng.random()}
        events.append((rng.lognormvariate(2, 1), err, feats, task, y, scores))
    return events


def add(w: WindowAccumulator, ev: tuple) -> None:
    lat, err, feats, task, y, scores = ev
    w.add_prediction(lat, err, features=feats, task=task, prediction=y, scores=scores)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cap", [256, 2])
def test_window_with_distributions_merges_exactly(seed, cap):
    rng = random.Random(seed + cap)
    events = random_window_events(rng, rng.randint(1, 800))
    whole = WindowAccumulator(cap)
    for ev in events:
        add(whole, ev)
    parts = [WindowAccumulator(cap) for _ in range(rng.randint(1, 8))]
    for ev in events:
        add(rng.choice(parts), ev)
    merged = tree_merge(parts, rng)
    assert merged.to_dict() == whole.to_dict()
    assert orjson.dumps(merged.to_dict(), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        whole.to_dict(), option=orjson.OPT_SORT_KEYS
    )
    assert summarize(merged, 60.0) == summarize(whole, 60.0)
    assert roundtrip(whole) == whole and not whole.is_empty()
    # the output distributions against Counters over the error-free predictions
    ok = [ev for ev in events if not ev[1] and ev[4] is not None]
    classes = [canonical_label(ev[4]) for ev in ok if ev[3] != "regression"]
    assert (whole.predicted.counts() if whole.predicted else {}) == category_oracle(classes, cap)
    values = [ev[4] for ev in ok if ev[3] == "regression"]
    assert (whole.predicted_values.counts() if whole.predicted_values else {}) == dict(
        sorted(Counter(np_signed_log(np.array(values, dtype=float)).tolist()).items())
    )
    conf = []
    for ev in ok:
        if ev[3] == "regression" or not ev[5]:
            continue
        label, scores = canonical_label(ev[4]), ev[5]
        if label in scores:
            conf.append(scores[label])
        elif len(scores) == 1:
            conf.append(1.0 - next(iter(scores.values())))
        else:
            conf.append(max(scores.values()))
    want_conf = Counter(np.clip(np.floor(np.array(conf) * 100), 0, 100).astype(int).tolist())
    assert (score_distribution(whole) or {}) == dict(sorted(want_conf.items()))


def test_window_without_features_serialises_as_before():
    """Old snapshots load, and a window of plain predictions writes exactly the old layout."""
    w = WindowAccumulator()
    w.add_prediction(12.5, False)
    w.add_prediction(None, True, task="classification", prediction=None, scores={"a": 0.5})
    w.add_outcome("classification", "a", "a", None, 2.0)
    old = {
        "v": 1,
        "predictions": 2,
        "errors": 1,
        "labelled": 1,
        "counters": {},
        "latency": w.latency.to_dict(),
        "label_delay": w.label_delay.to_dict(),
        "classification": w.classification.to_dict(),
    }
    assert w.to_dict() == old
    assert WindowAccumulator.from_dict(old).to_dict() == old
    assert w.features is None and w.confidence is None and w.predicted is None
    with_dist = w.copy()
    with_dist.add_prediction(1.0, False, features={"x": 3}, task="classification", prediction="a")
    both = WindowAccumulator.from_dict(old).merge(with_dist)
    assert set(both.to_dict()) == set(old) | {"features", "predicted"}


def test_add_prediction_skips_what_it_cannot_use():
    w = WindowAccumulator()
    w.add_prediction(1.0, False, task="classification", prediction=[1], scores={"a": 0.5})
    w.add_prediction(1.0, False, task="classification", prediction="a", scores={"a": "high", "b": 0.1})
    w.add_prediction(1.0, False, task="regression", prediction="12")
    w.add_prediction(1.0, False, task="regression", prediction=float("nan"))
    w.add_prediction(1.0, False, task="ranking", prediction="a")
    w.add_prediction(1.0, False, features={"x": 1.5, "y": None, "z": "ok"})  # only int/str are counted
    assert w.predictions == 6 and w.counters == {}
    assert w.predicted.counts() == {"a": 1} and w.confidence is None and w.predicted_values is None
    assert w.features.present == {"z": 1}


# -------------------------------------------------------------------------------- stage-1 bucketing
def test_bucket_features_rules():
    long = "y" * 100
    f = join.bucket_features(
        {"n": 2.5, "i": -3, "zero": 0.0, "s": long, "b": True, "f": False, "null": None, "nan": math.nan}
    )
    assert f == {
        "n": signed_log_bucket(2.5),
        "i": signed_log_bucket(-3),
        "zero": 0,
        "s": "y" * 64,
        "b": "true",
        "f": "false",
    }
    assert join.bucket_features({"__other__": 4, "a": 1}) == {"a": signed_log_bucket(1)}  # reserved name
    many = {f"k{i:03d}": i for i in range(70)} | {"z": None}
    capped = join.bucket_features(many)
    assert list(capped)[:64] == [f"k{i:03d}" for i in range(64)] and capped[OTHER] == 6 and len(capped) == 65
    fs = FeatureStats()
    fs.update(capped)
    assert fs.folded and fs.names() == [f"k{i:03d}" for i in range(64)]


def test_bucket_features_inline_equals_signed_log_bucket():
    rng = np.random.default_rng(9)
    xs = (10.0 ** rng.uniform(-13, 17, 20_000) * rng.choice([-1.0, 1.0], 20_000)).tolist()
    xs += list(SIGNED_LOG_EDGES) + [-e for e in SIGNED_LOG_EDGES] + [math.inf, -math.inf, 0.0, -0.0]
    # names are capped at 64 per prediction, so check in chunks
    for start in range(0, len(xs), 64):
        chunk = {f"{i:06d}": x for i, x in enumerate(xs[start : start + 64])}
        got = join.bucket_features(chunk)
        assert got == {k: signed_log_bucket(v) for k, v in chunk.items()}


# ----------------------------------------------------------------------------- join + partition fold
def prediction(rid: str, ts: float, rng: random.Random) -> Prediction:
    task = rng.choice(["classification", "classification", "regression"])
    err = rng.random() < 0.05
    feats = None
    if rng.random() < 0.9:
        feats = {
            "amount": rng.choice([None, round(rng.lognormvariate(3, 1.5), 3), -round(rng.random(), 4)]),
            "plan": rng.choice(["basic", "pro", "enterprise-" + "x" * 70, None]),
            "vip": rng.choice([True, False, None]),
        }
        if rng.random() < 0.7:
            feats["visits"] = rng.randint(0, 40)
    scores = None
    if task == "regression":
        y = None if err else round(rng.gauss(50, 40), 3)
    else:
        y = None if err else rng.choice(["a", "b", "c"])
        if not err and rng.random() < 0.8:
            raw = [rng.random() for _ in range(3)]
            scores = {k: v / sum(raw) for k, v in zip("abc", raw, strict=True)}
    return Prediction(rid, "m", "1", ts, task, y, scores, 5.0, feats, None, "boom" if err else None)


def direct_oracle(preds: list[Prediction]) -> dict:
    """Per window, every distribution and missing count computed straight from the first predictions."""
    out: dict = {}
    for p in preds:
        w = out.setdefault(
            join.window_start(p.ts, WINDOW), {"n": 0, "feat": {}, "pred": [], "reg": [], "conf": []}
        )
        w["n"] += 1
        for name, v in (p.features or {}).items():
            if v is not None:
                w["feat"].setdefault(name, []).append(v)
        if p.error is not None:
            continue
        if p.task == "regression":
            w["reg"].append(p.prediction)
        else:
            w["pred"].append(p.prediction)
            if p.scores:
                w["conf"].append(p.scores[p.prediction])
    return out


def check_window_against_oracle(acc: WindowAccumulator, facts: dict) -> None:
    n = facts["n"]
    assert acc.predictions == n
    for name in ("amount", "plan", "vip", "visits", "never_sent"):
        values = facts["feat"].get(name, [])
        assert feature_missing(acc, name) == (n - len(values), n)
        dist = feature_distribution(acc, name)
        if not values:
            assert dist is None
            continue
        if isinstance(values[0], bool):
            want = Counter("true" if v else "false" for v in values)
            assert dist == (dict(sorted(want.items())), False)
        elif isinstance(values[0], str):
            assert dist == (dict(sorted(Counter(v[:64] for v in values).items())), False)
        else:
            want = Counter(np_signed_log(np.array(values, dtype=float)).tolist())
            assert dist == (dict(sorted(want.items())), True)
    s = summarize(acc, WINDOW)
    dq = s["data_quality"]
    for name, values in facts["feat"].items():
        assert dq["features"][name] == {"present": len(values), "missing_rate": (n - len(values)) / n}
    assert set(dq["features"]) == set(facts["feat"]) and dq["capped"] is False
    conf = np.array(facts["conf"])
    if conf.size:
        buckets = np.clip(np.floor(conf * 100), 0, 100)
        assert score_distribution(acc) == dict(sorted(Counter(buckets.astype(int).tolist()).items()))
        assert s["scores"]["n"] == conf.size
        assert s["scores"]["confidence_mean"] == pytest.approx(
            float(np.mean((buckets + 0.5) / 100)), abs=1e-12
        )
        assert abs(s["scores"]["confidence_mean"] - float(conf.mean())) <= 0.005
    else:
        assert score_distribution(acc) is None and s["scores"] is None
    classes, reg = facts["pred"], facts["reg"]
    dist = prediction_distribution(acc)
    if len(reg) >= len(classes) and reg:
        assert dist == (dict(sorted(Counter(np_signed_log(np.array(reg)).tolist()).items())), True)
    elif classes:
        assert dist == (dict(sorted(Counter(classes).items())), False)
    else:
        assert dist is None
    assert acc.predicted.counts() == dict(sorted(Counter(classes).items()))
    event = metric_event(
        {**new_value("m", "1", 0.0), "rev": 1, "parts": {"0": {"acc": acc.to_dict()}}}, WINDOW, 1.0
    )
    validate_output("model-metrics", event)


@pytest.mark.parametrize("seed", range(10))
def test_fold_and_rebuild_equal_the_direct_oracle(seed):
    rng = random.Random(seed)
    events = []
    for i in range(400):
        rid = f"r{i}"
        p = prediction(rid, 1000.0 + rng.uniform(0, 200), rng)
        events.append(("p", rid, p))
        if rng.random() < 0.1:
            events.append(("p", rid, prediction(rid, p.ts, rng)))  # a duplicate (re-sent) prediction
        if rng.random() < 0.6 and p.prediction is not None:
            lab = rng.choice(["a", "b"]) if p.task != "regression" else 1.0
            events.append(("g", rid, GroundTruth(rid, lab, p.ts + rng.uniform(0, 30), None)))
    rng.shuffle(events)
    table: dict = {}
    state = PartitionState(0, WINDOW, HORIZON, epoch=1)
    offsets = {"p": 0, "g": 0}
    first: dict[str, Prediction] = {}
    for topic, rid, payload in events:
        before = table.get(rid)
        if topic == "p":
            first.setdefault(rid, payload)
            out = join.apply_prediction(before, payload, payload.ts, offsets["p"], 0, WINDOW, HORIZON)
        else:
            out = join.apply_label(before, payload, payload.ts, offsets["g"], 0, HORIZON)
        offsets[topic] += 1
        if out.entry is not None:
            state.apply_change(rid, before, out.entry)
            table[rid] = orjson.loads(orjson.dumps(out.entry))  # what the changelog restores
    oracle = direct_oracle(list(first.values()))
    assert {k[2] for k in state.accs} == set(oracle)
    for key, acc in state.accs.items():
        check_window_against_oracle(acc, oracle[key[2]])
    rebuilt = PartitionState(0, WINDOW, HORIZON, epoch=2)
    rebuilt.rebuild(sorted(table.items()), None)
    assert {k: v.to_dict() for k, v in rebuilt.accs.items()} == {
        k: v.to_dict() for k, v in state.accs.items()
    }


def test_pred_effect_carries_what_the_fold_needs_and_old_entries_still_load():
    p = Prediction("r", "m", "1", 1000.0, "classification", "a", {"a": 0.7, "b": 0.3}, 4.0,
                   {"x": 1.5, "c": "k", "gone": None}, None, None)  # fmt: skip
    entry = join.apply_prediction(None, p, p.ts, 0, 0, WINDOW, HORIZON).entry
    assert entry["f"] == {"x": signed_log_bucket(1.5), "c": "k"}
    effect = join.effects(entry, WINDOW)[("pred", "m", "1", 960.0)]
    assert effect == (4.0, False, entry["f"], "classification", "a", {"a": 0.7, "b": 0.3}, None, None)
    # an entry written before features were bucketed (no "f") folds without features
    old = {k: v for k, v in entry.items() if k != "f"}
    state = PartitionState(0, WINDOW, HORIZON, epoch=1)
    state.rebuild([("r", old)], None)
    acc = state.accs[("m", "1", 960.0)]
    assert acc.features is None and acc.predictions == 1 and acc.predicted.counts() == {"a": 1}
    assert summarize(acc, WINDOW)["data_quality"] is None
    assert feature_missing(acc, "x") == (1, 1)
    # a prediction without features stores no "f" and its entry keeps the old layout
    bare = Prediction("s", "m", "1", 1000.0, "classification", "a", None, 4.0, None, None, None)
    assert "f" not in join.apply_prediction(None, bare, 1000.0, 1, 0, WINDOW, HORIZON).entry
    nulls = Prediction("t", "m", "1", 1000.0, "classification", "a", None, 4.0, {"a": None}, None, None)
    assert "f" not in join.apply_prediction(None, nulls, 1000.0, 2, 0, WINDOW, HORIZON).entry
    # a duplicate prediction does not re-bucket or replace the first one's features
    dup = Prediction("r", "m", "1", 1000.0, "classification", "b", None, 4.0, {"x": 99.0}, None, None)
    again = join.apply_prediction(entry, dup, 1000.0, 5, 0, WINDOW, HORIZON).entry
    assert again["f"] == entry["f"] and again["dp"] == 1


def test_missing_rate_and_capped_names_in_summarize():
    w = WindowAccumulator()
    maps = [join.bucket_features({f"k{i:03d}": 1.0 for i in range(70)})] + [
        join.bucket_features({"k000": None, "k001": 2.0}) for _ in range(3)
    ]
    for m in maps:
        w.add_prediction(1.0, False, features=m)
    dq = summarize(w, 60.0)["data_quality"]
    assert dq["capped"] is True and len(dq["features"]) == 64
    assert dq["features"]["k000"] == {"present": 1, "missing_rate": 0.75}
    assert dq["features"]["k001"] == {"present": 4, "missing_rate": 0.0}
    assert feature_missing(w, "k000") == (3, 4)
    assert feature_missing(w, "k069") == (0, 0)  # beyond the cap: unknown
    assert feature_missing(w, "a") == (4, 4)  # below every kept name: never sent
