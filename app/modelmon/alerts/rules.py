"""Alert rules: the YAML rules file, parsed and validated into typed :class:`Rule` objects (pure).

The file reads like Prometheus alerting rules, with monitoring kinds of its own. Every problem is
reported with the rule (its number and name) and the field, all at once, so ``modelmon rules check`` and
the worker print the same list. See deploy/alert-rules.yaml for a commented example.

Kinds
    threshold     a metric of the window or rolling view compared with a fixed threshold; proportions
                  (accuracy, error_rate, coverage, ...) may ask for the whole confidence interval to be
                  on the wrong side (``confidence``)
    baseline      a metric against the series' own trailing baseline: a ratio of the trailing mean
                  (``ratio``) or a robust z-score (``z``); counts use an exact Poisson interval
    cusum         sequential change detection on the per-label correctness (a bank of Bernoulli CUSUMs)
                  calibrated to a false-alarm rate (``false_alarm_every``)
    drift         the score, prediction or feature distributions against a reference, with a
                  statistical test (``method``: psi, js, chi2, ks) at level ``alpha``
    data_quality  missing-feature rate or out-of-range share per feature
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

__all__ = [
    "KINDS",
    "METRICS",
    "Metric",
    "Rule",
    "RuleSet",
    "RulesError",
    "load_rules",
    "parse_duration",
    "parse_rules",
]

SEVERITIES = ("info", "warning", "critical")
OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
KINDS = ("threshold", "baseline", "cusum", "drift", "data_quality")
DRIFT_METHODS = ("psi", "js", "chi2", "ks")
DRIFT_TARGETS = ("score", "prediction", "feature")
QUALITY_CHECKS = ("missing_rate", "out_of_range")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True)
class Metric:
    """A metric a threshold or baseline rule can watch, read from a (merged) window accumulator.

    ``kind``: "proportion" (successes out of n: a Wilson interval applies), "count" (a Poisson count over
    the view: an exact Poisson interval applies to its rate), or "value" (a point estimate with a sample
    size used only for ``min_samples``). ``labels`` says the metric needs ground truth (its rules wait
    for late labels: the default ``delay``).
    """

    name: str
    kind: str
    labels: bool
    help: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "proportion", True, "share of labelled predictions that were correct"),
        Metric("error_rate", "proportion", False, "share of predictions that failed (error set)"),
        Metric("coverage", "proportion", True, "labelled / predictions"),
        Metric("unmatched_rate", "proportion", True, "predictions whose label never came / predictions"),
        Metric("rate", "count", False, "predictions per second"),
        Metric("predictions", "count", False, "predictions in the view"),
        Metric("invalid", "count", False, "dead-lettered inputs booked to the series"),
        Metric("latency_p50", "value", False, "median serving latency, ms"),
        Metric("latency_p95", "value", False, "95th percentile serving latency, ms"),
        Metric("latency_p99", "value", False, "99th percentile serving latency, ms"),
        Metric("latency_max", "value", False, "maximum serving latency, ms (bucket upper bound)"),
        Metric("label_delay_p95", "value", True, "95th percentile label delay, s"),
        Metric("macro_f1", "value", True, "unweighted mean F1 over the classes"),
        Metric("log_loss", "value", True, "mean log loss of the scored predictions"),
        Metric("brier", "value", True, "mean multi-class Brier score"),
        Metric("mae", "value", True, "regression mean absolute error"),
        Metric("rmse", "value", True, "regression root mean squared error"),
        Metric("mape", "value", True, "regression mean absolute percentage error (a fraction)"),
        Metric("mean_error", "value", True, "regression bias: mean(prediction - label)"),
    )
}

DEFAULT_LABEL_DELAY_S = 300.0
"""Rules on label metrics wait this long after a window ends before evaluating it (labels arrive late)."""


class RulesError(ValueError):
    """The rules file is invalid; ``problems`` lists every problem, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``, ``"1w"`` (ms allowed); > 0 finite."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 1h or 2d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h, 2d)")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 5m, 1h or 2d")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("must be a positive duration")
    return seconds


