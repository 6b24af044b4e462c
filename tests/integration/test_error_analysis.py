"""Error analysis, data quality and the feedback policy on a live worker, against offline computations.

One worker reads an hour of simulated fraud-detector traffic in which requests from Brazil are 30 accuracy
points worse (and the first numeric feature drifts by 3 SD in the last 20 minutes), plus a burst of
predictions tagged with 10,000 distinct user ids. The oracle joins the simulated events offline (first
prediction and first label per request id, as documented) and recomputes everything with numpy/scipy.
"""

from __future__ import annotations

import math
import uuid
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.stats import chi2_contingency

from modelmon.aggregate import signed_log_bucket
from modelmon.client import MonitorClient
from modelmon.schemas import validate_output
from modelmon.simulate import Incident, LabelDelay, SimConfig, generate
from modelmon.topics import topic_name

from .streamcheck import read_topic
from .webcheck import WebWorker, caught_up, load_traffic, wait_for, web_settings

pytestmark = pytest.mark.integration

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
HOUR = 3600.0
REFERENCE_S = 600.0
BAD = ("country", "br")
WIDE_MODEL = "wide-segments"
WIDE_USERS = 10_000
SAMPLE = 0.5


def _config() -> SimConfig:
    return SimConfig(
        models=1,
        versions=1,
        rate=8.0,
        duration_s=HOUR,
        label_delay=LabelDelay(median_s=5.0, sigma=0.5, max_s=120.0),
        seed=77,
        start_ts=T0,
        incidents=(
            Incident("accuracy_drop", 0.0, HOUR, magnitude=0.3, segment="country/br"),
            Incident("feature_drift", 2400.0, 1200.0, magnitude=3.0),
        ),
        speed=1e9,
    )


def _offline_join(config: SimConfig) -> tuple[list[dict], dict[str, Any]]:
    """First valid prediction per request id, and the first label of each (None when never labelled)."""
    preds: dict[bytes, dict] = {}
    labels: dict[bytes, Any] = {}
    for event in generate(config):
        if event.payload is None:
            continue  # invalid: dead-lettered
        if event.kind == "prediction":
            preds.setdefault(event.key, event.payload)
        else:
            labels.setdefault(event.key, event.payload)
    return list(preds.values()), {k.decode(): v for k, v in labels.items()}


def _wide_events() -> list[tuple[str, dict]]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(WIDE_USERS + 2000):
        rid = f"wide-{i}"
        ts = T0 + 600.0 + (i % 120)
        user = f"u{i % WIDE_USERS}"
        pred = {"request_id": rid, "model": WIDE_MODEL, "model_version": "1", "ts": ts, "prediction": "a",
                "segment": {"user": user, "tier": ["free", "pro"][i % 2]}}  # fmt: skip
        out.append(("predictions", pred))
        out.append(
            ("ground-truth", {"request_id": rid, "label": "a" if rng.random() < 0.8 else "b", "ts": ts + 1})
        )
    return out


