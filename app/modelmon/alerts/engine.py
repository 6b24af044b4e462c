"""Rule evaluation and the alert lifecycle (pure: no Kafka, no Faust).

The engine evaluates each rule for each (model, version) series once per event-time window, in window
order, when stage 2's low watermark has passed the window's end plus the rule's ``delay`` (so late labels
have arrived). An evaluation is a pure function of the window data and the rule's durable state, so a
replay after a crash evaluates the same windows to the same result and emits the same alert events (same
``id``, ``state``, ``ts``): consumers dedupe on (id, state).

Lifecycle per (rule, model, version): inactive -> pending -> firing -> resolved (-> inactive).
A breach moves inactive to pending (or straight to firing when ``for`` is 1); ``for`` consecutive
breaches fire; ``resolve_for`` consecutive *clear* evaluations resolve a firing alert. Clear is stricter
than "no breach" where a rule has hysteresis (``resolve_threshold``, CUSUM's half threshold), so the
value must come back to the healthy side, not just wobble around the threshold. An evaluation that cannot
tell (too few samples, no reference yet) changes nothing. One alert per (rule, model, version) is open at a
time; a new one needs ``for`` fresh breaches after the last resolved.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..aggregate import WindowAccumulator, signed_log_bounds
from ..rollup import rfc3339
from ..stats import (
    feature_distribution,
    feature_missing,
    prediction_distribution,
    score_distribution,
    summarize,
    wilson_interval,
)
from .detectors import CusumBank, poisson_interval, robust_z
from .drift import drift_test
from .rules import METRICS, OPS, Rule

__all__ = ["Verdict", "WindowSource", "due_windows", "evaluate", "new_state", "retire"]

WindowSource = Callable[[float, float], WindowAccumulator]
"""source(start, end): the merged accumulator of the series' windows whose start lies in [start, end)."""

MAX_REFERENCE_FEATURES = 64


@dataclass
class Verdict:
    """One evaluation: breach (None = cannot tell), whether it is clear for resolving, and what was seen."""

    breach: bool | None
    clear: bool = False
    value: float | None = None
    threshold: float | None = None
    n: int = 0
    detail: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def new_state(rule: Rule, first_window: float) -> dict[str, Any]:
    """The durable state of a rule for a series that has not been evaluated yet."""
    return {"d": rule.digest, "st": "inactive", "hits": 0, "clears": 0, "since": None, "id": None,
            "next": first_window, "ring": [], "ref": None, "cusum": None}  # fmt: skip


def due_windows(
    rule: Rule, state: dict[str, Any], low_watermark: float, window_s: float, limit: int
) -> list[float]:
    """Window starts ready for evaluation: ended at least ``delay`` before the low watermark, in order."""
    out = []
    w = state["next"]
    while len(out) < limit and w + window_s + rule.delay_s <= low_watermark:
        out.append(w)
        w += window_s
    return out


# ------------------------------------------------------------------------------------------- metrics
def metric_value(metric: str, acc: WindowAccumulator, view_s: float) -> tuple[float | None, int, int | None]:
    """(value, n, successes) of a metric on an accumulator; successes only for proportions/counts.

    For counts, ``successes`` is the count itself (the rate is count / view_s).
    """
    if metric == "accuracy":
        c = acc.classification
        if c is None or not c.n:
            return None, 0, None
        return c.n_correct / c.n, c.n, c.n_correct
    if metric == "error_rate":
        return (acc.errors / acc.predictions if acc.predictions else None), acc.predictions, acc.errors
    if metric == "coverage":
        k = min(acc.labelled, acc.predictions)
        return (acc.labelled / acc.predictions if acc.predictions else None), acc.predictions, k
    if metric == "unmatched_rate":
        k = min(acc.counters.get("unmatched_predictions", 0), acc.predictions)
        return (k / acc.predictions if acc.predictions else None), acc.predictions, k
    if metric == "rate":
        return acc.predictions / view_s, acc.predictions, acc.predictions
    if metric == "predictions":
        return float(acc.predictions), acc.predictions, acc.predictions
    if metric == "invalid":
        k = sum(v for name, v in acc.counters.items() if name.startswith("invalid:"))
        return float(k), k, k
    if metric.startswith("latency_"):
        h = acc.latency
        if h is None or not h.n:
            return None, 0, None
        if metric == "latency_max":
            return h.max, h.n, None
        q = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}[metric]
        return h.quantile(q), h.n, None
    if metric == "label_delay_p95":
        h = acc.label_delay
        return (h.quantile(0.95), h.n, None) if h is not None and h.n else (None, 0, None)
    body = summarize(acc, view_s)
    if metric in ("macro_f1", "log_loss", "brier"):
        cls = body["classification"]
        if cls is None:
            return None, 0, None
        n = cls["n_scored"] if metric in ("log_loss", "brier") else cls["n"]
        return cls[metric], n, None
    reg = body["regression"]
    if reg is None:
        return None, 0, None
    return reg[metric], reg["n"], None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


