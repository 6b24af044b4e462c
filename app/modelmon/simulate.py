"""Traffic simulator: realistic prediction and ground-truth events for exercising modelmon end to end.

The engine is pure Python (no Kafka): :func:`generate` lazily yields :class:`SimEvent` objects ordered by the
wall-clock second at which they should be sent, and :func:`run` paces them into any :class:`Sink` (a Kafka
producer, a list in tests). Everything is driven by the seed (``random.Random`` for uniform draws and ids,
numpy's PCG64 for normal draws), so a seed reproduces a run byte for byte on the same Python and numpy,
which is what makes monitor regressions debuggable.

Time model: every timing field of :class:`SimConfig` and :class:`Incident` (``rate``, ``duration_s``,
incident windows, label delays) is in *event time*, seconds since ``start_ts``. ``speed`` only compresses
the sending: an event at event-time offset ``o`` is sent at ``wall_s = o / speed``.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import secrets
import threading
import time
from bisect import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate, chain, repeat
from statistics import NormalDist
from typing import Any, Literal, Protocol

import numpy as np
import orjson

__all__ = [
    "INCIDENT_KINDS",
    "INVALID_DEFECTS",
    "Incident",
    "LabelDelay",
    "ModelInfo",
    "Progress",
    "SimConfig",
    "SimEvent",
    "Sink",
    "Stats",
    "generate",
    "model_catalogue",
    "parse_incident",
    "run",
]

IncidentKind = Literal[
    "accuracy_drop", "traffic_drop", "latency_spike", "score_drift", "feature_drift", "feature_missing"
]
EventKind = Literal["prediction", "ground_truth", "invalid"]

PREDICTIONS_TOPIC = "predictions"
GROUND_TRUTH_TOPIC = "ground-truth"

#: Magnitude used when an incident spec leaves it out, and what it means.
INCIDENT_KINDS: dict[str, tuple[float, str]] = {
    "accuracy_drop": (0.2, "accuracy points removed (0.2 = 20 points)"),
    "traffic_drop": (0.5, "share of predictions removed (0.5 = half the traffic)"),
    "latency_spike": (3.0, "latency multiplier"),
    "score_drift": (1.0, "logit margin added to the winning class (regression: target SDs added)"),
    "feature_drift": (2.0, "mean shift of a numeric feature, in standard deviations"),
    "feature_missing": (0.5, "share of requests whose feature is null"),
}

#: Defects of the extra invalid events, with their relative frequency.
INVALID_DEFECTS: dict[str, float] = {
    "not_json": 0.2,
    "missing_field": 0.2,
    "wrong_type": 0.2,
    "non_utf8": 0.15,
    "null_key": 0.15,
    "oversized": 0.1,
}

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?$")
_UNIT_S = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
_INCIDENT_HELP = (
    "expected KIND@START+DURATION[:MAGNITUDE][:model=NAME][:feature=NAME][:segment=KEY/VALUE], "
    "e.g. accuracy_drop@600+300:0.2 or accuracy_drop@0+3600:0.3:segment=country/br"
)


# --------------------------------------------------------------------------------------------- incidents


@dataclass(frozen=True)
class Incident:
    """A change to the generating process inside ``[start_s, start_s + duration_s)`` of event-time offset.

    ``model`` None means every model; a name may also be a unique prefix ("fraud" for "fraud-detector"),
    resolved by :func:`generate`. ``magnitude`` None takes the kind's default from :data:`INCIDENT_KINDS`.
    ``feature`` picks the feature of feature_drift/feature_missing (default: the model's first numeric one).
    ``segment`` ("key/value", accuracy_drop only) limits the incident to requests with that segment tag.
    """

    kind: IncidentKind
    start_s: float
    duration_s: float
    model: str | None = None
    magnitude: float | None = None
    feature: str | None = None
    segment: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(
                f"unknown incident kind {self.kind!r} (expected one of: {', '.join(INCIDENT_KINDS)})"
            )
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"incident start must be a finite number >= 0, got {self.start_s}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"incident duration must be a finite number > 0, got {self.duration_s}")
        for what, name in (("model", self.model), ("feature", self.feature)):
            if name is not None and not _NAME_RE.match(name):
                raise ValueError(
                    f"incident {what} name {name!r} may only contain letters, digits, '.', '_', '-'"
                )
        if self.segment is not None:
            if self.kind != "accuracy_drop":
                raise ValueError("a segment applies to accuracy_drop only")
            key, sep, value = self.segment.partition("/")
            if not sep or not _NAME_RE.match(key) or not value:
                raise ValueError(f"incident segment must be KEY/VALUE, e.g. country/br, got {self.segment!r}")
        if self.magnitude is None:
            object.__setattr__(self, "magnitude", INCIDENT_KINDS[self.kind][0])
        m = float(self.magnitude)  # type: ignore[arg-type]
        if not math.isfinite(m):
            raise ValueError(f"incident magnitude must be finite, got {self.magnitude}")
        if self.kind in ("accuracy_drop", "traffic_drop", "feature_missing") and not 0 <= m <= 1:
            raise ValueError(f"{self.kind} magnitude is a share and must be within [0, 1], got {m}")
        if self.kind == "latency_spike" and m <= 0:
            raise ValueError(f"latency_spike magnitude is a multiplier and must be > 0, got {m}")
        object.__setattr__(self, "magnitude", m)

    @property
    def end_s(self) -> float:
        """First event-time offset after the incident."""
        return self.start_s + self.duration_s

    def spec(self) -> str:
        """The CLI syntax that :func:`parse_incident` turns back into this incident."""
        text = f"{self.kind}@{self.start_s:g}+{self.duration_s:g}:{self.magnitude:g}"
        if self.model is not None:
            text += f":model={self.model}"
        if self.feature is not None:
            text += f":feature={self.feature}"
        if self.segment is not None:
            text += f":segment={self.segment}"
        return text


def _parse_duration(text: str, what: str, spec: str) -> float:
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(
            f"incident {spec!r}: {what} {text!r} is not a number of seconds (units ms, s, m, h allowed)"
        )
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_incident(text: str) -> Incident:
    """Parse the CLI syntax ``KIND@START+DURATION[:MAGNITUDE][:model=NAME][:feature=NAME][:segment=K/V]``.

    START and DURATION are event-time seconds (``90``, ``1.5m``, ``2h``). Raises ValueError with a one-line
    message that names the offending part, so a CLI can print it as is.
    """
    spec = text.strip()
    if "@" not in spec:
        raise ValueError(f"incident {spec!r}: missing '@START' ({_INCIDENT_HELP})")
    kind, _, rest = spec.partition("@")
    kind = kind.strip()
    if kind not in INCIDENT_KINDS:
        raise ValueError(
            f"incident {spec!r}: unknown kind {kind!r} (expected one of: {', '.join(INCIDENT_KINDS)})"
        )
    window, *parts = rest.split(":")
    if "+" not in window:
        raise ValueError(f"incident {spec!r}: missing '+DURATION' after the start ({_INCIDENT_HELP})")
    start_text, _, duration_text = window.partition("+")
    start = _parse_duration(start_text, "start", spec)
    duration = _parse_duration(duration_text, "duration", spec)
    if duration <= 0:
        raise ValueError(f"incident {spec!r}: duration must be > 0")
    magnitude: float | None = None
    options: dict[str, str] = {}
    for i, part in enumerate(parts):
        part = part.strip()
        if "=" in part:
            key, _, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if key not in ("model", "feature", "segment"):
                raise ValueError(
                    f"incident {spec!r}: unknown option {key!r} (expected model=, feature= or segment=)"
                )
            if key in options:
                raise ValueError(f"incident {spec!r}: option {key!r} given twice")
            if not value:
                raise ValueError(f"incident {spec!r}: option {key!r} has an empty value")
            options[key] = value
        elif i == 0:
            try:
                magnitude = float(part)
            except ValueError:
                raise ValueError(f"incident {spec!r}: magnitude {part!r} is not a number") from None
        else:
            raise ValueError(f"incident {spec!r}: unexpected part {part!r} ({_INCIDENT_HELP})")
    try:
        return Incident(
            kind,  # type: ignore[arg-type]
            start,
            duration,
            options.get("model"),
            magnitude,
            options.get("feature"),
            options.get("segment"),
        )
    except ValueError as exc:
        raise ValueError(f"incident {spec!r}: {exc}") from None


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class LabelDelay:
    """When ground truth arrives: lognormal delay after the prediction (event time), plus early labels.

    ``early_fraction`` of the labels are *sent before* their prediction (by up to ``early_lead_s`` event
    seconds), as happens when the prediction's pipeline lags; their ``ts`` stays at or just after the
    prediction's ``ts``. Delays are capped at ``max_s`` so the pending-label heap stays bounded.
    """

    median_s: float = 30.0
    sigma: float = 1.0
    early_fraction: float = 0.02
    early_lead_s: float = 1.0
    max_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.median_s > 0:
            raise ValueError(f"label delay median must be > 0, got {self.median_s}")
        if not self.sigma >= 0:
            raise ValueError(f"label delay sigma must be >= 0, got {self.sigma}")
        if not 0 <= self.early_fraction <= 1:
            raise ValueError(f"early label fraction must be within [0, 1], got {self.early_fraction}")
        if not self.early_lead_s > 0:
            raise ValueError(f"early label lead must be > 0, got {self.early_lead_s}")
        if not self.max_s >= self.median_s:
            raise ValueError(f"label delay cap ({self.max_s}) must be >= the median ({self.median_s})")


DEFAULT_ACCURACY = 0.9


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated run; see the module docstring for the time model.

    ``rate`` is predictions per event-time second over all models. The run ends after ``count`` predictions
    or at event offset ``duration_s``, whichever comes first (neither: endless); labels still pending then
    are sent afterwards unless ``label_tail_s`` limits how long after the end they may be sent.
    ``seed`` None draws a fresh seed and ``start_ts`` None means "now"; :meth:`resolved` pins both.
    Fractions: ``label_fraction`` of successful predictions get a label; ``duplicate_fraction`` of
    predictions and labels are sent twice; ``relabel_fraction`` of labels get a second, different label;
    ``invalid_fraction`` adds that many invalid events per prediction; ``error_fraction`` of predictions fail.
    """

    models: int = 3
    versions: int = 2
    canary_share: float = 0.2
    rate: float = 100.0
    count: int | None = None
    duration_s: float | None = None
    label_fraction: float = 0.8
    label_delay: LabelDelay = LabelDelay()
    label_tail_s: float | None = None
    duplicate_fraction: float = 0.01
    relabel_fraction: float = 0.01
    invalid_fraction: float = 0.005
    error_fraction: float = 0.005
    base_accuracy: float | Mapping[str, float] = DEFAULT_ACCURACY
    incidents: tuple[Incident, ...] = ()
    seed: int | None = None
    start_ts: float | None = None
    speed: float = 1.0
    oversize_bytes: int = 128 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.models <= 1000:
            raise ValueError(f"models must be between 1 and 1000, got {self.models}")
        if not 1 <= self.versions <= 5:
            raise ValueError(f"versions must be between 1 and 5, got {self.versions}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {self.rate}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration must be > 0, got {self.duration_s}")
        if self.label_tail_s is not None and not self.label_tail_s >= 0:
            raise ValueError(f"label tail must be >= 0, got {self.label_tail_s}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {self.speed}")
        for name in (
            "canary_share",
            "label_fraction",
            "duplicate_fraction",
            "relabel_fraction",
            "invalid_fraction",
            "error_fraction",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name.replace('_', ' ')} must be within [0, 1], got {value}")
        accuracies = (
            self.base_accuracy.values() if isinstance(self.base_accuracy, Mapping) else [self.base_accuracy]
        )
        for acc in accuracies:
            if not 0 <= acc <= 1:
                raise ValueError(f"base accuracy must be within [0, 1], got {acc}")
        if self.oversize_bytes < 1024:
            raise ValueError(f"oversize bytes must be >= 1024, got {self.oversize_bytes}")
        object.__setattr__(self, "incidents", tuple(self.incidents))
        if self.duration_s is not None:
            for inc in self.incidents:
                if inc.start_s >= self.duration_s:
                    raise ValueError(
                        f"incident {inc.spec()} starts at event offset {inc.start_s:g} s, after the run ends "
                        f"({self.duration_s:g} s of event time; wall time is event time / speed)"
                    )

    def resolved(self) -> SimConfig:
        """This config with a concrete ``seed`` and ``start_ts``, so a run can be reproduced and reported."""
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        start = self.start_ts if self.start_ts is not None else round(time.time(), 3)
        return replace(self, seed=seed, start_ts=start)

    def accuracy_of(self, model: str) -> float:
        """Base accuracy of one model (models missing from a mapping get :data:`DEFAULT_ACCURACY`)."""
        if isinstance(self.base_accuracy, Mapping):
            return float(self.base_accuracy.get(model, DEFAULT_ACCURACY))
        return float(self.base_accuracy)


# ------------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class _Template:
    name: str
    task: Literal["classification", "regression"]
    classes: tuple[str, ...]
    prior: tuple[float, ...]
    latency_median_ms: float
    numeric: tuple[tuple[str, float, float], ...]  # name, mean, sd
    categorical: tuple[tuple[str, tuple[str, ...], tuple[float, ...]], ...]
    flags: tuple[tuple[str, float], ...]
    target: tuple[float, tuple[float, ...], float, float] = (
        0.0,
        (),
        0.0,
        0.0,
    )  # intercept, coefs, noise, tol
    baseline_missing: tuple[str, float] | None = None


_GENERIC_NUMERIC = (("x1", 0.0, 1.0), ("x2", 10.0, 3.0), ("x3", 100.0, 25.0), ("x4", 0.5, 0.2))
_GENERIC_CATEGORICAL = (("region", ("north", "south", "east", "west"), (0.45, 0.25, 0.2, 0.1)),)

_TEMPLATES: tuple[_Template, ...] = (
    _Template(
        "fraud-detector", "classification", ("legit", "fraud"), (0.9, 0.1), 18.0,
        (("amount", 80.0, 25.0), ("account_age_days", 400.0, 150.0), ("tx_last_24h", 3.0, 1.5),
         ("merchant_risk", 0.2, 0.08)),
        (("merchant_category", ("grocery", "electronics", "travel", "gaming", "other"),
          (0.45, 0.2, 0.15, 0.1, 0.1)),),
        (("card_present", 0.6),),
    ),
    _Template(
        "churn", "classification", ("retained", "downgrade", "churned"), (0.7, 0.2, 0.1), 25.0,
        (("tenure_months", 24.0, 10.0), ("monthly_spend", 45.0, 15.0), ("support_tickets_90d", 1.2, 1.0),
         ("days_since_login", 6.0, 4.0)),
        (("plan", ("basic", "standard", "premium"), (0.55, 0.3, 0.15)),),
        (("auto_renew", 0.7),),
        baseline_missing=("days_since_login", 0.02),
    ),
    _Template(
        "price-regressor", "regression", (), (), 22.0,
        (("sqft", 1500.0, 400.0), ("rooms", 3.2, 1.0), ("age_years", 25.0, 12.0), ("distance_km", 8.0, 4.0)),
        (("city", ("berlin", "munich", "hamburg", "cologne"), (0.4, 0.25, 0.2, 0.15)),),
        (("has_garden", 0.3),),
        target=(350.0, (90.0, 25.0, -20.0, -30.0), 15.0, 25.0),
    ),
    _Template(
        "ctr-predictor", "classification", ("no_click", "click"), (0.85, 0.15), 12.0,
        _GENERIC_NUMERIC, _GENERIC_CATEGORICAL, (("returning_user", 0.5),),
    ),
    _Template(
        "intent-classifier", "classification", ("billing", "cancel", "support", "sales", "other"),
        (0.3, 0.1, 0.35, 0.15, 0.1), 30.0, _GENERIC_NUMERIC, _GENERIC_CATEGORICAL, (("logged_in", 0.8),),
    ),
    _Template(
        "eta-regressor", "regression", (), (), 15.0, _GENERIC_NUMERIC, _GENERIC_CATEGORICAL,
        (("rush_hour", 0.3),), target=(20.0, (3.0, 2.0, 1.0, 0.5), 2.0, 3.0),
    ),
    _Template(
        "spam-filter", "classification", ("ham", "spam"), (0.8, 0.2), 8.0,
        _GENERIC_NUMERIC, _GENERIC_CATEGORICAL, (("has_link", 0.4),),
    ),
    _Template(
        "demand-forecast", "regression", (), (), 40.0, _GENERIC_NUMERIC, _GENERIC_CATEGORICAL,
        (("holiday", 0.05),), target=(500.0, (60.0, 30.0, 20.0, 10.0), 20.0, 40.0),
    ),
)  # fmt: skip

_SEGMENTS: tuple[tuple[str, tuple[str, ...], tuple[float, ...]], ...] = (
    ("country", ("us", "de", "gb", "in", "br", "fr", "jp"), (0.4, 0.2, 0.12, 0.1, 0.08, 0.06, 0.04)),
    ("device", ("android", "ios", "web"), (0.5, 0.35, 0.15)),
)

_ERRORS = (
    "TimeoutError: inference exceeded 250 ms",
    "FeatureStoreError: feature lookup failed",
    "ModelUnavailable: replica restarting",
    "ValueError: input contains NaN",
)

_LATENCY_SIGMA = 0.35
_LATENCY_TAIL_P = 0.01  # share of slow requests (GC pauses, cold caches) ...
_LATENCY_TAIL_MULT = (4.0, 15.0)  # ... multiplied by a uniform factor from this range
_DUPLICATE_DELAY_S = 0.5  # mean of the exponential delay before a re-send (a producer retry)
_RELABEL_DELAY_FACTOR = 4.0  # a correction arrives about this many label-delay medians after the label


@dataclass(frozen=True)
class ModelInfo:
    """A simulated model as a CLI or test sees it (names are deterministic, independent of the seed)."""

    name: str
    task: Literal["classification", "regression"]
    classes: tuple[str, ...]
    versions: tuple[str, ...]
    version_shares: tuple[float, ...]
    traffic_share: float
    accuracy: float
    latency_median_ms: float
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    flag_features: tuple[str, ...]
    regression_tolerance: float | None

    @property
    def features(self) -> tuple[str, ...]:
        """All feature names in payload order."""
        return self.numeric_features + self.categorical_features + self.flag_features


def model_catalogue(cfg: SimConfig) -> tuple[ModelInfo, ...]:
    """The models a config simulates: a deterministic mix of binary, multiclass and regression models.

    Traffic is skewed (share proportional to 1/(i+1)); with several versions the newest gets
    ``canary_share`` of the model's traffic. Regression "accuracy" is the share of predictions within
    ``regression_tolerance`` of the target, so one knob (and accuracy_drop) works for every task.
    """
    weights = [1.0 / (i + 1) for i in range(cfg.models)]
    total = sum(weights)
    out = []
    for i in range(cfg.models):
        tpl = _TEMPLATES[i % len(_TEMPLATES)]
        cycle = i // len(_TEMPLATES)
        name = tpl.name if cycle == 0 else f"{tpl.name}-{cycle + 1}"
        versions = tuple(f"{i + 1}.{k}.0" for k in range(cfg.versions))
        if cfg.versions == 1:
            shares: tuple[float, ...] = (1.0,)
        else:
            older = (1.0 - cfg.canary_share) / (cfg.versions - 1)
            shares = (*([older] * (cfg.versions - 1)), cfg.canary_share)
        out.append(
            ModelInfo(
                name=name,
                task=tpl.task,
                classes=tpl.classes,
                versions=versions,
                version_shares=shares,
                traffic_share=weights[i] / total,
                accuracy=cfg.accuracy_of(name),
                latency_median_ms=tpl.latency_median_ms,
                numeric_features=tuple(n for n, _, _ in tpl.numeric),
                categorical_features=tuple(n for n, _, _ in tpl.categorical),
                flag_features=tuple(n for n, _ in tpl.flags),
                regression_tolerance=tpl.target[3] if tpl.task == "regression" else None,
            )
        )
    if isinstance(cfg.base_accuracy, Mapping):
        unknown = sorted(set(cfg.base_accuracy) - {m.name for m in out})
        if unknown:
            raise ValueError(
                f"base accuracy given for unknown model(s) {unknown}; models: {[m.name for m in out]}"
            )
    return tuple(out)


def _cumulative(weights: Sequence[float]) -> list[float]:
    """Cumulative weights for ``bisect(cum, random())``; the top is raised so round-off never overflows."""
    cum = list(accumulate(weights))
    if cum:
        cum[-1] = 2.0
    return cum


def _resolve_model(selector: str, names: Sequence[str]) -> str:
    if selector in names:
        return selector
    matches = [n for n in names if n.startswith(selector)]
    if len(matches) == 1:
        return matches[0]
    what = "matches several models" if matches else "matches no model"
    raise ValueError(f"incident model {selector!r} {what}; models: {', '.join(names)}")


class _Model:
    """Runtime state of one model: cumulative weights and the incidents that apply to it."""

    def __init__(self, info: ModelInfo, tpl: _Template, incidents: list[Incident]) -> None:
        self.info = info
        self.name = info.name
        self.task = info.task
        self.is_clf = info.task == "classification"
        self.classes = info.classes
        self.class_cum = _cumulative(tpl.prior)
        self.versions = info.versions
        self.version_cum = _cumulative(info.version_shares)
        self.accuracy = info.accuracy
        self.latency_median = info.latency_median_ms
        self.numeric = tpl.numeric
        self.categorical = [(n, v, _cumulative(w)) for n, v, w in tpl.categorical]
        self.flags = tpl.flags
        self.baseline_missing = tpl.baseline_missing
        intercept, coefs, noise, tol = tpl.target
        self.intercept, self.coefs, self.noise_sd, self.tol = intercept, coefs, noise, tol
        self.target_sd = math.sqrt(sum(c * c for c in coefs) + noise * noise) if coefs else 1.0
        self.incidents = incidents
        self._sd_cache: dict[float, float] = {}

    def residual_sd(self, accuracy: float) -> float:
        """SD of the regression error that puts ``accuracy`` of predictions within the tolerance."""
        sd = self._sd_cache.get(accuracy)
        if sd is None:
            p = min(max((1.0 + accuracy) / 2.0, 0.5 + 1e-9), 1 - 1e-9)
            sd = self.tol / NormalDist().inv_cdf(p) if accuracy > 0 else self.tol * 1e3
            self._sd_cache[accuracy] = sd
        return sd


def _build_models(cfg: SimConfig) -> list[_Model]:
    infos = model_catalogue(cfg)
    names = [m.name for m in infos]
    per_model: dict[str, list[Incident]] = {n: [] for n in names}
    for inc in cfg.incidents:
        targets = names if inc.model is None else [_resolve_model(inc.model, names)]
        if inc.kind in ("feature_drift", "feature_missing"):
            usable = []
            for n in targets:
                info = infos[names.index(n)]
                pool = info.numeric_features if inc.kind == "feature_drift" else info.features
                if inc.feature is None:
                    usable.append((n, replace(inc, model=n, feature=info.numeric_features[0])))
                elif inc.feature in pool:
                    usable.append((n, replace(inc, model=n)))
            if not usable:
                kind = "numeric feature" if inc.kind == "feature_drift" else "feature"
                raise ValueError(f"incident {inc.spec()}: no selected model has a {kind} {inc.feature!r}")
            for n, resolved in usable:
                per_model[n].append(resolved)
        else:
            for n in targets:
                per_model[n].append(replace(inc, model=n))
    return [
        _Model(info, _TEMPLATES[i % len(_TEMPLATES)], per_model[info.name]) for i, info in enumerate(infos)
    ]


# ------------------------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One message to send: at ``wall_s`` seconds after the run starts, to ``topic``, with ``key``.

    Valid events carry ``payload`` (the sink encodes it, e.g. with orjson); invalid ones carry the exact
    bytes in ``raw``. ``note`` says what is special about it: "" (ordinary), "error", "duplicate",
    "relabel", "early_label", or the defect of an invalid event (see :data:`INVALID_DEFECTS`).
    """

    wall_s: float
    kind: EventKind
    topic: str
    key: bytes | None
    payload: dict[str, Any] | None
    raw: bytes | None
    note: str = ""

    def value(self) -> bytes:
        """The message value as bytes: ``raw`` for invalid events, the orjson encoding otherwise."""
        if self.raw is not None:
            return self.raw
        return orjson.dumps(self.payload)


def _invalid_event(
    rng: random.Random,
    defect: str,
    wall_s: float,
    rid: str,
    prediction: dict[str, Any],
    label_value: Any,
    on_ground_truth: bool,
    pad: str,
) -> SimEvent:
    """An event that a validator must reject, derived from a real-looking payload with a fresh id."""
    if on_ground_truth:
        base: dict[str, Any] = {
            "request_id": rid, "model": prediction["model"], "label": label_value, "ts": prediction["ts"],
        }  # fmt: skip
        topic = GROUND_TRUTH_TOPIC
    else:
        base = dict(prediction, request_id=rid)
        topic = PREDICTIONS_TOPIC
    key: bytes | None = rid.encode()
    if defect == "not_json":
        encoded = orjson.dumps(base)
        raw = encoded[: 1 + int(rng.random() * (len(encoded) - 2))]  # a prefix of an object never parses
    elif defect == "missing_field":
        # only the schemas' required fields: without ts, model_version or task an event is still valid
        required = ["request_id", "label"] if on_ground_truth else ["request_id", "model", "prediction"]
        del base[required[int(rng.random() * len(required))]]
        raw = orjson.dumps(base)
    elif defect == "wrong_type":
        choices: list[tuple[str, Any]] = [
            ("ts", "2024-01-01T00:00:00Z"), ("request_id", 12345), ("model", ["not", "a", "name"]),
        ]  # fmt: skip
        if on_ground_truth:
            choices.append(("label", {"value": label_value}))
        else:
            choices += [("latency_ms", "12ms"), ("features", "amount=3"), ("segment", ["de", "ios"])]
            if "scores" in base:
                choices.append(("scores", list(base["scores"].values())))
        field_name, bad = choices[int(rng.random() * len(choices))]
        base[field_name] = bad
        raw = orjson.dumps(base)
    elif defect == "non_utf8":
        raw = orjson.dumps(base).replace(b'"model":"', b'"model":"\xff\xfe', 1)
    elif defect == "null_key":
        key = None
        raw = orjson.dumps(base)
    else:  # oversized
        if on_ground_truth:
            base["comment"] = pad
        else:
            base["features"] = dict(base["features"], blob=pad)
        raw = orjson.dumps(base)
    return SimEvent(wall_s, "invalid", topic, key, None, raw, defect)


def _normal_stream(seed: int) -> Callable[[], float]:
    """Standard normal draws from numpy's PCG64, made in blocks: ~20x cheaper than ``random.gauss``."""
    gen = np.random.Generator(np.random.PCG64(seed))
    blocks = map(lambda _: gen.standard_normal(4096).tolist(), repeat(None))
    return chain.from_iterable(blocks).__next__


def generate(cfg: SimConfig) -> Iterator[SimEvent]:
    """Yield the run's events lazily, ordered by ``wall_s``; identical for the same resolved config.

    Predictions arrive as a Poisson process; their labels, duplicates and corrections are scheduled on a
    heap and released once no later arrival can precede them, so memory grows with rate x label delay, not
    with the length of the run. Call :meth:`SimConfig.resolved` first to know the seed and start time.
    """
    cfg = cfg.resolved()
    return _generate(cfg, _build_models(cfg))


def _generate(cfg: SimConfig, models: list[_Model]) -> Iterator[SimEvent]:
    assert cfg.seed is not None and cfg.start_ts is not None
    rng = random.Random(cfg.seed)
    rand, getrandbits = rng.random, rng.getrandbits
    normal = _normal_stream(cfg.seed)
    exp, log = math.exp, math.log
    start_ts = cfg.start_ts
    speed = cfg.speed
    mean_gap = 1.0 / cfg.rate
    count = cfg.count
    duration = cfg.duration_s
    label_fraction = cfg.label_fraction
    ld = cfg.label_delay
    delay_median, delay_sigma, delay_cap = ld.median_s, ld.sigma, ld.max_s
    early_fraction, early_lead = ld.early_fraction, ld.early_lead_s
    dup_fraction = cfg.duplicate_fraction
    relabel_fraction = cfg.relabel_fraction
    invalid_fraction = cfg.invalid_fraction
    error_fraction = cfg.error_fraction
    defects = list(INVALID_DEFECTS)
    defect_cum = list(accumulate(INVALID_DEFECTS.values()))
    pad = "x" * cfg.oversize_bytes
    model_cum = _cumulative([m.info.traffic_share for m in models])
    segments = [(n, v, _cumulative(w)) for n, v, w in _SEGMENTS]
    pred_topic, gt_topic = PREDICTIONS_TOPIC, GROUND_TRUTH_TOPIC
    any_incidents = any(m.incidents for m in models)

    heap: list[tuple[float, int, SimEvent]] = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    emitted = 0
    t = 0.0
    while True:
        # -------------------------------------------------------------- next arrival (Poisson process)
        t += -log(1.0 - rand()) * mean_gap
        if (count is not None and emitted >= count) or (duration is not None and t >= duration):
            break
        release = t - early_lead
        while heap and heap[0][0] <= release:
            yield pop(heap)[2]
        m = models[bisect(model_cum, rand())]

        # -------------------------------------------------------------- incident effects at this offset
        accuracy = m.accuracy
        latency_mult = 1.0
        margin_shift = 0.0
        drift: dict[str, float] | None = None
        missing: dict[str, float] | None = None
        segment_drops: list[tuple[str, str, float]] | None = None
        if any_incidents and m.incidents:
            thinned = False
            for inc in m.incidents:
                if not inc.start_s <= t < inc.start_s + inc.duration_s:
                    continue
                mag: float = inc.magnitude  # type: ignore[assignment]
                kind = inc.kind
                if kind == "traffic_drop":
                    if rand() < mag:
                        thinned = True
                elif kind == "accuracy_drop":
                    if inc.segment is None:
                        accuracy = max(0.0, accuracy - mag)
                    else:  # applied once the request's segment is drawn (same random draws as before)
                        seg_key, _, seg_value = inc.segment.partition("/")
                        segment_drops = (segment_drops or []) + [(seg_key, seg_value, mag)]
                elif kind == "latency_spike":
                    latency_mult *= mag
                elif kind == "score_drift":
                    margin_shift += mag
                elif kind == "feature_drift":
                    drift = drift or {}
                    drift[inc.feature] = drift.get(inc.feature, 0.0) + mag  # type: ignore[index]
                else:  # feature_missing
                    missing = missing or {}
                    missing[inc.feature] = 1.0 - (1.0 - missing.get(inc.feature, 0.0)) * (1.0 - mag)  # type: ignore[index]
            if thinned:
                continue
        emitted += 1
        ts = round(start_ts + t, 6)
        rid = f"{getrandbits(128):032x}"
        version = m.versions[bisect(m.version_cum, rand())]

        # -------------------------------------------------------------- features and segment
        features: dict[str, Any] = {}
        zs = []
        for name, mean, sd in m.numeric:
            z = normal()
            if drift is not None and name in drift:
                z += drift[name]
            zs.append(z)
            features[name] = round(mean + sd * z, 4)
        for name, values, cum in m.categorical:
            features[name] = values[bisect(cum, rand())]
        for name, p in m.flags:
            features[name] = rand() < p
        if m.baseline_missing is not None and rand() < m.baseline_missing[1]:
            features[m.baseline_missing[0]] = None
        if missing is not None:
            for name, share in missing.items():
                if rand() < share:
                    features[name] = None
        segment = {name: values[bisect(cum, rand())] for name, values, cum in segments}
        if segment_drops is not None:
            for seg_key, seg_value, mag in segment_drops:
                if segment.get(seg_key) == seg_value:
                    accuracy = max(0.0, accuracy - mag)

        # -------------------------------------------------------------- outcome, prediction, scores
        failed = error_fraction > 0 and rand() < error_fraction
        err = ""
        scores: dict[str, float] | None = None
        if m.is_clf:
            classes = m.classes
            k = len(classes)
            truth = bisect(m.class_cum, rand())
            correct = rand() < accuracy
            if correct:
                predicted = truth
                margin = 1.5 + abs(normal())
            else:
                predicted = (truth + 1 + int(rand() * (k - 1))) % k
                margin = 0.2 + 0.6 * abs(normal())
            margin = max(0.01, margin + margin_shift)
            logits = [normal() for _ in range(k)]
            top = max(logits[j] for j in range(k) if j != predicted)
            logits[predicted] = top + margin
            weights = [exp(z - logits[predicted]) for z in logits]
            norm = sum(weights)
            probs = [round(w / norm, 6) for w in weights]
            probs[predicted] = round(1.0 - (sum(probs) - probs[predicted]), 6)
            scores = dict(zip(classes, probs, strict=True))
            prediction: Any = classes[predicted]
            label: Any = classes[truth]
        else:
            signal = (
                m.intercept + sum(c * z for c, z in zip(m.coefs, zs, strict=True)) + m.noise_sd * normal()
            )
            signal += margin_shift * m.target_sd
            label = round(signal, 3)
            prediction = round(label + m.residual_sd(accuracy) * normal(), 3)

        latency = m.latency_median * exp(_LATENCY_SIGMA * normal())
        if rand() < _LATENCY_TAIL_P:
            latency *= _LATENCY_TAIL_MULT[0] + rand() * (_LATENCY_TAIL_MULT[1] - _LATENCY_TAIL_MULT[0])
        payload: dict[str, Any] = {
            "request_id": rid,
            "model": m.name,
            "model_version": version,
            "ts": ts,
            "task": m.task,
            "prediction": prediction,
        }
        note = ""
        if failed:
            payload["prediction"] = None
            err = _ERRORS[int(rand() * len(_ERRORS))]
            if err.startswith("TimeoutError"):
                latency = 250.0 + rand() * 5.0
            note = "error"
        elif scores is not None:
            payload["scores"] = scores
        payload["latency_ms"] = round(latency * latency_mult, 3)
        payload["features"] = features
        payload["segment"] = segment
        if failed:
            payload["error"] = err

        key = rid.encode()
        seq += 1
        push(heap, (t, seq, SimEvent(t / speed, "prediction", pred_topic, key, payload, None, note)))
        if rand() < dup_fraction:
            d = t + 0.001 - log(1.0 - rand()) * _DUPLICATE_DELAY_S
            seq += 1
            push(
                heap, (d, seq, SimEvent(d / speed, "prediction", pred_topic, key, payload, None, "duplicate"))
            )

        # -------------------------------------------------------------- ground truth
        if not failed and rand() < label_fraction:
            if rand() < early_fraction:
                lead = early_lead * (0.05 + 0.95 * rand())
                send = max(t - lead, t * 0.5)
                label_ts = round(ts + 0.2 * lead * rand(), 6)
                label_note = "early_label"
            else:
                delay = min(delay_median * exp(delay_sigma * normal()), delay_cap)
                send = t + delay
                label_ts = round(start_ts + send, 6)
                label_note = ""
            gt = {"request_id": rid, "label": label, "ts": label_ts, "model": m.name}
            seq += 1
            push(
                heap, (send, seq, SimEvent(send / speed, "ground_truth", gt_topic, key, gt, None, label_note))
            )
            if rand() < dup_fraction:
                d = send + 0.001 - log(1.0 - rand()) * _DUPLICATE_DELAY_S
                seq += 1
                push(
                    heap, (d, seq, SimEvent(d / speed, "ground_truth", gt_topic, key, gt, None, "duplicate"))
                )
            if rand() < relabel_fraction:
                if m.is_clf:
                    k = len(m.classes)
                    other = (m.classes.index(label) + 1 + int(rand() * (k - 1))) % k
                    new_label: Any = m.classes[other]
                else:
                    new_label = round(label + (0.5 + rand()) * m.tol * (1 if rand() < 0.5 else -1), 3)
                r = max(send, t) + delay_median * _RELABEL_DELAY_FACTOR * (0.5 + rand())
                fix = {"request_id": rid, "label": new_label, "ts": round(start_ts + r, 6), "model": m.name}
                seq += 1
                push(heap, (r, seq, SimEvent(r / speed, "ground_truth", gt_topic, key, fix, None, "relabel")))

        # -------------------------------------------------------------- extra invalid input
        if rand() < invalid_fraction:
            defect = defects[bisect(defect_cum, rand() * defect_cum[-1])]
            bad_rid = f"{getrandbits(128):032x}"
            on_gt = rand() < 0.3
            seq += 1
            push(heap, (t, seq, _invalid_event(rng, defect, t / speed, bad_rid, payload, label, on_gt, pad)))

    # ------------------------------------------------------------------ drain what is still scheduled
    last = t if duration is None else min(t, duration)
    limit = math.inf if cfg.label_tail_s is None else last + cfg.label_tail_s
    while heap and heap[0][0] <= limit:
        yield pop(heap)[2]


# ------------------------------------------------------------------------------------------------ running


class Sink(Protocol):
    """Where :func:`run` sends events (a Kafka producer wrapper, or a list in tests)."""

    def send(self, event: SimEvent) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class Progress:
    """A progress report from :func:`run`: what has been sent and how fast, and whether pacing keeps up."""

    elapsed_s: float
    sent: int
    by_kind: dict[str, int]
    rate: float  # events/s since the previous report
    sim_offset_s: float  # event-time offset reached
    behind_s: float  # realtime only: how far sending lags the schedule (0 when on time)


@dataclass
class Stats:
    """What a :func:`run` sent: counts by kind and by note (ordinary events have note "")."""

    seed: int
    start_ts: float
    sent: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_note: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    sim_offset_s: float = 0.0
    stopped: bool = False

    @property
    def predictions(self) -> int:
        return self.by_kind.get("prediction", 0)

    @property
    def ground_truth(self) -> int:
        return self.by_kind.get("ground_truth", 0)

    @property
    def invalid(self) -> int:
        return self.by_kind.get("invalid", 0)


def run(
    cfg: SimConfig,
    sink: Sink,
    *,
    realtime: bool = True,
    progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 2.0,
    stop: threading.Event | None = None,
) -> Stats:
    """Send the run's events to ``sink``; paced to ``wall_s`` when ``realtime``, else as fast as possible.

    Setting ``stop`` ends the run early (also while waiting); the sink is flushed in every case except a
    sink error, which propagates. Progress is reported every ``progress_every_s`` wall seconds and once
    at the end.
    """
    cfg = cfg.resolved()
    by_kind: Counter[str] = Counter()
    by_note: Counter[str] = Counter()
    monotonic = time.monotonic
    t0 = monotonic()
    every = max(progress_every_s, 0.01)
    next_report = t0 + every
    last_report_t, last_report_sent = t0, 0
    sent = 0
    wall = 0.0
    behind = 0.0
    stopped = False

    def report(now: float) -> None:
        nonlocal last_report_t, last_report_sent, next_report
        dt = now - last_report_t
        rate = (sent - last_report_sent) / dt if dt > 0 else 0.0
        assert progress is not None
        progress(Progress(now - t0, sent, dict(by_kind), rate, wall * cfg.speed, behind))
        last_report_t, last_report_sent = now, sent
        next_report = now + every

    for event in generate(cfg):
        if stop is not None and stop.is_set():
            stopped = True
            break
        if realtime:
            while True:
                now = monotonic()
                wait = t0 + event.wall_s - now
                if wait <= 0.0005:
                    behind = max(0.0, -wait)
                    break
                if progress is not None and now >= next_report:
                    report(now)
                chunk = min(wait, max(next_report - now, 0.001), 1.0)
                if stop is not None:
                    if stop.wait(chunk):
                        stopped = True
                        break
                else:
                    time.sleep(chunk)
            if stopped:
                break
        sink.send(event)
        sent += 1
        by_kind[event.kind] += 1
        if event.note:
            by_note[event.note] += 1
        wall = event.wall_s
        if progress is not None and (realtime or not sent & 1023):
            now = monotonic()
            if now >= next_report:
                report(now)
    sink.flush()
    end = monotonic()
    if progress is not None:
        report(end)
    assert cfg.seed is not None and cfg.start_ts is not None
    return Stats(
        seed=cfg.seed,
        start_ts=cfg.start_ts,
        sent=sent,
        by_kind=dict(by_kind),
        by_note=dict(by_note),
        elapsed_s=end - t0,
        sim_offset_s=wall * cfg.speed,
        stopped=stopped,
    )
