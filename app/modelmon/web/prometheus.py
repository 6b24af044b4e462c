"""Prometheus text exposition (format 0.0.4) of modelmon's metrics (pure: no Kafka, no Faust, no aiohttp).

Five sources feed ``GET /metrics``; each becomes a list of :class:`MetricFamily`, and :func:`exposition`
renders any mix of them:

* :class:`SeriesCounters` — cumulative counters and histograms per (model, model_version) owned by this
  worker, fed by stage 2 with the window snapshots it applies (:meth:`SeriesCounters.observe`);
* :func:`view_families` — gauges of the rolling views ("5m", "1h", "24h" metric events);
* :func:`alert_families` — ``modelmon_alerts_firing`` for the open firing alerts;
* :func:`worker_families` — readiness, event outcome counters and process gauges of the worker;
* :func:`health_families` — the worker's latest health report (event-loop lag, consumer lag, host,
  table sizes) and counters of its publication.

Naming: one prefix ``modelmon_``, base units (seconds, bytes, ratios in [0, 1]), ``_total`` only on
counters. Labels are ``model``, ``model_version`` (an absent version is ``""``) and bounded ones only
(``view``, ``reason``, ``rule``, ``severity``, ``outcome``, ``worker_id``) — never a request id.

Histogram buckets. The worker keeps latency and label delay in fixed log-spaced buckets
(:class:`modelmon.aggregate.HistogramSpec`, 16 per octave, edges ``lo * 2**(j / 16)``). The Prometheus
``le`` bounds chosen here are a subset of those edges (:data:`LATENCY_BUCKETS_S`,
:data:`LABEL_DELAY_BUCKETS_S`), so every fine bucket falls wholly inside one Prometheus bucket and the
cumulative counts are exact, not interpolated. One measure-zero difference remains: a fine bucket is
``[lower, upper)`` while Prometheus' ``le`` is inclusive, so a value *exactly* equal to a bound (and, for
latency, a value within one float rounding of it after ms -> s) is counted in the next bucket up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..aggregate import HISTOGRAM_SPECS, PAYLOAD_OFFSET, exact_sum_from_json

__all__ = [
    "CONTENT_TYPE",
    "LABEL_DELAY_BUCKETS_S",
    "LATENCY_BUCKETS_S",
    "PAYLOAD_BUCKETS_BYTES",
    "VIEWS",
    "MetricFamily",
    "Sample",
    "SeriesCounters",
    "alert_families",
    "exposition",
    "health_families",
    "view_families",
    "worker_families",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of :func:`exposition`'s output."""

VIEWS = ("5m", "1h", "24h")
"""The rolling views exposed as gauges (label ``view``)."""

Sample = tuple[str, dict[str, str], "float | int | None"]
"""(sample name with its suffix such as ``_total``/``_bucket``/``_sum``/``_count``, labels, value).
A value of None is skipped by :func:`exposition`."""

_TYPES = ("counter", "gauge", "histogram")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_HIST_RANK = {"_bucket": 0, "_sum": 1, "_count": 2}
_UNIT = exact_sum_from_json("1p0")  # the int that stands for 1.0 in an exact sum (2**1074)


@dataclass
class MetricFamily:
    """One metric family: its name (for a counter, the name with ``_total``), type, help and samples.

    ``type`` is ``"counter"``, ``"gauge"`` or ``"histogram"``. Counter and gauge samples are named like
    the family; histogram samples are ``<name>_bucket`` (with an ``le`` label), ``<name>_sum`` and
    ``<name>_count``.
    """

    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ exposition
def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt(value: float | int) -> str:
    """A sample value as Prometheus writes it (ints exactly, ``+Inf``/``-Inf``/``NaN``)."""
    t = type(value)
    if t is int:
        return str(value)
    if t is bool:
        return "1" if value else "0"
    v = float(value)
    if v != v:
        return "NaN"
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    return repr(v)


def _le_key(le: str) -> float:
    try:
        return float(le)  # float("+Inf") is inf
    except ValueError:
        raise ValueError(f"histogram bucket bound le={le!r} is not a number") from None


