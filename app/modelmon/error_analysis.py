"""Where the model errs, derived at read time from a (merged) window accumulator (pure, no Kafka or Faust).

* :func:`segment_table`: per segment key, the top values by volume (plus "__other__") with their
  traffic, error rate, label coverage and quality (accuracy with its Wilson interval, or MAE).
* :func:`worst_slices`: the slices (key = value) whose quality is *significantly* worse than the rest of
  the model's labelled predictions, ranked by the excess errors they cause.
* :func:`confused_pairs`: the most frequent (true class, predicted class) mistakes.

The slice test compares a slice with its complement (every other labelled prediction of the window or
view), one-sided, because the question is "is this slice worse": classification uses the pooled
two-proportion z-test on accuracy, regression Welch's z-test on the absolute error (normal
approximation; both need ``min_labelled`` labels on each side). Many slices are tested at once, so the
p-values are Holm-adjusted and a slice is reported when its adjusted p-value is at most ``alpha``: the
chance that any slice as good as the rest is reported stays below ``alpha``.
"""

from __future__ import annotations

import math
from typing import Any

from .aggregate import OTHER, WindowAccumulator, _exact_value
from .segments import COR, ERR, LAB, SAE, SSE, N
from .stats import wilson_interval

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_LABELLED",
    "DEFAULT_TOP_VALUES",
    "confused_pairs",
    "error_analysis",
    "holm",
    "segment_table",
    "worst_slices",
]

DEFAULT_TOP_VALUES = 10
"""Values listed per segment key (by volume); the others are summed into ``"__other__"``."""
DEFAULT_ALPHA = 0.01
"""Family-wise error level of the worst-slice list (Holm)."""
DEFAULT_MIN_LABELLED = 30
"""Labels needed in a slice and in its complement before the slice is tested."""
DEFAULT_PAIRS = 5


