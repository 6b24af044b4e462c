"""Two-sample drift tests on bucketed distributions (pure: numpy/scipy only, no Kafka or Faust).

The alert engine compares a reference distribution (counts per bucket, e.g. an hour of a feature's
``signed_log`` buckets or of a categorical feature's values) with the current window's. Effect sizes alone
(PSI > 0.2, ...) are noise at small samples and alarm on trivia at large ones, so every method here also
returns a p-value that is honest under "same distribution" *at the sample sizes at hand*:

* Coarse bins: quantile bins of the reference for ordered buckets; for categories, one bin per category
  holding >= 1 % of the pooled counts and one for all the rarer ones (including categories the reference
  never saw; choosing them by the reference alone would bias the test). Then adjacent (ordered) or
  smallest (unordered) bins are merged until every cell of the 2 x B table expects at least 5 counts
  (Cochran's rule). The merging looks only at the pooled column totals, which are ancillary under the
  null, so the chi-square approximations stay valid. Measured false rejections at alpha = 1 %:
  0.7-1.5 % (up to 1.6 % for chi2 on ordered buckets when the reference is 10x smaller than the window).
* ``chi2``: Pearson's test of homogeneity on the 2 x B table.
* ``js``: Jensen-Shannon divergence (nats) of the two binned distributions, with the p-value of the G-test
  (likelihood-ratio test of homogeneity) on the same table: G = 2 * N * JS_w where JS_w is the JS divergence
  weighted by the sample sizes.
* ``psi``: population stability index with 0.5 added to every cell; under the null
  ``psi / (1/n_ref + 1/n_cur)`` is asymptotically chi-square with B - 1 degrees of freedom (PSI is the
  symmetric KL divergence, whose second-order term is the Pearson statistic divided by the sample sizes).
* ``ks``: two-sample Kolmogorov-Smirnov on the original ordered buckets (D at the bucket edges) with the
  asymptotic p-value ``kstwo(round(n m / (n + m)))`` (scipy's ``ks_2samp(method="asymp")``); conservative,
  because bucketing creates ties.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2, kstwo

__all__ = ["METHODS", "DriftResult", "contingency_table", "drift_test", "quantile_edges"]

METHODS = ("chi2", "js", "psi", "ks")
MIN_EXPECTED = 5.0
"""Smallest expected count per cell of the 2 x B table after merging bins."""
RARE_SHARE = 0.01
"""Categories below this share of the pooled counts are folded into one bin."""
PSI_SMOOTHING = 0.5


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one test: ``statistic`` is the method's own statistic (chi2: Pearson X^2, which grows
    with n and is no effect size; js: JS divergence in nats; psi: PSI; ks: D), ``bins`` the number of
    cells compared (ks: distinct buckets)."""

    method: str
    statistic: float
    p_value: float
    n_ref: int
    n_cur: int
    bins: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(counts: Mapping[Any, int], ordered: bool) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"counts must be non-negative integers, got {k!r}: {v!r}")
        if v:
            key = int(k) if ordered else k
            out[key] = out.get(key, 0) + int(v)
    return out