def exposition(families: Iterable[MetricFamily]) -> str:
    """Render metric families in the Prometheus text format 0.0.4 (see :data:`CONTENT_TYPE`).

    Families with the same name are merged (their types must agree; the first help text wins); families
    are sorted by name, series by their label values, a histogram's buckets by ``le`` followed by
    ``_sum`` and ``_count``, so equal inputs give byte-identical output. Samples whose value is None are
    skipped, and a family left without samples is omitted. Label values are escaped (backslash, double
    quote, newline), and so is the help text (backslash, newline). Raises ValueError for an invalid
    metric or label name, an unknown type, a sample that does not belong to its family, or the same
    sample twice.
    """
    merged: dict[str, MetricFamily] = {}
    for fam in families:
        if fam.type not in _TYPES:
            raise ValueError(f"metric {fam.name!r}: unknown type {fam.type!r}")
        if not _METRIC_NAME.match(fam.name):
            raise ValueError(f"invalid metric name {fam.name!r}")
        have = merged.get(fam.name)
        if have is None:
            merged[fam.name] = MetricFamily(fam.name, fam.type, fam.help, list(fam.samples))
        elif have.type != fam.type:
            raise ValueError(f"metric {fam.name!r} given as {have.type} and as {fam.type}")
        else:
            have.samples.extend(fam.samples)

    out: list[str] = []
    for name in sorted(merged):
        fam = merged[name]
        rows: list[tuple[tuple, str]] = []
        seen: set[tuple] = set()
        for sname, labels, value in fam.samples:
            if value is None:
                continue
            if fam.type == "histogram":
                suffix = sname[len(name) :] if sname.startswith(name) else ""
                rank = _HIST_RANK.get(suffix)
                if rank is None:
                    raise ValueError(f"sample {sname!r} does not belong to histogram {name!r}")
                if rank == 0 and "le" not in labels:
                    raise ValueError(f"bucket sample of {name!r} without an le label")
            elif sname != name:
                raise ValueError(f"sample {sname!r} does not belong to {fam.type} {name!r}")
            else:
                rank = 0
            for lname in labels:
                if not _LABEL_NAME.match(lname) or lname.startswith("__"):
                    raise ValueError(f"metric {name!r}: invalid label name {lname!r}")
            items = tuple(sorted(labels.items()))
            ident = (sname, items)
            if ident in seen:
                raise ValueError(f"sample {sname}{dict(items)} given twice")
            seen.add(ident)
            series = tuple(kv for kv in items if kv[0] != "le")
            le = _le_key(labels["le"]) if rank == 0 and fam.type == "histogram" else 0.0
            shown = (*series, ("le", labels["le"])) if len(series) < len(items) else items  # le last
            body = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in shown)
            text = f"{sname}{{{body}}} {_fmt(value)}" if body else f"{sname} {_fmt(value)}"
            rows.append(((series, rank, le), text))
        if not rows:
            continue
        rows.sort(key=lambda r: r[0])
        out.append(f"# HELP {name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {name} {fam.type}")
        out.extend(text for _, text in rows)
    return "\n".join(out) + "\n" if out else ""


# ---------------------------------------------------------------------------------- histogram layouts
def _bounds(kind: str, exponents: Iterable[int]) -> tuple[int, ...]:
    """Fine-bucket edge indices j (edge = lo * 2**(j / per_octave)) for whole powers of two of lo."""
    spec = HISTOGRAM_SPECS[kind]
    return tuple(spec.per_octave * k for k in exponents)


class _Layout:
    """How one histogram kind's fine buckets map onto the Prometheus buckets."""

    __slots__ = ("kind", "le", "le_text", "n", "offset", "pos", "sum_den")

    def __init__(
        self, kind: str, edge_indices: tuple[int, ...], to_seconds: int, offset: float = 0.0
    ) -> None:
        spec = HISTOGRAM_SPECS[kind]
        ordered = list(edge_indices) == sorted(set(edge_indices))
        if not ordered or not all(0 <= j <= spec.nb for j in edge_indices):
            raise ValueError(f"bad bucket bounds for {kind}")
        self.kind = kind
        self.le: tuple[float, ...] = tuple(spec.edges[j] / to_seconds for j in edge_indices)
        self.le_text: tuple[str, ...] = (*(repr(x) for x in self.le), "+Inf")
        self.n = len(edge_indices) + 1
        # fine bucket idx (0 = underflow .. nb + 1 = overflow) has upper edge spec.edges[idx] (inf for the
        # overflow); it belongs to the first Prometheus bucket whose edge index is >= idx.
        pos: dict[str, int] = {}
        p = 0
        for idx in range(spec.nb + 2):
            while p < len(edge_indices) and edge_indices[p] < idx:
                p += 1
            pos[str(idx)] = p
        self.pos = pos
        self.sum_den = _UNIT * to_seconds
        self.offset = offset  # added back per observation to the sum (the payload kind holds size - 0.5)