def _phi(z: float) -> float:
    """Standard normal CDF, accurate in the far lower tail (erfc; ``NormalDist.cdf`` underflows to 0
    from z = -8.3 on, where a strongly worse slice's p-value lives)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


CLASSIFICATION_TEST = "two-proportion z-test (pooled, one-sided: slice accuracy < rest), Holm-adjusted"
REGRESSION_TEST = "Welch z-test on absolute error (one-sided: slice MAE > rest), Holm-adjusted"


def _quality(row: list[int], regression: bool) -> dict[str, Any]:
    lab = row[LAB]
    if regression:
        return {"mae": _exact_value(row[SAE]) / lab if lab else None}
    ci = wilson_interval(row[COR], lab)
    return {
        "accuracy": row[COR] / lab if lab else None,
        "accuracy_ci_low": None if ci is None else ci[0],
        "accuracy_ci_high": None if ci is None else ci[1],
    }


def _is_regression(window: WindowAccumulator) -> bool:
    reg, cls = window.regression, window.classification
    return reg is not None and reg.n > 0 and (cls is None or reg.n > cls.n)


def segment_table(window: WindowAccumulator, top_n: int = DEFAULT_TOP_VALUES) -> dict[str, Any] | None:
    """{key: {"values": [...], "distinct": kept values, "folded_by_cap": bool}} for every segment key.

    ``values`` lists the ``top_n`` kept values by predictions (ties by name), then ``"__other__"`` holding
    the rest (values beyond ``top_n`` and values the accumulator folded beyond its cap) when non-empty.
    ``share`` is the value's share of the key's tagged predictions. None when no prediction had tags.
    """
    sg = window.segments
    if sg is None or sg.is_empty():
        return None
    regression = _is_regression(window)
    keys: dict[str, Any] = {}
    for key, (rows, other) in sg.slices().items():
        ranked = sorted(rows.items(), key=lambda kv: (-kv[1][N], kv[0]))
        rest = list(other)
        for _, row in ranked[top_n:]:
            rest = [a + b for a, b in zip(rest, row, strict=True)]
        listed = [(value, row) for value, row in ranked[:top_n]]
        if rest[N] or rest[LAB]:
            listed.append((OTHER, rest))
        total = sum(r[N] for r in rows.values()) + other[N]
        keys[key] = {
            "values": [
                {
                    "value": value,
                    "predictions": row[N],
                    "share": row[N] / total if total else None,
                    "errors": row[ERR],
                    "error_rate": row[ERR] / row[N] if row[N] else None,
                    "labelled": row[LAB],
                    **_quality(row, regression),
                }
                for value, row in listed
            ],
            "distinct": len(rows),
            "folded_by_cap": bool(other[N] or other[LAB]),
        }
    return {"keys": keys, "keys_capped": sg.folded_keys}


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (each capped at 1, monotone in rank)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _classification_test(c1: int, n1: int, c2: int, n2: int) -> float:
    """One-sided p-value of H1: p1 < p2 (pooled two-proportion z-test)."""
    pooled = (c1 + c2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0.0:
        return 1.0  # every label right (or every one wrong) on both sides: no difference
    return _phi((c1 / n1 - c2 / n2) / math.sqrt(var))


def _mean_var(sae: float, sse: float, n: int) -> tuple[float, float]:
    mean = sae / n
    return mean, max(0.0, (sse - n * mean * mean) / (n - 1))


def _regression_test(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int) -> float:
    """One-sided p-value of H1: mean |error| of the slice > the rest's (Welch's z)."""
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0.0:
        return 0.0 if m1 > m2 else 1.0
    return _phi((m2 - m1) / se)


def worst_slices(
    window: WindowAccumulator,
    alpha: float = DEFAULT_ALPHA,
    min_labelled: int = DEFAULT_MIN_LABELLED,
    limit: int = 10,
) -> dict[str, Any] | None:
    """The slices significantly worse than the rest, ranked by excess errors; None without tags or labels.

    Every kept (key, value) with ``min_labelled`` labels, and as many outside it, is tested against its
    complement. Reported slices carry the test, the raw and Holm-adjusted p-values, the slice's quality
    and interval, the rest's quality and the excess: labelled x (rest accuracy - slice accuracy) errors
    (regression: labelled x (slice MAE - rest MAE) of absolute error) — what the slice costs the model.
    """
    sg = window.segments
    if sg is None or sg.is_empty():
        return None
    regression = _is_regression(window)
    if regression:
        racc = window.regression
        assert racc is not None
        total_n, total_sae, total_sse = racc.n, racc._sum_abs, racc._sum_sq
        total_c = 0
    else:
        cacc = window.classification
        if cacc is None or not cacc.n:
            return None
        total_n, total_c, total_sae, total_sse = cacc.n, cacc.n_correct, 0, 0
    candidates = []
    for key, (rows, _) in sg.slices().items():
        for value, row in rows.items():
            n1 = row[LAB]
            n2 = total_n - n1
            if n1 < min_labelled or n2 < min_labelled:
                continue
            if regression:
                m1, v1 = _mean_var(_exact_value(row[SAE]), _exact_value(row[SSE]), n1)
                m2, v2 = _mean_var(_exact_value(total_sae - row[SAE]), _exact_value(total_sse - row[SSE]), n2)
                metric, mine, rest, worse_by = "mae", m1, m2, m1 - m2
                p = _regression_test(m1, v1, n1, m2, v2, n2)
            else:
                c1, c2 = row[COR], total_c - row[COR]
                metric, mine, rest = "accuracy", c1 / n1, c2 / n2
                worse_by = rest - mine
                p = _classification_test(c1, n1, c2, n2)
            candidates.append({
                "key": key, "value": value, "labelled": n1, "p_value": p, "metric": metric, "slice": mine,
                "rest": rest, "difference": mine - rest, "excess": n1 * worse_by, "row": row,
            })  # fmt: skip
    adjusted = holm([c["p_value"] for c in candidates])
    flagged = []
    for cand, p_adj in zip(candidates, adjusted, strict=True):
        if p_adj <= alpha and cand["excess"] > 0:
            row = cand.pop("row")
            cand["p_adjusted"] = p_adj
            q = _quality(row, regression)
            if not regression:
                cand["ci_low"], cand["ci_high"] = q["accuracy_ci_low"], q["accuracy_ci_high"]
            flagged.append(cand)
    flagged.sort(key=lambda c: (-c["excess"], c["p_value"], c["key"], c["value"]))
    return {
        "slices": flagged[:limit],
        "significant": len(flagged),
        "tested": len(candidates),
        "test": REGRESSION_TEST if regression else CLASSIFICATION_TEST,
        "alpha": alpha,
        "min_labelled": min_labelled,
    }


def confused_pairs(window: WindowAccumulator, limit: int = DEFAULT_PAIRS) -> list[dict[str, Any]] | None:
    """The ``limit`` most frequent mistakes {true, predicted, count, share_of_errors}; None without labels.

    Classes folded beyond the class cap appear as ``"__other__"``.
    """
    cacc = window.classification
    if cacc is None or not cacc.n:
        return None
    errors = cacc.n - cacc.n_correct
    cells = [(c, t, p) for t, row in cacc.confusion.rows().items() for p, c in row.items() if t != p]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [
        {"true": t, "predicted": p, "count": c, "share_of_errors": c / errors if errors else None}
        for c, t, p in cells[:limit]
    ]


def error_analysis(window: WindowAccumulator) -> dict[str, Any] | None:
    """The ``error_analysis`` section of a metric event: worst slices and confused pairs (None: neither)."""
    slices = worst_slices(window)
    pairs = confused_pairs(window)
    if slices is None and pairs is None:
        return None
    return {"worst_slices": slices, "confused_pairs": pairs}