def quantile_edges(ref_counts: Mapping[int, int], bins: int) -> list[int]:
    """Bucket keys starting the 2nd..last coarse bin so each bin holds about ``1/bins`` of the reference,
    never splitting a bucket: a key ``k`` falls in bin ``bisect_right(edges, k)``, so keys beyond the
    reference's range join the first or last bin."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins!r}")
    clean = _clean(ref_counts, ordered=True)
    keys = sorted(clean)
    if len(keys) < 2 or bins == 1:
        return []
    counts = np.array([clean[k] for k in keys], dtype=float)
    before = np.cumsum(counts)[:-1]  # reference mass below keys[1:], strictly increasing
    total = counts.sum()
    edges: set[int] = set()
    for t in range(1, bins):
        target = t * total / bins
        i = int(np.searchsorted(before, target))
        if i == len(before) or (i > 0 and target - before[i - 1] <= before[i] - target):
            i -= 1
        edges.add(keys[i + 1])
    return sorted(edges)


def _ordered_table(ref: dict[int, int], cur: dict[int, int], bins: int) -> np.ndarray:
    edges = np.array(quantile_edges(ref, bins), dtype=np.int64)
    table = np.zeros((2, len(edges) + 1))
    for row, counts in enumerate((ref, cur)):
        keys = np.fromiter(counts, dtype=np.int64, count=len(counts))
        vals = np.fromiter(counts.values(), dtype=float, count=len(counts))
        np.add.at(table[row], np.searchsorted(edges, keys, side="right"), vals)
    return _merge_adjacent(table)


def _min_column(table: np.ndarray) -> float:
    """Smallest column total whose cells all expect >= MIN_EXPECTED counts."""
    n = table.sum(axis=1)
    return MIN_EXPECTED * n.sum() / n.min()


def _merge_adjacent(table: np.ndarray) -> np.ndarray:
    need = _min_column(table)
    cols: list[np.ndarray] = []
    acc = np.zeros(2)
    for j in range(table.shape[1]):
        acc = acc + table[:, j]
        if acc.sum() >= need:
            cols.append(acc)
            acc = np.zeros(2)
    if acc.sum() > 0:
        if cols:
            cols[-1] = cols[-1] + acc
        else:
            cols.append(acc)
    return np.column_stack(cols)


def _category_table(ref: dict[Hashable, int], cur: dict[Hashable, int]) -> np.ndarray:
    # Rare means rare in the pooled counts: choosing by the reference counts alone would fold categories
    # *because* the reference saw few of them, biasing the test (measured: 12-20 % false rejections at
    # alpha 1 % with a 200-count reference). The pooled counts are ancillary under the null.
    pooled = dict(ref)
    for k, v in cur.items():
        pooled[k] = pooled.get(k, 0) + v
    total = sum(pooled.values())
    common = sorted((k for k in pooled if pooled[k] >= RARE_SHARE * total), key=repr)
    keep = set(common)
    fold = np.array(
        [
            sum(v for k, v in ref.items() if k not in keep),
            sum(v for k, v in cur.items() if k not in keep),
        ],
        dtype=float,
    )
    cols = [np.array([ref.get(k, 0), cur.get(k, 0)], dtype=float) for k in common]
    if fold.sum() > 0:
        cols.append(fold)
    table = np.column_stack(cols)
    need = _min_column(table)
    # Fold the smallest column into the next smallest until every column is large enough.
    while table.shape[1] > 1:
        tot = table.sum(axis=0)
        order = np.argsort(tot, kind="stable")
        if tot[order[0]] >= need:
            break
        a, b = order[0], order[1]
        merged = table[:, a] + table[:, b]
        table = np.column_stack([np.delete(table, [a, b], axis=1), merged])
    return table


def _pearson(table: np.ndarray) -> float:
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return float(((table - expected) ** 2 / expected).sum())


def _g_stat(table: np.ndarray) -> float:
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    nz = table > 0
    return float(2.0 * (table[nz] * np.log(table[nz] / expected[nz])).sum())


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    out = 0.0
    for x in (p, q):
        nz = x > 0
        out += 0.5 * float((x[nz] * np.log(x[nz] / m[nz])).sum())
    return max(out, 0.0)


def _ks(ref: dict[int, int], cur: dict[int, int]) -> tuple[float, float, int]:
    keys = np.array(sorted(set(ref) | set(cur)), dtype=np.int64)
    r = np.array([ref.get(int(k), 0) for k in keys], dtype=float)
    c = np.array([cur.get(int(k), 0) for k in keys], dtype=float)
    n, m = r.sum(), c.sum()
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    en = round(n * m / (n + m))
    p = float(np.clip(kstwo.sf(d, max(en, 1)), 0.0, 1.0))
    return d, p, len(keys)


def contingency_table(
    ref: Mapping[Any, int], cur: Mapping[Any, int], *, ordered: bool, bins: int = 10
) -> np.ndarray:
    """The 2 x B table (row 0: reference, row 1: current) that chi2, js and psi compare: coarse bins as in
    the module docstring, merged until every cell expects >= 5 counts (B may be 1: nothing to test)."""
    r, c = _clean(ref, ordered), _clean(cur, ordered)
    if not r or not c:
        raise ValueError("both distributions need at least one count")
    return _ordered_table(r, c, bins) if ordered else _category_table(r, c)


def drift_test(
    ref: Mapping[Any, int], cur: Mapping[Any, int], method: str, *, ordered: bool, bins: int = 10
) -> DriftResult | None:
    """Compare the current counts with the reference counts (bucket -> count) by ``method`` (``chi2``,
    ``js``, ``psi`` or ``ks``; see the module docstring). ``ordered=True``: int bucket keys whose order is
    the value order (quantile bins of the reference, ``bins`` of them before merging); False: categories.
    None when either side is empty. ``ks`` needs ``ordered=True`` (ValueError otherwise)."""
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")
    if method == "ks" and not ordered:
        raise ValueError("ks needs ordered buckets (a numeric distribution)")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    r, c = _clean(ref, ordered), _clean(cur, ordered)
    n_ref, n_cur = sum(r.values()), sum(c.values())
    if not n_ref or not n_cur:
        return None
    if method == "ks":
        d, p, k = _ks(r, c)
        return DriftResult("ks", d, p, n_ref, n_cur, k)
    table = contingency_table(r, c, ordered=ordered, bins=bins)
    b = table.shape[1]
    df = b - 1
    if method == "chi2":
        stat = _pearson(table) if df else 0.0
        p = float(chi2.sf(stat, df)) if df else 1.0
    elif method == "js":
        stat = _js(table[0] / n_ref, table[1] / n_cur)
        p = float(chi2.sf(_g_stat(table), df)) if df else 1.0
    else:
        sm = table + PSI_SMOOTHING
        pr, pc = sm[0] / sm[0].sum(), sm[1] / sm[1].sum()
        stat = float(((pc - pr) * np.log(pc / pr)).sum())
        p = float(chi2.sf(stat / (1.0 / n_ref + 1.0 / n_cur), df)) if df else 1.0
    if not math.isfinite(p):
        p = 1.0
    return DriftResult(method, stat, p, n_ref, n_cur, b)
