"""Unit tests of the read-time metrics (modelmon.stats) against sklearn / scipy / numpy oracles."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from modelmon.aggregate import OTHER, ClassificationAccumulator, RegressionAccumulator, WindowAccumulator
from modelmon.stats import (
    classification_metrics,
    merge_windows,
    regression_metrics,
    summarize,
    wilson_interval,
)

TOL = {"rel": 1e-9, "abs": 1e-12}


# ------------------------------------------------------------------------------------------- wilson
def _wilson_cases():
    cases = [(k, n) for n in range(1, 13) for k in range(n + 1)]
    rng = np.random.default_rng(0)
    for n in [50, 99, 1000, 12345, 10**6]:
        cases += [(0, n), (n, n), (1, n), (n - 1, n)]
        cases += [(int(k), n) for k in rng.integers(0, n + 1, 6)]
    return cases


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_matches_scipy(confidence):
    for k, n in _wilson_cases():
        ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        low, high = wilson_interval(k, n, confidence)
        assert low == pytest.approx(ci.low, **TOL), (k, n)
        assert high == pytest.approx(ci.high, **TOL), (k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        assert type(low) is float and type(high) is float
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) is None
    for bad in [(-1, 5), (6, 5), (1, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)


# ------------------------------------------------------------------------------------ classification
def _canon(v):
    """Test-side spelling of the documented label canonicalisation (bool -> true/false, int -> str)."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    return str(v)


def _classification_case(name: str, seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    if name == "strings":
        y = rng.choice(["cat", "dog", "emu", "fox"], n)
        p = np.where(rng.random(n) < 0.6, y, rng.choice(["cat", "dog", "emu", "fox", "gnu"], n))
    elif name == "one_class":
        y = np.array(["only"] * n)
        p = np.array(["only"] * n)
    elif name == "never_predicted":  # "b" and "c" are true labels that are never predicted
        y = rng.choice(["a", "b", "c"], n)
        p = np.array(["a"] * n)
    elif name == "booleans":
        y = rng.random(n) < 0.3
        p = np.where(rng.random(n) < 0.8, y, ~y)
    elif name == "ints":
        y = rng.integers(0, 12, n)
        p = np.where(rng.random(n) < 0.5, y, rng.integers(0, 14, n))
    elif name == "single":
        y = np.array(["x"])
        p = np.array(["y"])
    else:
        raise AssertionError(name)
    return y, p


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", ["strings", "one_class", "never_predicted", "booleans", "ints", "single"])
def test_classification_metrics_match_sklearn(case, seed):
    y, p = _classification_case(case, seed)
    acc = ClassificationAccumulator()
    for t, q in zip(y.tolist(), p.tolist(), strict=True):
        acc.update(t, q)
    m = classification_metrics(acc, top_n=None)
    assert m["n"] == len(y)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p), **TOL)
    labels = sorted(set(y.tolist()) | set(p.tolist()))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    assert sorted(m["per_class"]) == sorted(_canon(v) for v in labels)
    for i, lab in enumerate(labels):
        got = m["per_class"][_canon(lab)]
        assert got["precision"] == pytest.approx(prec[i], **TOL)
        assert got["recall"] == pytest.approx(rec[i], **TOL)
        assert got["f1"] == pytest.approx(f1[i], **TOL)
        assert got["support"] == sup[i]
        assert got["predicted"] == int(np.sum(p == lab))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0), **TOL)
    # confusion matrix, in the metric's own label order
    inv = {_canon(v): v for v in labels}
    order = [inv[lab] for lab in m["confusion"]["labels"]]
    assert m["confusion"]["matrix"] == confusion_matrix(y, p, labels=order).tolist()
    k = int(np.sum(y == p))
    ci = binomtest(k, len(y)).proportion_ci(confidence_level=0.95, method="wilson")
    assert m["accuracy_ci_low"] == pytest.approx(ci.low, **TOL)
    assert m["accuracy_ci_high"] == pytest.approx(ci.high, **TOL)
    assert m["log_loss"] is None and m["brier"] is None and m["n_scored"] == 0
    orjson.dumps(m)


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("top_n", [0, 1, 3, 5])
def test_confusion_top_n_folds_the_rest(top_n):
    rng = np.random.default_rng(21)
    n = 600
    pool = [f"c{i}" for i in range(9)]
    weights = np.arange(9, 0, -1) / 45  # c0 most frequent
    y = rng.choice(pool, n, p=weights)
    p = np.where(rng.random(n) < 0.5, y, rng.choice(pool, n))
    acc = ClassificationAccumulator()
    for t, q in zip(y.tolist(), p.tolist(), strict=True):
        acc.update(t, q)
    m = classification_metrics(acc, top_n=top_n)
    support = {lab: int(np.sum(y == lab)) for lab in pool}
    predicted = {lab: int(np.sum(p == lab)) for lab in pool}
    top = sorted(pool, key=lambda lab: (-support[lab], -predicted[lab], lab))[:top_n]
    assert m["confusion"]["labels"] == [*top, OTHER]
    fold = np.vectorize(lambda v: v if v in top else OTHER)
    expected = confusion_matrix(fold(y), fold(p), labels=[*top, OTHER])
    assert m["confusion"]["matrix"] == expected.tolist()
    assert sum(map(sum, m["confusion"]["matrix"])) == n
    assert len(m["per_class"]) == 9  # per-class metrics are not truncated


