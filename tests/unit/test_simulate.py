"""Unit tests of the traffic simulator engine (no Kafka)."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter
from dataclasses import replace
from itertools import islice
from typing import Any

import orjson
import pytest

from modelmon.schemas import InvalidEvent, decode_ground_truth, decode_prediction
from modelmon.simulate import (
    INVALID_DEFECTS,
    Incident,
    LabelDelay,
    Progress,
    SimConfig,
    SimEvent,
    generate,
    model_catalogue,
    parse_incident,
    run,
)

START = 1_700_000_000.0
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def encoded(events: list[SimEvent]) -> list[tuple[Any, ...]]:
    return [(e.wall_s, e.kind, e.topic, e.key, e.note, e.value()) for e in events]


def within(observed: float, expected_p: float, n: int, sigmas: float = 4.5) -> bool:
    """Binomial tolerance: an ``observed`` share of ``n`` trials is compatible with ``expected_p``."""
    sd = math.sqrt(max(expected_p * (1 - expected_p), 1e-12) / n)
    return abs(observed - expected_p) <= sigmas * sd + 1e-9


class ListSink:
    def __init__(self) -> None:
        self.events: list[SimEvent] = []
        self.flushes = 0

    def send(self, event: SimEvent) -> None:
        self.events.append(event)

    def flush(self) -> None:
        self.flushes += 1


# --------------------------------------------------------------------------------------------- fixtures

MIXED = SimConfig(
    count=20_000,
    rate=200.0,
    seed=7,
    start_ts=START,
    label_fraction=0.7,
    label_delay=LabelDelay(median_s=20.0, sigma=0.8, early_fraction=0.05),
    duplicate_fraction=0.04,
    relabel_fraction=0.03,
    invalid_fraction=0.02,
    error_fraction=0.02,
)

# One run, several incidents on distinct models and windows, so each effect can be checked against a
# clean baseline: the same model outside the window, and the other models inside it.
INCIDENTS = (
    "accuracy_drop@100+100:0.2:model=fraud",
    "feature_missing@100+100:0.4:model=churn:feature=tenure_months",
    "traffic_drop@250+100:0.5:model=churn",
    "feature_drift@250+100:2.0:model=fraud-detector:feature=amount",
    "latency_spike@400+100:3.0:model=price",
    "score_drift@400+100:1.5:model=fraud",
)
INCIDENT_RUN = SimConfig(
    duration_s=600.0,
    rate=150.0,
    seed=11,
    start_ts=START,
    label_fraction=0.9,
    duplicate_fraction=0.0,
    relabel_fraction=0.0,
    invalid_fraction=0.0,
    error_fraction=0.0,
    incidents=tuple(parse_incident(s) for s in INCIDENTS),
)


@pytest.fixture(scope="module")
def mixed() -> list[SimEvent]:
    return list(generate(MIXED))


@pytest.fixture(scope="module")
def incident_run() -> dict[str, Any]:
    events = list(generate(INCIDENT_RUN))
    preds = [e.payload for e in events if e.kind == "prediction" and e.note != "duplicate"]
    labels = {e.payload["request_id"]: e.payload["label"] for e in events if e.kind == "ground_truth"}
    return {"events": events, "preds": preds, "labels": labels}


def offset(payload: dict[str, Any]) -> float:
    return payload["ts"] - START


def in_window(payload: dict[str, Any], start: float, duration: float) -> bool:
    return start <= offset(payload) < start + duration


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs() -> None:
    cfg = SimConfig(count=3000, rate=500.0, seed=42, start_ts=START, invalid_fraction=0.05)
    first = encoded(list(generate(cfg)))
    assert first == encoded(list(generate(cfg)))
    other = encoded(list(generate(replace(cfg, seed=43))))
    assert other != first
    assert {v for *_, v in first}.isdisjoint({v for *_, v in other})


def test_resolved_pins_seed_and_start_time() -> None:
    cfg = SimConfig(count=10)
    a, b = cfg.resolved(), cfg.resolved()
    assert a.seed is not None and a.start_ts is not None
    assert a.seed != b.seed
    assert abs(a.start_ts - time.time()) < 5
    assert a.resolved() == a


def test_generation_is_lazy_for_an_endless_run() -> None:
    endless = SimConfig(rate=1000.0, seed=1, start_ts=START)
    first = list(islice(generate(endless), 2000))
    assert len(first) == 2000


# ---------------------------------------------------------------------------------------- order, counts


def test_events_are_ordered_by_wall_time(mixed: list[SimEvent]) -> None:
    walls = [e.wall_s for e in mixed]
    assert walls == sorted(walls)
    assert walls[0] >= 0


def test_counts_and_shares(mixed: list[SimEvent]) -> None:
    by = Counter((e.kind, e.note) for e in mixed)
    originals = by[("prediction", "")] + by[("prediction", "error")]
    assert originals == MIXED.count
    assert within(by[("prediction", "error")] / originals, MIXED.error_fraction, originals)
    successful = by[("prediction", "")]
    labels = by[("ground_truth", "")] + by[("ground_truth", "early_label")]
    assert within(labels / successful, MIXED.label_fraction, successful)
    assert within(by[("ground_truth", "early_label")] / labels, MIXED.label_delay.early_fraction, labels)
    assert within(by[("ground_truth", "relabel")] / labels, MIXED.relabel_fraction, labels)
    assert within(by[("prediction", "duplicate")] / originals, MIXED.duplicate_fraction, originals)
    assert within(by[("ground_truth", "duplicate")] / labels, MIXED.duplicate_fraction, labels)
    invalid = sum(n for (kind, _), n in by.items() if kind == "invalid")
    assert within(invalid / originals, MIXED.invalid_fraction, originals)
    assert {note for kind, note in by if kind == "invalid"} == set(INVALID_DEFECTS)


def test_labels_refer_to_predictions_and_early_ones_come_first(mixed: list[SimEvent]) -> None:
    sent_at: dict[str, int] = {}
    pred_by_id: dict[str, dict[str, Any]] = {}
    for i, e in enumerate(mixed):
        if e.kind == "prediction" and e.note != "duplicate":
            sent_at[e.payload["request_id"]] = i
            pred_by_id[e.payload["request_id"]] = e.payload
    early = 0
    for i, e in enumerate(mixed):
        if e.kind != "ground_truth":
            continue
        rid = e.payload["request_id"]
        assert rid in pred_by_id, "every label has (or will have) a prediction"
        pred = pred_by_id[rid]
        assert "error" not in pred, "failed requests get no label"
        assert e.payload["ts"] >= pred["ts"]
        assert e.payload["model"] == pred["model"]
        assert e.key == rid.encode()
        if e.note == "early_label":
            early += 1
            assert i < sent_at[rid]
        elif e.note == "":
            assert i > sent_at[rid]
    assert early > 0


def test_duplicates_are_identical_and_relabels_differ(mixed: list[SimEvent]) -> None:
    first_value: dict[tuple[str, str], bytes] = {}
    first_label: dict[str, Any] = {}
    for e in mixed:
        if e.kind == "invalid":
            continue
        rid = e.payload["request_id"]
        if e.note == "duplicate":
            assert e.value() == first_value[(e.topic, rid)]
        elif e.note == "relabel":
            assert e.payload["label"] != first_label[rid]
        else:
            first_value[(e.topic, rid)] = e.value()
            if e.kind == "ground_truth":
                first_label[rid] = e.payload["label"]


# ------------------------------------------------------------------------------------------- contract


def check_prediction(p: dict[str, Any], classes: dict[str, tuple[str, ...]]) -> None:
    assert isinstance(p["request_id"], str) and p["request_id"]
    assert set(p["model"]) <= NAME_CHARS and isinstance(p["model_version"], str)
    assert isinstance(p["ts"], float)
    assert p["latency_ms"] >= 0
    assert all(isinstance(v, (int, float, str, bool)) or v is None for v in p["features"].values())
    assert p["segment"] and all(isinstance(v, str) for v in p["segment"].values())
    if "error" in p:
        assert p["prediction"] is None and isinstance(p["error"], str)
        return
    if p["task"] == "classification":
        scores = p["scores"]
        assert set(scores) == set(classes[p["model"]])
        assert abs(sum(scores.values()) - 1) < 1e-5 and all(0 <= s <= 1 for s in scores.values())
        assert p["prediction"] == max(scores, key=scores.__getitem__)
    else:
        assert p["task"] == "regression" and isinstance(p["prediction"], float) and "scores" not in p


def test_valid_payloads_follow_the_contract(mixed: list[SimEvent]) -> None:
    catalogue = model_catalogue(MIXED)
    classes = {m.name: m.classes for m in catalogue}
    tasks = {m.name: m.task for m in catalogue}
    for e in mixed:
        if e.kind == "invalid":
            continue
        assert e.raw is None and e.payload is not None
        assert orjson.loads(e.value()) == e.payload
        if e.kind == "prediction":
            assert e.topic == "predictions"
            check_prediction(e.payload, classes)
        else:
            assert e.topic == "ground-truth"
            assert set(e.payload) == {"request_id", "label", "ts", "model"}
            label = e.payload["label"]
            if tasks[e.payload["model"]] == "classification":
                assert label in classes[e.payload["model"]]
            else:
                assert isinstance(label, float)


def test_invalid_events_carry_their_defect(mixed: list[SimEvent]) -> None:
    required = {
        "predictions": {"request_id", "model", "model_version", "ts", "task", "prediction"},
        "ground-truth": {"request_id", "model", "ts", "label"},
    }
    for e in (e for e in mixed if e.kind == "invalid"):
        assert e.payload is None and isinstance(e.raw, bytes) and e.value() is e.raw
        if e.note == "not_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(e.raw)
        elif e.note == "non_utf8":
            with pytest.raises(UnicodeDecodeError):
                e.raw.decode("utf-8")
        elif e.note == "missing_field":
            assert not required[e.topic] <= set(orjson.loads(e.raw))
            # the worker's validator must reject it (ts is optional: dropping it leaves a valid event)
            decode = decode_prediction if e.topic == "predictions" else decode_ground_truth
            with pytest.raises(InvalidEvent):
                decode(e.raw, 65536)
        elif e.note == "wrong_type":
            body = orjson.loads(e.raw)
            assert required[e.topic] <= set(body)
            assert not (
                isinstance(body["ts"], float)
                and isinstance(body["request_id"], str)
                and isinstance(body["model"], str)
                and isinstance(body.get("latency_ms", 0.0), float)
                and isinstance(body.get("features", {}), dict)
                and isinstance(body.get("segment", {}), dict)
                and isinstance(body.get("scores", {}), dict)
                and not isinstance(body.get("label"), dict)
            )
        elif e.note == "null_key":
            assert e.key is None and required[e.topic] <= set(orjson.loads(e.raw))
        else:
            assert e.note == "oversized" and len(e.raw) > 65536
        if e.note != "null_key":
            assert e.key is not None


# ----------------------------------------------------------------------------------- realism, incidents


def accuracy(preds: list[dict[str, Any]], labels: dict[str, Any]) -> tuple[float, int]:
    hits = [p["prediction"] == labels[p["request_id"]] for p in preds if p["request_id"] in labels]
    return sum(hits) / len(hits), len(hits)


def test_accuracy_matches_base_outside_and_drops_inside_the_window(incident_run: dict[str, Any]) -> None:
    preds, labels = incident_run["preds"], incident_run["labels"]
    for model in ("fraud-detector", "churn"):
        outside = [p for p in preds if p["model"] == model and not in_window(p, 100, 100)]
        acc, n = accuracy(outside, labels)
        assert within(acc, 0.9, n), (model, acc)
    fraud_in = [p for p in preds if p["model"] == "fraud-detector" and in_window(p, 100, 100)]
    acc, n = accuracy(fraud_in, labels)
    assert within(acc, 0.7, n), acc
    churn_in = [p for p in preds if p["model"] == "churn" and in_window(p, 100, 100)]
    acc, n = accuracy(churn_in, labels)
    assert within(acc, 0.9, n), "the drop only hits the selected model"


def test_regression_accuracy_is_share_within_tolerance(incident_run: dict[str, Any]) -> None:
    info = next(m for m in model_catalogue(INCIDENT_RUN) if m.task == "regression")
    tol = info.regression_tolerance
    assert tol is not None
    preds = [p for p in incident_run["preds"] if p["model"] == info.name]
    labels = incident_run["labels"]
    hits = [abs(p["prediction"] - labels[p["request_id"]]) <= tol for p in preds if p["request_id"] in labels]
    assert within(sum(hits) / len(hits), info.accuracy, len(hits))


def rate_per_s(preds: list[dict[str, Any]], model: str, start: float, end: float) -> float:
    return sum(1 for p in preds if p["model"] == model and start <= offset(p) < end) / (end - start)


def test_traffic_drop_halves_the_rate_in_its_window_only(incident_run: dict[str, Any]) -> None:
    preds = incident_run["preds"]
    base = rate_per_s(preds, "churn", 0, 250)
    dropped = rate_per_s(preds, "churn", 250, 350)
    after = rate_per_s(preds, "churn", 350, 600)
    assert dropped / base == pytest.approx(0.5, abs=0.08)
    assert after / base == pytest.approx(1.0, abs=0.08)
    fraud = rate_per_s(preds, "fraud-detector", 250, 350) / rate_per_s(preds, "fraud-detector", 0, 250)
    assert fraud == pytest.approx(1.0, abs=0.08)
    total = sum(m.traffic_share for m in model_catalogue(INCIDENT_RUN) if m.name == "churn")
    assert base == pytest.approx(INCIDENT_RUN.rate * total, rel=0.05)


def median_latency(preds: list[dict[str, Any]], model: str, start: float, end: float) -> float:
    return statistics.median(
        p["latency_ms"] for p in preds if p["model"] == model and start <= offset(p) < end
    )


def test_latency_spike_multiplies_the_median(incident_run: dict[str, Any]) -> None:
    preds = incident_run["preds"]
    model = "price-regressor"
    base = median_latency(preds, model, 0, 400)
    spiked = median_latency(preds, model, 400, 500)
    assert 15 < base < 30, "median around 20 ms"
    assert spiked / base == pytest.approx(3.0, rel=0.1)
    assert median_latency(preds, model, 500, 600) / base == pytest.approx(1.0, rel=0.1)
    other = median_latency(preds, "churn", 400, 500) / median_latency(preds, "churn", 0, 400)
    assert other == pytest.approx(1.0, rel=0.1)
    all_latencies = [p["latency_ms"] for p in preds if p["model"] == "churn"]
    assert max(all_latencies) > 4 * statistics.median(all_latencies), "a slow tail exists"


def test_feature_missing_share_in_window_only(incident_run: dict[str, Any]) -> None:
    preds = [p for p in incident_run["preds"] if p["model"] == "churn"]
    inside = [p["features"]["tenure_months"] is None for p in preds if in_window(p, 100, 100)]
    outside = [p["features"]["tenure_months"] is None for p in preds if not in_window(p, 100, 100)]
    assert within(sum(inside) / len(inside), 0.4, len(inside))
    assert sum(outside) == 0
    others = [p for p in preds if in_window(p, 100, 100)]
    assert all(p["features"]["monthly_spend"] is not None for p in others)


def test_feature_drift_shifts_the_mean_by_sds(incident_run: dict[str, Any]) -> None:
    preds = [p for p in incident_run["preds"] if p["model"] == "fraud-detector"]
    inside = [p["features"]["amount"] for p in preds if in_window(p, 250, 100)]
    outside = [p["features"]["amount"] for p in preds if not in_window(p, 250, 100)]
    sd = statistics.stdev(outside)
    assert sd == pytest.approx(25.0, rel=0.05)
    assert (statistics.fmean(inside) - statistics.fmean(outside)) / sd == pytest.approx(2.0, abs=0.1)
    untouched_in = [p["features"]["account_age_days"] for p in preds if in_window(p, 250, 100)]
    untouched_out = [p["features"]["account_age_days"] for p in preds if not in_window(p, 250, 100)]
    assert abs(statistics.fmean(untouched_in) - statistics.fmean(untouched_out)) < 0.1 * 150


def test_score_drift_changes_scores_in_window_only(incident_run: dict[str, Any]) -> None:
    preds, labels = incident_run["preds"], incident_run["labels"]

    def top_score(model: str, start: float, end: float) -> float:
        return statistics.fmean(
            max(p["scores"].values()) for p in preds if p["model"] == model and start <= offset(p) < end
        )

    base = top_score("fraud-detector", 200, 400)
    assert top_score("fraud-detector", 400, 500) > base + 0.03
    assert top_score("fraud-detector", 500, 600) == pytest.approx(base, abs=0.01)
    assert top_score("churn", 400, 500) == pytest.approx(top_score("churn", 0, 400), abs=0.01)
    drift_in = [p for p in preds if p["model"] == "fraud-detector" and in_window(p, 400, 100)]
    acc, n = accuracy(drift_in, labels)
    assert within(acc, 0.9, n), "score drift leaves accuracy alone"


def test_segments_are_skewed(incident_run: dict[str, Any]) -> None:
    countries = Counter(p["segment"]["country"] for p in incident_run["preds"])
    assert 3 <= len(countries) <= 10
    (top, top_n), *_, (_, last_n) = countries.most_common()
    assert top == "us" and top_n > 5 * last_n


# --------------------------------------------------------------------------------------------- speed


def test_speed_compresses_wall_time_only() -> None:
    base = SimConfig(count=2000, rate=100.0, seed=5, start_ts=START)
    slow = list(generate(base))
    fast = list(generate(replace(base, speed=60.0)))
    assert [e.value() for e in slow] == [e.value() for e in fast]
    for s, f in zip(slow, fast, strict=True):
        assert f.wall_s == pytest.approx(s.wall_s / 60.0)
    for e in fast:
        if e.kind == "prediction" and e.note != "duplicate":  # a re-send keeps the original's ts
            assert e.wall_s == pytest.approx((e.payload["ts"] - START) / 60.0, abs=1e-6)


def test_label_tail_limits_sending_after_the_end() -> None:
    cfg = SimConfig(duration_s=60.0, rate=50.0, seed=3, start_ts=START, label_tail_s=10.0)
    events = list(generate(cfg))
    assert max(e.wall_s for e in events) <= 70.0
    assert all(e.wall_s < 60.0 for e in events if e.kind == "prediction" and e.note != "duplicate")


# ----------------------------------------------------------------------------------------------- run


def test_run_returns_stats_equal_to_what_the_sink_got() -> None:
    sink = ListSink()
    reports: list[Progress] = []
    stats = run(MIXED, sink, realtime=False, progress=reports.append)
    kinds = Counter(e.kind for e in sink.events)
    notes = Counter(e.note for e in sink.events if e.note)
    assert stats.sent == len(sink.events)
    assert stats.by_kind == dict(kinds)
    assert stats.by_note == dict(notes)
    assert stats.predictions == kinds["prediction"] and stats.ground_truth == kinds["ground_truth"]
    assert stats.invalid == kinds["invalid"]
    assert stats.seed == MIXED.seed and stats.start_ts == START and not stats.stopped
    assert sink.flushes == 1
    assert reports and reports[-1].sent == stats.sent
    assert encoded(sink.events) == encoded(list(generate(MIXED)))


def test_run_realtime_paces_and_stops() -> None:
    cfg = SimConfig(count=200, rate=1000.0, seed=2, start_ts=START, label_fraction=0.0)
    sink = ListSink()
    stats = run(cfg, sink, realtime=True)
    last = sink.events[-1].wall_s
    assert last - 0.01 <= stats.elapsed_s < last + 0.5

    stop = threading.Event()
    sink = ListSink()
    endless = SimConfig(rate=100.0, seed=2, start_ts=START)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    began = time.monotonic()
    stats = run(endless, sink, realtime=True, stop=stop, progress_every_s=0.1)
    assert stats.stopped and time.monotonic() - began < 2.0
    assert 0 < stats.sent == len(sink.events) and sink.flushes == 1


# ------------------------------------------------------------------------------------- catalogue, parsing


def test_catalogue_mixes_tasks_with_stable_names() -> None:
    three = model_catalogue(SimConfig(models=3))
    assert [m.name for m in three] == ["fraud-detector", "churn", "price-regressor"]
    assert {len(m.classes) for m in three if m.task == "classification"} == {2, 3}
    assert any(m.task == "regression" for m in three)
    assert all(len(m.versions) == 2 and sum(m.version_shares) == pytest.approx(1) for m in three)
    many = model_catalogue(SimConfig(models=20, versions=1))
    assert len({m.name for m in many}) == 20 and all(set(m.name) <= NAME_CHARS for m in many)
    assert sum(m.traffic_share for m in many) == pytest.approx(1)
    assert model_catalogue(SimConfig(base_accuracy={"churn": 0.8}))[1].accuracy == 0.8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("accuracy_drop@600+300:0.2", Incident("accuracy_drop", 600, 300, None, 0.2)),
        ("latency_spike@120+60:3.0:model=fraud", Incident("latency_spike", 120, 60, "fraud", 3.0)),
        ("traffic_drop@1m+0.5h", Incident("traffic_drop", 60, 1800, None, 0.5)),
        (
            "feature_missing@10s+30:0.3:model=churn:feature=plan",
            Incident("feature_missing", 10, 30, "churn", 0.3, "plan"),
        ),
        ("score_drift@0+10:-0.5", Incident("score_drift", 0, 10, None, -0.5)),
    ],
)
def test_parse_incident_accepts_valid_specs(text: str, expected: Incident) -> None:
    parsed = parse_incident(text)
    assert parsed == expected
    assert parse_incident(parsed.spec()) == parsed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "missing '@START'"),
        ("accuracy_drop", "missing '@START'"),
        ("meltdown@1+2:0.1", "unknown kind 'meltdown'"),
        ("accuracy_drop@1:0.1", "missing '+DURATION'"),
        ("accuracy_drop@soon+2:0.1", "start 'soon'"),
        ("accuracy_drop@1+-2:0.1", "duration '-2'"),
        ("accuracy_drop@1+0:0.1", "duration must be > 0"),
        ("accuracy_drop@1+2:lots", "magnitude 'lots'"),
        ("accuracy_drop@1+2:1.5", "within [0, 1]"),
        ("latency_spike@1+2:-3", "must be > 0"),
        ("accuracy_drop@1+2:0.1:colour=red", "unknown option 'colour'"),
        ("accuracy_drop@1+2:0.1:model=a:model=b", "given twice"),
        ("accuracy_drop@1+2:0.1:model=", "empty value"),
        ("accuracy_drop@1+2:0.1:model=bad name", "model name 'bad name'"),
        ("accuracy_drop@1+2:0.1:0.2", "unexpected part '0.2'"),
    ],
)
def test_parse_incident_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_incident(text)
    message = str(info.value)
    assert problem in message and "\n" not in message


def test_bad_incident_targets_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="matches no model"):
        generate(SimConfig(count=1, incidents=(parse_incident("accuracy_drop@0+1:model=nope"),)))
    with pytest.raises(ValueError, match="matches several models"):
        generate(SimConfig(models=8, count=1, incidents=(parse_incident("accuracy_drop@0+1:model=c"),)))
    with pytest.raises(ValueError, match="numeric feature 'plan'"):
        generate(
            SimConfig(count=1, incidents=(parse_incident("feature_drift@0+1:model=churn:feature=plan"),))
        )
    with pytest.raises(ValueError, match="after the run ends"):
        SimConfig(duration_s=60, incidents=(parse_incident("accuracy_drop@600+300:0.2"),))
    with pytest.raises(ValueError, match="unknown model"):
        model_catalogue(SimConfig(base_accuracy={"frod": 0.5}))
