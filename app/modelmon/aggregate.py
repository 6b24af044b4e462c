"""Mergeable per-window accumulators: the pure statistical state of modelmon (design rules 4, 5, 8).

Every statistic kept here is a sum of counts, so accumulators of different partitions, windows and workers
merge *exactly*: for any split of an event stream into parts, accumulating the parts separately and merging
them in any order and grouping gives a state whose ``to_dict()`` is identical to accumulating the whole
stream in one accumulator. Derived values (percentiles, rates, confidence intervals, F1, ...) are computed
at read time by :mod:`modelmon.stats`.

Style (after River): each statistic is a small class with ``update`` / ``merge`` (and ``revert`` where it is
natural), ``to_dict`` / ``from_dict`` (plain JSON-able dicts: str keys, ints, finite floats, strings, lists)
and ``copy``. ``merge`` mutates and returns ``self``. No Kafka or Faust import, ever.

Exactness of float sums
    Floating-point addition is not associative, so a float running sum would depend on the merge order.
    Sums of floats (latency, log-loss terms, squared errors, ...) are therefore kept *exactly*, as a
    Python int counting units of 2**-1074 (every finite double is an integer multiple of that), and
    rounded once, correctly, when read. In ``to_dict`` they are strings ``"<hex mantissa>p<exponent>"``
    (value = mantissa * 2**exponent, e.g. ``"3p-1"`` is 1.5, ``"0"`` is zero) because JSON numbers cannot
    carry them; use :func:`exact_sum_from_json` to read one elsewhere. The cost is ~0.3 µs per term.

Labels
    Class labels are canonicalised to strings by :func:`canonical_label`; see there for the rules.

Distributions
    Feature values, scores and predictions are kept as counts on fixed buckets (:func:`signed_log_bucket`
    for numbers, :func:`unit_bucket` for probabilities) or as bounded category counts, so they merge
    exactly like everything else; drift tests compare these counts between windows.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from .segments import SegmentStats

__all__ = [
    "DEFAULT_CATEGORY_CAP",
    "DEFAULT_CLASS_CAP",
    "DEFAULT_FEATURE_CAP",
    "HISTOGRAM_SPECS",
    "KNOWN_COUNTERS",
    "LOG_LOSS_EPS",
    "MAPE_ZERO_THRESHOLD",
    "OTHER",
    "PAYLOAD_OFFSET",
    "SIGNED_LOG_EDGES",
    "SIGNED_LOG_MAX_BUCKET",
    "BinCounts",
    "CategoryCounts",
    "ClassificationAccumulator",
    "ConfusionCounts",
    "FeatureStats",
    "HistogramSpec",
    "LogHistogram",
    "RegressionAccumulator",
    "WindowAccumulator",
    "canonical_label",
    "exact_sum_from_json",
    "exact_sum_to_json",
    "score_terms",
    "signed_log_bounds",
    "signed_log_bucket",
    "unit_bounds",
    "unit_bucket",
]

OTHER = "__other__"
"""The bucket that folds classes beyond the class cap (and the name of the fold in read-time views)."""

DEFAULT_CLASS_CAP = 256
LOG_LOSS_EPS = sys.float_info.epsilon
"""sklearn clips probabilities to [eps, 1 - eps] with eps = np.finfo(np.float64).eps = 2**-52."""
MAPE_ZERO_THRESHOLD = 1e-12
"""Regression labels with |y| below this are excluded from MAPE (and counted in ``n_zero_label``)."""

KNOWN_COUNTERS = ("duplicates", "relabels", "unmatched_predictions", "orphan_labels", "late_labels")
"""Counter names accepted by :meth:`WindowAccumulator.add_counter`, besides ``invalid:<reason>``
(events dead-lettered by the plumbing). The accumulator's own rejections are ``rejected:<reason>``."""

CLASSIFICATION_TASKS = frozenset({"classification", "binary", "multiclass"})
REGRESSION_TASKS = frozenset({"regression"})

_INF = math.inf

PAYLOAD_OFFSET = 0.5
"""The payload histogram counts ``size - 0.5``: sizes are whole bytes, and a size equal to a bucket edge
(1024) then falls below it, so bucket upper edges read as inclusive byte counts (Prometheus ``le``).
Read-time values add it back."""


# --------------------------------------------------------------------------------------------- exact sums
_EXACT_BITS = 1074
_EXACT_ONE = 1 << _EXACT_BITS  # the int that stands for 1.0


def _exact(x: float) -> int:
    """The finite float ``x`` as an exact integer number of 2**-1074 units."""
    num, den = x.as_integer_ratio()  # den is a power of two <= 2**1074
    return num << (_EXACT_BITS + 1 - den.bit_length())


def _exact_value(v: int) -> float:
    """Correctly rounded float of an exact sum (int / int true division rounds correctly)."""
    return v / _EXACT_ONE


def exact_sum_to_json(v: int) -> str:
    """Encode an exact sum as ``"<hex mantissa>p<binary exponent>"``, normalised (odd mantissa)."""
    if v == 0:
        return "0"
    shift = (v & -v).bit_length() - 1  # trailing zero bits
    m = v >> shift
    sign = "-" if m < 0 else ""
    return f"{sign}{abs(m):x}p{shift - _EXACT_BITS}"


def exact_sum_from_json(s: str) -> int:
    """Inverse of :func:`exact_sum_to_json`; returns the int in 2**-1074 units."""
    if not isinstance(s, str):
        raise ValueError(f"exact sum must be a string, got {type(s).__name__}")
    if s == "0":
        return 0
    mant, sep, exp = s.partition("p")
    if not sep:
        raise ValueError(f"malformed exact sum {s!r}")
    m = int(mant, 16)
    shift = int(exp) + _EXACT_BITS
    if shift < 0:
        raise ValueError(f"exact sum {s!r} below 2**-1074")
    return m << shift


def _finite_float(x: Any, what: str) -> float:
    """Real number -> float; rejects bools, non-numbers, NaN and infinities."""
    t = type(x)
    if t is not float:
        if t is bool or not isinstance(x, (int, float)):
            if hasattr(x, "item") and not isinstance(x, (bool, str, bytes)):  # numpy scalar
                return _finite_float(x.item(), what)
            raise ValueError(f"{what} must be a real number, got {t.__name__}")
        x = float(x)
    if not -_INF < x < _INF:
        raise ValueError(f"{what} must be finite, got {x!r}")
    return x


# ----------------------------------------------------------------------------------------------- labels
def canonical_label(value: Any) -> str:
    """The canonical string of a class label; the same class always maps to the same string.

    * ``str`` is kept verbatim (so ``"1"`` is ``"1"``, ``"True"`` is ``"True"``);
    * ``bool`` becomes ``"true"`` / ``"false"`` — booleans are *not* ints here (``True`` and ``1`` are
      different classes), and these are the strings JSON gives when a bool-keyed dict is serialised,
      so ``scores={"true": .9, "false": .1}`` lines up with boolean labels;
    * ``int`` becomes its decimal string (``1`` -> ``"1"``, same as the JSON object key of 1);
    * an integral finite ``float`` becomes the int's string (``1.0`` -> ``"1"``), other floats their
      shortest repr (``0.5`` -> ``"0.5"``, ``nan`` -> ``"nan"``);
    * ``None`` becomes ``"null"``; numpy scalars are converted with ``.item()`` first.

    Anything else (lists, dicts, bytes, ...) raises ``ValueError``.
    """
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str)):  # subclasses
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, float):
            return canonical_label(float(value))
        return str.__str__(value)
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (bytes, bytearray)):
        try:
            v = item()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"unsupported label type {t.__name__}") from exc
        if type(v) in (bool, int, float, str):
            return canonical_label(v)
    raise ValueError(f"unsupported label type {t.__name__}")