@pytest.fixture(scope="module")
def live(kafka, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("error-analysis")
    s = web_settings(
        kafka.with_(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", app_id=f"mm{uuid.uuid4().hex[:8]}"),
        home=str(tmp),
        alert_rules="",
        reference_s=REFERENCE_S,
        feedback="errors",
        feedback_sample=SAMPLE,
    )
    config = _config()
    load_traffic(s, config)
    with MonitorClient(s) as mon:
        for topic, payload in _wide_events():
            mon.send_raw(topic, payload["request_id"].encode(), orjson.dumps(payload))
    worker = WebWorker(s, "ea1", tmp).start()
    preds, labels = _offline_join(config)
    expected = defaultdict(int)
    for p in preds:
        expected[(p["model"], p["model_version"])] += 1
    expected[(WIDE_MODEL, "1")] = WIDE_USERS + 2000
    try:
        caught_up(s, [worker], dict(expected))
        yield s, worker, preds, labels
    finally:
        worker.stop()


def _windows(worker: WebWorker, model: str, version: str) -> list[dict]:
    status, body, _ = worker.get(f"/api/v1/models/{model}/windows?version={version}&limit=10000")
    assert status == 200, body
    return body["windows"]


def _view(worker: WebWorker, model: str, version: str, view: str = "1h") -> dict:
    def ready() -> dict | None:
        status, body, _ = worker.get(f"/api/v1/models/{model}?version={version}")
        event = body["versions"][0]["views"].get(view) if status == 200 else None
        return event if event and event["traffic"]["predictions"] == want else None

    want = sum(w["traffic"]["predictions"] for w in _windows(worker, model, version))
    return wait_for(ready, 60, f"the {view} view of {model} to cover every window", worker)


def _correct(p: dict, label: Any) -> bool:
    return str(p["prediction"]) == str(label)


def test_bad_segment_ranks_first_and_no_clean_slice_is_flagged(live) -> None:
    _, worker, preds, labels = live
    view = _view(worker, "fraud-detector", "1.0.0")
    validate_output("model-metrics", view)
    joined = [(p, labels[p["request_id"]]["label"]) for p in preds
              if p["request_id"] in labels and p.get("error") is None]  # fmt: skip
    report = view["error_analysis"]["worst_slices"]
    assert report["slices"], report
    assert [(s["key"], s["value"]) for s in report["slices"]] == [BAD], report["slices"]
    first = report["slices"][0]
    in_bad = np.array([p["segment"][BAD[0]] == BAD[1] for p, _ in joined])
    ok = np.array([_correct(p, lab) for p, lab in joined])
    assert first["labelled"] == int(in_bad.sum())
    assert first["slice"] == pytest.approx(float(ok[in_bad].mean()), rel=1e-12)
    assert first["rest"] == pytest.approx(float(ok[~in_bad].mean()), rel=1e-12)
    table = [
        [int(ok[in_bad].sum()), int((~ok[in_bad]).sum())],
        [int(ok[~in_bad].sum()), int((~ok[~in_bad]).sum())],
    ]
    p_two_sided = chi2_contingency(table, correction=False)[1]
    assert first["p_value"] == pytest.approx(p_two_sided / 2, rel=1e-6, abs=1e-300)
    assert first["p_adjusted"] <= report["alpha"]
    assert report["tested"] == 7 + 3  # countries and devices, every one with enough labels

    # the segment table of the view equals the offline counts
    for key in ("country", "device"):
        rows = {v["value"]: v for v in view["segments"]["keys"][key]["values"]}
        values = sorted({p["segment"][key] for p in preds})
        assert sorted(rows) == values
        for value in values:
            n = sum(1 for p in preds if p["segment"][key] == value)
            lab = [(p, y) for p, y in joined if p["segment"][key] == value]
            assert rows[value]["predictions"] == n
            assert rows[value]["labelled"] == len(lab)
            assert rows[value]["accuracy"] == pytest.approx(float(np.mean([_correct(p, y) for p, y in lab])))
    # the most confused pairs equal the offline mistakes
    mistakes: dict[tuple, int] = defaultdict(int)
    for p, y in joined:
        if not _correct(p, y):
            mistakes[(str(y), str(p["prediction"]))] += 1
    want = sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    got = [((c["true"], c["predicted"]), c["count"]) for c in view["error_analysis"]["confused_pairs"]]
    assert got == want


def test_data_quality_against_the_reference_period(live) -> None:
    _, worker, preds, _ = live
    windows = _windows(worker, "fraud-detector", "1.0.0")
    start = min(w["window"]["start"] for w in windows)
    first = math.floor(min(p["ts"] for p in preds) / 60.0) * 60.0
    ref_end = first + REFERENCE_S
    reference = [p["features"] for p in preds if first <= p["ts"] < ref_end]
    numeric = [n for n, v in preds[0]["features"].items() if isinstance(v, float)]
    assert start and numeric
    checked = drifted = 0
    for event in windows:
        w0 = _epoch(event["window"]["start"])
        feats = event["data_quality"]["features"]
        if w0 < ref_end:
            assert all("reference_kind" not in f for f in feats.values()), event["window"]
            continue
        current = [p["features"] for p in preds if w0 <= p["ts"] < w0 + 60.0]
        for name in numeric:
            ref_b = [signed_log_bucket(f[name]) for f in reference if f.get(name) is not None]
            cur = [f[name] for f in current if isinstance(f.get(name), float)]
            lo, hi = min(ref_b), max(ref_b)
            out = sum(1 for v in cur if not lo <= signed_log_bucket(v) <= hi)
            got = feats[name]
            assert got["reference_kind"] == "numeric"
            assert got["type_change_share"] == 0.0
            assert got["out_of_range_share"] == pytest.approx(out / len(cur), abs=1e-15), (
                name,
                event["window"],
            )
            drifted += out > 0
            checked += 1
    assert checked >= 40 * len(numeric)
    assert drifted > 0  # the drift incident pushes values out of the reference's range


def test_ten_thousand_segment_values_stay_bounded(live) -> None:
    _, worker, _, _ = live
    windows = _windows(worker, WIDE_MODEL, "1")
    assert sum(w["traffic"]["predictions"] for w in windows) == WIDE_USERS + 2000
    for event in windows:
        users = event["segments"]["keys"]["user"]
        assert len(users["values"]) <= 11 and users["distinct"] <= 128
        assert users["folded_by_cap"] is True and users["values"][-1]["value"] == "__other__"
        assert sum(v["predictions"] for v in users["values"]) == event["traffic"]["predictions"]
        tiers = {v["value"]: v["predictions"] for v in event["segments"]["keys"]["tier"]["values"]}
        assert sum(tiers.values()) == event["traffic"]["predictions"] and set(tiers) == {"free", "pro"}
        assert len(orjson.dumps(event)) < 64 * 1024
    view = _view(worker, WIDE_MODEL, "1", "5m")
    users = view["segments"]["keys"]["user"]
    assert len(users["values"]) == 11 and sum(v["predictions"] for v in users["values"]) == WIDE_USERS + 2000
    assert view["error_analysis"]["worst_slices"]["tested"] <= 128 + 2


def test_feedback_holds_the_sampled_errors(live) -> None:
    s, worker, preds, labels = live
    want = set()
    for p in preds:
        rid = p["request_id"]
        if rid not in labels or zlib.crc32(rid.encode()) >= SAMPLE * 2**32:
            continue
        if p.get("error") is not None or not _correct(p, labels[rid]["label"]):
            want.add((rid, str(labels[rid]["label"])))

    def records() -> list[dict] | None:
        got = [r for r in read_topic(s, "model-feedback") if r["model"] == "fraud-detector"]
        return got if len(got) >= len(want) else None

    got = wait_for(records, 60, "the feedback records", worker)
    for record in got[:100]:
        validate_output("model-feedback", record)
        assert record["correct"] is not True and record["features"] is not None
    assert {(r["request_id"], str(r["label"])) for r in got} == want
    assert len(got) == len(want)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_documented_example_consumer_reads_the_wrong_predictions(live) -> None:
    s, _, preds, labels = live
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = doc.split("Example consumer:", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block, "architecture.md", "exec"), namespace)  # the documented code, as written
    rows = namespace["wrong_predictions"](
        s.bootstrap, "fraud-detector", topic=topic_name(s, "model-feedback"), group="doc-example", idle_s=3.0
    )
    want = [
        p for p in preds
        if p["request_id"] in labels and zlib.crc32(p["request_id"].encode()) < SAMPLE * 2**32
        and p.get("error") is None and not _correct(p, labels[p["request_id"]]["label"])
    ]  # fmt: skip
    assert len(rows) == len(want) > 0
    assert sorted(r["label"] for r in rows) == sorted(labels[p["request_id"]]["label"] for p in want)
    assert all("amount" in r for r in rows)