_LATENCY = _Layout("latency_ms", _bounds("latency_ms", range(5, 21)), 1000)
_LABEL_DELAY = _Layout("label_delay_s", _bounds("label_delay_s", range(10, 31, 2)), 1)
_PAYLOAD = _Layout("payload_bytes", _bounds("payload_bytes", range(4, 21, 2)), 1, PAYLOAD_OFFSET)

LATENCY_BUCKETS_S: tuple[float, ...] = _LATENCY.le
"""``le`` bounds of ``modelmon_prediction_latency_seconds``: 10 µs * 2**k for k = 5..20, i.e. 0.32 ms to
10.49 s, one per octave (exact edges of the ``latency_ms`` buckets, divided by 1000)."""
LABEL_DELAY_BUCKETS_S: tuple[float, ...] = _LABEL_DELAY.le
"""``le`` bounds of ``modelmon_label_delay_seconds``: 1 ms * 2**k for k = 10, 12, .., 30, i.e. 1.024 s to
about 12.4 days, one per second octave (exact edges of the ``label_delay_s`` buckets)."""
PAYLOAD_BUCKETS_BYTES: tuple[float, ...] = _PAYLOAD.le
"""``le`` bounds of ``modelmon_prediction_payload_bytes``: 16 B * 4**k for k = 2..10, i.e. 256 B to 16 MiB
(exact edges of the ``payload_bytes`` buckets)."""