# ------------------------------------------------------------------------------------------- histograms
@dataclass(frozen=True)
class HistogramSpec:
    """Fixed log-spaced bucket layout shared by every :class:`LogHistogram` of one ``kind``.

    Bucket index 0 is the zero/underflow bucket [0, lo); indices 1..nb are [edges[i-1], edges[i]) with
    edges[j] = lo * 2**(j / per_octave) (the last one ends at ``hi``); nb + 1 is the overflow bucket
    [hi, +inf). With ``per_octave = 16`` each bucket spans a ratio r = 2**(1/16) ≈ 1.0443 (4.4 %).
    """

    kind: str
    lo: float
    hi: float
    per_octave: int
    edges: tuple[float, ...] = field(init=False, repr=False, compare=False)
    nb: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 < self.lo < self.hi < _INF) or self.per_octave < 1:
            raise ValueError(f"bad histogram spec {self!r}")
        nb = math.ceil(math.log2(self.hi / self.lo) * self.per_octave - 1e-9)
        edges = [self.lo * 2.0 ** (j / self.per_octave) for j in range(nb)]
        edges.append(self.hi)
        object.__setattr__(self, "nb", nb)
        object.__setattr__(self, "edges", tuple(edges))

    @property
    def ratio(self) -> float:
        """Upper/lower edge ratio of a regular bucket (the relative width)."""
        return 2.0 ** (1.0 / self.per_octave)

    @property
    def overflow(self) -> int:
        return self.nb + 1

    def index(self, x: float) -> int:
        """Bucket index of a finite x >= 0."""
        if x < self.lo:
            return 0
        if x >= self.hi:
            return self.nb + 1
        edges = self.edges
        j = int((math.log2(x) - math.log2(self.lo)) * self.per_octave)
        if j >= self.nb:
            j = self.nb - 1
        elif j < 0:
            j = 0
        while x < edges[j]:
            j -= 1
        while x >= edges[j + 1]:
            j += 1
        return j + 1

    def bounds(self, idx: int) -> tuple[float, float]:
        """[lower, upper) of bucket ``idx``; the overflow bucket's upper bound is +inf."""
        if idx == 0:
            return 0.0, self.lo
        if idx == self.nb + 1:
            return self.hi, _INF
        return self.edges[idx - 1], self.edges[idx]


HISTOGRAM_SPECS: dict[str, HistogramSpec] = {
    # inference latency in milliseconds: 10 µs .. 1000 s
    "latency_ms": HistogramSpec("latency_ms", lo=0.01, hi=1e6, per_octave=16),
    # label delay in seconds (label event time - prediction event time): 1 ms .. ~116 days
    "label_delay_s": HistogramSpec("label_delay_s", lo=1e-3, hi=1e7, per_octave=16),
    # size of the prediction event as received (Kafka record value) less half a byte (PAYLOAD_OFFSET),
    # bytes: 16 B .. 64 MiB
    "payload_bytes": HistogramSpec("payload_bytes", lo=16.0, hi=2.0**26, per_octave=16),
}