@dataclass(frozen=True)
class Rule:
    """One validated rule. Durations are seconds; ``view_s`` None means the single window."""

    name: str
    kind: str
    severity: str
    models: tuple[str, ...]
    versions: tuple[str, ...]
    labels: Mapping[str, str]
    message: str | None
    for_n: int
    resolve_for_n: int
    delay_s: float
    view_s: float | None
    min_samples: int
    # threshold / baseline / data_quality
    metric: str | None = None
    op: str | None = None
    threshold: float | None = None
    resolve_threshold: float | None = None
    confidence: float | None = None
    # baseline
    direction: str | None = None
    baseline_s: float | None = None
    ratio: float | None = None
    z: float | None = None
    # cusum
    p0: float | None = None
    shifts: tuple[float, ...] = ()
    false_alarm_every_s: float | None = None
    # drift / data_quality / cusum reference
    reference_s: float | None = None
    reference_window: tuple[float, float] | None = None
    target: str | None = None
    features: tuple[str, ...] = ()
    method: str | None = None
    alpha: float | None = None
    min_effect: float | None = None
    bins: int = 10
    check: str | None = None
    value_range: tuple[float, float] | None = None
    digest: str = field(default="", compare=False)

    def matches(self, model: str, version: str | None) -> bool:
        """Whether the rule's selectors (globs) select this model version (version None matches "*")."""
        if not any(fnmatch.fnmatchcase(model, g) for g in self.models):
            return False
        v = version if version is not None else ""
        return any(g == "*" or fnmatch.fnmatchcase(v, g) for g in self.versions)

    def feature_selected(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in self.features)

    @property
    def needs_reference(self) -> bool:
        return self.kind in ("cusum", "drift") or (
            self.kind == "data_quality" and (self.check == "missing_rate" or self.value_range is None)
        )


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file, in file order; ``digest`` changes whenever any rule's semantics change."""

    rules: tuple[Rule, ...]
    source: str = ""

    @property
    def digest(self) -> str:
        return hashlib.blake2b("".join(r.digest for r in self.rules).encode(), digest_size=8).hexdigest()

    def by_name(self) -> dict[str, Rule]:
        return {r.name: r for r in self.rules}

    def for_series(self, model: str, version: str | None) -> list[Rule]:
        return [r for r in self.rules if r.matches(model, version)]


# ------------------------------------------------------------------------------------------- parsing
_COMMON = {"name", "kind", "severity", "models", "versions", "labels", "message", "for", "resolve_for",
           "delay", "view", "min_samples", "description"}  # fmt: skip
_KIND_FIELDS = {
    "threshold": {"metric", "op", "threshold", "resolve_threshold", "confidence"},
    "baseline": {"metric", "direction", "baseline", "ratio", "z", "confidence"},
    "cusum": {"metric", "p0", "shifts", "false_alarm_every", "reference"},
    "drift": {"target", "features", "method", "alpha", "min_effect", "bins", "reference"},
    "data_quality": {"check", "features", "op", "threshold", "resolve_threshold", "confidence", "range",
                     "reference"},
}  # fmt: skip
_TEMPLATE_FIELDS = {
    "rule": "r", "model": "m", "version": "v", "severity": "warning", "state": "firing", "value": 0.5,
    "threshold": 0.5, "n": 1, "metric": "accuracy", "window_start": "t", "window_end": "t", "detail": "",
}  # fmt: skip


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, field_name: str | None, problem: str) -> None:
        at = f"{self.where}, field '{field_name}'" if field_name else self.where
        self.items.append(f"{at}: {problem}")