# ------------------------------------------------------------------------------------ series counters
class _Hist:
    __slots__ = ("counts", "exact_sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * n  # per Prometheus bucket, not cumulative; the last one is (last le, +Inf)
        self.exact_sum = 0  # in 2**-1074 units of the accumulator's unit (ms or s)


class _Series:
    __slots__ = ("correct", "delay", "errors", "invalid", "labels", "latency", "payload", "predictions")

    def __init__(self) -> None:
        self.predictions = 0
        self.errors = 0
        self.labels = 0
        self.correct = 0
        self.invalid: dict[str, int] = {}
        self.latency: _Hist | None = None
        self.delay: _Hist | None = None
        self.payload: _Hist | None = None


_EMPTY: Mapping[str, Any] = {}


def _correct(d: Mapping[str, Any]) -> int:
    c = d.get("classification")
    return c["confusion"]["correct"] if c else 0


def _hist_delta(h: _Hist | None, layout: _Layout, old: Mapping | None, new: Mapping) -> _Hist:
    """Add the positive part, per Prometheus bucket and for the sum, of new - old to ``h``."""
    if new.get("kind", layout.kind) != layout.kind:
        raise ValueError(f"expected a {layout.kind} histogram, got {new.get('kind')!r}")
    if h is None:
        h = _Hist(layout.n)
    pos = layout.pos
    delta = [0] * layout.n
    try:
        for k, c in new["buckets"].items():
            delta[pos[k]] += c
        if old is not None:
            for k, c in old["buckets"].items():
                delta[pos[k]] -= c
    except KeyError as exc:
        raise ValueError(f"{layout.kind} histogram: unknown bucket {exc.args[0]!r}") from None
    counts = h.counts
    for p, d in enumerate(delta):
        if d > 0:
            counts[p] += d
    ds = exact_sum_from_json(new["sum"])
    if old is not None:
        ds -= exact_sum_from_json(old["sum"])
    if ds > 0:
        h.exact_sum += ds
    return h


class SeriesCounters:
    """Cumulative counters and histograms per (model, model_version), fed with window snapshots.

    Stage 2 keeps the latest snapshot of each (model, version, window) per source partition; every
    time it replaces one, it calls :meth:`observe` with the previous and the new snapshot of that part,
    and the difference is added here. Summed over parts and windows, the counters therefore count every
    prediction, label, ... once per worker lifetime, like any Prometheus counter (they restart at zero
    with the process; a series whose partition moves to another worker continues there, under that
    worker's ``instance``).

    Monotonic by construction: only the positive part of each difference is added (per counter, per
    invalid reason, per Prometheus bucket and for a histogram's sum). A snapshot can shrink — a
    duplicate or relabel counter moving to its prediction's window, a rebuilt partition re-sending a
    window — and such decreases are ignored, so a counter never goes down; in those rare cases it can
    run ahead of the windows' own totals. A histogram's ``_count`` is the sum of its bucket counts, so
    ``le="+Inf"`` and ``_count`` always agree.

    State per series: four ints, the invalid reasons seen, and per histogram one int per Prometheus
    bucket plus the exact sum (never the fine buckets).
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def observe(
        self, model: str, version: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any]
    ) -> None:
        """Add what changed between two snapshots (``WindowAccumulator.to_dict()``) of one part of one
        window: ``old`` is the previous snapshot of the same source partition (None for the first)."""
        key = (model, version or "")
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        o = _EMPTY if old is None else old
        d = new["predictions"] - o.get("predictions", 0)
        if d > 0:
            s.predictions += d
        d = new["errors"] - o.get("errors", 0)
        if d > 0:
            s.errors += d
        d = new["labelled"] - o.get("labelled", 0)
        if d > 0:
            s.labels += d
        d = _correct(new) - _correct(o)
        if d > 0:
            s.correct += d
        nc = new.get("counters") or _EMPTY
        oc = o.get("counters") or _EMPTY
        if nc and nc != oc:
            invalid = s.invalid
            for k, v in nc.items():
                if k.startswith("invalid:"):
                    d = v - oc.get(k, 0)
                    if d > 0:
                        reason = k[8:]
                        invalid[reason] = invalid.get(reason, 0) + d
        nh = new.get("latency")
        if nh is not None:
            oh = o.get("latency")
            if oh is None or nh["n"] != oh["n"] or nh["sum"] != oh["sum"] or nh["buckets"] != oh["buckets"]:
                s.latency = _hist_delta(s.latency, _LATENCY, oh, nh)
        nh = new.get("label_delay")
        if nh is not None:
            oh = o.get("label_delay")
            if oh is None or nh["n"] != oh["n"] or nh["sum"] != oh["sum"] or nh["buckets"] != oh["buckets"]:
                s.delay = _hist_delta(s.delay, _LABEL_DELAY, oh, nh)
        nh = new.get("payload")
        if nh is not None:
            oh = o.get("payload")
            if oh is None or nh["n"] != oh["n"] or nh["sum"] != oh["sum"] or nh["buckets"] != oh["buckets"]:
                s.payload = _hist_delta(s.payload, _PAYLOAD, oh, nh)

    def forget(self, model: str, version: str | None) -> None:
        """Drop a series (its stage-2 partition went to another worker); unknown series are ignored."""
        self._series.pop((model, version or ""), None)

    def series(self) -> list[tuple[str, str]]:
        """The (model, model_version) pairs held, sorted; an absent version is ``""``."""
        return sorted(self._series)

    def families(self) -> list[MetricFamily]:
        """The counter and histogram families of every series held (histograms once they have data)."""
        preds = MetricFamily(
            "modelmon_predictions_total", "counter", "Predictions counted (first per request)."
        )
        errors = MetricFamily(
            "modelmon_prediction_errors_total", "counter", "Predictions that carried an error."
        )
        labels = MetricFamily(
            "modelmon_labels_total", "counter", "Predictions joined with their ground truth."
        )
        correct = MetricFamily(
            "modelmon_correct_predictions_total",
            "counter",
            "Labelled classification predictions that were correct.",
        )
        invalid = MetricFamily(
            "modelmon_invalid_events_total",
            "counter",
            "Input events dead-lettered, by reason (booked to the model they name, version empty).",
        )
        latency = MetricFamily(
            "modelmon_prediction_latency_seconds",
            "histogram",
            "Inference latency reported by the model server.",
        )
        delay = MetricFamily(
            "modelmon_label_delay_seconds",
            "histogram",
            "Label event time minus prediction event time (negative delays count as 0).",
        )
        payload = MetricFamily(
            "modelmon_prediction_payload_bytes",
            "histogram",
            "Size of the prediction events as received (Kafka record value).",
        )
        for (model, version), s in sorted(self._series.items()):
            lab = {"model": model, "model_version": version}
            preds.samples.append((preds.name, lab, s.predictions))
            errors.samples.append((errors.name, lab, s.errors))
            labels.samples.append((labels.name, lab, s.labels))
            correct.samples.append((correct.name, lab, s.correct))
            for reason in sorted(s.invalid):
                invalid.samples.append((invalid.name, {**lab, "reason": reason}, s.invalid[reason]))
            if s.latency is not None:
                _hist_samples(latency, _LATENCY, lab, s.latency)
            if s.delay is not None:
                _hist_samples(delay, _LABEL_DELAY, lab, s.delay)
            if s.payload is not None:
                _hist_samples(payload, _PAYLOAD, lab, s.payload)
        return [preds, errors, labels, correct, invalid, latency, delay, payload]


def _hist_samples(fam: MetricFamily, layout: _Layout, labels: dict[str, str], h: _Hist) -> None:
    total = 0
    for le, c in zip(layout.le_text, h.counts, strict=True):
        total += c
        fam.samples.append((fam.name + "_bucket", {**labels, "le": le}, total))
    fam.samples.append((fam.name + "_sum", labels, h.exact_sum / layout.sum_den + layout.offset * total))
    fam.samples.append((fam.name + "_count", labels, total))


# ------------------------------------------------------------------------------------- rolling views
def _get(event: Mapping[str, Any], section: str, key: str, scale: float = 1.0) -> float | None:
    sec = event.get(section)
    if not isinstance(sec, Mapping):
        return None
    v = sec.get(key)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v) * scale
    return v if math.isfinite(v) else None


def _error_ratio(event: Mapping[str, Any]) -> float | None:
    v = _get(event, "traffic", "error_rate")
    if v is not None:
        return v
    n, e = _get(event, "traffic", "predictions"), _get(event, "traffic", "errors")
    return None if not n or e is None else e / n


_VIEW_GAUGES: tuple[tuple[str, str, Any], ...] = (
    (
        "modelmon_view_predictions",
        "Predictions in the rolling view.",
        lambda e: _get(e, "traffic", "predictions"),
    ),
    (
        "modelmon_view_labels",
        "Labelled predictions in the rolling view.",
        lambda e: _get(e, "labels", "labelled"),
    ),
    (
        "modelmon_prediction_rate_per_second",
        "Predictions per second of event time over the rolling view.",
        lambda e: _get(e, "traffic", "rate_per_s"),
    ),
    ("modelmon_prediction_error_ratio", "Share of predictions that carried an error.", _error_ratio),
    (
        "modelmon_label_coverage_ratio",
        "Labelled predictions / predictions in the rolling view.",
        lambda e: _get(e, "labels", "coverage"),
    ),
    (
        "modelmon_label_delay_p95_seconds",
        "95th percentile of the label delay in the rolling view.",
        lambda e: _get(e, "labels", "delay_p95_s"),
    ),
    (
        "modelmon_prediction_latency_p95_seconds",
        "95th percentile of the inference latency in the rolling view (from 4.4 % wide buckets).",
        lambda e: _get(e, "latency", "p95_ms", 1e-3),
    ),
    (
        "modelmon_accuracy",
        "Classification accuracy in the rolling view.",
        lambda e: _get(e, "classification", "accuracy"),
    ),
    (
        "modelmon_accuracy_ci_low",
        "Lower bound of the 95 % Wilson interval of the accuracy.",
        lambda e: _get(e, "classification", "accuracy_ci_low"),
    ),
    (
        "modelmon_accuracy_ci_high",
        "Upper bound of the 95 % Wilson interval of the accuracy.",
        lambda e: _get(e, "classification", "accuracy_ci_high"),
    ),
    (
        "modelmon_log_loss",
        "Mean log loss of the scored labelled predictions.",
        lambda e: _get(e, "classification", "log_loss"),
    ),
    (
        "modelmon_brier_score",
        "Mean multi-class Brier score (0 best, at most 2).",
        lambda e: _get(e, "classification", "brier"),
    ),
    (
        "modelmon_mae",
        "Regression mean absolute error in the rolling view.",
        lambda e: _get(e, "regression", "mae"),
    ),
    (
        "modelmon_rmse",
        "Regression root mean squared error in the rolling view.",
        lambda e: _get(e, "regression", "rmse"),
    ),
    (
        "modelmon_mape_ratio",
        "Regression mean absolute percentage error, as a fraction.",
        lambda e: _get(e, "regression", "mape"),
    ),
)


def view_families(
    views: Mapping[tuple[str, str | None], Mapping[str, Mapping[str, Any] | None]],
) -> list[MetricFamily]:
    """Gauges of the rolling views, label ``view``: ``views[(model, version)][view_name]`` is the latest
    rolling metric event (schemas/model-metrics.schema.json) of that view, or None.

    Gauges: ``modelmon_view_predictions``, ``modelmon_view_labels``, ``modelmon_prediction_rate_per_second``,
    ``modelmon_prediction_error_ratio``, ``modelmon_label_coverage_ratio``,
    ``modelmon_label_delay_p95_seconds``, ``modelmon_prediction_latency_p95_seconds``,
    ``modelmon_accuracy``, ``modelmon_accuracy_ci_low``, ``modelmon_accuracy_ci_high``,
    ``modelmon_log_loss``, ``modelmon_brier_score``, ``modelmon_mae``, ``modelmon_rmse``,
    ``modelmon_mape_ratio``. A value the event does not define (null, absent) gives no sample; view names
    other than :data:`VIEWS` are ignored (the label stays bounded). A view's values are those of its
    newest event: they go stale when a model stops sending (use the counters for "no traffic").
    """
    fams = [MetricFamily(name, "gauge", help_) for name, help_, _ in _VIEW_GAUGES]
    for (model, version), by_view in sorted(views.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        for view in VIEWS:
            event = by_view.get(view)
            if not event:
                continue
            labels = {"model": model, "model_version": version or "", "view": view}
            for fam, (_, _, get) in zip(fams, _VIEW_GAUGES, strict=True):
                value = get(event)
                if value is not None:
                    fam.samples.append((fam.name, labels, value))
    return fams


# ---------------------------------------------------------------------------------------------- alerts
def alert_families(alerts: Iterable[Mapping[str, Any]]) -> list[MetricFamily]:
    """``modelmon_alerts_firing{model,model_version,rule,severity}`` = 1 per alert event (schemas/
    alert.schema.json, e.g. the last event of each open alert) whose state is ``firing``; other states
    give no series. The version is the event's ``version`` (``""`` when null)."""
    fam = MetricFamily(
        "modelmon_alerts_firing", "gauge", "1 for each modelmon alert (rule, model, version) now firing."
    )
    seen: set[tuple[str, str, str, str]] = set()
    for a in alerts:
        if a.get("state") != "firing":
            continue
        version = a.get("version", a.get("model_version"))
        ident = (str(a["model"]), str(version or ""), str(a["rule"]), str(a.get("severity") or ""))
        if ident in seen:
            continue
        seen.add(ident)
    for model, version, rule, severity in sorted(seen):
        labels = {"model": model, "model_version": version, "rule": rule, "severity": severity}
        fam.samples.append((fam.name, labels, 1))
    return [fam]


# ---------------------------------------------------------------------------------------------- worker
_PROCESS_GAUGES = (
    (
        "modelmon_process_resident_memory_bytes",
        "gauge",
        "Resident set size of the worker process.",
        "rss_bytes",
    ),
    (
        "modelmon_process_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of the worker process.",
        "cpu_seconds",
    ),
    ("modelmon_process_open_fds", "gauge", "Open file descriptors of the worker process.", "open_fds"),
    ("modelmon_process_threads", "gauge", "Threads of the worker process.", "threads"),
)


def worker_families(
    worker_id: str, ready: bool, counts: Mapping[str, int], process: Mapping[str, Any]
) -> list[MetricFamily]:
    """Per-worker families: ``modelmon_worker_info{worker_id}`` 1, ``modelmon_worker_ready`` 0/1,
    ``modelmon_worker_events_total{outcome}`` (one series per key of ``counts``, e.g. ``joined``,
    ``invalid:schema``, ``alerts:firing``; the keys must be a bounded set) and the process metrics
    ``modelmon_process_resident_memory_bytes``, ``modelmon_process_cpu_seconds_total``,
    ``modelmon_process_open_fds``, ``modelmon_process_threads`` from ``process`` keys ``rss_bytes``,
    ``cpu_seconds``, ``open_fds``, ``threads`` (None or absent: no sample)."""
    fams = [
        MetricFamily(
            "modelmon_worker_info",
            "gauge",
            "Always 1; labels identify the worker.",
            [("modelmon_worker_info", {"worker_id": worker_id}, 1)],
        ),
        MetricFamily(
            "modelmon_worker_ready",
            "gauge",
            "1 when the worker has recovered its tables and serves its partitions, else 0.",
            [("modelmon_worker_ready", {}, 1 if ready else 0)],
        ),
        MetricFamily(
            "modelmon_worker_events_total",
            "counter",
            "Events handled by this worker, by outcome.",
            [("modelmon_worker_events_total", {"outcome": k}, counts[k]) for k in sorted(counts)],
        ),
    ]
    for name, type_, help_, key in _PROCESS_GAUGES:
        v = process.get(key)
        if v is not None and not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v):
            fams.append(MetricFamily(name, type_, help_, [(name, {}, v)]))
    return fams