class LogHistogram:
    """Sparse histogram of non-negative values on the fixed log-spaced buckets of its ``kind``.

    Keeps the exact count, sum, min and max besides the bucket counts (dict index -> count; an empty
    histogram holds nothing but four scalars).

    Quantile error bound. :meth:`quantile` follows ``numpy.quantile``'s default (linear) definition
    ``x[j] + f * (x[j+1] - x[j])`` with ``h = (n - 1) q``, ``j = floor(h)``, ``f = h - j``, where each
    order statistic x[k] is estimated inside the bucket that holds it (linear position within the
    bucket, the bucket narrowed to [min, max]; x[0] = min and x[n-1] = max exactly). Hence, with
    r = spec.ratio (2**(1/16) ≈ 1.0443 for the built-in kinds) and ``true`` numpy's quantile:

    * if both order statistics used lie in [lo, hi):  true / r <= estimate <= true * r
      (relative error below r - 1 ≈ 4.4 %);
    * in general, below hi:  |estimate - true| <= (r - 1) * true + lo;
    * in the overflow bucket the estimate only lies within [hi, max].
    Values are estimated exactly when all samples of the bucket are equal (min == max of the window).
    """

    __slots__ = ("_sum", "counts", "max", "min", "n", "spec")

    def __init__(self, kind: str = "latency_ms") -> None:
        try:
            self.spec: HistogramSpec = HISTOGRAM_SPECS[kind]
        except KeyError:
            raise ValueError(f"unknown histogram kind {kind!r}") from None
        self.counts: dict[int, int] = {}
        self.n = 0
        self._sum = 0
        self.min: float | None = None
        self.max: float | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    def update(self, x: float, n: int = 1) -> LogHistogram:
        """Add ``n`` observations of value ``x`` (finite, >= 0)."""
        if type(x) is not float:
            x = _finite_float(x, self.spec.kind)
        if not 0.0 <= x < _INF:
            raise ValueError(f"{self.spec.kind} must be finite and >= 0, got {x!r}")
        if n < 1:
            raise ValueError("n must be >= 1")
        x += 0.0  # -0.0 -> 0.0 so that min/max do not depend on order
        idx = self.spec.index(x)
        counts = self.counts
        counts[idx] = counts.get(idx, 0) + n
        self.n += n
        self._sum += _exact(x) * n if n != 1 else _exact(x)
        mn = self.min
        if mn is None:
            self.min = self.max = x
        elif x < mn:
            self.min = x
        elif x > self.max:  # type: ignore[operator]
            self.max = x
        return self

    def merge(self, other: LogHistogram) -> LogHistogram:
        if other.spec.kind != self.spec.kind:
            raise ValueError(f"cannot merge histogram {other.spec.kind!r} into {self.spec.kind!r}")
        if other.n == 0:
            return self
        counts = self.counts
        for idx, c in other.counts.items():
            counts[idx] = counts.get(idx, 0) + c
        self.n += other.n
        self._sum += other._sum
        if self.min is None or other.min < self.min:  # type: ignore[operator]
            self.min = other.min
        if self.max is None or other.max > self.max:  # type: ignore[operator]
            self.max = other.max
        return self

    @property
    def sum(self) -> float:
        return _exact_value(self._sum)

    @property
    def mean(self) -> float | None:
        return None if self.n == 0 else _exact_value(self._sum) / self.n

    def get(self) -> dict[str, Any]:
        """Derived values: n, mean, min, max, p50, p95, p99 (None when empty)."""
        p50, p95, p99 = self.quantiles((0.5, 0.95, 0.99))
        return {
            "n": self.n,
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "p50": p50,
            "p95": p95,
            "p99": p99,
        }

    def quantile(self, q: float) -> float | None:
        """Estimated sample quantile (numpy 'linear' definition); None when empty. See class doc."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        qs = list(qs)
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        n = self.n
        if n == 0:
            return [None] * len(qs)
        items = sorted(self.counts.items())
        ends: list[int] = []  # cumulative count at the end of each bucket
        total = 0
        for _, c in items:
            total += c
            ends.append(total)
        mn, mx = self.min, self.max
        spec = self.spec

        def order_stat(k: int) -> float:
            if k <= 0:
                return mn  # type: ignore[return-value]
            if k >= n - 1:
                return mx  # type: ignore[return-value]
            b = bisect_right(ends, k)
            idx, c = items[b]
            start = ends[b] - c
            a, z = spec.bounds(idx)
            a = max(a, mn)  # type: ignore[type-var]
            z = min(z, mx)  # type: ignore[type-var]
            return a + (z - a) * ((k - start) + 0.5) / c

        out: list[float | None] = []
        for q in qs:
            h = (n - 1) * q
            j = math.floor(h)
            f = h - j
            v = order_stat(j)
            if f > 0.0:
                v = v + f * (order_stat(j + 1) - v)
            out.append(float(v))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "n": self.n,
            "sum": exact_sum_to_json(self._sum),
            "min": self.min,
            "max": self.max,
            "buckets": {str(i): self.counts[i] for i in sorted(self.counts)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogHistogram:
        h = cls(d["kind"])
        h.counts = {int(k): int(v) for k, v in d["buckets"].items()}
        h.n = int(d["n"])
        h._sum = exact_sum_from_json(d["sum"])
        h.min = None if d["min"] is None else float(d["min"])
        h.max = None if d["max"] is None else float(d["max"])
        if sum(h.counts.values()) != h.n:
            raise ValueError("histogram bucket counts do not add up to n")
        return h

    def copy(self) -> LogHistogram:
        h = LogHistogram.__new__(LogHistogram)
        h.spec = self.spec
        h.counts = dict(self.counts)
        h.n, h._sum, h.min, h.max = self.n, self._sum, self.min, self.max
        return h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogHistogram) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LogHistogram({self.spec.kind!r}, n={self.n}, min={self.min}, max={self.max})"


# -------------------------------------------------------------------------------------- confusion counts
class ConfusionCounts:
    """Counts of (true label, predicted label) pairs, labels canonicalised by :func:`canonical_label`.

    Memory is bounded by ``cap`` distinct labels (plus the :data:`OTHER` bucket), i.e. at most
    (cap + 1)**2 cells. The labels kept are the ``cap`` smallest (in str order) of all labels seen;
    the others are folded into ``"__other__"`` (when a smaller label arrives at a full accumulator the
    largest kept one is evicted and its cells folded). Because "the cap smallest of a set" composes,
    the kept set — and thus the whole state — is independent of arrival order and of how the stream is
    split and merged: merging stays exact and associative/commutative even beyond the cap.

    ``n`` (all pairs) and ``n_correct`` (pairs whose canonical labels are equal) are exact whatever is
    folded, and so are the row sums (support), column sums (predicted) and diagonal of every kept label.
    Only the ``__other__`` row/column mixes classes (its diagonal counts folded mistakes too). A real
    label that canonicalises to ``"__other__"`` shares that bucket.

    ``revert`` subtracts pairs (labels whose counts reach zero are dropped). Below the cap the state is a
    function of the net multiset of pairs, so revert exactly undoes update; above the cap counts stay
    exact but labels evicted earlier are not re-admitted.
    """

    __slots__ = ("_labels", "_m", "_max", "cap", "n", "n_correct")

    def __init__(self, cap: int = DEFAULT_CLASS_CAP) -> None:
        if cap < 1:
            raise ValueError("class cap must be >= 1")
        self.cap = int(cap)
        self.n = 0
        self.n_correct = 0
        self._m: dict[str, dict[str, int]] = {}  # true -> predicted -> count (no zero cells)
        self._labels: dict[str, int] = {}  # label -> row total + column total (may include OTHER)
        self._max: str | None = None  # cached largest kept label (valid only when full)

    # -- hot path
    def update(self, y_true: Any, y_pred: Any, n: int = 1) -> ConfusionCounts:
        t = y_true if type(y_true) is str else canonical_label(y_true)
        p = y_pred if type(y_pred) is str else canonical_label(y_pred)
        if n < 1:
            raise ValueError("n must be >= 1")
        self._add(t, p, n)
        return self

    def _add(self, t: str, p: str, n: int) -> None:
        if t == p:
            self.n_correct += n
        labels = self._labels
        if t not in labels:
            t = self._admit(t)
        if p not in labels:
            p = self._admit(p)
            if t not in labels:  # admitting p evicted a just-admitted t
                t = OTHER
        row = self._m.get(t)
        if row is None:
            row = self._m[t] = {}
        row[p] = row.get(p, 0) + n
        labels[t] += n
        labels[p] += n
        self.n += n

    def _admit(self, label: str) -> str:
        """Make room for a new label; returns the label or OTHER, registered in ``_labels``."""
        labels = self._labels
        if label != OTHER:
            kept = len(labels) - (OTHER in labels)
            if kept < self.cap:
                labels[label] = 0
                self._max = None
                return label
            mx = self._max
            if mx is None:
                mx = self._max = max(k for k in labels if k != OTHER)
            if label < mx:
                self._evict(mx)
                labels[label] = 0
                self._max = None
                return label
        if OTHER not in labels:
            labels[OTHER] = 0
        return OTHER

    def _evict(self, label: str) -> None:
        """Fold every cell of ``label`` into OTHER."""
        m = self._m
        labels = self._labels
        if OTHER not in labels:
            labels[OTHER] = 0
        row = m.pop(label, None)
        if row is not None:
            orow = m.get(OTHER)
            if orow is None:
                orow = m[OTHER] = {}
            for p, c in row.items():
                orow[p] = orow.get(p, 0) + c
        for r in m.values():
            c = r.pop(label, None)
            if c is not None:
                r[OTHER] = r.get(OTHER, 0) + c
        labels[OTHER] += labels.pop(label)
        self._max = None

    def revert(self, y_true: Any, y_pred: Any, n: int = 1) -> ConfusionCounts:
        """Subtract ``n`` pairs previously added; ValueError (and no change) if they are not there."""
        t = y_true if type(y_true) is str else canonical_label(y_true)
        p = y_pred if type(y_pred) is str else canonical_label(y_pred)
        if n < 1:
            raise ValueError("n must be >= 1")
        correct = t == p
        labels = self._labels
        tk = t if t in labels else OTHER
        pk = p if p in labels else OTHER
        row = self._m.get(tk)
        have = 0 if row is None else row.get(pk, 0)
        if have < n or (correct and self.n_correct < n):
            raise ValueError(f"cannot revert {n} x ({t!r}, {p!r}): not counted")
        if have == n:
            del row[pk]  # type: ignore[union-attr]
            if not row:
                del self._m[tk]
        else:
            row[pk] = have - n  # type: ignore[index]
        for k in (tk, pk):
            left = labels[k] - n
            if left:
                labels[k] = left
            else:
                del labels[k]
                self._max = None
        self.n -= n
        if correct:
            self.n_correct -= n
        return self

    def merge(self, other: ConfusionCounts) -> ConfusionCounts:
        if other.cap != self.cap:
            raise ValueError(f"cannot merge confusion counts with cap {other.cap} into cap {self.cap}")
        union = {k for k in self._labels if k != OTHER}
        union.update(k for k in other._labels if k != OTHER)
        kept: set[str] | None = None
        if len(union) > self.cap:
            kept = set(sorted(union)[: self.cap])
            for k in [k for k in self._labels if k != OTHER and k not in kept]:
                self._evict(k)
        m = self._m
        labels = self._labels
        for t, row in other._m.items():
            tk = t if kept is None or t in kept else OTHER
            mrow = m.get(tk)
            if mrow is None:
                mrow = m[tk] = {}
            for p, c in row.items():
                pk = p if kept is None or p in kept else OTHER
                mrow[pk] = mrow.get(pk, 0) + c
                labels[tk] = labels.get(tk, 0) + c
                labels[pk] = labels.get(pk, 0) + c
        self.n += other.n
        self.n_correct += other.n_correct
        self._max = None
        return self

    # -- read side
    def get(self) -> dict[str, Any]:
        """Derived values: n, correct, accuracy (None when empty)."""
        return {
            "n": self.n,
            "correct": self.n_correct,
            "accuracy": self.n_correct / self.n if self.n else None,
        }

    def labels(self) -> list[str]:
        """Labels with counts, sorted; ``"__other__"`` (if used) last."""
        out = sorted(k for k in self._labels if k != OTHER)
        if OTHER in self._labels:
            out.append(OTHER)
        return out

    @property
    def folded(self) -> bool:
        """True when some pairs were folded into ``"__other__"``."""
        return OTHER in self._labels

    def count(self, y_true: Any, y_pred: Any) -> int:
        """Count of the (already folded) cell; labels are canonicalised first."""
        row = self._m.get(canonical_label(y_true))
        return 0 if row is None else row.get(canonical_label(y_pred), 0)

    def rows(self) -> dict[str, dict[str, int]]:
        """A copy of the sparse matrix: true label -> predicted label -> count (no zero cells)."""
        return {t: dict(r) for t, r in self._m.items()}

    def matrix(self, labels: Iterable[Any] | None = None) -> list[list[int]]:
        """Dense matrix rows=true, columns=predicted over ``labels`` (default :meth:`labels`).

        Cells of labels not listed are left out (no folding here; see stats for top-N + other).
        """
        labs = self.labels() if labels is None else [canonical_label(x) for x in labels]
        empty: dict[str, int] = {}
        return [[self._m.get(t, empty).get(p, 0) for p in labs] for t in labs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cap": self.cap,
            "n": self.n,
            "correct": self.n_correct,
            "cells": {t: {p: r[p] for p in sorted(r)} for t, r in sorted(self._m.items())},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConfusionCounts:
        cc = cls(int(d["cap"]))
        cc.n = int(d["n"])
        cc.n_correct = int(d["correct"])
        total = 0
        for t, row in d["cells"].items():
            r = {}
            for p, c in row.items():
                c = int(c)
                if c <= 0:
                    raise ValueError("confusion cells must be positive")
                r[p] = c
                cc._labels[t] = cc._labels.get(t, 0) + c
                cc._labels[p] = cc._labels.get(p, 0) + c
                total += c
            if r:
                cc._m[t] = r
        if total != cc.n or not 0 <= cc.n_correct <= cc.n:
            raise ValueError("confusion counts are inconsistent")
        if len(cc._labels) - (OTHER in cc._labels) > cc.cap:
            raise ValueError("confusion counts exceed their class cap")
        return cc

    def copy(self) -> ConfusionCounts:
        cc = ConfusionCounts.__new__(ConfusionCounts)
        cc.cap, cc.n, cc.n_correct, cc._max = self.cap, self.n, self.n_correct, self._max
        cc._m = {t: dict(r) for t, r in self._m.items()}
        cc._labels = dict(self._labels)
        return cc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfusionCounts) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ConfusionCounts(n={self.n}, correct={self.n_correct}, labels={len(self._labels)})"


# --------------------------------------------------------------------------------------- classification
def score_terms(y_true: str, scores: Mapping[Any, Any]) -> tuple[float, float]:
    """(log-loss term, Brier term) of one sample with canonical true label ``y_true``.

    ``scores`` maps class label -> probability (keys canonicalised like labels; duplicates after
    canonicalisation are added up). Values must be finite and >= 0 with a positive sum.

    * Several classes: probabilities are renormalised to sum to 1 over the classes given; a true label
      that is missing has probability 0.
    * Exactly one class ``{k: p}`` with 0 <= p <= 1 is read as a binary P(k) with the complement 1 - p
      on the other class (renormalising a single entry would always give 1, which means nothing).

    log-loss term = -ln(clip(p_true, eps, 1 - eps)), eps = 2**-52 (sklearn's float64 clipping).
    Brier term = sum over classes k of (p_k - [k == y_true])**2, a missing true label adding 1 — the
    multi-class Brier score in [0, 2]. Binary: equals 2 x sklearn's default ``brier_score_loss`` on the
    positive-class probability; any case: sklearn's ``brier_score_loss(..., scale_by_half=False)``.
    """
    if len(scores) == 1:
        ((k, v),) = scores.items()
        if type(k) is not str:
            k = canonical_label(k)
        if type(v) is not float:
            v = _finite_float(v, "score")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"single score must be a probability in [0, 1], got {v!r}")
        p_true = v if k == y_true else 1.0 - v
        d = 1.0 - p_true
        brier = 2.0 * d * d
    else:
        probs: Mapping[str, float] = scores  # type: ignore[assignment]
        total = 0.0
        slow = False
        for k, v in scores.items():  # fast path: str keys, float values
            if type(k) is not str or type(v) is not float or not 0.0 <= v < _INF:
                slow = True
                break
            total += v
        if slow:  # slow path: canonicalise keys (adding duplicates up), validate values
            agg: dict[str, float] = {}
            total = 0.0
            for k, v in scores.items():
                ck = k if type(k) is str else canonical_label(k)
                fv = v if type(v) is float else _finite_float(v, "score")
                if not 0.0 <= fv < _INF:
                    raise ValueError(f"scores must be finite and >= 0, got {v!r}")
                agg[ck] = agg.get(ck, 0.0) + fv
                total += fv
            probs = agg
        if not 0.0 < total < _INF:
            raise ValueError("scores must have a positive finite sum")
        p_true = 0.0
        brier = 0.0
        seen = False
        for k, v in probs.items():
            q = v / total
            if k == y_true:
                seen = True
                p_true = q
                q -= 1.0
            brier += q * q
        if not seen:
            brier += 1.0
    if p_true < LOG_LOSS_EPS:
        p_true = LOG_LOSS_EPS
    elif p_true > 1.0 - LOG_LOSS_EPS:
        p_true = 1.0 - LOG_LOSS_EPS
    return -math.log(p_true), brier


class ClassificationAccumulator:
    """Confusion counts plus exact sums of log-loss and Brier terms over the samples that had scores.

    See :func:`score_terms` for the exact definitions (sklearn-compatible log loss; multi-class Brier).
    """

    __slots__ = ("_brier", "_log_loss", "confusion", "n_scored")

    def __init__(self, cap: int = DEFAULT_CLASS_CAP) -> None:
        self.confusion = ConfusionCounts(cap)
        self.n_scored = 0
        self._log_loss = 0
        self._brier = 0

    @property
    def n(self) -> int:
        return self.confusion.n

    @property
    def n_correct(self) -> int:
        return self.confusion.n_correct

    @property
    def cap(self) -> int:
        return self.confusion.cap

    @property
    def log_loss_sum(self) -> float:
        return _exact_value(self._log_loss)

    @property
    def brier_sum(self) -> float:
        return _exact_value(self._brier)

    def update(
        self, y_true: Any, y_pred: Any, scores: Mapping[Any, Any] | None = None, n: int = 1
    ) -> ClassificationAccumulator:
        """Count one (or ``n``) outcome(s). Invalid labels/scores raise ValueError and change nothing."""
        t = y_true if type(y_true) is str else canonical_label(y_true)
        p = y_pred if type(y_pred) is str else canonical_label(y_pred)
        if n < 1:
            raise ValueError("n must be >= 1")
        if scores:
            ll, br = score_terms(t, scores)
            if n == 1:
                self._log_loss += _exact(ll)
                self._brier += _exact(br)
            else:
                self._log_loss += _exact(ll) * n
                self._brier += _exact(br) * n
            self.n_scored += n
        self.confusion._add(t, p, n)
        return self

    def revert(
        self, y_true: Any, y_pred: Any, scores: Mapping[Any, Any] | None = None, n: int = 1
    ) -> ClassificationAccumulator:
        """Subtract an outcome added with the same arguments (exact: the same terms are recomputed)."""
        t = canonical_label(y_true)
        if scores:
            ll, br = score_terms(t, scores)
            if self.n_scored < n:
                raise ValueError("cannot revert a scored outcome: none counted")
        self.confusion.revert(t, y_pred, n)
        if scores:
            self._log_loss -= _exact(ll) * n
            self._brier -= _exact(br) * n
            self.n_scored -= n
        return self

    def get(self) -> dict[str, Any]:
        """Derived values: n, accuracy, n_scored, log_loss, brier (None when undefined).

        The full read-time view (per-class metrics, CI, confusion) is ``stats.classification_metrics``.
        """
        n, ns = self.confusion.n, self.n_scored
        return {
            "n": n,
            "accuracy": self.confusion.n_correct / n if n else None,
            "n_scored": ns,
            "log_loss": _exact_value(self._log_loss) / ns if ns else None,
            "brier": _exact_value(self._brier) / ns if ns else None,
        }

    def merge(self, other: ClassificationAccumulator) -> ClassificationAccumulator:
        self.confusion.merge(other.confusion)
        self.n_scored += other.n_scored
        self._log_loss += other._log_loss
        self._brier += other._brier
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "confusion": self.confusion.to_dict(),
            "n_scored": self.n_scored,
            "log_loss_sum": exact_sum_to_json(self._log_loss),
            "brier_sum": exact_sum_to_json(self._brier),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassificationAccumulator:
        acc = cls.__new__(cls)
        acc.confusion = ConfusionCounts.from_dict(d["confusion"])
        acc.n_scored = int(d["n_scored"])
        acc._log_loss = exact_sum_from_json(d["log_loss_sum"])
        acc._brier = exact_sum_from_json(d["brier_sum"])
        return acc

    def copy(self) -> ClassificationAccumulator:
        acc = ClassificationAccumulator.__new__(ClassificationAccumulator)
        acc.confusion = self.confusion.copy()
        acc.n_scored, acc._log_loss, acc._brier = self.n_scored, self._log_loss, self._brier
        return acc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassificationAccumulator) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------------------------------- regression
class RegressionAccumulator:
    """Exact sums of regression errors, err = prediction - label.

    Keeps n, sum(err), sum(|err|), sum(err**2) (err**2 rounded to float per sample, like numpy), and for
    MAPE sum(|err| / |label|) over the ``n_mape`` samples with |label| >= 1e-12; the others are counted
    in ``n_zero_label`` and excluded from MAPE (which is undefined when n_mape == 0).
    """

    __slots__ = ("_sum_abs", "_sum_ape", "_sum_err", "_sum_sq", "n", "n_mape", "n_zero_label")

    def __init__(self) -> None:
        self.n = 0
        self.n_mape = 0
        self.n_zero_label = 0
        self._sum_err = 0
        self._sum_abs = 0
        self._sum_sq = 0
        self._sum_ape = 0

    @staticmethod
    def _terms(y_true: Any, y_pred: Any) -> tuple[int, int, int, int | None]:
        y = y_true if type(y_true) is float else _finite_float(y_true, "regression label")
        p = y_pred if type(y_pred) is float else _finite_float(y_pred, "regression prediction")
        if not (-_INF < y < _INF and -_INF < p < _INF):
            raise ValueError("regression values must be finite")
        err = p - y
        sq = err * err
        if sq == _INF:
            raise ValueError("regression error overflows")
        ae = abs(err)
        ay = abs(y)
        ape = None
        if ay >= MAPE_ZERO_THRESHOLD:
            r = ae / ay
            if r == _INF:
                raise ValueError("regression percentage error overflows")
            ape = _exact(r)
        return _exact(err), _exact(ae), _exact(sq), ape

    def update(self, y_true: Any, y_pred: Any, n: int = 1) -> RegressionAccumulator:
        """Add ``n`` samples; non-numeric or non-finite values raise ValueError and change nothing."""
        if n < 1:
            raise ValueError("n must be >= 1")
        e, a, s, ape = self._terms(y_true, y_pred)
        if n != 1:
            e, a, s = e * n, a * n, s * n
        self.n += n
        self._sum_err += e
        self._sum_abs += a
        self._sum_sq += s
        if ape is None:
            self.n_zero_label += n
        else:
            self.n_mape += n
            self._sum_ape += ape * n if n != 1 else ape
        return self

    def revert(self, y_true: Any, y_pred: Any, n: int = 1) -> RegressionAccumulator:
        e, a, s, ape = self._terms(y_true, y_pred)
        if self.n < n or (self.n_zero_label if ape is None else self.n_mape) < n:
            raise ValueError("cannot revert a regression outcome that was not counted")
        self.n -= n
        self._sum_err -= e * n
        self._sum_abs -= a * n
        self._sum_sq -= s * n
        if ape is None:
            self.n_zero_label -= n
        else:
            self.n_mape -= n
            self._sum_ape -= ape * n
        return self

    def merge(self, other: RegressionAccumulator) -> RegressionAccumulator:
        self.n += other.n
        self.n_mape += other.n_mape
        self.n_zero_label += other.n_zero_label
        self._sum_err += other._sum_err
        self._sum_abs += other._sum_abs
        self._sum_sq += other._sum_sq
        self._sum_ape += other._sum_ape
        return self

    @property
    def sum_error(self) -> float:
        return _exact_value(self._sum_err)

    @property
    def sum_abs_error(self) -> float:
        return _exact_value(self._sum_abs)

    @property
    def sum_squared_error(self) -> float:
        return _exact_value(self._sum_sq)

    @property
    def sum_abs_pct_error(self) -> float:
        return _exact_value(self._sum_ape)

    def mean_error(self) -> float | None:
        return None if self.n == 0 else _exact_value(self._sum_err) / self.n

    def mae(self) -> float | None:
        return None if self.n == 0 else _exact_value(self._sum_abs) / self.n

    def mse(self) -> float | None:
        return None if self.n == 0 else _exact_value(self._sum_sq) / self.n

    def mape(self) -> float | None:
        return None if self.n_mape == 0 else _exact_value(self._sum_ape) / self.n_mape

    def get(self) -> dict[str, Any]:
        """Derived values: n, mae, mse, mape (fraction), mean_error (None when undefined)."""
        return {
            "n": self.n,
            "mae": self.mae(),
            "mse": self.mse(),
            "mape": self.mape(),
            "mean_error": self.mean_error(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_mape": self.n_mape,
            "n_zero_label": self.n_zero_label,
            "sum_err": exact_sum_to_json(self._sum_err),
            "sum_abs": exact_sum_to_json(self._sum_abs),
            "sum_sq": exact_sum_to_json(self._sum_sq),
            "sum_ape": exact_sum_to_json(self._sum_ape),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegressionAccumulator:
        acc = cls()
        acc.n, acc.n_mape, acc.n_zero_label = int(d["n"]), int(d["n_mape"]), int(d["n_zero_label"])
        if acc.n_mape + acc.n_zero_label != acc.n:
            raise ValueError("regression counts are inconsistent")
        acc._sum_err = exact_sum_from_json(d["sum_err"])
        acc._sum_abs = exact_sum_from_json(d["sum_abs"])
        acc._sum_sq = exact_sum_from_json(d["sum_sq"])
        acc._sum_ape = exact_sum_from_json(d["sum_ape"])
        return acc

    def copy(self) -> RegressionAccumulator:
        acc = RegressionAccumulator.__new__(RegressionAccumulator)
        acc.n, acc.n_mape, acc.n_zero_label = self.n, self.n_mape, self.n_zero_label
        acc._sum_err, acc._sum_abs, acc._sum_sq, acc._sum_ape = (
            self._sum_err,
            self._sum_abs,
            self._sum_sq,
            self._sum_ape,
        )
        return acc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegressionAccumulator) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------- distributions
SIGNED_LOG_MIN = 1e-9
"""Smallest magnitude with a bucket of its own; (-1e-9, 1e-9) is bucket 0."""
SIGNED_LOG_PER_OCTAVE = 8
SIGNED_LOG_OCTAVES = 80
SIGNED_LOG_MAX_BUCKET = 1 + SIGNED_LOG_PER_OCTAVE * SIGNED_LOG_OCTAVES
"""641: the last positive bucket, [1e-9 * 2**80, inf) (about 1.2e15 and above)."""
UNIT_MAX_BUCKET = 100
DEFAULT_CATEGORY_CAP = 64
DEFAULT_FEATURE_CAP = 64


def _signed_log_edges() -> tuple[float, ...]:
    """The smallest double >= 1e-9 * 2**(j / 8) for j = 0..640, from 120-digit decimal arithmetic.

    Rounding up makes the bisection below equal the real-number formula for every double, and decimal
    arithmetic (not the platform's pow) makes the table the same on every machine.
    """
    ctx = Context(prec=120)
    lo = Decimal(SIGNED_LOG_MIN)  # the double 1e-9, exactly
    steps = [ctx.power(Decimal(2), ctx.divide(Decimal(k), Decimal(SIGNED_LOG_PER_OCTAVE))) for k in range(8)]
    edges = []
    for j in range(SIGNED_LOG_MAX_BUCKET):
        octave, step = divmod(j, SIGNED_LOG_PER_OCTAVE)
        exact = ctx.multiply(ctx.multiply(lo, steps[step]), Decimal(2**octave))
        f = float(exact)  # correctly rounded
        if Decimal(f) < exact:
            f = math.nextafter(f, _INF)
        edges.append(f)
    return tuple(edges)


SIGNED_LOG_EDGES: tuple[float, ...] = _signed_log_edges()
"""Lower edges of the positive buckets: ``SIGNED_LOG_EDGES[j]`` (the smallest double >= 1e-9 * 2**(j / 8))
starts bucket j + 1, so positive bucket b holds exactly the values with b edges <= |x|, i.e.
``bisect_right(SIGNED_LOG_EDGES, |x|)``."""
_UNIT_EDGES: tuple[float, ...] = tuple(i / 100 for i in range(UNIT_MAX_BUCKET + 1))
_bisect_right = bisect_right


def signed_log_bucket(x: float) -> int:
    """Bucket of a real number on a symmetric log scale: 8 buckets per octave of |x| from 1e-9 to ~1.2e15.

    0 when |x| < 1e-9, else sign(x) * (1 + floor(log2(|x| / 1e-9) * 8)), clipped to +-641 (infinities
    and huge ints included), evaluated exactly (a bisection in :data:`SIGNED_LOG_EDGES`, so it agrees
    with :func:`signed_log_bounds`; the formula evaluated in floating point can round across an edge
    for a value within an ulp or so of it). Sorting buckets sorts the values. NaN raises ValueError.
    """
    if type(x) is not float:
        if isinstance(x, (str, bytes, bytearray)):
            raise ValueError(f"signed_log_bucket needs a number, got {type(x).__name__}")
        try:
            x = float(x)  # ints (exact enough: every int beyond 2**53 is in the last bucket), numpy scalars
        except OverflowError:  # an int beyond the float range
            return SIGNED_LOG_MAX_BUCKET if x > 0 else -SIGNED_LOG_MAX_BUCKET
    if x > 0.0:
        return _bisect_right(SIGNED_LOG_EDGES, x)
    if x < 0.0:
        return -_bisect_right(SIGNED_LOG_EDGES, -x)
    if x == 0.0:
        return 0
    raise ValueError("signed_log_bucket of NaN")


def signed_log_bounds(idx: int) -> tuple[float, float]:
    """Value range of a :func:`signed_log_bucket` bucket.

    Positive buckets are [lo, hi); negative ones mirror them, i.e. (lo, hi] with lo = -hi(+), hi = -lo(+);
    bucket 0 is the open interval (-1e-9, 1e-9); the outermost buckets reach +-inf.
    """
    a = -idx if idx < 0 else idx
    if a > SIGNED_LOG_MAX_BUCKET:
        raise ValueError(f"no signed-log bucket {idx}")
    if a == 0:
        return -SIGNED_LOG_MIN, SIGNED_LOG_MIN
    lo = SIGNED_LOG_EDGES[a - 1]
    hi = SIGNED_LOG_EDGES[a] if a < SIGNED_LOG_MAX_BUCKET else _INF
    return (lo, hi) if idx > 0 else (-hi, -lo)


def unit_bucket(p: float) -> int:
    """Percent bucket of a probability: floor(p * 100) clipped to 0..100 (p == 1.0 is bucket 100).

    Defined by the edges i / 100 of :func:`unit_bounds` (a bisection): where p * 100 rounds across an
    integer (0.29 * 100 == 28.999...), p still lands in the bucket whose bounds contain it (0.29 is
    bucket 29). NaN raises ValueError.
    """
    if p >= 1.0:
        return UNIT_MAX_BUCKET
    if p > 0.0:
        return _bisect_right(_UNIT_EDGES, p) - 1
    if p <= 0.0:
        return 0
    raise ValueError("unit_bucket of NaN")


def unit_bounds(idx: int) -> tuple[float, float]:
    """[idx / 100, (idx + 1) / 100) for buckets 0..99; bucket 100 is the single value 1.0, as (1.0, 1.0)."""
    if not 0 <= idx <= UNIT_MAX_BUCKET:
        raise ValueError(f"no unit bucket {idx}")
    if idx == UNIT_MAX_BUCKET:
        return 1.0, 1.0
    return _UNIT_EDGES[idx], _UNIT_EDGES[idx + 1]


class BinCounts:
    """Sparse counts per integer bucket ({bucket: n}, no zero entries); merges by adding counts."""

    __slots__ = ("_c",)

    def __init__(self) -> None:
        self._c: dict[int, int] = {}

    def update(self, bucket: int, n: int = 1) -> BinCounts:
        if type(bucket) is not int:
            raise ValueError(f"bucket must be an int, got {type(bucket).__name__}")
        if type(n) is not int or n < 1:
            raise ValueError("n must be an int >= 1")
        c = self._c
        c[bucket] = c.get(bucket, 0) + n
        return self

    def merge(self, other: BinCounts) -> BinCounts:
        c = self._c
        for k, v in other._c.items():
            c[k] = c.get(k, 0) + v
        return self

    @property
    def n(self) -> int:
        return sum(self._c.values())

    def counts(self) -> dict[int, int]:
        """A copy of the counts, in bucket order."""
        c = self._c
        return {k: c[k] for k in sorted(c)}

    def to_dict(self) -> dict[str, Any]:
        c = self._c
        return {"buckets": {str(k): c[k] for k in sorted(c)}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BinCounts:
        b = cls()
        for k, v in d["buckets"].items():
            v = int(v)
            if v <= 0:
                raise ValueError("bucket counts must be positive")
            b._c[int(k)] = v
        return b

    def copy(self) -> BinCounts:
        b = BinCounts.__new__(BinCounts)
        b._c = dict(self._c)
        return b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BinCounts) and self._c == other._c

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BinCounts(n={self.n}, buckets={len(self._c)})"


class CategoryCounts:
    """Counts of string values, bounded: the ``cap`` smallest values (string order) plus a fold.

    The fold (``other``, shown as ``"__other__"``) holds the count of every other value. Kept = the
    ``cap`` smallest of all values seen, which composes like :class:`ConfusionCounts`' class cap: a value
    dropped by one part has ``cap`` smaller values there, hence in any union, so merging parts in any
    order equals counting in one pass. A value that is itself ``"__other__"`` goes to the fold. ``n`` is
    always exact.
    """

    __slots__ = ("_c", "_max", "cap", "other")

    def __init__(self, cap: int = DEFAULT_CATEGORY_CAP) -> None:
        if cap < 1:
            raise ValueError("category cap must be >= 1")
        self.cap = int(cap)
        self._c: dict[str, int] = {}
        self.other = 0
        self._max: str | None = None  # cached largest kept value (valid while set)

    def update(self, value: str, n: int = 1) -> CategoryCounts:
        if type(n) is not int or n < 1:
            raise ValueError("n must be an int >= 1")
        c = self._c
        have = c.get(value)
        if have is not None:
            c[value] = have + n
        elif type(value) is not str:
            raise ValueError(f"category must be a str, got {type(value).__name__}")
        else:
            self._admit(value, n)
        return self

    def _admit(self, value: str, n: int) -> None:
        """Count a value not kept yet: keep it (evicting the largest kept one if full) or fold it."""
        if value == OTHER:
            self.other += n
            return
        c = self._c
        if len(c) < self.cap:
            c[value] = n
            mx = self._max
            if mx is not None and value > mx:
                self._max = value
            return
        mx = self._max
        if mx is None:
            mx = self._max = max(c)
        if value < mx:
            self.other += c.pop(mx)
            c[value] = n
            self._max = None
        else:
            self.other += n

    def merge(self, other: CategoryCounts) -> CategoryCounts:
        if other.cap != self.cap:
            raise ValueError(f"cannot merge category counts with cap {other.cap} into cap {self.cap}")
        c = self._c
        for k, v in other._c.items():
            c[k] = c.get(k, 0) + v
        self.other += other.other
        if len(c) > self.cap:
            for k in sorted(c)[self.cap :]:
                self.other += c.pop(k)
        self._max = None
        return self

    @property
    def n(self) -> int:
        return sum(self._c.values()) + self.other

    def counts(self) -> dict[str, int]:
        """Kept values in string order, then ``"__other__"`` when it is not zero."""
        c = self._c
        out = {k: c[k] for k in sorted(c)}
        if self.other:
            out[OTHER] = self.other
        return out

    def to_dict(self) -> dict[str, Any]:
        c = self._c
        d: dict[str, Any] = {"counts": {k: c[k] for k in sorted(c)}, "other": self.other}
        if self.cap != DEFAULT_CATEGORY_CAP:
            d["cap"] = self.cap
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoryCounts:
        cc = cls(int(d.get("cap", DEFAULT_CATEGORY_CAP)))
        for k, v in d["counts"].items():
            v = int(v)
            if v <= 0 or k == OTHER:
                raise ValueError("category counts must be positive and not named __other__")
            cc._c[str(k)] = v
        cc.other = int(d["other"])
        if cc.other < 0 or len(cc._c) > cc.cap:
            raise ValueError("category counts are inconsistent with their cap")
        return cc

    def copy(self) -> CategoryCounts:
        cc = CategoryCounts.__new__(CategoryCounts)
        cc.cap, cc.other, cc._max = self.cap, self.other, self._max
        cc._c = dict(self._c)
        return cc

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CategoryCounts)
            and self.cap == other.cap
            and self.other == other.other
            and self._c == other._c
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CategoryCounts(n={self.n}, kept={len(self._c)}, other={self.other})"


class FeatureStats:
    """Per-feature value distributions of a window's predictions, from already-bucketed feature maps.

    Input (:meth:`update`): one prediction's map {name: int bucket | str category} as stage 1 stores it
    (:func:`modelmon.join.bucket_features`): numbers as :func:`signed_log_bucket` ints, strings and
    booleans (``"true"``/``"false"``) as categories, nulls left out. Per kept name: ``numeric[name]``
    (:class:`BinCounts`) and ``categorical[name]`` (:class:`CategoryCounts`); a feature that sends both
    kinds has both. ``present[name]`` (non-null values) is their total, so a feature's missing count in
    a window is ``predictions - present[name]``.

    Names are bounded like categories: the ``cap`` smallest names (string order) are kept and the values
    of other names are not counted; ``folded`` says some name was dropped (then the kept set is full).
    Exact under merge by the same argument as :class:`CategoryCounts`. The name ``"__other__"`` is
    reserved: in a map it marks that stage 1 dropped names of that prediction (it sets ``folded``).
    Values of other types than int and str are ignored (the stage-1 bucketing never produces them).
    """

    __slots__ = ("_max", "_names", "cap", "categorical", "folded", "numeric")

    def __init__(self, cap: int = DEFAULT_FEATURE_CAP) -> None:
        if cap < 1:
            raise ValueError("feature cap must be >= 1")
        self.cap = int(cap)
        self.numeric: dict[str, BinCounts] = {}
        self.categorical: dict[str, CategoryCounts] = {}
        self.folded = False
        self._names: set[str] = set()  # kept names (keys of numeric | categorical)
        self._max: str | None = None  # cached largest kept name (valid while set)

    def update(self, features: Mapping[str, int | str]) -> FeatureStats:
        """Count one prediction's bucketed features."""
        num = self.numeric
        cat = self.categorical
        for name, v in features.items():
            t = type(v)
            if t is int:
                bc = num.get(name)
                if bc is None:
                    if not self._admit(name):
                        continue
                    bc = num[name] = BinCounts()
                c = bc._c
                c[v] = c.get(v, 0) + 1
            elif t is str:
                cc = cat.get(name)
                if cc is None:
                    if not self._admit(name):
                        continue
                    cc = cat[name] = CategoryCounts()
                cs = cc._c
                have = cs.get(v)
                if have is not None:
                    cs[v] = have + 1
                else:
                    cc._admit(v, 1)  # type: ignore[arg-type]
        return self

    def _admit(self, name: str) -> bool:
        """Whether values of a name without counts of this kind are kept (admitting it if needed)."""
        names = self._names
        if name in names:
            return True
        if name == OTHER:
            self.folded = True
            return False
        if len(names) < self.cap:
            names.add(name)
            mx = self._max
            if mx is not None and name > mx:
                self._max = name
            return True
        self.folded = True
        mx = self._max
        if mx is None:
            mx = self._max = max(names)
        if name < mx:
            self._drop(mx)
            names.add(name)
            self._max = None
            return True
        return False

    def _drop(self, name: str) -> None:
        self._names.discard(name)
        self.numeric.pop(name, None)
        self.categorical.pop(name, None)

    def merge(self, other: FeatureStats) -> FeatureStats:
        if other.cap != self.cap:
            raise ValueError(f"cannot merge feature stats with cap {other.cap} into cap {self.cap}")
        for name, bc in other.numeric.items():
            mine = self.numeric.get(name)
            if mine is None:
                self.numeric[name] = bc.copy()
            else:
                mine.merge(bc)
        for name, cc in other.categorical.items():
            mine_c = self.categorical.get(name)
            if mine_c is None:
                self.categorical[name] = cc.copy()
            else:
                mine_c.merge(cc)
        names = self._names
        names |= other._names
        if other.folded:
            self.folded = True
        if len(names) > self.cap:
            for name in sorted(names)[self.cap :]:
                self._drop(name)
            self.folded = True
        self._max = None
        return self

    def names(self) -> list[str]:
        """Kept feature names, sorted."""
        return sorted(self._names)

    def count(self, name: str) -> int:
        """Non-null values of one feature (0 when not kept)."""
        bc = self.numeric.get(name)
        cc = self.categorical.get(name)
        return (0 if bc is None else bc.n) + (0 if cc is None else cc.n)

    @property
    def present(self) -> dict[str, int]:
        """{name: non-null values} for every kept name, sorted by name."""
        return {name: self.count(name) for name in sorted(self._names)}

    def tracks(self, name: str) -> bool:
        """Whether this name's count is known: kept, or never seen (below the largest kept name if folded)."""
        if name in self._names or not self.folded:
            return True
        return bool(self._names) and name < max(self._names)

    @property
    def n(self) -> int:
        """Total non-null values counted (0 means the part is empty)."""
        return sum(b.n for b in self.numeric.values()) + sum(c.n for c in self.categorical.values())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "numeric": {k: self.numeric[k].to_dict() for k in sorted(self.numeric)},
            "categorical": {k: self.categorical[k].to_dict() for k in sorted(self.categorical)},
            "folded": self.folded,
        }
        if self.cap != DEFAULT_FEATURE_CAP:
            d["cap"] = self.cap
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureStats:
        fs = cls(int(d.get("cap", DEFAULT_FEATURE_CAP)))
        fs.numeric = {str(k): BinCounts.from_dict(v) for k, v in d["numeric"].items()}
        fs.categorical = {str(k): CategoryCounts.from_dict(v) for k, v in d["categorical"].items()}
        fs.folded = bool(d["folded"])
        fs._names = set(fs.numeric) | set(fs.categorical)
        if len(fs._names) > fs.cap or OTHER in fs._names:
            raise ValueError("feature stats exceed their name cap")
        return fs

    def copy(self) -> FeatureStats:
        fs = FeatureStats.__new__(FeatureStats)
        fs.cap, fs.folded, fs._max = self.cap, self.folded, self._max
        fs.numeric = {k: v.copy() for k, v in self.numeric.items()}
        fs.categorical = {k: v.copy() for k, v in self.categorical.items()}
        fs._names = set(self._names)
        return fs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureStats) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FeatureStats(names={len(self._names)}, folded={self.folded})"


