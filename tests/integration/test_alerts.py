"""Alerts end to end on the real broker: simulated incidents raise the right alert and resolve, a clean
simulated day raises none, alert state survives a kill -9, and the rules file reloads without a restart.

The worker runs the example rules (deploy/alert-rules.yaml) on simulator traffic in event time (the
simulator's incidents: accuracy drops of 5, 10 and 20 points, a 50% traffic drop, latency x3, score
drift, a feature going missing, a feature drifting). Incidents are what the simulator injected, not
what the engine computes, so the expectations are independent of the code under test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmon.client import MonitorClient
from modelmon.schemas import validate_output
from modelmon.simulate import Incident, LabelDelay, SimConfig, generate, model_catalogue
from modelmon.topics import create_topics
from tests.conftest import env_for

from .streamcheck import WorkerProcess, closer_events, produce, read_topic, wait_for_lag_zero

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = ROOT / "deploy" / "alert-rules.yaml"
T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
HOUR = 3600.0
SLOT = 3600.0  # each incident: 20 minutes of trouble, then 40 minutes of clean traffic
INCIDENT_S = 1200.0

# incident kind, magnitude, options -> the rule that must catch it
INCIDENTS = [
    ("accuracy_drop", 0.05, {}, "accuracy-change"),
    ("accuracy_drop", 0.10, {}, "accuracy-change"),
    ("accuracy_drop", 0.20, {}, "accuracy-change"),
    ("traffic_drop", 0.5, {}, "traffic-drop"),
    ("latency_spike", 3.0, {}, "latency-rise"),
    ("score_drift", 1.0, {}, "score-drift"),
    ("feature_missing", 0.5, {"feature": "amount"}, "feature-missing"),
    ("feature_drift", 2.0, {"feature": "amount"}, "feature-drift"),
]


def _settings(settings, rules: Path):
    return settings.with_(
        window_s=60.0,
        join_horizon_s=3600.0,
        idle_advance_s=36000.0,  # event time moves with the events only
        emit_interval_s=5.0,
        tick_interval_s=0.5,
        session_timeout_s=6.0,
        recovery_stall_s=20.0,
        alert_rules=str(rules),
    )


def _produce(settings, events) -> None:
    with MonitorClient(settings) as mon:
        for e in events:
            mon.send_raw(e.topic, e.key, e.value())


def _chunks(events: list, t0: float, span_s: float) -> list[list]:
    """Consecutive slices of the send order, each covering ``span_s`` of event time."""
    out: list[list] = [[]]
    limit = t0 + span_s
    for e in events:
        ts = e.payload["ts"]
        if ts >= limit and out[-1]:
            out.append([])
            limit += span_s * max(1, int((ts - limit) // span_s) + 1)
        out[-1].append(e)
    return out


def _read_alerts(settings, timeout_s: float = 10.0) -> list[dict]:
    """Every event on the alerts topic so far."""
    return read_topic(settings, "alerts", timeout_s)


def _wait_for(settings, predicate, timeout_s: float, worker: WorkerProcess) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        alerts = _read_alerts(settings)
        if predicate(alerts):
            return alerts
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for alerts; have {_summary(alerts)}\n{worker.log_tail(60)}"
            )
        time.sleep(2.0)


def _summary(alerts: list[dict]) -> list[str]:
    return [
        f"{a['state']} {a['rule']} {a['model']}@{a['version']} since {a['started_at']} ts {a['ts']}"
        for a in alerts
    ]


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(900)
def test_incidents_raise_the_right_alerts_and_resolve_with_two_workers_and_a_kill9(
    settings, tmp_path
) -> None:
    rules = tmp_path / "rules.yaml"
    shutil.copy(EXAMPLE_RULES, rules)
    s = _settings(settings, rules)
    create_topics(s)
    incidents = [
        Incident(kind, HOUR + i * SLOT, INCIDENT_S, model="fraud-detector", magnitude=magnitude, **opts)
        for i, (kind, magnitude, opts, _) in enumerate(INCIDENTS)
    ]
    duration = HOUR + len(INCIDENTS) * SLOT
    cfg = SimConfig(
        models=1,
        versions=1,
        rate=4.0,
        duration_s=duration,
        label_delay=LabelDelay(median_s=5.0, sigma=0.5, max_s=120.0),
        invalid_fraction=0.0,
        seed=20261127,
        start_ts=T0,
        incidents=tuple(incidents),
        speed=1e9,
    )
    events = [e for e in generate(cfg) if e.kind != "invalid"]
    workers = {name: WorkerProcess(s, name, tmp_path).start() for name in ("w1", "w2")}
    try:
        # Live-like: 20 minutes of event time at a time, each caught up before the next.
        # Two workers; during the third incident the one evaluating the model's rules (stage 2 lives on
        # one of them) is killed (-9), its partitions and alert state move to the other, and it restarts.
        kill_at: float | None = T0 + HOUR + 2 * SLOT + 600.0
        for chunk in _chunks(events, T0, 1200.0):
            _produce(s, chunk)
            if kill_at is not None and chunk[-1].payload["ts"] >= kill_at:
                time.sleep(1.0)
                owner = next((n for n, w in workers.items() if "alert firing" in w.log_tail(100_000)), "w1")
                workers[owner].kill9()
                wait_for_lag_zero(s, timeout_s=240)  # the survivor takes over and catches up
                workers[owner] = WorkerProcess(s, owner, tmp_path).start()
                kill_at = None
            wait_for_lag_zero(s, timeout_s=240)
        produce(s, closer_events(T0 + duration + 600.0))
        wait_for_lag_zero(s, timeout_s=240)
        last_rule = INCIDENTS[-1][3]
        _wait_for(
            s,
            lambda al: any(a["rule"] == last_rule and a["state"] == "resolved" for a in al),
            120,
            workers["w1"],
        )
        for w in workers.values():
            assert "too_late" not in w.log_tail(100_000), w.log_tail(40)
        time.sleep(3)
        alerts = _read_alerts(s)
    finally:
        for w in workers.values():
            w.stop()

    end = T0 + duration
    alerts = [a for a in alerts if a["model"] == "fraud-detector"]
    for a in alerts:
        validate_output("alert", a)
    summary = "\n".join(_summary(alerts))
    spans = [(inc.start_s + T0, inc.start_s + T0 + inc.duration_s) for inc in incidents]

    # Every incident raises its rule's alert while it lasts (or within 10 minutes of its end).
    for (kind, magnitude, _, rule), (start, stop) in zip(INCIDENTS, spans, strict=True):
        hits = [
            a for a in alerts
            if a["rule"] == rule and a["state"] == "firing" and start <= _epoch(a["started_at"]) < stop + 600
        ]  # fmt: skip
        assert hits, f"{kind} {magnitude} raised no {rule} alert:\n{summary}"

    # Nothing fires in clean traffic: every alert started inside an incident (or its 35-minute tail, the
    # longest view), and the clean first hour (reference and baselines) raised nothing.
    for a in alerts:
        since = _epoch(a["started_at"])
        if since >= end - 300:
            continue  # the last windows before the closers: partial data
        assert any(start <= since < stop + 2100 for start, stop in spans), (
            f"alert outside incidents: {a}\n{summary}"
        )

    # Every alert that fired resolved before the stream ended, under the same id.
    by_id: dict[str, list[dict]] = {}
    for a in alerts:
        by_id.setdefault(a["id"], []).append(a)
    for alert_id, evs in by_id.items():
        states = [e["state"] for e in evs]
        if _epoch(evs[0]["started_at"]) >= end - 300:
            continue
        assert states[-1] == "resolved", f"alert {alert_id} never resolved: {states}\n{summary}"
        assert len({(e["rule"], e["started_at"]) for e in evs}) == 1
        # A replay after the kill may repeat an event; it never reopens a resolved alert.
        first_resolved = states.index("resolved")
        assert all(st == "resolved" for st in states[first_resolved:]), states

    # No re-fire storm: at most two alert instances of a rule per incident.
    for rule in {r for *_, r in INCIDENTS}:
        for start, stop in spans:
            ids = {
                a["id"]
                for a in alerts
                if a["rule"] == rule and start <= _epoch(a["started_at"]) < stop + 2100
            }
            assert len(ids) <= 2, f"{rule} opened {len(ids)} alerts for one incident:\n{summary}"


@pytest.mark.timeout(900)
def test_a_clean_simulated_day_raises_no_alert_and_rules_reload(settings, tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    shutil.copy(EXAMPLE_RULES, rules)
    s = _settings(settings, rules)
    create_topics(s)
    day = 86400.0
    cfg = SimConfig(
        models=3,
        versions=2,
        rate=2.0,
        duration_s=day,
        label_delay=LabelDelay(median_s=5.0, sigma=0.5, max_s=120.0),
        invalid_fraction=0.0,
        seed=7,
        start_ts=T0,
        speed=1e9,
    )
    events = [e for e in generate(cfg) if e.kind != "invalid"]
    names = [m.name for m in model_catalogue(cfg)]
    worker = WorkerProcess(s, "w1", tmp_path).start()
    try:
        for chunk in _chunks(events, T0, 1800.0):
            _produce(s, chunk)
            wait_for_lag_zero(s, timeout_s=240)
        produce(s, closer_events(T0 + day + 600.0))
        wait_for_lag_zero(s, timeout_s=240)
        time.sleep(8)  # the last heartbeats reach stage 2
        alerts = [
            a for a in _read_alerts(s) if a["model"] in names and _epoch(a["started_at"]) < T0 + day - 300
        ]
        assert alerts == [], "\n".join(_summary(alerts)) + "\n" + worker.log_tail(40)

        # An invalid edit is reported and the worker keeps its rules and keeps running.
        rules.write_text(rules.read_text() + "  - name: broken\n    kind: threshold\n    metric: nope\n")
        deadline = time.monotonic() + 30
        while "alert rules: " not in worker.log_tail(200) or "is invalid" not in worker.log_tail(200):
            assert time.monotonic() < deadline, worker.log_tail(60)
            time.sleep(1)
        assert "field 'metric'" in worker.log_tail(200)
        assert worker.proc is not None and worker.proc.poll() is None

        # A valid edit takes effect without a restart: a rule that holds everywhere fires.
        shutil.copy(EXAMPLE_RULES, rules)
        with rules.open("a") as f:
            f.write(
                "  - {name: always, kind: threshold, metric: predictions, "
                "op: '>=', threshold: 0, models: churn}\n"
            )
        _wait_for(s, lambda al: any(a["rule"] == "always" and a["model"] == "churn" for a in al), 90, worker)
    finally:
        worker.stop()


def test_worker_refuses_an_invalid_rules_file_with_the_check_messages(settings, tmp_path) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text(
        "rules:\n  - name: x\n    kind: threshold\n    metric: acuracy\n    op: '<'\n    threshold: 1\n"
    )
    env = env_for(settings.with_(alert_rules=str(rules)))
    check = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "rules", "check", str(rules)],
        env=env,
        capture_output=True,
        text=True,
    )
    worker = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 2 and worker.returncode == 2
    assert "rule 1 ('x'), field 'metric'" in check.stderr
    problems = [line for line in check.stderr.splitlines() if "field 'metric'" in line]
    assert problems and all(p in worker.stderr for p in problems)