# ------------------------------------------------------------------------------------------- verdicts
def _threshold(rule: Rule, acc: WindowAccumulator, view_s: float) -> Verdict:
    assert rule.metric is not None and rule.op is not None and rule.threshold is not None
    meta = METRICS[rule.metric]
    value, n, k = metric_value(rule.metric, acc, view_s)
    if value is None or (meta.kind != "count" and n < rule.min_samples):
        return Verdict(None, value=value, threshold=rule.threshold, n=n, detail=f"n={n} < min_samples")
    op, t = rule.op, rule.threshold
    breach = OPS[op](value, t)
    detail = f"n={n}"
    details: dict[str, Any] = {"n": n}
    if rule.confidence is not None and k is not None:
        lo, hi = _interval(meta.kind, k, n, rule.confidence, view_s if rule.metric == "rate" else 1.0)
        # The whole interval must be on the wrong side: small samples cannot page.
        breach = OPS[op](hi, t) if op in ("<", "<=") else OPS[op](lo, t)
        detail = f"{rule.confidence:.0%} CI [{lo:.4g}, {hi:.4g}], n={n}"
        details.update(ci_low=lo, ci_high=hi, confidence=rule.confidence)
    if rule.resolve_threshold is None:
        clear = not OPS[op](value, t)
    else:
        rt = rule.resolve_threshold
        clear = value >= rt if op in ("<", "<=") else value <= rt
    return Verdict(breach, clear and not breach, value, t, n, detail, details)


def _interval(kind: str, k: int, n: int, confidence: float, per_s: float) -> tuple[float, float]:
    """Wilson interval of a proportion, or the exact Poisson interval of a count (divided by ``per_s``:
    the view's length for a rate, 1 for a plain count)."""
    if kind == "proportion":
        ci = wilson_interval(k, n, confidence)
        assert ci is not None
        return ci
    lo, hi = poisson_interval(k, confidence)
    return lo / per_s, hi / per_s


