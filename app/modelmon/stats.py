"""Read-time metrics derived from the mergeable accumulators of :mod:`modelmon.aggregate` (pure code).

Everything returned here is plain JSON: str keys, ints, finite floats, lists, None — never a numpy scalar
and never NaN/inf (an undefined value is ``None``), so ``orjson.dumps`` works with default options.

Conventions
    * Precision/recall/F1 follow sklearn with ``zero_division=0``: a class never predicted has
      precision 0.0, a class with no support has recall 0.0, and F1 = 2 tp / (support + predicted)
      (0.0 when both are 0). Macro F1 is the unweighted mean of F1 over every class seen as a true or
      predicted label (sklearn's default label set), excluding the ``"__other__"`` fold.
    * MAPE is a *fraction* (0.05 = 5 %), like sklearn's ``mean_absolute_percentage_error``, computed on
      samples with |label| >= 1e-12 only (None when there is none).
    * ``brier`` is the multi-class Brier score in [0, 2] (see :func:`modelmon.aggregate.score_terms`);
      for a binary model it is twice the usual binary Brier score.
    * ``mean_error`` is the bias mean(prediction - label).
    * A feature is *missing* from a prediction when it is absent or null; its missing count in a window
      is ``predictions - present`` (see :class:`modelmon.aggregate.FeatureStats`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from statistics import NormalDist
from typing import Any

from modelmon.aggregate import (
    KNOWN_COUNTERS,
    OTHER,
    PAYLOAD_OFFSET,
    BinCounts,
    ClassificationAccumulator,
    RegressionAccumulator,
    WindowAccumulator,
    unit_bounds,
)

__all__ = [
    "classification_metrics",
    "data_quality",
    "feature_distribution",
    "feature_missing",
    "merge_windows",
    "prediction_distribution",
    "regression_metrics",
    "score_distribution",
    "score_summary",
    "summarize",
    "wilson_interval",
]


def _num(x: float | None) -> float | None:
    """A plain finite float, or None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + 0.5 * confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Wilson score interval (no continuity correction) for a binomial proportion.

    Same definition as ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``: the bounds are
    exactly 0.0 when ``successes == 0`` and 1.0 when ``successes == n``. None when ``n == 0``.
    """
    if isinstance(successes, bool) or isinstance(n, bool):
        raise ValueError("successes and n must be integers")
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n == 0:
        return None
    z = _z(float(confidence))
    z2 = z * z
    p = successes / n
    denom = 2.0 * (n + z2)
    center = (2.0 * n * p + z2) / denom
    half = z / denom * math.sqrt(4.0 * n * p * (1.0 - p) + z2)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def classification_metrics(acc: ClassificationAccumulator | None, top_n: int | None = 20) -> dict[str, Any]:
    """Accuracy (+ Wilson 95 % CI), per-class precision/recall/F1/support, macro F1, a top-N confusion
    matrix, log loss and Brier score of a :class:`ClassificationAccumulator`.

    ``per_class`` lists every class kept by the accumulator (at most its class cap). ``confusion`` keeps
    the ``top_n`` classes by support (ties: more predictions first, then label order; None = all) and
    folds every other class, and the accumulator's own ``"__other__"`` bucket, into ``"__other__"``,
    listed last; rows are true labels, columns predicted ones. ``capped`` is True when the accumulator's
    class cap folded some classes (then per-class metrics cover the kept classes only; accuracy is
    always exact). ``log_loss``/``brier`` are None when no outcome had scores.
    """
    if acc is None:
        acc = ClassificationAccumulator()
    cc = acc.confusion
    n = cc.n
    rows = cc.rows()
    support: dict[str, int] = {}
    predicted: dict[str, int] = {}
    for t, row in rows.items():
        support[t] = sum(row.values())
        for p, c in row.items():
            predicted[p] = predicted.get(p, 0) + c
    labels = [lab for lab in cc.labels() if lab != OTHER]

    per_class: dict[str, dict[str, Any]] = {}
    f1_sum = 0.0
    for lab in labels:
        tp = rows.get(lab, {}).get(lab, 0)
        sup = support.get(lab, 0)
        pred = predicted.get(lab, 0)
        precision = tp / pred if pred else 0.0
        recall = tp / sup if sup else 0.0
        f1 = 2.0 * tp / (sup + pred) if (sup + pred) else 0.0
        f1_sum += f1
        per_class[lab] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": sup,
            "predicted": pred,
        }

    ci = wilson_interval(cc.n_correct, n)
    ranked = sorted(labels, key=lambda lab: (-support.get(lab, 0), -predicted.get(lab, 0), lab))
    top = ranked if top_n is None else ranked[: max(0, int(top_n))]
    top_set = set(top)
    conf_labels = list(top)
    if cc.folded or len(top) < len(labels):
        conf_labels.append(OTHER)
    pos = {lab: i for i, lab in enumerate(conf_labels)}
    other_pos = pos.get(OTHER)
    matrix = [[0] * len(conf_labels) for _ in conf_labels]
    for t, row in rows.items():
        i = pos[t] if t in top_set else other_pos
        mrow = matrix[i]  # type: ignore[index]
        for p, c in row.items():
            mrow[pos[p] if p in top_set else other_pos] += c  # type: ignore[index]

    n_scored = acc.n_scored
    return {
        "n": n,
        "accuracy": _ratio(cc.n_correct, n),
        "accuracy_ci_low": None if ci is None else ci[0],
        "accuracy_ci_high": None if ci is None else ci[1],
        "macro_f1": _num(f1_sum / len(labels)) if labels else None,
        "per_class": per_class,
        "confusion": {"labels": conf_labels, "matrix": matrix},
        "n_scored": n_scored,
        "log_loss": _num(acc.log_loss_sum / n_scored) if n_scored else None,
        "brier": _num(acc.brier_sum / n_scored) if n_scored else None,
        "capped": cc.folded,
    }


def regression_metrics(acc: RegressionAccumulator | None) -> dict[str, Any]:
    """n, MAE, RMSE, MAPE (a fraction, on non-zero labels), mean error (bias); None where undefined."""
    if acc is None:
        acc = RegressionAccumulator()
    mse = acc.mse()
    return {
        "n": acc.n,
        "mae": _num(acc.mae()),
        "rmse": None if mse is None else _num(math.sqrt(mse)),
        "mape": _num(acc.mape()),
        "mean_error": _num(acc.mean_error()),
    }


def data_quality(
    window: WindowAccumulator, reference: WindowAccumulator | None = None
) -> dict[str, Any] | None:
    """Per kept feature: non-null values and missing rate (absent or null); None when no feature was seen.

    ``capped`` is True when feature names beyond the cap (64 smallest names) were not tracked. With a
    ``reference`` (the model version's reference period, see :func:`against_reference`) every feature
    also gets its reference kind, type-change share and out-of-range share.
    """
    fs = window.features
    if fs is None or not (fs.n or fs.folded):
        return None
    n = window.predictions
    features: dict[str, dict[str, Any]] = {}
    for name, c in fs.present.items():
        features[name] = {"present": c, "missing_rate": _ratio(n - c, n)}
        if reference is not None:
            features[name].update(against_reference(window, reference, name))
    return {"features": features, "capped": fs.folded}


def against_reference(window: WindowAccumulator, reference: WindowAccumulator, name: str) -> dict[str, Any]:
    """How one feature's values compare with the reference's: kind, type changes, out-of-range values.

    ``reference_kind`` is the kind most of the reference's values had ("numeric" or "categorical"; None:
    the reference never saw the feature). ``type_change_share``: share of the window's non-null values of
    the other kind (e.g. numbers arriving as strings). ``out_of_range_share``: for a numeric feature, the
    share of its numeric values in buckets outside the reference's lowest..highest bucket (bucket
    resolution: about 4.4 %, see ``signed_log_bucket``); for a categorical one, the share of categories
    the reference never saw (None when the reference folded rare categories, so it cannot tell).
    """
    fs, rfs = window.features, reference.features
    num = fs.numeric.get(name) if fs is not None else None
    cat = fs.categorical.get(name) if fs is not None else None
    rnum = rfs.numeric.get(name) if rfs is not None else None
    rcat = rfs.categorical.get(name) if rfs is not None else None
    rn = rnum.n if rnum is not None else 0
    rc = rcat.n if rcat is not None else 0
    if rn + rc == 0:
        return {"reference_kind": None, "type_change_share": None, "out_of_range_share": None}
    wn = num.n if num is not None else 0
    wc = cat.n if cat is not None else 0
    kind = "numeric" if rn >= rc else "categorical"
    other_kind = wc if kind == "numeric" else wn
    out_share: float | None = None
    if kind == "numeric" and wn:
        assert num is not None and rnum is not None
        keys = rnum.counts().keys()
        lo, hi = min(keys), max(keys)
        out_share = sum(c for b, c in num.counts().items() if b < lo or b > hi) / wn
    elif kind == "categorical" and wc:
        assert cat is not None and rcat is not None
        if not rcat.other:
            seen = rcat.counts()
            out_share = sum(c for v, c in cat.counts().items() if v not in seen) / wc
    return {
        "reference_kind": kind,
        "type_change_share": _ratio(other_kind, wn + wc),
        "out_of_range_share": out_share,
    }


def payload_summary(window: WindowAccumulator) -> dict[str, Any] | None:
    """Sizes of the prediction events as received (bytes): p50, p95, max and mean; None when unknown."""
    h = window.payload
    if h is None or not h.n:
        return None
    p50, p95 = h.quantiles((0.5, 0.95))
    off = PAYLOAD_OFFSET  # the histogram holds size - 0.5 (see aggregate.PAYLOAD_OFFSET)
    return {
        "n": h.n,
        "p50_bytes": _num(p50 + off),
        "p95_bytes": _num(p95 + off),
        "max_bytes": _num(h.max + off),
        "mean_bytes": _num(h.mean + off),
    }


def score_summary(window: WindowAccumulator) -> dict[str, Any] | None:
    """Scored error-free classification predictions and their mean confidence; None when there are none.

    The mean uses each percent bucket's mid-point (bucket 100 is exactly 1.0), so it is within 0.005 of
    the mean of the raw confidences.
    """
    conf = window.confidence
    if conf is None:
        return None
    counts = conf.counts()
    n = sum(counts.values())
    if not n:
        return None
    total = 0.0
    for b, c in counts.items():
        lo, hi = unit_bounds(b)
        total += 0.5 * (lo + hi) * c
    return {"n": n, "confidence_mean": _num(min(1.0, total / n))}


def feature_missing(window: WindowAccumulator, name: str) -> tuple[int, int]:
    """(missing, predictions) of one feature in a window: predictions where it was absent or null.

    A feature never seen is missing everywhere. When the window's feature names were capped and ``name``
    sorts after every kept name, its count is unknown: (0, 0), i.e. no evidence either way.
    """
    n = window.predictions
    fs = window.features
    if fs is None:
        return n, n
    if not fs.tracks(name):
        return 0, 0
    return n - fs.count(name), n


def _larger(a: Any, b: Any) -> tuple[Any, bool]:
    """The non-empty one of (a BinCounts, a CategoryCounts) with more values, and whether it is ordered."""
    na = 0 if a is None else a.n
    nb = 0 if b is None else b.n
    if na >= nb:
        return a, True
    return b, False


def feature_distribution(window: WindowAccumulator, name: str) -> tuple[dict, bool] | None:
    """One feature's value counts in a window, and whether their keys are ordered; None when it had none.

    Numeric features give ({signed-log bucket: n}, True), categorical ones ({category: n}, False) with
    ``"__other__"`` folding values beyond the category cap. A feature that sent both kinds gives the
    kind with more values (numbers on a tie).
    """
    fs = window.features
    if fs is None:
        return None
    dist, ordered = _larger(fs.numeric.get(name), fs.categorical.get(name))
    if dist is None or not dist.n:
        return None
    return dist.counts(), ordered


def score_distribution(window: WindowAccumulator) -> dict[int, int] | None:
    """Counts of the confidence (percent buckets 0..100, see ``aggregate.unit_bucket``); None when empty."""
    conf: BinCounts | None = window.confidence
    if conf is None or not conf.n:
        return None
    return conf.counts()


def prediction_distribution(window: WindowAccumulator) -> tuple[dict, bool] | None:
    """Counts of the error-free predictions, and whether their keys are ordered; None when empty.

    Regression: ({signed-log bucket: n}, True); classification: ({class: n}, False), classes beyond the
    class cap folded into ``"__other__"``. A window with both gives the larger (regression on a tie).
    """
    dist, ordered = _larger(window.predicted_values, window.predicted)
    if dist is None or not dist.n:
        return None
    return dist.counts(), ordered


def summarize(
    window: WindowAccumulator,
    window_size_s: float,
    top_n: int | None = 20,
    reference: WindowAccumulator | None = None,
) -> dict[str, Any]:
    """The metric-event body sections of one (possibly merged) window accumulator.

    ``rate_per_s`` is predictions / ``window_size_s`` (the nominal window length, not the time spanned by
    events). ``coverage`` is labelled / predictions (not clamped: it can exceed 1 if a window receives
    outcomes whose predictions it did not count). Label delays are in seconds, latencies in ms; the
    quantiles carry the error bound documented on :class:`modelmon.aggregate.LogHistogram` (≈ 4.4 %).
    ``traffic.invalid`` and ``counters.invalid_by_reason`` count the ``invalid:<reason>`` counters (events
    dead-lettered by the plumbing); ``counters.rejected_by_reason`` the values the accumulator itself
    could not use (``rejected:<reason>``). Every name of ``KNOWN_COUNTERS`` is present (0 by default).
    ``data_quality`` (:func:`data_quality`) and ``scores`` (:func:`score_summary`) are None when the
    window saw no features, respectively no scored classification prediction. ``payload`` summarises the
    event sizes, ``segments`` and ``error_analysis`` come from :mod:`modelmon.error_analysis` (None without
    segment tags or labels); ``reference`` feeds the data-quality comparison (:func:`against_reference`).
    """
    from .error_analysis import error_analysis, segment_table

    if not (window_size_s > 0 and math.isfinite(window_size_s)):
        raise ValueError(f"window_size_s must be positive and finite, got {window_size_s!r}")
    w = window
    invalid = {k[len("invalid:") :]: v for k, v in sorted(w.counters.items()) if k.startswith("invalid:")}
    rejected = {k[len("rejected:") :]: v for k, v in sorted(w.counters.items()) if k.startswith("rejected:")}

    lat = w.latency
    if lat is not None and lat.n:
        p50, p95, p99 = lat.quantiles((0.5, 0.95, 0.99))
        latency = {"p50_ms": _num(p50), "p95_ms": _num(p95), "p99_ms": _num(p99), "max_ms": _num(lat.max)}
    else:
        latency = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}

    delay = w.label_delay
    if delay is not None and delay.n:
        d50, d95 = delay.quantiles((0.5, 0.95))
    else:
        d50 = d95 = None

    cls = w.classification
    reg = w.regression
    counters: dict[str, Any] = {name: w.counters.get(name, 0) for name in KNOWN_COUNTERS}
    counters["invalid_by_reason"] = invalid
    counters["rejected_by_reason"] = rejected
    return {
        "traffic": {
            "predictions": w.predictions,
            "rate_per_s": _num(w.predictions / float(window_size_s)),
            "errors": w.errors,
            "error_rate": _ratio(w.errors, w.predictions),
            "invalid": sum(invalid.values()),
        },
        "labels": {
            "labelled": w.labelled,
            "coverage": _ratio(w.labelled, w.predictions),
            "delay_p50_s": _num(d50),
            "delay_p95_s": _num(d95),
        },
        "classification": classification_metrics(cls, top_n) if cls is not None and cls.n else None,
        "regression": regression_metrics(reg) if reg is not None and reg.n else None,
        "latency": latency,
        "counters": counters,
        "data_quality": data_quality(w, reference),
        "scores": score_summary(w),
        "payload": payload_summary(w),
        "segments": segment_table(w),
        "error_analysis": error_analysis(w),
    }


def merge_windows(windows: Iterable[WindowAccumulator]) -> WindowAccumulator:
    """A new accumulator holding the exact merge of ``windows`` (inputs are not modified).

    Rolling views (last 5 min, 1 h, 24 h) are merges of the tumbling windows they cover. An empty
    iterable gives an empty accumulator.
    """
    out: WindowAccumulator | None = None
    for w in windows:
        if out is None:
            out = w.copy()
        else:
            out.merge(w)
    return WindowAccumulator() if out is None else out