# ---------------------------------------------------------------------------------------------- health
def _num(value: Any, scale: float | None = None) -> float | int | None:
    """A finite number (times ``scale``), or None for null, booleans and non-numbers."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if scale is not None:
        value = value * scale
    return value if math.isfinite(value) else None


_HEALTH_GAUGES: tuple[tuple[str, str, str, str, float | None], ...] = (
    # (name, help, report section, field, scale)
    (
        "modelmon_event_loop_lag_seconds",
        "Event-loop lag: how late the last probe woke up.",
        "event_loop",
        "lag_s",
        None,
    ),
    (
        "modelmon_event_loop_lag_max_seconds",
        "Largest event-loop lag over the last health report period.",
        "event_loop",
        "lag_max_s",
        None,
    ),
    (
        "modelmon_event_loop_lag_mean_seconds",
        "Mean event-loop lag over the last health report period.",
        "event_loop",
        "lag_mean_s",
        None,
    ),
    ("modelmon_host_cpus", "Logical CPUs of the host.", "host", "cpu_count", None),
    (
        "modelmon_host_cpu_utilization_ratio",
        "Whole-host CPU use over the last health report period (0..1).",
        "host",
        "cpu_percent",
        0.01,
    ),
    (
        "modelmon_host_memory_utilization_ratio",
        "Used share of the host's memory (0..1).",
        "host",
        "memory_percent",
        0.01,
    ),
    (
        "modelmon_host_memory_available_bytes",
        "Memory available to new processes on the host.",
        "host",
        "memory_available_bytes",
        None,
    ),
    ("modelmon_host_memory_total_bytes", "Total memory of the host.", "host", "memory_total_bytes", None),
    ("modelmon_host_load1", "1-minute load average of the host.", "host", "load_1m", None),
    (
        "modelmon_pending_joins",
        "Join entries waiting for their other side (stage 1).",
        "tables",
        "pending_joins",
        None,
    ),
    (
        "modelmon_final_windows",
        "Stage-2 windows already published as final, kept one more horizon against replays.",
        "tables",
        "stage2_final_windows",
        None,
    ),
    ("modelmon_alert_states", "Alert states (rule, model, version) held.", "tables", "alert_states", None),
)
_PUBLISHER_FAMILIES = (
    (
        "modelmon_health_interval_seconds",
        "gauge",
        "How often the worker publishes a health report to monitor-health.",
        "interval_s",
    ),
    (
        "modelmon_health_reports_total",
        "counter",
        "Health reports the broker acknowledged on monitor-health.",
        "published",
    ),
    (
        "modelmon_health_report_failures_total",
        "counter",
        "Health reports that could not be published.",
        "failed",
    ),
    (
        "modelmon_health_last_report_timestamp_seconds",
        "gauge",
        "Unix time the broker acknowledged the last health report.",
        "published_at",
    ),
)
_HEALTH_COUNTERS = (
    (
        "modelmon_host_network_receive_bytes_total",
        "Bytes received by the host since boot, every interface (psutil).",
        "received_bytes",
    ),
    (
        "modelmon_host_network_transmit_bytes_total",
        "Bytes sent by the host since boot, every interface (psutil).",
        "sent_bytes",
    ),
)
_LAG_GAUGES = (
    (
        "modelmon_consumer_lag",
        "Records of a consumed partition not processed yet: end offset - position (messages).",
        "lag",
    ),
    (
        "modelmon_consumer_input_rate_per_second",
        "Records written to a consumed partition per second (end offset growth over the report period).",
        "input_rate_per_s",
    ),
    (
        "modelmon_consumer_processing_rate_per_second",
        "Records of a partition processed per second (position growth over the report period).",
        "processing_rate_per_s",
    ),
)


def health_families(report: Mapping[str, Any] | None, publisher: Mapping[str, Any]) -> list[MetricFamily]:
    """Gauges of the latest health report (schemas/monitor-health.schema.json; None before the first)
    and counters of its publication.

    ``publisher`` keys: ``interval_s`` (``modelmon_health_interval_seconds``), ``published`` and
    ``failed`` (``modelmon_health_reports_total``, ``modelmon_health_report_failures_total``),
    ``published_at`` (unix seconds, ``modelmon_health_last_report_timestamp_seconds``). From the report:
    event-loop lag (``modelmon_event_loop_lag_seconds``, ``_max_seconds``, ``_mean_seconds``), per consumed
    partition (labels ``topic``, ``partition``: bounded by the partition counts)
    ``modelmon_consumer_lag``, ``modelmon_consumer_input_rate_per_second``,
    ``modelmon_consumer_processing_rate_per_second``; the host (``modelmon_host_cpus``,
    ``modelmon_host_cpu_utilization_ratio``, ``modelmon_host_memory_utilization_ratio``,
    ``modelmon_host_memory_available_bytes``, ``modelmon_host_memory_total_bytes``, ``modelmon_host_load1``,
    and the counters ``modelmon_host_network_receive_bytes_total`` / ``_transmit_bytes_total``); table
    sizes (``modelmon_pending_joins``, ``modelmon_open_windows{stage="1"|"2"}``, ``modelmon_final_windows``,
    ``modelmon_alert_states``). Percentages become ratios in [0, 1]; null figures give no sample.
    """
    fams = [
        MetricFamily(name, type_, help_, [(name, {}, _num(publisher.get(key)))])
        for name, type_, help_, key in _PUBLISHER_FAMILIES
    ]
    if not report:
        return fams
    for name, help_, section, key, scale in _HEALTH_GAUGES:
        value = _num((report.get(section) or _EMPTY).get(key), scale)
        fams.append(MetricFamily(name, "gauge", help_, [(name, {}, value)]))
    network = report.get("network") or _EMPTY
    for name, help_, key in _HEALTH_COUNTERS:
        fams.append(MetricFamily(name, "counter", help_, [(name, {}, _num(network.get(key)))]))
    tables = report.get("tables") or _EMPTY
    fams.append(
        MetricFamily(
            "modelmon_open_windows",
            "gauge",
            "Open windows: stage 1 accumulators (per model version and input partition), stage 2 windows.",
            [
                ("modelmon_open_windows", {"stage": "1"}, _num(tables.get("stage1_open_windows"))),
                ("modelmon_open_windows", {"stage": "2"}, _num(tables.get("stage2_open_windows"))),
            ],
        )
    )
    rows = (report.get("consumer_lag") or _EMPTY).get("partitions") or ()
    for name, help_, key in _LAG_GAUGES:
        fam = MetricFamily(name, "gauge", help_)
        for row in rows:
            labels = {"topic": str(row["topic"]), "partition": str(row["partition"])}
            fam.samples.append((name, labels, _num(row.get(key))))
        fams.append(fam)
    return fams