# ----------------------------------------------------------------------------------------------- window
_MERGED_PARTS = (
    "latency",
    "payload",
    "segments",
    "label_delay",
    "classification",
    "regression",
    "features",
    "confidence",
    "predicted",
    "predicted_values",
)


class WindowAccumulator:
    """Everything one (model, model_version, window) holds; all parts are mergeable sums.

    Sub-accumulators are created on first use (``None`` until then), so an empty window costs a few
    ints, and a window whose predictions carried no features or scores serialises as it did before
    those parts existed. Distributions (:meth:`add_prediction`): ``features`` (:class:`FeatureStats`),
    ``confidence`` (:func:`unit_bucket` of the predicted class's score), ``predicted`` (predicted
    classes, bounded by the class cap) and ``predicted_values`` (:func:`signed_log_bucket` of regression
    predictions); the last three count error-free predictions only.

    Bad values never raise from the ``add_*`` methods: they are counted as ``rejected:<reason>``
    (reasons: ``latency``, ``label_delay``, ``task``, ``label``, ``scores``, ``regression_value``) and
    the rest of the event is kept where meaningful. These are values that passed (or bypassed) schema
    validation but cannot be used; events dead-lettered by the plumbing are ``invalid:<reason>``,
    counted through :meth:`add_counter`.
    """

    __slots__ = (
        "class_cap",
        "classification",
        "confidence",
        "counters",
        "errors",
        "features",
        "label_delay",
        "labelled",
        "latency",
        "payload",
        "predicted",
        "predicted_values",
        "predictions",
        "regression",
        "segments",
    )

    def __init__(self, class_cap: int = DEFAULT_CLASS_CAP) -> None:
        if class_cap < 1:
            raise ValueError("class cap must be >= 1")
        self.class_cap = int(class_cap)
        self.predictions = 0
        self.errors = 0
        self.labelled = 0
        self.latency: LogHistogram | None = None
        self.payload: LogHistogram | None = None
        self.segments: SegmentStats | None = None
        self.label_delay: LogHistogram | None = None
        self.classification: ClassificationAccumulator | None = None
        self.regression: RegressionAccumulator | None = None
        self.features: FeatureStats | None = None
        self.confidence: BinCounts | None = None
        self.predicted: CategoryCounts | None = None
        self.predicted_values: BinCounts | None = None
        self.counters: dict[str, int] = {}

    def _reject(self, reason: str) -> None:
        key = "rejected:" + reason
        self.counters[key] = self.counters.get(key, 0) + 1

    def add_prediction(
        self,
        latency_ms: float | None,
        error: bool,
        *,
        features: Mapping[str, int | str] | None = None,
        task: str | None = None,
        prediction: Any = None,
        scores: Mapping[Any, Any] | None = None,
        segment: Mapping[str, str] | None = None,
        payload_bytes: int | None = None,
    ) -> None:
        """One prediction event; ``error`` marks a failed inference. Latency None = not reported.

        ``segment`` (the prediction's tags) is counted in :class:`~modelmon.segments.SegmentStats`,
        ``payload_bytes`` (size of the event as received) in the ``payload`` histogram.

        ``features`` is the prediction's already-bucketed map (see :class:`FeatureStats`), counted for
        every prediction. For an error-free one, ``task``/``prediction``/``scores`` feed the output
        distributions: a classification's predicted class, and its confidence = the score of that class
        (``scores[prediction]``; a single score {k: p} for another class reads as the binary complement
        1 - p, as in :func:`score_terms`; else the largest score); a regression's predicted value.
        Values these cannot use are skipped (the outcome path counts them as ``rejected:<reason>``).
        """
        self.predictions += 1
        if error:
            self.errors += 1
        if latency_ms is not None:
            h = self.latency
            if h is None:
                h = self.latency = LogHistogram("latency_ms")
            try:
                h.update(latency_ms)
            except ValueError:
                self._reject("latency")
        if payload_bytes is not None:
            ph = self.payload
            if ph is None:
                ph = self.payload = LogHistogram("payload_bytes")
            ph.update(payload_bytes - PAYLOAD_OFFSET)
        if segment:
            sg = self.segments
            if sg is None:
                sg = self.segments = SegmentStats()
            sg.update(segment, error)
        if features:
            fs = self.features
            if fs is None:
                fs = self.features = FeatureStats()
            fs.update(features)
        if error or prediction is None or task is None:
            return
        if task in CLASSIFICATION_TASKS:
            try:
                label = prediction if type(prediction) is str else canonical_label(prediction)
            except ValueError:
                return
            pc = self.predicted
            if pc is None:
                pc = self.predicted = CategoryCounts(self.class_cap)
            pcs = pc._c
            have = pcs.get(label)
            if have is not None:
                pcs[label] = have + 1
            else:
                pc._admit(label, 1)
            if scores:
                try:
                    conf = scores.get(label)
                    if conf is None:
                        if len(scores) == 1:
                            conf = 1.0 - next(iter(scores.values()))
                        else:
                            conf = max(scores.values())
                    b = unit_bucket(conf)
                except (TypeError, ValueError):
                    return
                cb = self.confidence
                if cb is None:
                    cb = self.confidence = BinCounts()
                c = cb._c
                c[b] = c.get(b, 0) + 1
        elif task in REGRESSION_TASKS:
            t = type(prediction)
            if t is not float and t is not int:
                return
            try:
                b = signed_log_bucket(prediction)
            except ValueError:
                return
            pv = self.predicted_values
            if pv is None:
                pv = self.predicted_values = BinCounts()
            c = pv._c
            c[b] = c.get(b, 0) + 1

    def add_outcome(
        self,
        task: str,
        prediction: Any,
        label: Any,
        scores: Mapping[Any, Any] | None = None,
        label_delay_s: float | None = None,
        segment: Mapping[str, str] | None = None,
    ) -> bool:
        """One joined (prediction, ground truth) pair. Returns False if it could not be counted.

        ``task`` is ``"classification"`` (aliases ``"binary"``, ``"multiclass"``) or ``"regression"``.
        Invalid scores are counted as ``rejected:scores`` and the outcome is kept without them.
        ``label_delay_s`` (label event time - prediction event time) is clipped at 0.
        """
        if task in CLASSIFICATION_TASKS:
            acc = self.classification
            if acc is None:
                acc = self.classification = ClassificationAccumulator(self.class_cap)
            correct_before = acc.n_correct
            try:
                acc.update(label, prediction, scores)
            except ValueError:
                try:
                    acc.update(label, prediction, None)
                except ValueError:
                    self._reject("label")
                    return False
                self._reject("scores")
            if segment:
                self._segments().outcome(segment, acc.n_correct > correct_before)
        elif task in REGRESSION_TASKS:
            racc = self.regression
            if racc is None:
                racc = self.regression = RegressionAccumulator()
            abs_before, sq_before = racc._sum_abs, racc._sum_sq
            try:
                racc.update(label, prediction)
            except ValueError:
                self._reject("regression_value")
                return False
            if segment:
                self._segments().outcome(segment, None, racc._sum_abs - abs_before, racc._sum_sq - sq_before)
        else:
            self._reject("task")
            return False
        self.labelled += 1
        if label_delay_s is not None:
            d = label_delay_s
            if type(d) is not float or not -_INF < d < _INF:
                try:
                    d = _finite_float(d, "label delay")
                except ValueError:
                    self._reject("label_delay")
                    return True
            h = self.label_delay
            if h is None:
                h = self.label_delay = LogHistogram("label_delay_s")
            h.update(d if d > 0.0 else 0.0)
        return True

    def _segments(self) -> SegmentStats:
        sg = self.segments
        if sg is None:
            sg = self.segments = SegmentStats()
        return sg

    def replace_outcome(
        self,
        task: str,
        prediction: Any,
        old_label: Any,
        new_label: Any,
        scores: Mapping[Any, Any] | None = None,
    ) -> bool:
        """Swap the label of an outcome already counted (a relabel that replaces the first label).

        ``labelled`` and the label-delay histogram are unchanged (delay is time to the first label);
        the ``relabels`` counter is *not* incremented — call ``add_counter("relabels")`` as well.
        ``scores`` must be those given to :meth:`add_outcome` (None if they were invalid there).
        Returns False (state unchanged, or ``rejected:<reason>`` counted for a bad new label) on failure.
        """
        if task in CLASSIFICATION_TASKS:
            acc = self.classification
            if acc is None:
                return False
            try:
                acc.update(new_label, prediction, scores)
            except ValueError:
                self._reject("label")
                return False
            try:
                acc.revert(old_label, prediction, scores)
            except ValueError:
                acc.revert(new_label, prediction, scores)
                return False
            return True
        if task in REGRESSION_TASKS:
            racc = self.regression
            if racc is None:
                return False
            try:
                racc.update(new_label, prediction)
            except ValueError:
                self._reject("regression_value")
                return False
            try:
                racc.revert(old_label, prediction)
            except ValueError:
                racc.revert(new_label, prediction)
                return False
            return True
        return False

    def add_counter(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a named counter: one of :data:`KNOWN_COUNTERS` or ``invalid:<reason>``.

        ``n`` may be negative (a counter moving to another window), but a counter never goes below
        zero: that raises ValueError and changes nothing. Counters at zero are dropped.
        """
        if name not in KNOWN_COUNTERS and not (name.startswith("invalid:") and len(name) > 8):
            raise ValueError(f"unknown counter {name!r}")
        if type(n) is not int:
            raise ValueError(f"counter increment must be an int, got {type(n).__name__}")
        if n:
            new = self.counters.get(name, 0) + n
            if new > 0:
                self.counters[name] = new
            elif new == 0:
                del self.counters[name]
            else:
                raise ValueError(f"counter {name!r} would go negative ({new})")

    def merge(self, other: WindowAccumulator) -> WindowAccumulator:
        if other.class_cap != self.class_cap:
            raise ValueError(f"cannot merge windows with class cap {other.class_cap} and {self.class_cap}")
        self.predictions += other.predictions
        self.errors += other.errors
        self.labelled += other.labelled
        for attr in _MERGED_PARTS:
            theirs = getattr(other, attr)
            if theirs is None:
                continue
            mine = getattr(self, attr)
            if mine is None:
                setattr(self, attr, theirs.copy())
            else:
                mine.merge(theirs)
        counters = self.counters
        for k, v in other.counters.items():
            counters[k] = counters.get(k, 0) + v
        return self

    def is_empty(self) -> bool:
        return not (
            self.predictions
            or self.labelled
            or self.counters
            or (self.latency is not None and self.latency.n)
            or (self.payload is not None and self.payload.n)
            or (self.segments is not None and not self.segments.is_empty())
            or (self.label_delay is not None and self.label_delay.n)
            or (self.classification is not None and self.classification.n)
            or (self.regression is not None and self.regression.n)
            or (self.features is not None and (self.features.n or self.features.folded))
            or (self.confidence is not None and self.confidence.n)
            or (self.predicted is not None and self.predicted.n)
            or (self.predicted_values is not None and self.predicted_values.n)
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "v": 1,
            "predictions": self.predictions,
            "errors": self.errors,
            "labelled": self.labelled,
            "counters": {k: self.counters[k] for k in sorted(self.counters)},
        }
        if self.class_cap != DEFAULT_CLASS_CAP:
            d["class_cap"] = self.class_cap
        if self.latency is not None and self.latency.n:
            d["latency"] = self.latency.to_dict()
        if self.label_delay is not None and self.label_delay.n:
            d["label_delay"] = self.label_delay.to_dict()
        if self.payload is not None and self.payload.n:
            d["payload"] = self.payload.to_dict()
        if self.segments is not None and not self.segments.is_empty():
            d["segments"] = self.segments.to_dict()
        if self.classification is not None and self.classification.n:
            d["classification"] = self.classification.to_dict()
        if self.regression is not None and self.regression.n:
            d["regression"] = self.regression.to_dict()
        if self.features is not None and (self.features.n or self.features.folded):
            d["features"] = self.features.to_dict()
        if self.confidence is not None and self.confidence.n:
            d["confidence"] = self.confidence.to_dict()
        if self.predicted is not None and self.predicted.n:
            d["predicted"] = self.predicted.to_dict()
        if self.predicted_values is not None and self.predicted_values.n:
            d["predicted_values"] = self.predicted_values.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowAccumulator:
        if d.get("v", 1) != 1:
            raise ValueError(f"unsupported window accumulator version {d.get('v')!r}")
        w = cls(int(d.get("class_cap", DEFAULT_CLASS_CAP)))
        w.predictions = int(d["predictions"])
        w.errors = int(d["errors"])
        w.labelled = int(d["labelled"])
        w.counters = {str(k): int(v) for k, v in d.get("counters", {}).items() if v}
        if "latency" in d:
            w.latency = LogHistogram.from_dict(d["latency"])
        if "label_delay" in d:
            w.label_delay = LogHistogram.from_dict(d["label_delay"])
        if "payload" in d:
            w.payload = LogHistogram.from_dict(d["payload"])
        if "segments" in d:
            w.segments = SegmentStats.from_dict(d["segments"])
        if "classification" in d:
            w.classification = ClassificationAccumulator.from_dict(d["classification"])
            if w.classification.cap != w.class_cap:
                raise ValueError("class cap of the confusion counts differs from the window's")
        if "regression" in d:
            w.regression = RegressionAccumulator.from_dict(d["regression"])
        if "features" in d:
            w.features = FeatureStats.from_dict(d["features"])
        if "confidence" in d:
            w.confidence = BinCounts.from_dict(d["confidence"])
        if "predicted" in d:
            w.predicted = CategoryCounts.from_dict(d["predicted"])
            if w.predicted.cap != w.class_cap:
                raise ValueError("class cap of the predicted classes differs from the window's")
        if "predicted_values" in d:
            w.predicted_values = BinCounts.from_dict(d["predicted_values"])
        return w

    def copy(self) -> WindowAccumulator:
        return WindowAccumulator(self.class_cap).merge(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowAccumulator) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"WindowAccumulator(predictions={self.predictions}, errors={self.errors}, "
            f"labelled={self.labelled}, counters={self.counters})"
        )