@pytest.mark.parametrize("seed", [0, 1])
def test_scored_classification_metrics(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    n = 250
    yi = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(n), yi] += rng.random(n)
    probs /= probs.sum(axis=1, keepdims=True)
    y = np.array(classes)[yi]
    acc = ClassificationAccumulator()
    for t, row in zip(y.tolist(), probs.tolist(), strict=True):
        acc.update(t, classes[int(np.argmax(row))], dict(zip(classes, row, strict=True)))
    m = classification_metrics(acc)
    assert m["n_scored"] == n
    assert m["log_loss"] == pytest.approx(log_loss(y, probs, labels=classes), **TOL)
    assert m["brier"] == pytest.approx(brier_score_loss(y, probs, labels=classes, scale_by_half=False), **TOL)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, np.array(classes)[probs.argmax(axis=1)]), **TOL)


def test_capped_classification_is_flagged_and_accuracy_exact():
    rng = np.random.default_rng(8)
    y = [f"u{v}" for v in rng.integers(0, 50, 500).tolist()]
    p = [
        t if r < 0.4 else f"u{v}"
        for t, r, v in zip(y, rng.random(500), rng.integers(0, 50, 500).tolist(), strict=True)
    ]
    acc = ClassificationAccumulator(cap=10)
    for t, q in zip(y, p, strict=True):
        acc.update(t, q)
    m = classification_metrics(acc, top_n=5)
    assert m["capped"] is True
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p), **TOL)
    assert len(m["per_class"]) == 10 and OTHER not in m["per_class"]
    kept = sorted(set(y) | set(p))[:10]
    prec, rec, _f1, sup = precision_recall_fscore_support(y, p, labels=kept, zero_division=0)
    for i, lab in enumerate(kept):  # per-class metrics of kept classes stay exact
        assert m["per_class"][lab]["precision"] == pytest.approx(prec[i], **TOL)
        assert m["per_class"][lab]["recall"] == pytest.approx(rec[i], **TOL)
        assert m["per_class"][lab]["support"] == sup[i]
    assert m["confusion"]["labels"][-1] == OTHER


def test_empty_classification_metrics():
    m = classification_metrics(ClassificationAccumulator())
    assert m["n"] == 0 and m["accuracy"] is None and m["accuracy_ci_low"] is None
    assert m["macro_f1"] is None and m["per_class"] == {} and m["confusion"] == {"labels": [], "matrix": []}
    orjson.dumps(m)


# ---------------------------------------------------------------------------------------- regression
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 2, 37, 800])
def test_regression_metrics_match_sklearn(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 20, n)
    if n > 2:
        y[: n // 5] = 0.0
    pred = y * rng.uniform(0.8, 1.2, n) + rng.normal(1, 2, n)
    acc = RegressionAccumulator()
    for a, b in zip(y.tolist(), pred.tolist(), strict=True):
        acc.update(a, b)
    m = regression_metrics(acc)
    assert m["n"] == n
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), **TOL)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, pred)), **TOL)
    assert m["mean_error"] == pytest.approx(float(np.mean(pred - y)), **TOL)
    nz = np.abs(y) >= 1e-12
    assert m["mape"] == pytest.approx(mean_absolute_percentage_error(y[nz], pred[nz]), **TOL)
    orjson.dumps(m)


def test_regression_metrics_undefined_values_are_none():
    assert regression_metrics(RegressionAccumulator()) == {
        "n": 0,
        "mae": None,
        "rmse": None,
        "mape": None,
        "mean_error": None,
    }
    m = regression_metrics(RegressionAccumulator().update(0.0, 2.0))
    assert m["mape"] is None and m["mae"] == 2.0 and m["rmse"] == 2.0 and m["mean_error"] == 2.0


