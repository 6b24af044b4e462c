"""The alert engine: each rule kind against hand-computed cases, and the lifecycle (pending/firing/resolved).

Oracles: scipy's Wilson interval (binomtest) and exact Poisson bounds (chi-square quantiles), a CUSUM
recomputed here from the log-likelihood-ratio definition, numpy medians for the robust z-score.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from modelmon.aggregate import WindowAccumulator
from modelmon.alerts import engine
from modelmon.alerts.detectors import cusum_threshold
from modelmon.alerts.rules import parse_rules
from modelmon.schemas import validate_output

W = 60.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def rule(text: str):
    return parse_rules("rules:\n  - " + text.strip().replace("\n", "\n    ") + "\n", W).rules[0]


class Series:
    """Windows of one series, keyed by start; source(a, b) merges those starting in [a, b)."""

    def __init__(self) -> None:
        self.windows: dict[float, WindowAccumulator] = {}

    def at(self, i: int) -> WindowAccumulator:
        return self.windows.setdefault(T0 + i * W, WindowAccumulator())

    def source(self, a: float, b: float) -> WindowAccumulator:
        out = WindowAccumulator()
        for w, acc in self.windows.items():
            if a <= w < b:
                out.merge(acc)
        return out


def labelled(acc: WindowAccumulator, n: int, correct: int) -> None:
    for i in range(n):
        acc.add_prediction(10.0, False)
        acc.add_outcome("classification", "a", "a" if i < correct else "b")


def run(r, series: Series, windows: range, state=None, model="m", version="1"):
    state = state or engine.new_state(r, T0 + windows.start * W)
    events = []
    for i in windows:
        w = T0 + i * W
        assert state["next"] == w
        for ev in engine.evaluate(r, state, model, version, w, W, series.source, 0.0):
            validate_output("alert", ev)
            events.append((i, ev))
    return state, events


def test_confidence_aware_accuracy_fires_only_when_the_whole_interval_is_below() -> None:
    r = rule(
        "{name: acc, kind: threshold, metric: accuracy, op: '<', "
        "threshold: 0.8, confidence: 0.95, min_samples: 20}"
    )
    s = Series()
    cases = [(30, 21), (30, 18), (200, 150), (200, 140), (10, 2)]  # (n, correct)
    for i, (n, k) in enumerate(cases):
        labelled(s.at(i), n, k)
    state = engine.new_state(r, T0)
    breaches = []
    for i in range(len(cases)):
        engine.evaluate(r, state, "m", "1", T0 + i * W, W, s.source, 0.0)
        breaches.append(state["last"]["breach"])
    expected = []
    for n, k in cases:
        if n < 20:
            expected.append(None)
            continue
        hi = sps.binomtest(k, n).proportion_ci(0.95, method="wilson").high
        expected.append(bool(hi < 0.8))
    assert breaches == expected
    # 21/30 = 0.70 is below 0.8 as a point, but 30 labels cannot exclude 0.8: no page.
    assert expected[0] is False and expected[3] is True


def test_lifecycle_pending_firing_resolved_with_stable_id() -> None:
    r = rule(
        "{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8, "
        "for: 3, severity: critical, labels: {team: a}}"
    )
    s = Series()
    pattern = [0.9, 0.7, 0.7, 0.7, 0.7, 0.9, 0.7, 0.9]
    for i, p in enumerate(pattern):
        labelled(s.at(i), 100, round(100 * p))
    _, events = run(r, s, range(len(pattern)))
    got = [(i, ev["state"]) for i, ev in events]
    assert got == [(1, "pending"), (3, "firing"), (5, "resolved"), (6, "pending"), (7, "resolved")]
    first = [ev for i, ev in events if i in (1, 3, 5)]
    assert len({ev["id"] for ev in first}) == 1
    assert events[3][1]["id"] != first[0]["id"]  # a new instance after the resolution
    assert all(ev["started_at"] == "2026-01-01T00:01:00Z" for ev in first)
    assert events[1][1]["ts"] == "2026-01-01T00:04:00Z"  # end of the window that fired
    assert events[1][1]["value"] == pytest.approx(0.7) and events[1][1]["threshold"] == 0.8
    assert events[1][1]["labels"] == {"team": "a"} and events[1][1]["severity"] == "critical"


def test_replaying_an_evaluation_gives_identical_events() -> None:
    r = rule("{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8}")
    s = Series()
    labelled(s.at(0), 100, 60)
    state = engine.new_state(r, T0)
    copy = {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}
    a = engine.evaluate(r, state, "m", "1", T0, W, s.source, 0.0)
    b = engine.evaluate(r, copy, "m", "1", T0, W, s.source, 99.0)
    strip = [{k: v for k, v in ev.items() if k != "emitted_at"} for ev in a]
    assert strip == [{k: v for k, v in ev.items() if k != "emitted_at"} for ev in b]


def test_too_few_samples_changes_nothing() -> None:
    r = rule(
        "{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8, min_samples: 50, for: 2}"
    )
    s = Series()
    labelled(s.at(0), 100, 50)
    labelled(s.at(1), 10, 10)  # too few labels: neither a breach nor a recovery
    labelled(s.at(2), 100, 50)
    _, events = run(r, s, range(3))
    assert [(i, ev["state"]) for i, ev in events] == [(0, "pending"), (2, "firing")]


def test_hysteresis_needs_the_healthy_side_to_resolve() -> None:
    r = rule(
        "{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8, "
        "resolve_threshold: 0.85, resolve_for: 2}"
    )
    s = Series()
    for i, p in enumerate([0.7, 0.82, 0.83, 0.9, 0.82, 0.9, 0.9]):
        labelled(s.at(i), 100, round(100 * p))
    _, events = run(r, s, range(7))
    # 0.82/0.83 are above the threshold but not healthy: the alert stays open; two clear windows resolve.
    assert [(i, ev["state"]) for i, ev in events] == [(0, "firing"), (6, "resolved")]


def test_rolling_view_merges_the_windows_it_covers() -> None:
    r = rule("{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8, view: 3m}")
    s = Series()
    for i, (n, k) in enumerate([(100, 100), (100, 70), (100, 70), (100, 70)]):
        labelled(s.at(i), n, k)
    state, events = run(r, s, range(4))
    assert state["last"]["value"] == pytest.approx(210 / 300)
    # window 1: (100+70)/200 = 0.85, window 2: 240/300 = 0.8 (not < 0.8), window 3: 0.7
    assert [(i, ev["state"]) for i, ev in events] == [(3, "firing")]
    assert events[0][1]["window"] == {
        "start": "2026-01-01T00:01:00Z",
        "end": "2026-01-01T00:04:00Z",
        "size_s": 180.0,
    }


def _poisson_upper(k: int, conf: float) -> float:
    return sps.chi2.ppf(1 - (1 - conf) / 2, 2 * k + 2) / 2


def test_traffic_drop_against_the_trailing_baseline_with_a_poisson_bound() -> None:
    r = rule(
        "{name: drop, kind: baseline, metric: rate, direction: drop, baseline: 10m, "
        "ratio: 0.7, confidence: 0.99, min_samples: 50}"
    )
    s = Series()
    rng = np.random.default_rng(7)
    counts = [*(int(c) for c in rng.poisson(120, 10)), 60, 55, 118, 121]
    for i, c in enumerate(counts):
        for _ in range(int(c)):
            s.at(i).add_prediction(5.0, False)
    state, events = run(r, s, range(len(counts)))
    mean = float(np.mean(counts[:10])) / W
    for i in (10, 11):
        assert _poisson_upper(counts[i], 0.99) / W < 0.7 * mean
    assert [(i, ev["state"]) for i, ev in events] == [(10, "firing"), (12, "resolved")]
    assert events[0][1]["threshold"] == pytest.approx(0.7 * mean)
    # The baseline did not learn the incident windows.
    assert state["ring"] == pytest.approx([c / W for c in counts[1:10] + counts[13:]])


def test_traffic_stopping_entirely_fires() -> None:
    r = rule(
        "{name: drop, kind: baseline, metric: rate, direction: drop, "
        "baseline: 5m, ratio: 0.5, confidence: 0.99}"
    )
    s = Series()
    for i in range(6):
        for _ in range(100):
            s.at(i).add_prediction(5.0, False)
    _, events = run(r, s, range(9))  # windows 6..8 hold nothing at all
    assert [(i, ev["state"]) for i, ev in events] == [(6, "firing")]
    assert events[0][1]["value"] == 0.0


def test_small_series_are_not_judged_on_poisson_noise() -> None:
    r = rule(
        "{name: drop, kind: baseline, metric: rate, direction: drop, baseline: 5m, "
        "ratio: 0.7, confidence: 0.99, min_samples: 100}"
    )
    s = Series()
    for i, c in enumerate([5, 6, 4, 5, 0, 0]):
        for _ in range(c):
            s.at(i).add_prediction(5.0, False)
    _, events = run(r, s, range(6))
    assert events == []


def test_robust_z_latency_rise() -> None:
    r = rule(
        "{name: lat, kind: baseline, metric: latency_p50, direction: rise, "
        "baseline: 10m, z: 5, min_samples: 5}"
    )
    s = Series()
    medians = [20.0, 21.0, 19.5, 20.5, 20.2, 19.8, 20.1, 20.4, 19.9, 20.0, 60.0, 20.3]
    for i, m in enumerate(medians):
        for _ in range(9):
            s.at(i).add_prediction(m, False)
    state = engine.new_state(r, T0)
    fired = []
    values = []
    for i in range(len(medians)):
        for ev in engine.evaluate(r, state, "m", "1", T0 + i * W, W, s.source, 0.0):
            fired.append((i, ev["state"]))
        values.append(state["last"]["value"])
    ring = values[:10]
    med = float(np.median(ring))
    mad = float(np.median(np.abs(np.array(ring) - med)))
    z = (values[10] - med) / (1.4826 * mad)
    assert z > 5
    assert fired == [(10, "firing"), (11, "resolved")]


def _cusum_oracle(p0: float, shifts, arl0: float, batch: int, windows):
    """Bernoulli CUSUM bank on per-window counts (all >= batch), from the log-likelihood-ratio definition."""
    hs = [cusum_threshold(p0, p0 - d, arl0 * len(shifts), batch=batch) for d in shifts]
    s = [0.0] * len(shifts)
    out = []
    for n, wrong in windows:
        for j, d in enumerate(shifts):
            e0, e1 = 1 - p0, 1 - (p0 - d)
            inc = wrong * math.log(e1 / e0) + (n - wrong) * math.log((1 - e1) / (1 - e0))
            s[j] = min(max(0.0, s[j] + inc), hs[j])
        out.append(max(sj / h for sj, h in zip(s, hs, strict=True)))
    return out


def test_cusum_rule_calibrates_on_its_reference_then_detects() -> None:
    r = rule(
        "{name: cs, kind: cusum, shifts: [0.05, 0.2], false_alarm_every: 1d, "
        "reference: 10m, min_samples: 100, delay: 0}"
    )
    s = Series()
    rng = np.random.default_rng(3)
    accs = [0.9] * 20 + [0.7] * 5 + [0.9] * 30
    counts = []
    for i, p in enumerate(accs):
        k = int(rng.binomial(100, p))
        labelled(s.at(i), 100, k)
        counts.append((100, 100 - k))
    state, events = run(r, s, range(len(accs)))
    ref_n, ref_wrong = 1000, sum(w for _, w in counts[:10])
    # p0 is the lower end of the reference accuracy's 95% Wilson interval
    p0 = sps.binomtest(ref_n - ref_wrong, ref_n).proportion_ci(0.95, method="wilson").low
    label_rate = ref_n / 600.0
    batch = int(0.8 * label_rate * W)  # the engine calibrates for window batches of 80% of the mean
    oracle = _cusum_oracle(p0, (0.05, 0.2), 86400 * label_rate, batch, counts[10:])
    firing = [i for i, ev in events if ev["state"] == "firing"]
    assert firing and 20 <= firing[0] <= 21
    expected_first = 10 + next(i for i, v in enumerate(oracle) if v >= 1.0)
    assert firing[0] == expected_first
    assert state["cusum"] is not None
    resolved = [i for i, ev in events if ev["state"] == "resolved"]
    assert resolved and resolved[0] > 25


def test_retire_closes_an_open_alert_only() -> None:
    r = rule("{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8}")
    s = Series()
    labelled(s.at(0), 100, 50)
    state, events = run(r, s, range(1))
    ev = engine.retire("acc", state, "m", "1", "rule removed", T0 + 120, 0.0)
    assert ev is not None and ev["state"] == "resolved" and ev["id"] == events[0][1]["id"]
    validate_output("alert", ev)
    assert engine.retire("acc", engine.new_state(r, T0), "m", "1", "rule removed", T0, 0.0) is None


def test_due_windows_wait_for_the_delay() -> None:
    r = rule("{name: acc, kind: threshold, metric: accuracy, op: '<', threshold: 0.8, delay: 2m}")
    state = engine.new_state(r, T0)
    assert engine.due_windows(r, state, T0 + 179, W, 10) == []
    assert engine.due_windows(r, state, T0 + 180, W, 10) == [T0]
    assert engine.due_windows(r, state, T0 + 600, W, 3) == [T0, T0 + 60, T0 + 120]


def _predict(
    acc: WindowAccumulator, n: int, features: dict | None = None, score: float | None = None
) -> None:
    from modelmon.join import bucket_features

    f = bucket_features(features) if features else None
    scores = None if score is None else {"a": score, "b": round(1 - score, 6)}
    for _ in range(n):
        acc.add_prediction(10.0, False, features=f, task="classification", prediction="a", scores=scores)


def test_missing_rate_per_feature_with_a_confidence_bound() -> None:
    r = rule(
        "{name: miss, kind: data_quality, check: missing_rate, features: ['a*'], threshold: 0.1, "
        "confidence: 0.95, min_samples: 50}"
    )
    s = Series()
    # window 0: amount missing in 30/100 -> Wilson low 0.219 > 0.1: breach
    _predict(s.at(0), 70, {"amount": 1.5, "age": 3.0, "zip": "x"})
    _predict(s.at(0), 30, {"age": 3.0, "zip": None})
    # window 1: 12/100 missing: above 0.1 as a point, but the interval reaches below it: no breach, not clear
    _predict(s.at(1), 88, {"amount": 1.5, "age": 3.0})
    _predict(s.at(1), 12, {"age": 3.0})
    # window 2: 2/100 missing: clear
    _predict(s.at(2), 98, {"amount": 1.5, "age": 3.0})
    _predict(s.at(2), 2, {"age": 3.0})
    _, events = run(r, s, range(3))
    lo30 = sps.binomtest(30, 100).proportion_ci(0.95, method="wilson").low
    lo12 = sps.binomtest(12, 100).proportion_ci(0.95, method="wilson").low
    assert lo30 > 0.1 > lo12
    assert [(i, ev["state"]) for i, ev in events] == [(0, "firing"), (2, "resolved")]
    assert events[0][1]["details"]["worst"] == "amount"
    assert events[0][1]["value"] == pytest.approx(0.3)
    assert "zip" not in str(events[0][1]["details"])  # not selected by the rule's glob


def test_a_feature_that_disappears_entirely_is_missing_everywhere() -> None:
    r = rule("{name: miss, kind: data_quality, check: missing_rate, threshold: 0.5, reference: 2m}")
    s = Series()
    for i in range(2):
        _predict(s.at(i), 50, {"amount": 1.5, "age": 2.0})
    _predict(s.at(2), 50, {"age": 2.0})  # amount is gone: only the reference knows it existed
    _, events = run(r, s, range(3))
    assert [(i, ev["state"]) for i, ev in events] == [(2, "firing")]
    assert events[0][1]["value"] == 1.0


def test_out_of_range_against_a_configured_range() -> None:
    r = rule(
        "{name: oor, kind: data_quality, check: out_of_range, features: [amount], range: [0, 100], "
        "threshold: 0.05}"
    )
    s = Series()
    _predict(s.at(0), 97, {"amount": 50.0})
    _predict(s.at(0), 3, {"amount": 500.0})
    _predict(s.at(1), 90, {"amount": 50.0})
    _predict(s.at(1), 10, {"amount": -3.0})
    _, events = run(r, s, range(2))
    assert [(i, ev["state"]) for i, ev in events] == [(1, "firing")]
    assert events[0][1]["value"] == pytest.approx(0.10)


def test_out_of_range_against_the_reference_range() -> None:
    r = rule("{name: oor, kind: data_quality, check: out_of_range, threshold: 0.05, reference: 2m}")
    s = Series()
    for i in range(2):
        for v in (10.0, 20.0, 30.0, 40.0):
            _predict(s.at(i), 25, {"amount": v})
    _predict(s.at(2), 80, {"amount": 25.0})
    _predict(s.at(2), 20, {"amount": 400.0})  # never seen in the reference hour: out of range
    _, events = run(r, s, range(3))
    assert [(i, ev["state"]) for i, ev in events] == [(2, "firing")]
    assert events[0][1]["value"] == pytest.approx(0.2)


def test_score_drift_needs_significance_and_effect_and_uses_only_the_reference_period() -> None:
    r = rule(
        "{name: sd, kind: drift, target: score, method: psi, alpha: 0.001, min_effect: 0.1, "
        "reference: 3m, min_samples: 100}"
    )
    s = Series()
    rng = np.random.default_rng(5)
    for i in range(3):
        for p in rng.uniform(0.5, 1.0, 600):
            _predict(s.at(i), 1, score=round(float(p), 3))
    for p in rng.uniform(0.5, 1.0, 600):  # same distribution: nothing
        _predict(s.at(3), 1, score=round(float(p), 3))
    for p in rng.uniform(0.8, 1.0, 600):  # squeezed towards 1: a large, significant change
        _predict(s.at(4), 1, score=round(float(p), 3))
    for p in rng.uniform(0.5, 1.0, 600):
        _predict(s.at(5), 1, score=round(float(p), 3))
    state, events = run(r, s, range(6))
    assert [(i, ev["state"]) for i, ev in events] == [(4, "firing"), (5, "resolved")]
    details = events[0][1]["details"]
    assert details["p_value"] < 0.001 and events[0][1]["value"] >= 0.1
    ref = WindowAccumulator.from_dict(state["ref"]["acc"])
    assert ref.predictions == 1800  # the first three windows only


def test_feature_drift_splits_alpha_over_the_features_and_names_the_drifting_one() -> None:
    r = rule("{name: fd, kind: drift, target: feature, method: chi2, alpha: 0.01, reference: 2m}")
    s = Series()
    rng = np.random.default_rng(9)
    for i in range(3):
        shift = 3.0 if i == 2 else 0.0
        for x, c in zip(rng.normal(10 + shift, 2, 800), rng.choice(["a", "b", "c"], 800), strict=True):
            _predict(s.at(i), 1, {"x": round(float(x), 3), "cat": str(c)})
    _, events = run(r, s, range(3))
    assert [(i, ev["state"]) for i, ev in events] == [(2, "firing")]
    d = events[0][1]["details"]
    assert d["alpha"] == pytest.approx(0.005)  # Bonferroni over the two features
    assert [x["name"] for x in d["drifting"]] == ["x"]


def test_a_reference_short_of_min_samples_grows_until_it_has_them() -> None:
    r = rule("{name: cs, kind: cusum, reference: 2m, min_samples: 450, delay: 0}")
    s = Series()
    for i in range(8):
        labelled(s.at(i), 100, 90)
    state, _ = run(r, s, range(8))
    ref = state["ref"]
    assert ref["done"] and ref["to"] - ref["from"] == 5 * W  # 2 windows were not enough: 5 hold 500 labels
    assert WindowAccumulator.from_dict(ref["acc"]).classification.n == 500
    assert state["cusum"] is not None


def test_a_count_threshold_uses_the_poisson_interval_of_the_count_itself() -> None:
    r = rule("{name: few, kind: threshold, metric: predictions, op: '<', threshold: 30, confidence: 0.95}")
    s = Series()
    for i, c in enumerate((25, 12)):
        for _ in range(c):
            s.at(i).add_prediction(5.0, False)
    state = engine.new_state(r, T0)
    breaches = []
    for i in range(2):
        engine.evaluate(r, state, "m", "1", T0 + i * W, W, s.source, 0.0)
        breaches.append(state["last"]["breach"])
    # upper 95% bounds: 25 -> 36.9 (not below 30), 12 -> 21.0 (below): counts, not counts per second
    assert [_poisson_upper(c, 0.95) < 30 for c in (25, 12)] == [False, True]
    assert breaches == [False, True]
