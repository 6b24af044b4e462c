"""Worker health (modelmon.health, pure; modelmon.worker_health, plumbing) without a broker.

Lag and rate arithmetic is checked against hand computations; the resource sampler against psutil read
independently in the test (and against traffic and CPU work the test itself generates); the event-loop
lag monitor against a blocking call injected into the loop. The report validates against
schemas/monitor-health.schema.json and the OpenAPI description, and its Prometheus families pass
``promtool check metrics``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon import worker_health
from modelmon.health import (
    LagTracker,
    LoopLagMonitor,
    OffsetReading,
    ResourceSampler,
    lag_rows,
    lag_totals,
    per_second,
)
from modelmon.schemas import InvalidEvent, validate_output
from modelmon.settings import Settings
from modelmon.web.prometheus import exposition, health_families

from .test_openapi import DOC, bundle_event_schema, component
from .test_prometheus import promtool_check_metrics

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "monitor-health.schema.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ arithmetic
def test_per_second():
    assert per_second(100, 160, 2.0) == 30.0
    assert per_second(100, 100, 2.0) == 0.0
    assert per_second(None, 160, 2.0) is None
    assert per_second(100, None, 2.0) is None
    assert per_second(100, 160, None) is None
    assert per_second(100, 160, 0.0) is None
    assert per_second(160, 100, 2.0) is None  # went back: no rate across a reset


def test_offset_reading_lag_uses_the_position_then_the_committed_offset():
    assert OffsetReading("p", 0, end_offset=1100, committed=990, position=1000).lag == 100
    assert OffsetReading("p", 0, end_offset=1100, committed=990, position=None).lag == 110
    assert OffsetReading("p", 0, end_offset=1100, committed=None, position=None).lag is None
    assert OffsetReading("p", 0, end_offset=None, committed=990, position=1000).lag is None
    assert OffsetReading("p", 0, end_offset=5, committed=0, position=0).lag == 5
    assert OffsetReading("p", 0, end_offset=7, committed=7, position=7).lag == 0
    # nothing committed: the worker starts at the log start offset (auto.offset.reset=earliest)
    assert OffsetReading("p", 0, end_offset=90, committed=None, position=None, start_offset=30).lag == 60
    # a committed offset that fell out of retention: it starts at the log start offset too
    assert OffsetReading("p", 0, end_offset=90, committed=10, position=None, start_offset=30).lag == 60
    assert OffsetReading("p", 0, end_offset=90, committed=50, position=None, start_offset=30).lag == 40
    assert OffsetReading("p", 0, end_offset=90, committed=10, position=70, start_offset=30).lag == 20


def test_lag_rows_and_rates_by_hand():
    previous = {
        ("pred", 0): OffsetReading("pred", 0, 1000, 700, 800),
        ("pred", 1): OffsetReading("pred", 1, 500, 500, None),
        ("gt", 0): OffsetReading("gt", 0, 300, None, None),
    }
    now = [
        OffsetReading("pred", 1, 530, 510, 525),  # position appears: processing rate from committed 500
        OffsetReading("pred", 0, 1100, 790, 950),
        OffsetReading("gt", 0, 340, 200, None),  # nothing processed, nothing committed before
        OffsetReading("gt", 1, 10, 0, 4),  # newly assigned: no previous reading
    ]
    rows = lag_rows(now, previous, elapsed_s=4.0)
    assert [(r["topic"], r["partition"]) for r in rows] == [("gt", 0), ("gt", 1), ("pred", 0), ("pred", 1)]
    by = {(r["topic"], r["partition"]): r for r in rows}
    # pred-0: lag 1100 - 950; input (1100 - 1000) / 4; processing (950 - 800) / 4
    assert by[("pred", 0)] == {
        "topic": "pred",
        "partition": 0,
        "start_offset": None,
        "committed": 790,
        "position": 950,
        "end_offset": 1100,
        "lag": 150,
        "input_rate_per_s": 25.0,
        "processing_rate_per_s": 37.5,
    }
    assert (by[("pred", 1)]["lag"], by[("pred", 1)]["input_rate_per_s"]) == (5, 7.5)
    assert by[("pred", 1)]["processing_rate_per_s"] == (525 - 500) / 4
    assert (by[("gt", 0)]["lag"], by[("gt", 0)]["input_rate_per_s"]) == (140, 10.0)
    assert by[("gt", 0)]["processing_rate_per_s"] is None  # nothing consumed in the previous reading
    assert by[("gt", 1)]["lag"] == 6
    assert by[("gt", 1)]["input_rate_per_s"] is None and by[("gt", 1)]["processing_rate_per_s"] is None

    totals = lag_totals(rows)
    assert totals["total"] == 150 + 5 + 140 + 6
    assert totals["topics"] == [
        {"topic": "gt", "partitions": 2, "lag": 146, "input_rate_per_s": None, "processing_rate_per_s": None},
        {
            "topic": "pred",
            "partitions": 2,
            "lag": 155,
            "input_rate_per_s": 32.5,
            "processing_rate_per_s": 43.75,
        },
    ]


def test_totals_are_unknown_when_a_part_is():
    rows = lag_rows([OffsetReading("a", 0, 10, 5, None), OffsetReading("a", 1, None, None, 3)])
    totals = lag_totals(rows)
    assert totals["total"] is None and totals["topics"][0]["lag"] is None
    assert lag_totals([]) == {"total": 0, "topics": []}


def test_lag_tracker_keeps_the_previous_reading():
    tracker = LagTracker()
    first = tracker.update([OffsetReading("a", 0, 100, 40, 50)], at=10.0)
    assert first["partitions"][0]["input_rate_per_s"] is None and first["total"] == 50
    assert first["error"] is None
    second = tracker.update([OffsetReading("a", 0, 120, 60, 90)], at=12.0)
    row = second["partitions"][0]
    assert (row["lag"], row["input_rate_per_s"], row["processing_rate_per_s"]) == (30, 10.0, 20.0)
    # a rebalance: the position is forgotten and the committed offset is behind the old position
    third = tracker.update([OffsetReading("a", 0, 130, 70, None)], at=14.0, error=None)
    assert third["partitions"][0]["processing_rate_per_s"] is None and third["total"] == 60
    failed = tracker.update([OffsetReading("a", 0, None, None, 95)], at=16.0, error="timed out")
    assert failed["total"] is None and failed["error"] == "timed out"
    assert failed["partitions"][0]["input_rate_per_s"] is None


# ------------------------------------------------------------------------------------------- resources
def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


def _loopback_traffic(nbytes: int) -> None:
    """Send nbytes over a TCP connection on 127.0.0.1 (counted by the loopback interface)."""
    server = socket.create_server(("127.0.0.1", 0))
    got = [0]

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return
                got[0] += len(data)

    t = threading.Thread(target=sink)
    t.start()
    with socket.create_connection(server.getsockname()) as client:
        client.sendall(b"x" * nbytes)
    t.join(10)
    server.close()
    assert got[0] == nbytes


def test_sampler_against_psutil_read_independently():
    me = psutil.Process()
    sampler = ResourceSampler()
    assert sampler.pid == os.getpid()
    cpu_before = sum(me.cpu_times()[:2])
    net_before = psutil.net_io_counters()
    me.cpu_percent(None)
    psutil.cpu_percent(None)
    t0 = time.monotonic()
    sampler.sample()  # starts the period
    _burn(0.4)
    _loopback_traffic(8 * 2**20)
    rss_before = me.memory_info().rss
    sample = sampler.sample()
    elapsed = time.monotonic() - t0
    rss_after = me.memory_info().rss
    cpu_after = sum(me.cpu_times()[:2])
    net_after = psutil.net_io_counters()
    psutil_proc_percent = me.cpu_percent(None)
    psutil_host_percent = psutil.cpu_percent(None)

    proc, host, net = sample["process"], sample["host"], sample["network"]
    assert proc["pid"] == os.getpid()
    assert min(rss_before, rss_after) * 0.8 <= proc["rss_bytes"] <= max(rss_before, rss_after) * 1.2
    assert proc["threads"] == me.num_threads()
    assert abs(proc["open_fds"] - me.num_fds()) <= 2
    assert cpu_before <= proc["cpu_seconds"] <= cpu_after
    # at least the 0.4 s burnt over at most the elapsed time; psutil's own figure over (about) the period
    assert proc["cpu_percent"] >= 100 * 0.4 / elapsed * 0.9
    assert abs(proc["cpu_percent"] - psutil_proc_percent) <= 25
    assert host["hostname"] == socket.gethostname()
    assert host["cpu_count"] == psutil.cpu_count()
    assert host["memory_total_bytes"] == psutil.virtual_memory().total
    assert (
        abs(host["memory_available_bytes"] - psutil.virtual_memory().available)
        < 0.1 * host["memory_total_bytes"]
    )
    assert 0 <= host["cpu_percent"] <= 100 and abs(host["cpu_percent"] - psutil_host_percent) <= 25
    assert abs(host["load_1m"] - os.getloadavg()[0]) < 1.0
    assert net_before.bytes_recv <= net["received_bytes"] <= net_after.bytes_recv
    assert net_before.bytes_sent <= net["sent_bytes"] <= net_after.bytes_sent
    # 8 MiB went through the loopback interface (received and sent on this host) within the period
    assert net["received_bytes_per_s"] >= 8 * 2**20 / elapsed
    assert net["sent_bytes_per_s"] >= 8 * 2**20 / elapsed


def test_sampler_of_another_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        sample = ResourceSampler(child.pid).sample()
        proc = psutil.Process(child.pid)
        assert sample["process"]["pid"] == child.pid
        assert abs(sample["process"]["rss_bytes"] - proc.memory_info().rss) <= 0.2 * proc.memory_info().rss
        assert sample["process"]["threads"] == proc.num_threads()
        assert sample["process"]["open_fds"] == proc.num_fds()
    finally:
        child.kill()
        child.wait()


# --------------------------------------------------------------------------------------- event loop
def test_loop_lag_arithmetic():
    mon = LoopLagMonitor(0.1)
    assert mon.report() == {
        "lag_s": None,
        "lag_max_s": None,
        "lag_mean_s": None,
        "samples": 0,
        "probe_interval_s": 0.1,
    }
    for lag in (0.01, 0.3, -0.001, 0.05):
        mon.record(lag)
    rep = mon.report()
    assert rep["lag_s"] == 0.05 and rep["lag_max_s"] == 0.3 and rep["samples"] == 4
    assert rep["lag_mean_s"] == pytest.approx((0.01 + 0.3 + 0.0 + 0.05) / 4)
    after = mon.report()  # a new period: only the last lag stays
    assert after["samples"] == 0 and after["lag_max_s"] is None and after["lag_s"] == 0.05
    with pytest.raises(ValueError):
        LoopLagMonitor(0)


def test_loop_lag_detects_a_blocking_call():
    async def scenario() -> tuple[dict, dict]:
        mon = LoopLagMonitor(0.05)
        task = asyncio.create_task(mon.run())
        await asyncio.sleep(0.3)
        quiet = mon.report()
        time.sleep(0.3)  # blocks the loop
        await asyncio.sleep(0.2)
        blocked = mon.report()
        task.cancel()
        return quiet, blocked

    quiet, blocked = asyncio.run(scenario())
    assert quiet["samples"] >= 3 and quiet["lag_max_s"] < 0.2
    assert blocked["lag_max_s"] >= 0.25
    assert blocked["lag_mean_s"] <= blocked["lag_max_s"] and blocked["samples"] >= 2


# ------------------------------------------------------------------------------------ the whole report
def _report(tracker: LagTracker | None = None) -> dict:
    sampler = ResourceSampler()
    loop_lag = LoopLagMonitor(0.1)
    loop_lag.record(0.002)
    tracker = tracker or LagTracker()
    tracker.update([OffsetReading("t.predictions", 0, 10, 5, 6)], at=0.0)
    lag = tracker.update(
        [OffsetReading("t.predictions", 0, 20, 8, 12), OffsetReading("t.ground-truth", 0, None, None, None)],
        at=1.0,
        error="end offset of t.ground-truth-0: _TIMED_OUT",
    )
    time.sleep(0.05)  # a few clock ticks, so the host CPU share is defined
    sample = sampler.sample()
    return {
        "worker_id": "w1",
        "ts": "2026-11-28T03:00:00.5Z",
        "interval_s": 10.0,
        **sample,
        "event_loop": loop_lag.report(),
        "consumer_lag": lag,
        "tables": {
            "pending_joins": 3,
            "stage1_open_windows": 2,
            "stage2_open_windows": 4,
            "stage2_final_windows": 1,
            "alert_states": 0,
        },
    }


def test_report_matches_the_event_schema_and_the_openapi_description():
    report = _report()
    validate_output("monitor-health", report)
    bad = {**report, "consumer_lag": {**report["consumer_lag"], "total": -1}}
    with pytest.raises(InvalidEvent):
        validate_output("monitor-health", bad)
    # the OpenAPI component is the schema file, bundled; /api/v1/health carries the report
    assert DOC["components"]["schemas"]["HealthEvent"] == bundle_event_schema(SCHEMA, "HealthEvent")
    assert not list(component("HealthEvent").iter_errors(report))
    health = {
        "worker_id": "w1",
        "time": "2026-11-28T03:00:00Z",
        "ready": True,
        "url": "http://127.0.0.1:6066",
        "process": {"cpu_percent": 1.0, "rss_bytes": 1, "threads": 1, "open_fds": 1},
        "partitions": {"input": [0], "output": [0]},
        "tables": {"pending_joins": 3, "windows": 5, "alert_states": 0},
        "counters": {},
        "workers": [],
    }
    for body in ({**health, "report": report}, {**health, "report": None}, health):
        assert not list(component("WorkerHealth").iter_errors(body))
    assert list(component("WorkerHealth").iter_errors({**health, "report": bad}))


def test_every_published_field_is_documented():
    """Every key of a report is a property of the schema (units in the names)."""

    def walk(value, schema, path):
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for key, sub in value.items():
                assert key in props, f"{path}.{key} is not in schemas/monitor-health.schema.json"
                walk(sub, props[key], f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, schema["items"], f"{path}[]")

    walk(_report(), SCHEMA, "report")
    jsonschema.Draft202012Validator(SCHEMA).validate(_report())


# ------------------------------------------------------------------------------------------ prometheus
def _parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_health_families_carry_the_report():
    report = _report()
    publisher = {"interval_s": 10.0, "published": 7, "failed": 1, "published_at": 1_800_000_000.25}
    text = exposition(health_families(report, publisher))
    got = _parse(text)
    host, tables = report["host"], report["tables"]
    assert got[("modelmon_health_interval_seconds", ())] == 10.0
    assert got[("modelmon_health_reports_total", ())] == 7
    assert got[("modelmon_health_report_failures_total", ())] == 1
    assert got[("modelmon_health_last_report_timestamp_seconds", ())] == 1_800_000_000.25
    assert got[("modelmon_event_loop_lag_seconds", ())] == 0.002
    assert got[("modelmon_event_loop_lag_max_seconds", ())] == 0.002
    assert got[("modelmon_host_cpus", ())] == host["cpu_count"]
    assert got[("modelmon_host_cpu_utilization_ratio", ())] == pytest.approx(host["cpu_percent"] / 100)
    assert got[("modelmon_host_memory_utilization_ratio", ())] == pytest.approx(host["memory_percent"] / 100)
    assert got[("modelmon_host_memory_available_bytes", ())] == host["memory_available_bytes"]
    assert got[("modelmon_host_network_receive_bytes_total", ())] == report["network"]["received_bytes"]
    assert got[("modelmon_host_network_transmit_bytes_total", ())] == report["network"]["sent_bytes"]
    assert got[("modelmon_pending_joins", ())] == tables["pending_joins"]
    assert got[("modelmon_open_windows", (("stage", "1"),))] == 2
    assert got[("modelmon_open_windows", (("stage", "2"),))] == 4
    assert got[("modelmon_final_windows", ())] == 1
    assert got[("modelmon_alert_states", ())] == 0
    pred = (("partition", "0"), ("topic", "t.predictions"))
    assert got[("modelmon_consumer_lag", pred)] == 8
    assert got[("modelmon_consumer_input_rate_per_second", pred)] == 10.0
    assert got[("modelmon_consumer_processing_rate_per_second", pred)] == 6.0
    gt = (("partition", "0"), ("topic", "t.ground-truth"))
    assert ("modelmon_consumer_lag", gt) not in got  # unknown: no sample
    res = promtool_check_metrics(text)
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", (
        res.stdout + res.stderr
    )


def test_health_families_before_the_first_report():
    publisher = {"interval_s": 10.0, "published": 0, "failed": 0, "published_at": None}
    got = _parse(exposition(health_families(None, publisher)))
    assert set(got) == {
        ("modelmon_health_interval_seconds", ()),
        ("modelmon_health_reports_total", ()),
        ("modelmon_health_report_failures_total", ()),
    }


# ----------------------------------------------------------------------------- plumbing and settings
def test_settings_read_the_interval():
    assert Settings().health_interval_s == 10.0
    assert Settings.from_env({"MODELMON_HEALTH_INTERVAL_S": "2.5"}).health_interval_s == 2.5
    with pytest.raises(ValueError, match="MODELMON_HEALTH_INTERVAL_S"):
        Settings.from_env({"MODELMON_HEALTH_INTERVAL_S": "0"})


def test_a_failed_admin_call_gives_null_lag_without_blocking_the_loop(monkeypatch, tmp_path):
    """No broker answers: the report still comes, with null offsets and the reason; the loop kept running."""
    from modelmon import worker as worker_module

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(home=str(tmp_path), broker_port=port, controller_port=port + 1, health_interval_s=1.0)
    w = worker_module.Worker(settings, input_partitions=2)
    monkeypatch.setattr(worker_health, "ADMIN_TIMEOUT_S", 1.0)
    tps = [(w.pred_name, 0), (w.gt_name, 1), (w.partials.get_topic_name(), 0)]
    monkeypatch.setattr(w.health, "_consumed_partitions", lambda: tps)
    w.health.sensor.on_stream_event_out((w.pred_name, 0), 41, None, None)

    async def scenario() -> tuple[dict, dict]:
        task = asyncio.create_task(w.health.loop_lag.run())
        await asyncio.sleep(0.2)
        w.health.loop_lag.report()
        report = await w.health.build()
        task.cancel()
        return report, w.health.loop_lag.report(reset=False)

    started = time.monotonic()
    report, loop_during = asyncio.run(scenario())
    assert time.monotonic() - started >= 0.9  # the admin request did wait for its timeout ...
    assert report["event_loop"]["lag_max_s"] < 0.5  # ... in a thread, not on the loop
    assert loop_during["samples"] == 0  # (the report started a new period)
    lag = report["consumer_lag"]
    assert lag["error"] and lag["total"] is None
    rows = {(r["topic"], r["partition"]): r for r in lag["partitions"]}
    assert set(rows) == set(tps)
    assert rows[(w.pred_name, 0)]["position"] == 42
    assert all(r["end_offset"] is None and r["committed"] is None for r in rows.values())
    assert rows[(w.pred_name, 0)]["lag"] is None
    validate_output("monitor-health", report)
    assert report["worker_id"] == settings.worker_id and report["interval_s"] == 1.0
    assert report["process"]["pid"] == os.getpid()


def test_modules_are_pure():
    code = (
        "import sys, modelmon.health; "
        "bad = [m for m in ('faust', 'aiokafka', 'confluent_kafka', 'mode') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