# ----------------------------------------------------------------------------------------- summarize
def _assert_plain_json(x, path="$"):
    """Only dict/list/str/int/finite float/bool/None, no numpy types, no NaN."""
    if isinstance(x, dict):
        for k, v in x.items():
            assert type(k) is str, path
            _assert_plain_json(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _assert_plain_json(v, f"{path}[{i}]")
    else:
        assert x is None or type(x) in (str, int, float, bool), (path, type(x))
        if type(x) is float:
            assert math.isfinite(x), path


def _filled_window(seed: int) -> tuple[WindowAccumulator, dict]:
    rng = np.random.default_rng(seed)
    w = WindowAccumulator()
    lat = rng.lognormal(3, 1, 500)
    err = rng.random(500) < 0.05
    for x, e in zip(lat.tolist(), err.tolist(), strict=True):
        w.add_prediction(x, e)
    delays = rng.exponential(120, 300)
    y = rng.choice(["a", "b"], 300)
    p = np.where(rng.random(300) < 0.8, y, rng.choice(["a", "b"], 300))
    for t, q, d in zip(y.tolist(), p.tolist(), delays.tolist(), strict=True):
        w.add_outcome("classification", q, t, {"a": 0.6, "b": 0.4} if q == "a" else {"a": 0.3, "b": 0.7}, d)
    w.add_counter("duplicates", 4)
    w.add_counter("invalid:schema", 2)
    w.add_counter("invalid:missing_model")
    w.add_prediction(-1.0, False)  # rejected by the accumulator, not an invalid (dead-lettered) event
    oracle = {"lat": lat, "err": err, "delays": delays, "y": y, "p": p}
    return w, oracle


def test_summarize_sections_and_values():
    w, o = _filled_window(3)
    s = summarize(w, 60.0)
    assert set(s) == {
        "traffic",
        "labels",
        "classification",
        "regression",
        "latency",
        "counters",
        "data_quality",
        "scores",
        "payload",
        "segments",
        "error_analysis",
    }
    assert s["data_quality"] is None and s["scores"] is None  # no features or scores given to add_prediction
    assert s["payload"] is None and s["segments"] is None  # nor sizes or segment tags
    assert s["error_analysis"]["worst_slices"] is None and len(s["error_analysis"]["confused_pairs"]) == 2
    assert s["traffic"] == {
        "predictions": 501,
        "rate_per_s": 501 / 60.0,
        "errors": int(o["err"].sum()),
        "error_rate": pytest.approx(o["err"].sum() / 501, **TOL),
        "invalid": 3,
    }
    assert s["labels"]["labelled"] == 300 and s["labels"]["coverage"] == pytest.approx(300 / 501, **TOL)
    r = 2 ** (1 / 16)
    for key, q in [("delay_p50_s", 0.5), ("delay_p95_s", 0.95)]:
        true = np.quantile(o["delays"], q)
        assert true / r <= s["labels"][key] <= true * r
    for key, q in [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)]:
        true = np.quantile(o["lat"], q)
        assert true / r <= s["latency"][key] <= true * r
    assert s["latency"]["max_ms"] == o["lat"].max()
    assert s["classification"]["accuracy"] == pytest.approx(accuracy_score(o["y"], o["p"]), **TOL)
    assert s["regression"] is None
    assert s["counters"] == {
        "duplicates": 4,
        "relabels": 0,
        "unmatched_predictions": 0,
        "orphan_labels": 0,
        "late_labels": 0,
        "invalid_by_reason": {"missing_model": 1, "schema": 2},
        "rejected_by_reason": {"latency": 1},
    }
    _assert_plain_json(s)
    orjson.dumps(s)


def test_summarize_empty_window_is_plain_json():
    s = summarize(WindowAccumulator(), 300)
    _assert_plain_json(s)
    orjson.dumps(s)
    assert s["traffic"]["rate_per_s"] == 0.0 and s["traffic"]["error_rate"] is None
    assert s["labels"]["coverage"] is None and s["labels"]["delay_p50_s"] is None
    assert s["latency"] == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    assert s["classification"] is None and s["regression"] is None
    assert s["data_quality"] is None and s["scores"] is None
    with pytest.raises(ValueError):
        summarize(WindowAccumulator(), 0)


def test_summarize_regression_and_numpy_inputs_stay_plain():
    w = WindowAccumulator()
    rng = np.random.default_rng(4)
    for v in rng.normal(5, 1, 50):
        w.add_prediction(np.float64(abs(v)), np.bool_(False))
        w.add_outcome("regression", np.float64(v + 0.5), np.float64(v), None, np.float32(2.5))
    w.add_outcome("classification", np.int64(1), np.int64(1), {np.int64(1): np.float64(0.9)}, None)
    s = summarize(w, 10)
    _assert_plain_json(s)
    orjson.dumps(s)
    assert s["regression"]["n"] == 50 and s["regression"]["mean_error"] == pytest.approx(0.5, **TOL)
    assert s["classification"]["per_class"]["1"]["f1"] == 1.0


def test_merge_windows_rolling_view_equals_single_window():
    rng = np.random.default_rng(10)
    windows = [WindowAccumulator() for _ in range(12)]
    whole = WindowAccumulator()
    for _ in range(3000):
        i = int(rng.integers(12))
        lat = float(rng.lognormal(2, 1))
        t, q = ("a", "b")[int(rng.integers(2))], ("a", "b", "c")[int(rng.integers(3))]
        for w in (windows[i], whole):
            w.add_prediction(lat, False)
            w.add_outcome("classification", q, t, None, lat / 10)
    before = [w.to_dict() for w in windows]
    rolled = merge_windows(reversed(windows))
    assert [w.to_dict() for w in windows] == before  # inputs untouched
    assert rolled.to_dict() == whole.to_dict()
    assert summarize(rolled, 3600) == summarize(whole, 3600)
    assert merge_windows([]).is_empty()