def _number(
    p: _Problems,
    d: Mapping,
    key: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    required: bool = False,
) -> float | None:
    if key not in d or d[key] is None:
        if required:
            p.add(key, "is required")
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        p.add(key, f"must be a number, got {v!r}")
        return None
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        p.add(key, f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
        return None
    if hi is not None and (v > hi or (hi_open and v == hi)):
        p.add(key, f"must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
        return None
    return v


def _duration(p: _Problems, d: Mapping, key: str, required: bool = False) -> float | None:
    if key not in d or d[key] is None:
        if required:
            p.add(key, "is required")
        return None
    try:
        return parse_duration(d[key])
    except ValueError as exc:
        p.add(key, str(exc))
        return None


def _globs(p: _Problems, d: Mapping, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(g, str) and g for g in v):
        p.add(key, "must be a glob or a non-empty list of globs (e.g. 'fraud-*')")
        return default
    return tuple(v)


def _choice(p: _Problems, d: Mapping, key: str, choices: tuple[str, ...], required: bool = False,
            default: str | None = None) -> str | None:  # fmt: skip
    if key not in d or d[key] is None:
        if required:
            p.add(key, f"is required (one of: {', '.join(choices)})")
        return default
    v = d[key]
    if v not in choices:
        p.add(key, f"must be one of: {', '.join(choices)}; got {v!r}")
        return default
    return v


def _count(p: _Problems, d: Mapping, key: str, default: int, window_s: float, lo: int = 1) -> int:
    """A number of consecutive evaluations: an int, or a duration turned into windows (rounded up)."""
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if isinstance(v, bool):
        p.add(key, "must be a whole number of evaluations or a duration")
        return default
    if isinstance(v, int):
        n = v
    else:
        try:
            n = math.ceil(parse_duration(v) / window_s - 1e-9)
        except ValueError:
            p.add(key, f"must be a whole number of evaluations or a duration (e.g. 3 or 5m), got {v!r}")
            return default
    if n < lo:
        p.add(key, f"must be at least {lo}, got {v!r}")
        return default
    return n


def _event_time(value: Any) -> float:
    """Epoch seconds from a number, an RFC 3339 string or a YAML timestamp (which must carry a zone)."""
    if isinstance(value, bool):
        raise ValueError("must be RFC 3339 with a timezone or epoch seconds")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value[-1:] in "Zz" else value
        value = datetime.fromisoformat(text)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no timezone (add Z or an offset)")
        return value.timestamp()
    raise ValueError("must be RFC 3339 with a timezone or epoch seconds")


def _reference(
    p: _Problems, d: Mapping, default_s: float | None
) -> tuple[float | None, tuple[float, float] | None]:
    """``reference: 1h`` (the series' first hour) or ``reference: {start: T, end: T}`` (fixed, event time)."""
    if "reference" not in d or d["reference"] is None:
        return default_s, None
    v = d["reference"]
    if isinstance(v, Mapping):
        bounds = []
        for k in ("start", "end"):
            if k not in v:
                p.add("reference", f"needs '{k}' (RFC 3339 or epoch seconds)")
                return None, None
            try:
                bounds.append(_event_time(v[k]))
            except (ValueError, TypeError) as exc:
                p.add("reference", f"'{k}': {exc}")
                return None, None
        extra = set(v) - {"start", "end"}
        if extra:
            p.add("reference", f"unknown key(s) {sorted(extra)} (expected start, end)")
        if bounds[1] <= bounds[0]:
            p.add("reference", "end must be after start")
            return None, None
        return None, (bounds[0], bounds[1])
    try:
        return parse_duration(v), None
    except ValueError as exc:
        p.add("reference", f"{exc}; or a mapping {{start: T, end: T}}")
        return None, None


def _parse_rule(raw: Any, index: int, window_s: float, seen: set[str]) -> tuple[Rule | None, list[str]]:
    name_hint = raw.get("name") if isinstance(raw, Mapping) else None
    p = _Problems(f"rule {index}" + (f" ({name_hint!r})" if isinstance(name_hint, str) else ""))
    if not isinstance(raw, Mapping):
        p.add(None, "must be a mapping of fields (name, kind, ...)")
        return None, p.items
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        p.add("name", "is required: a letter or digit, then letters, digits, '.', '_' or '-' (max 128)")
        name = f"rule-{index}"
    elif name in seen:
        p.add("name", f"duplicate rule name {name!r}")
    seen.add(name)
    kind = _choice(p, raw, "kind", KINDS, required=True)
    unknown = (
        set(raw) - _COMMON - (_KIND_FIELDS.get(kind, set()) if kind else set().union(*_KIND_FIELDS.values()))
    )
    for key in sorted(unknown, key=str):
        allowed = sorted(_COMMON | _KIND_FIELDS.get(kind or "", set()))
        p.add(str(key), f"unknown field for kind {kind!r} (allowed: {', '.join(allowed)})")
    if kind is None:
        return None, p.items

    severity = _choice(p, raw, "severity", SEVERITIES, default="warning") or "warning"
    models = _globs(p, raw, "models", ("*",))
    versions = _globs(p, raw, "versions", ("*",))
    labels: dict[str, str] = {}
    if raw.get("labels") is not None:
        lv = raw["labels"]
        if not isinstance(lv, Mapping) or len(lv) > 64:
            p.add("labels", "must be a mapping of at most 64 string labels")
        else:
            for k, v in lv.items():
                if not isinstance(k, str) or not _LABEL_KEY_RE.match(k):
                    p.add("labels", f"label name {k!r} must match [A-Za-z_][A-Za-z0-9_]*")
                elif not isinstance(v, (str, int, float)) or isinstance(v, bool) or len(str(v)) > 256:
                    p.add("labels", f"label {k!r} must be a string of at most 256 characters")
                else:
                    labels[k] = str(v)
    message = raw.get("message")
    if message is not None:
        if not isinstance(message, str) or len(message) > 2048:
            p.add("message", "must be a string of at most 2048 characters")
            message = None
        else:
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(message) if f}
                bad = sorted({f.split(".")[0].split("[")[0] for f in fields} - set(_TEMPLATE_FIELDS))
                if bad:
                    raise KeyError(bad[0])
                message.format(**_TEMPLATE_FIELDS)
            except KeyError as exc:
                p.add(
                    "message",
                    f"unknown placeholder {{{exc.args[0]}}} (known: {', '.join(sorted(_TEMPLATE_FIELDS))})",
                )
                message = None
            except (ValueError, IndexError) as exc:
                p.add("message", f"bad template: {exc}")
                message = None
    for_n = _count(p, raw, "for", 1, window_s)
    resolve_for_n = _count(p, raw, "resolve_for", 1, window_s)
    view_s: float | None = None
    if raw.get("view") not in (None, "window"):
        view_s = _duration(p, raw, "view")
        if view_s is not None:
            k = view_s / window_s
            if abs(k - round(k)) > 1e-9 or round(k) < 1:
                p.add("view", f"must be a whole number of windows ({window_s:g} s each), got {view_s:g} s")
                view_s = None
            elif round(k) == 1:
                view_s = None
    min_samples = 0
    if raw.get("min_samples") is not None:
        ms = raw["min_samples"]
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            p.add("min_samples", f"must be a whole number >= 0, got {ms!r}")
        else:
            min_samples = ms

    kw: dict[str, Any] = {}
    label_based = False
    if kind in ("threshold", "baseline"):
        metric = _choice(p, raw, "metric", tuple(METRICS), required=True)
        kw["metric"] = metric
        label_based = metric is not None and METRICS[metric].labels
        if raw.get("confidence") is not None:
            kw["confidence"] = _number(p, raw, "confidence", lo=0.5, hi=1.0, hi_open=True)
            if metric is not None and METRICS[metric].kind == "value":
                p.add("confidence", f"applies to proportions and counts, not to {metric!r}")
    if kind == "threshold":
        kw["op"] = _choice(p, raw, "op", tuple(OPS), required=True)
        kw["threshold"] = _number(p, raw, "threshold", required=True)
        kw["resolve_threshold"] = _number(p, raw, "resolve_threshold")
        _check_hysteresis(p, kw)
    elif kind == "baseline":
        kw["direction"] = _choice(p, raw, "direction", ("drop", "rise"), required=True)
        kw["baseline_s"] = _duration(p, raw, "baseline", required=True)
        if kw["baseline_s"] is not None and kw["baseline_s"] < 2 * window_s:
            p.add("baseline", f"must cover at least two windows ({2 * window_s:g} s)")
        kw["ratio"] = _number(p, raw, "ratio", lo=0.0, lo_open=True)
        kw["z"] = _number(p, raw, "z", lo=0.0, lo_open=True)
        if (kw["ratio"] is None) == (kw["z"] is None):
            p.add("ratio", "give exactly one of 'ratio' (of the trailing mean) or 'z' (robust z-score)")
        elif kw["ratio"] is not None and kw["direction"] == "drop" and kw["ratio"] >= 1:
            p.add("ratio", "a drop rule needs a ratio below 1 (e.g. 0.5: below half the trailing mean)")
        elif kw["ratio"] is not None and kw["direction"] == "rise" and kw["ratio"] <= 1:
            p.add("ratio", "a rise rule needs a ratio above 1 (e.g. 2: above twice the trailing mean)")
        if kw.get("confidence") is not None and kw["z"] is not None:
            p.add("confidence", "applies to 'ratio' rules only")
    elif kind == "cusum":
        metric = raw.get("metric", "accuracy")
        if metric != "accuracy":
            p.add("metric", f"cusum watches 'accuracy' (the per-label correctness), got {metric!r}")
        kw["metric"] = "accuracy"
        label_based = True
        kw["p0"] = _number(p, raw, "p0", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        shifts = raw.get("shifts", [0.05, 0.1, 0.2])
        if (
            not isinstance(shifts, list)
            or not shifts
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < 1 for s in shifts)
        ):
            p.add(
                "shifts", "must be a non-empty list of accuracy drops between 0 and 1 (e.g. [0.05, 0.1, 0.2])"
            )
            shifts = [0.05, 0.1, 0.2]
        kw["shifts"] = tuple(sorted(float(s) for s in shifts))
        kw["false_alarm_every_s"] = _duration(p, raw, "false_alarm_every") or 30 * 86400.0
        kw["reference_s"], kw["reference_window"] = _reference(p, raw, 3600.0)
    elif kind == "drift":
        kw["target"] = _choice(p, raw, "target", DRIFT_TARGETS, required=True)
        kw["method"] = _choice(p, raw, "method", DRIFT_METHODS, default="chi2")
        kw["alpha"] = _number(p, raw, "alpha", lo=0.0, hi=0.5, lo_open=True) or 0.001
        kw["min_effect"] = _number(p, raw, "min_effect", lo=0.0)
        bins = raw.get("bins", 10)
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 100:
            p.add("bins", f"must be a whole number between 2 and 100, got {bins!r}")
            bins = 10
        kw["bins"] = bins
        kw["reference_s"], kw["reference_window"] = _reference(p, raw, 3600.0)
        if kw["target"] == "feature":
            kw["features"] = _globs(p, raw, "features", ("*",))
        elif raw.get("features") is not None:
            p.add("features", "applies to target 'feature' only")
        if kw["method"] == "ks" and kw["target"] == "prediction":
            pass  # regression predictions are ordered; classes are checked at evaluation (KS needs order)
        label_based = False
    elif kind == "data_quality":
        kw["check"] = _choice(p, raw, "check", QUALITY_CHECKS, required=True)
        kw["features"] = _globs(p, raw, "features", ("*",))
        kw["op"] = ">"
        if raw.get("op") not in (None, ">", ">="):
            p.add("op", "data-quality checks fire above the threshold: use '>' or '>='")
        elif raw.get("op") is not None:
            kw["op"] = raw["op"]
        kw["threshold"] = _number(p, raw, "threshold", lo=0.0, hi=1.0, required=True)
        kw["resolve_threshold"] = _number(p, raw, "resolve_threshold", lo=0.0, hi=1.0)
        _check_hysteresis(p, kw)
        if raw.get("confidence") is not None:
            kw["confidence"] = _number(p, raw, "confidence", lo=0.5, hi=1.0, hi_open=True)
        if raw.get("range") is not None:
            r = raw["range"]
            if kw["check"] != "out_of_range":
                p.add("range", "applies to check 'out_of_range' only")
            elif (
                not isinstance(r, list)
                or len(r) != 2
                or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r
                )
                or r[0] >= r[1]
            ):
                p.add("range", f"must be [low, high] with low < high, got {r!r}")
            else:
                kw["value_range"] = (float(r[0]), float(r[1]))
        kw["reference_s"], kw["reference_window"] = _reference(p, raw, 3600.0)

    default_delay = DEFAULT_LABEL_DELAY_S if label_based else 0.0
    delay_s = default_delay
    if raw.get("delay") is not None:
        if raw["delay"] in (0, "0", "0s"):
            delay_s = 0.0
        else:
            delay_s = _duration(p, raw, "delay") or default_delay
    if p.items:
        return None, p.items
    semantic = {k: v for k, v in kw.items()}
    semantic.update(kind=kind, models=models, versions=versions, for_n=for_n, resolve_for_n=resolve_for_n,
                    delay_s=delay_s, view_s=view_s, min_samples=min_samples, window_s=window_s)  # fmt: skip
    digest = hashlib.blake2b(orjson.dumps(semantic, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
    rule = Rule(
        name=name,
        kind=kind,
        severity=severity,
        models=models,
        versions=versions,
        labels=labels,
        message=message,
        for_n=for_n,
        resolve_for_n=resolve_for_n,
        delay_s=delay_s,
        view_s=view_s,
        min_samples=min_samples,
        digest=digest,
        **kw,
    )
    return rule, []


def _check_hysteresis(p: _Problems, kw: dict[str, Any]) -> None:
    """A resolve threshold must sit on the healthy side of the firing threshold."""
    rt, t, op = kw.get("resolve_threshold"), kw.get("threshold"), kw.get("op")
    if rt is None or t is None or op is None:
        return
    if op in ("<", "<=") and rt < t:
        p.add("resolve_threshold", f"must be >= threshold ({t:g}) for op {op!r}: it is the healthy side")
    if op in (">", ">=") and rt > t:
        p.add("resolve_threshold", f"must be <= threshold ({t:g}) for op {op!r}: it is the healthy side")


def parse_rules(text: str, window_s: float, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rules document; raises :class:`RulesError` listing every problem."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RulesError([f"{source}: not valid YAML{where}: {problem}"]) from None
    if doc is None:
        doc = {"rules": []}
    if not isinstance(doc, Mapping) or "rules" not in doc:
        raise RulesError([f"{source}: expected a mapping with a 'rules' list at the top"])
    extra = set(doc) - {"rules"}
    problems: list[str] = [
        f"{source}: unknown top-level key {k!r} (only 'rules' is allowed)" for k in sorted(extra, key=str)
    ]
    raw_rules = doc["rules"] or []
    if not isinstance(raw_rules, list):
        raise RulesError([f"{source}: 'rules' must be a list of rules"])
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules, start=1):
        rule, errs = _parse_rule(raw, i, window_s, seen)
        problems.extend(f"{source}: {e}" for e in errs)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), source)


def load_rules(path: str | Path, window_s: float) -> RuleSet:
    """Read and validate a rules file (see :func:`parse_rules`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"{path}: cannot read the rules file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise RulesError([f"{path}: the rules file is not UTF-8 text"]) from None
    return parse_rules(text, window_s, str(path))