def _baseline(
    rule: Rule, state: dict[str, Any], acc: WindowAccumulator, view_s: float, window_s: float
) -> Verdict:
    assert rule.metric is not None and rule.baseline_s is not None
    meta = METRICS[rule.metric]
    value, n, k = metric_value(rule.metric, acc, view_s)
    ring: list[float] = state["ring"]
    size = max(2, round(rule.baseline_s / window_s))
    if value is None or (meta.kind != "count" and n < rule.min_samples):
        return Verdict(None, value=value, n=n, detail=f"n={n} < min_samples")
    # The baseline learns only while the series is healthy, so a long incident cannot become normal.
    learn = state["st"] == "inactive"
    if len(ring) < max(2, size // 2):
        if learn:
            ring.append(value)
            del ring[:-size]
        return Verdict(None, value=value, n=n, detail=f"baseline {len(ring)}/{size} windows")
    drop = rule.direction == "drop"
    mean = sum(ring) / len(ring)
    if meta.kind == "count":
        expected = mean * view_s if rule.metric == "rate" else mean
        if expected < rule.min_samples:
            # Too little traffic for a count to say anything (Poisson noise): not judged, still learned.
            if learn:
                ring.append(value)
                del ring[:-size]
            return Verdict(None, value=value, n=n, detail=f"expected count {expected:.3g} < min_samples")
    if rule.ratio is not None:
        t = rule.ratio * mean
        detail = f"trailing mean {mean:.4g}, n={n}"
        details: dict[str, Any] = {"baseline_mean": mean, "n": n}
        if rule.confidence is not None and k is not None:
            lo, hi = _interval(meta.kind, k, n, rule.confidence, view_s if rule.metric == "rate" else 1.0)
            breach = hi < t if drop else lo > t
            detail += f", {rule.confidence:.0%} CI [{lo:.4g}, {hi:.4g}]"
            details.update(ci_low=lo, ci_high=hi)
        else:
            breach = value < t if drop else value > t
        clear = value >= t if drop else value <= t
        verdict = Verdict(breach, clear and not breach, value, t, n, detail, details)
    else:
        assert rule.z is not None
        z = robust_z(ring, value)
        if z is None:
            return Verdict(None, value=value, n=n, detail="baseline has no spread")
        breach = z < -rule.z if drop else z > rule.z
        clear = z > -rule.z / 2 if drop else z < rule.z / 2
        verdict = Verdict(breach, clear and not breach, value, None, n, f"robust z {z:.3g}, n={n}", {"z": z})
    if learn and not verdict.breach:
        ring.append(value)
        del ring[:-size]
    return verdict


def _reference_ready(rule: Rule, state: dict[str, Any]) -> WindowAccumulator | None:
    ref = state["ref"]
    if ref is None or not ref.get("done"):
        return None
    return WindowAccumulator.from_dict(ref["acc"])


def _update_reference(rule: Rule, state: dict[str, Any], w: float, acc_w: WindowAccumulator, window_s: float,
                      source: WindowSource) -> None:  # fmt: skip
    """Fold window ``w`` into the reference while it lies in the reference period; close it after."""
    if not rule.needs_reference and rule.kind != "data_quality":
        return
    ref = state["ref"]
    if ref is None:
        if rule.reference_window is not None:
            start, end = rule.reference_window
        else:
            start, end = w, w + (rule.reference_s or 3600.0)
        ref = state["ref"] = {"from": start, "to": end, "acc": WindowAccumulator().to_dict(), "done": False}
    if ref["done"]:
        return
    if ref["from"] <= w < ref["to"]:
        acc = WindowAccumulator.from_dict(ref["acc"]).merge(acc_w)
        ref["acc"] = acc.to_dict()
    if w + window_s >= ref["to"]:
        if rule.reference_window is not None:
            ref["done"] = True
            if WindowAccumulator.from_dict(ref["acc"]).is_empty():
                # A fixed reference that ended before evaluation began: read it from the retained windows.
                ref["acc"] = source(ref["from"], ref["to"]).to_dict()
        elif _reference_size(rule, WindowAccumulator.from_dict(ref["acc"])) >= max(rule.min_samples, 1):
            ref["done"] = True
        else:
            ref["to"] = w + 2 * window_s  # too few samples yet: the reference period grows until it has them


def _reference_size(rule: Rule, acc: WindowAccumulator) -> int:
    """What a reference must hold ``min_samples`` of: labels for a CUSUM, predictions otherwise."""
    if rule.kind == "cusum":
        return acc.classification.n if acc.classification is not None else 0
    return acc.predictions


def _cusum(rule: Rule, state: dict[str, Any], acc_w: WindowAccumulator, window_s: float) -> Verdict:
    ref = state["ref"]
    if not ref["done"]:
        return Verdict(None, detail="collecting the reference")
    bank_state = state["cusum"]
    if bank_state is None:
        racc = WindowAccumulator.from_dict(ref["acc"])
        c = racc.classification
        n_ref = c.n if c is not None else 0
        if n_ref < max(rule.min_samples, 100):
            return Verdict(None, n=n_ref, detail=f"reference has {n_ref} labels")
        assert c is not None
        # The reference accuracy is an estimate: take the lower end of its 95% interval, so that with high
        # probability p0 is not above the true accuracy (an overestimate reads as a drop and pages).
        p0 = rule.p0 if rule.p0 is not None else (wilson_interval(c.n_correct, n_ref, 0.95) or (0.0, 0.0))[0]
        label_rate = n_ref / (ref["to"] - ref["from"])
        arl0 = (rule.false_alarm_every_s or 30 * 86400.0) * label_rate
        shifts = tuple(s for s in rule.shifts if p0 - s > 0.001)
        if not shifts or not 0 < p0 < 1:
            return Verdict(None, detail=f"reference accuracy {p0:.4g} leaves no drop to detect")
        # Calibrated for window-sized batches (80% of the mean labels per window: the detector holds
        # labels back until a batch is full), so the false-alarm rate is the one asked for, not far below.
        batch = max(1, int(0.8 * label_rate * window_s))
        bank = CusumBank(p0, shifts, arl0, batch=batch)
    else:
        bank = CusumBank.from_dict(bank_state)
    c = acc_w.classification
    n = c.n if c is not None else 0
    wrong = n - c.n_correct if c is not None else 0
    bank.update(n, wrong)
    state["cusum"] = bank.to_dict()
    acc_value = (n - wrong) / n if n else None
    return Verdict(
        bank.alarm,
        bank.clear,
        bank.get(),
        1.0,
        n,
        f"window accuracy {_fmt(acc_value)} vs reference {bank.p0:.4g}, n={n}",
        {"accuracy": acc_value, "p0": bank.p0, "n": n},
    )


def _distributions(
    rule: Rule, acc: WindowAccumulator, ref: WindowAccumulator
) -> list[tuple[str, Any, Any, bool]]:
    """(name, reference counts, current counts, ordered) for each distribution the rule compares."""
    out = []
    if rule.target == "score":
        r, c = score_distribution(ref), score_distribution(acc)
        if r and c is not None:
            out.append(("score", r, c, True))
    elif rule.target == "prediction":
        r, c = prediction_distribution(ref), prediction_distribution(acc)
        if r and c is not None:
            out.append(("prediction", r[0], c[0], r[1]))
    else:
        names = ref.features.names() if ref.features is not None else []
        for name in [n for n in names if rule.feature_selected(n)][:MAX_REFERENCE_FEATURES]:
            r, c = feature_distribution(ref, name), feature_distribution(acc, name)
            if r and r[0] and c is not None:
                out.append((name, r[0], c[0], r[1]))
    return out


def _drift(rule: Rule, state: dict[str, Any], acc: WindowAccumulator) -> Verdict:
    ref = _reference_ready(rule, state)
    if ref is None:
        return Verdict(None, detail="collecting the reference")
    pairs = _distributions(rule, acc, ref)
    if not pairs:
        return Verdict(None, detail="nothing to compare")
    alpha = (rule.alpha or 0.001) / len(pairs)  # Bonferroni over the features the rule watches
    worst = None
    drifting = []
    clear = True
    for name, r, c, ordered in pairs:
        method = rule.method or "chi2"
        if method == "ks" and not ordered:
            method = "chi2"  # KS needs ordered values; categories get the chi-square test
        n_cur = sum(c.values()) if c else 0
        if n_cur < max(rule.min_samples, 1):
            continue
        res = drift_test(r, c, method, ordered=ordered, bins=rule.bins)
        if res is None:
            continue
        significant = res.p_value < alpha
        large = rule.min_effect is None or res.statistic >= rule.min_effect
        if significant and large:
            drifting.append(
                {"name": name, "statistic": res.statistic, "p_value": res.p_value, "n": res.n_cur}
            )
        if significant:
            clear = False
        if worst is None or res.p_value < worst[1].p_value:
            worst = (name, res)
    if worst is None:
        return Verdict(None, detail=f"fewer than {rule.min_samples} samples")
    name, res = worst
    detail = (
        f"{name}: {res.method} {res.statistic:.4g}, p={res.p_value:.3g} (alpha {alpha:.3g}), n={res.n_cur}"
    )
    if drifting:
        detail = (
            f"{len(drifting)} drifting: " + ", ".join(d["name"] for d in drifting[:5]) + f"; worst {detail}"
        )
    return Verdict(
        bool(drifting),
        clear,
        res.statistic,
        rule.min_effect,
        res.n_cur,
        detail,
        {
            "method": res.method,
            "p_value": res.p_value,
            "alpha": alpha,
            "worst": name,
            "drifting": drifting[:20],
        },
    )


def _quality(rule: Rule, state: dict[str, Any], acc: WindowAccumulator) -> Verdict:
    assert rule.threshold is not None
    t = rule.threshold
    rt = rule.resolve_threshold if rule.resolve_threshold is not None else t
    op = OPS[rule.op or ">"]
    worst: tuple[str, float, int, int] | None = None
    breaches = []
    clear = True
    if rule.check == "missing_rate":
        names: set[str] = set(acc.features.names()) if acc.features is not None else set()
        ref = state["ref"]
        if ref is not None:
            racc = WindowAccumulator.from_dict(ref["acc"])
            if racc.features is not None:
                names |= set(racc.features.names())
        for name in sorted(n for n in names if rule.feature_selected(n)):
            missing, preds = feature_missing(acc, name)
            if preds < max(rule.min_samples, 1):
                continue
            worst = _check(rule, name, missing, preds, op, t, breaches, worst)
            if missing / preds > rt:
                clear = False
    else:
        ref = _reference_ready(rule, state) if rule.value_range is None else None
        if rule.value_range is None and ref is None:
            return Verdict(None, detail="collecting the reference")
        features = acc.features
        if features is None:
            return Verdict(None, detail="no features")
        for name in sorted(n for n in features.numeric if rule.feature_selected(n)):
            counts = features.numeric[name].counts()
            total = sum(counts.values())
            if total < max(rule.min_samples, 1):
                continue
            if rule.value_range is not None:
                lo, hi = rule.value_range
                # A bucket counts as out of range only when it lies wholly outside [lo, hi].
                out = sum(
                    c
                    for b, c in counts.items()
                    if signed_log_bounds(b)[1] <= lo or signed_log_bounds(b)[0] > hi
                )
            else:
                assert ref is not None and ref.features is not None
                rh = ref.features.numeric.get(name)
                if rh is None or not rh.counts():
                    continue
                keys = rh.counts().keys()
                kmin, kmax = min(keys), max(keys)
                out = sum(c for b, c in counts.items() if b < kmin or b > kmax)
            worst = _check(rule, name, out, total, op, t, breaches, worst)
            if out / total > rt:
                clear = False
    if worst is None:
        return Verdict(None, detail=f"fewer than {rule.min_samples} samples")
    name, value, k, n = worst
    what = "missing" if rule.check == "missing_rate" else "out of range"
    detail = f"{name}: {value:.2%} {what} ({k}/{n})"
    if breaches:
        detail = ", ".join(f"{b['feature']} {b['value']:.2%}" for b in breaches[:5]) + f" {what}"
    return Verdict(bool(breaches), clear and not breaches, value, t, n, detail,
                   {"check": rule.check, "worst": name, "breaches": breaches[:20]})  # fmt: skip


def _check(
    rule: Rule,
    name: str,
    k: int,
    n: int,
    op: Callable[[float, float], bool],
    t: float,
    breaches: list[dict[str, Any]],
    worst: tuple[str, float, int, int] | None,
) -> tuple[str, float, int, int]:
    """Record whether feature ``name`` (k bad of n) breaches; return the worst feature so far."""
    value = k / n
    if rule.confidence is not None:
        ci = wilson_interval(k, n, rule.confidence)
        breach = op(ci[0] if ci is not None else 0.0, t)  # the whole interval above the threshold
    else:
        breach = op(value, t)
    if breach:
        breaches.append({"feature": name, "value": value, "k": k, "n": n})
    return (name, value, k, n) if worst is None or value > worst[1] else worst


def _verdict(
    rule: Rule, state: dict[str, Any], w: float, window_s: float, source: WindowSource
) -> tuple[Verdict, float, float]:
    view_s = rule.view_s or window_s
    end = w + window_s
    acc_w = source(w, end)
    acc = acc_w if view_s == window_s else source(end - view_s, end)
    _update_reference(rule, state, w, acc_w, window_s, source)
    if rule.kind == "threshold":
        v = _threshold(rule, acc, view_s)
    elif rule.kind == "baseline":
        v = _baseline(rule, state, acc, view_s, window_s)
    elif rule.kind == "cusum":
        v = _cusum(rule, state, acc_w, window_s)
    elif rule.kind == "drift":
        v = _drift(rule, state, acc)
    else:
        v = _quality(rule, state, acc)
    return v, end - view_s, end


# ------------------------------------------------------------------------------------------- lifecycle
def alert_id(rule: str, model: str, version: str | None, since: float) -> str:
    """Stable id of one alert instance: the same for its pending, firing and resolved events."""
    text = f"{rule}|{model}|{version or ''}|{since!r}"
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


_DEFAULT_MESSAGES = {
    "threshold": "{metric} {value} vs threshold {threshold} on {model}@{version} ({detail})",
    "baseline": "{metric} {value} against its baseline on {model}@{version} ({detail})",
    "cusum": "accuracy change detected on {model}@{version}: CUSUM at {value} of its threshold ({detail})",
    "drift": "distribution drift on {model}@{version} ({detail})",
    "data_quality": "data quality on {model}@{version}: {detail}",
}


def _event(rule: Rule, state: dict[str, Any], model: str, version: str | None, st: str, v: Verdict,
           view: tuple[float, float], ts: float, emitted_at: float) -> dict[str, Any]:  # fmt: skip
    fields = {
        "rule": rule.name, "model": model, "version": version or "-", "severity": rule.severity, "state": st,
        "value": _fmt(v.value), "threshold": _fmt(v.threshold), "n": v.n, "metric": rule.metric or rule.kind,
        "window_start": rfc3339(view[0]), "window_end": rfc3339(view[1]), "detail": v.detail,
    }  # fmt: skip
    template = rule.message or _DEFAULT_MESSAGES[rule.kind]
    try:
        message = template.format(**fields)
    except (KeyError, ValueError, IndexError):
        message = _DEFAULT_MESSAGES[rule.kind].format(**fields)
    value = v.value if v.value is None or math.isfinite(v.value) else None
    return {
        "id": state["id"],
        "rule": rule.name,
        "model": model,
        "version": version,
        "severity": rule.severity,
        "state": st,
        "kind": rule.kind,
        "value": value,
        "threshold": v.threshold,
        "window": {"start": rfc3339(view[0]), "end": rfc3339(view[1]), "size_s": view[1] - view[0]},
        "started_at": rfc3339(state["since"]) if state["since"] is not None else None,
        "ts": rfc3339(ts),
        "emitted_at": rfc3339(emitted_at),
        "message": message[:4096],
        "labels": dict(rule.labels),
        "details": _json_safe(v.details),
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def evaluate(rule: Rule, state: dict[str, Any], model: str, version: str | None, w: float, window_s: float,
             source: WindowSource, emitted_at: float) -> list[dict[str, Any]]:  # fmt: skip
    """Evaluate window ``w`` (which must be ``state["next"]``); update ``state``; return alert events."""
    v, view_start, view_end = _verdict(rule, state, w, window_s, source)
    state["next"] = w + window_s
    state["last"] = {"w": w, "value": v.value if v.value is None or math.isfinite(v.value) else None,
                     "breach": v.breach}  # fmt: skip
    view = (view_start, view_end)
    ts = view_end
    st = state["st"]
    events: list[dict[str, Any]] = []
    if v.breach is None:
        return events
    if st == "inactive":
        if v.breach:
            state["since"] = w
            state["id"] = alert_id(rule.name, model, version, w)
            state["hits"], state["clears"] = 1, 0
            state["st"] = "firing" if rule.for_n <= 1 else "pending"
            events.append(_event(rule, state, model, version, state["st"], v, view, ts, emitted_at))
    elif st == "pending":
        if v.breach:
            state["hits"] += 1
            if state["hits"] >= rule.for_n:
                state["st"] = "firing"
                events.append(_event(rule, state, model, version, "firing", v, view, ts, emitted_at))
        else:
            events.append(_event(rule, state, model, version, "resolved", v, view, ts, emitted_at))
            _reset(state)
    elif st == "firing":
        if v.clear:
            state["clears"] += 1
            if state["clears"] >= rule.resolve_for_n:
                events.append(_event(rule, state, model, version, "resolved", v, view, ts, emitted_at))
                _reset(state)
        else:
            state["clears"] = 0
    return events


def _reset(state: dict[str, Any]) -> None:
    state.update(st="inactive", hits=0, clears=0, since=None, id=None)


def retire(rule_name: str, state: dict[str, Any], model: str, version: str | None, reason: str, ts: float,
           emitted_at: float, severity: str = "info") -> dict[str, Any] | None:  # fmt: skip
    """The resolved event that closes an open alert whose rule was removed or changed (None if none open)."""
    if state.get("st") in (None, "inactive") or state.get("id") is None:
        return None
    return {
        "id": state["id"],
        "rule": rule_name,
        "model": model,
        "version": version,
        "severity": severity,
        "state": "resolved",
        "value": None,
        "threshold": None,
        "window": None,
        "started_at": rfc3339(state["since"]) if state.get("since") is not None else None,
        "ts": rfc3339(ts),
        "emitted_at": rfc3339(emitted_at),
        "message": f"{rule_name} on {model}@{version or '-'} resolved: {reason}",
        "labels": {},
        "details": {"reason": reason},
    }
