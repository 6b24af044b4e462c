"""Worker health against a live worker on the real broker, checked with independent readings.

A backlog of simulated traffic is produced before the worker starts, so its consumer lag is large at
first and falls to zero while the test watches. The worker publishes a report every second
(MODELMON_HEALTH_INTERVAL_S=1); meanwhile the test polls an AdminClient of its own for the end offsets
and the group's committed offsets, and psutil for the worker process, each reading with the wall-clock
times it started and ended. Then, for every report:

* the input topics' end offsets equal the AdminClient's exactly (nothing is written to them after the
  backlog); the internal ticks/partials topics keep moving, so theirs lie between the test's readings
  taken before the report and after it arrived, and so do the committed offsets (they only grow);
* lag = end_offset - position (or - committed / log start before the first event of a partition);
* RSS within 20 % of psutil's, threads and open descriptors within a few, CPU seconds bracketed.

The total lag is positive early and zero at the end, and /api/v1/health and /metrics carry the figures of
the latest report.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import psutil
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec
from prometheus_client.parser import text_string_to_metric_families

from modelmon.kafka_clients import admin_client, consumer
from modelmon.schemas import validate_output
from modelmon.topics import ensure_internal_topics, topic_name
from modelmon.worker import partials_topic_name, ticks_topic_name

from .webcheck import WebWorker, load_traffic, traffic_config, wait_for, web_settings

pytestmark = pytest.mark.integration

WORKER_ID = "health1"
BACKLOG = dataclasses.replace(traffic_config(), duration_s=3000.0, incidents=())


@dataclasses.dataclass
class Reading:
    start: float  # wall-clock time before the reading
    end: float  # and after it
    value: Any


class Poller(threading.Thread):
    """Calls ``read()`` every ``period_s`` until stopped, keeping each value with its start and end time."""

    def __init__(self, read: Callable[[], Any], period_s: float) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.period_s = period_s
        self.readings: list[Reading] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            start = time.time()
            try:
                value = self.read()
            except Exception as exc:  # a missed reading only narrows what can be checked
                self.errors.append(repr(exc))
            else:
                self.readings.append(Reading(start, time.time(), value))
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def before(self, t: float) -> Reading | None:
        """The last reading that ended before t."""
        done = [r for r in self.readings if r.end < t]
        return done[-1] if done else None

    def after(self, t: float) -> Reading | None:
        """The first reading that started after t."""
        return next((r for r in self.readings if r.start > t), None)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _partitions(s) -> dict[str, int]:
    return {
        topic_name(s, "predictions"): s.input_partitions,
        topic_name(s, "ground-truth"): s.input_partitions,
        ticks_topic_name(s): s.input_partitions,
        partials_topic_name(s): s.output_partitions,
    }


def _admin_reader(s) -> Callable[[], dict[str, dict[tuple[str, int], int | None]]]:
    admin = admin_client(s)
    tps = [TopicPartition(t, p) for t, n in _partitions(s).items() for p in range(n)]

    def read() -> dict[str, dict[tuple[str, int], int | None]]:
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=10)
        ends = {(tp.topic, tp.partition): f.result(10).offset for tp, f in futures.items()}
        group = ConsumerGroupTopicPartitions(s.group_id, tps)
        listed = admin.list_consumer_group_offsets([group], request_timeout=10)[s.group_id].result(10)
        committed = {
            (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in listed.topic_partitions
        }
        return {"end": ends, "committed": committed}

    return read


def _process_reader(pid: int) -> Callable[[], dict[str, float]]:
    proc = psutil.Process(pid)

    def read() -> dict[str, float]:
        with proc.oneshot():
            cpu = proc.cpu_times()
            return {
                "rss_bytes": proc.memory_info().rss,
                "threads": proc.num_threads(),
                "open_fds": proc.num_fds(),
                "cpu_seconds": cpu.user + cpu.system,
            }

    return read


def _metrics(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_health_reports_agree_with_independent_readings(kafka, tmp_path) -> None:
    s = web_settings(
        kafka.with_(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", app_id=f"mm{uuid.uuid4().hex[:8]}"),
        health_interval_s=1.0,
        alert_rules="",
    )
    sent = load_traffic(s, BACKLOG)
    inputs = {topic_name(s, "predictions"), topic_name(s, "ground-truth")}
    n_partitions = sum(_partitions(s).values())
    ensure_internal_topics(
        s, {ticks_topic_name(s): s.input_partitions, partials_topic_name(s): s.output_partitions}
    )

    admin = Poller(_admin_reader(s), 0.2)

    def first_reading() -> dict | None:
        try:
            return admin.read()
        except Exception:  # the new topics' leaders are still being elected
            return None

    backlog_ends = wait_for(first_reading, 30, "the end offsets")["end"]  # the inputs stay at these
    assert sum(e for (t, _), e in backlog_ends.items() if t in inputs) == sent

    health_topic = topic_name(s, "monitor-health")
    cons = consumer(s, group_id=f"health-{time.time_ns()}")
    cons.assign([TopicPartition(health_topic, p, 0) for p in range(s.output_partitions)])
    reports: list[tuple[float, dict]] = []  # (when the test received it, the report)

    def take(timeout: float = 0.5) -> None:
        for msg in cons.consume(100, timeout=timeout):
            if msg.error() is None:
                assert msg.key() == WORKER_ID.encode()
                reports.append((time.time(), orjson.loads(msg.value())))

    admin.start()
    worker = WebWorker(s, WORKER_ID, tmp_path).start()
    procs = Poller(_process_reader(worker.proc.pid), 0.1)
    procs.start()
    started = time.monotonic()
    try:

        def complete(report: dict) -> bool:
            lag = report["consumer_lag"]
            return len(lag["partitions"]) == n_partitions and lag["total"] is not None

        def caught_up() -> bool:
            take()
            return any(complete(r) and r["consumer_lag"]["total"] == 0 for _, r in reports)

        wait_for(caught_up, 90, "a health report with zero consumer lag", worker)
        worker.wait_ready()

        # /api/v1/health and /metrics against the latest report, read between two equal health answers.
        def consistent() -> tuple[dict, dict, dict] | None:
            h1 = worker.get("/api/v1/health")[1]
            metrics = _metrics(worker.get("/metrics")[1])
            h2 = worker.get("/api/v1/health")[1]
            if h1["report"] is None or h1["report"]["ts"] != h2["report"]["ts"]:
                return None
            return h1, h2, metrics

        health, _, metrics = wait_for(consistent, 20, "a stable latest report", worker)
        latest = health["report"]
        wait_for(lambda: take() or any(r["ts"] == latest["ts"] for _, r in reports), 10, "the report", worker)
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
        procs.stop()
        admin.stop()
        cons.close()

    # -- the API serves the report it published
    published = next(r for _, r in reports if r["ts"] == latest["ts"])
    assert latest == published
    assert latest["tables"]["pending_joins"] == health["tables"]["pending_joins"]
    assert latest["consumer_lag"]["total"] == 0
    assert metrics[("modelmon_pending_joins", ())] == latest["tables"]["pending_joins"] > 0
    assert metrics[("modelmon_open_windows", (("stage", "1"),))] == latest["tables"]["stage1_open_windows"]
    assert metrics[("modelmon_open_windows", (("stage", "2"),))] == latest["tables"]["stage2_open_windows"]
    assert metrics[("modelmon_final_windows", ())] == latest["tables"]["stage2_final_windows"]
    assert metrics[("modelmon_event_loop_lag_max_seconds", ())] == latest["event_loop"]["lag_max_s"]
    assert metrics[("modelmon_host_cpus", ())] == psutil.cpu_count()
    lag_samples = {k: v for k, v in metrics.items() if k[0] == "modelmon_consumer_lag"}
    assert len(lag_samples) == n_partitions and sum(lag_samples.values()) == 0
    for row in latest["consumer_lag"]["partitions"]:
        key = ("modelmon_consumer_lag", (("partition", str(row["partition"])), ("topic", row["topic"])))
        assert metrics[key] == row["lag"]
    assert metrics[("modelmon_health_interval_seconds", ())] == 1.0
    assert metrics[("modelmon_health_reports_total", ())] >= len(reports) - 2
    assert metrics[("modelmon_health_report_failures_total", ())] == 0

    # -- every report, against the test's own readings
    assert admin.readings and procs.readings, (admin.errors, procs.errors)
    pid = worker.proc.pid
    checked = {"end_exact": 0, "end_bracketed": 0, "committed_bracketed": 0, "process": 0, "rates": 0}
    input_lags = []
    failed_reads: list[str] = []
    rss_ratios = []
    for received, report in reports:
        validate_output("monitor-health", report)
        assert report["worker_id"] == WORKER_ID and report["interval_s"] == 1.0
        ts = _epoch(report["ts"])
        before, after = admin.before(ts), admin.after(received)
        lag = report["consumer_lag"]
        if lag["error"] is not None:  # e.g. a leader moving: those offsets are null
            failed_reads.append(lag["error"])
            continue
        for row in lag["partitions"]:
            key = (row["topic"], row["partition"])
            end, position = row["end_offset"], row["position"]
            start = max(o for o in (row["committed"], row["start_offset"]) if o is not None)
            assert row["lag"] == end - (position if position is not None else start), row
            if position is not None:
                assert position <= end, row
            if row["topic"] in inputs:
                assert end == backlog_ends[key], row
                assert row["input_rate_per_s"] in (None, 0.0), row
                checked["end_exact"] += 1
            elif before is not None and after is not None:
                assert before.value["end"][key] <= end <= after.value["end"][key], row
                checked["end_bracketed"] += 1
            if before is not None and after is not None:
                low, high = before.value["committed"][key], after.value["committed"][key]
                if row["committed"] is None:
                    assert low is None, row
                else:
                    assert low is None or low <= row["committed"], row
                    assert high is not None and row["committed"] <= high, row
                    checked["committed_bracketed"] += 1
        if len(lag["partitions"]) == n_partitions and lag["total"] is not None:
            input_lags.append(sum(t["lag"] for t in lag["topics"] if t["topic"] in inputs))
        proc = report["process"]
        assert proc["pid"] == pid
        near = [r.value for r in procs.readings if ts - 0.3 <= r.start and r.end <= received + 0.3]
        p_before, p_after = procs.before(ts), procs.after(received)
        if near and p_before is not None and p_after is not None:
            rss_ratios.append(proc["rss_bytes"] / near[-1]["rss_bytes"])
            assert min(v["rss_bytes"] for v in near) * 0.8 <= proc["rss_bytes"]
            assert proc["rss_bytes"] <= max(v["rss_bytes"] for v in near) * 1.2
            assert (
                min(v["threads"] for v in near) - 3 <= proc["threads"] <= max(v["threads"] for v in near) + 3
            )
            assert (
                min(v["open_fds"] for v in near) - 8
                <= proc["open_fds"]
                <= max(v["open_fds"] for v in near) + 8
            )
            assert p_before.value["cpu_seconds"] <= proc["cpu_seconds"] <= p_after.value["cpu_seconds"]
            checked["process"] += 1
        loop = report["event_loop"]
        if loop["samples"]:
            assert 0 <= loop["lag_mean_s"] <= loop["lag_max_s"]

    assert len(failed_reads) <= 2, failed_reads
    # processing rates: the position's growth between consecutive reports
    previous: dict[tuple[str, int], tuple[float, int]] = {}
    for _, report in reports:
        ts = _epoch(report["ts"])
        for row in report["consumer_lag"]["partitions"]:
            key = (row["topic"], row["partition"])
            if row["topic"] in inputs and row["position"] is not None:
                if key in previous and row["processing_rate_per_s"] is not None:
                    t0, p0 = previous[key]
                    want = (row["position"] - p0) / (ts - t0)
                    assert abs(row["processing_rate_per_s"] - want) <= 0.05 * want + 1, (row, want)
                    checked["rates"] += int(want > 0)
                previous[key] = (ts, row["position"])
    # the backlog was behind at first, then caught up
    assert input_lags and max(input_lags) > 0 and input_lags[-1] == 0, input_lags
    assert sum(1 for x in input_lags if x > 0) >= 3, input_lags  # behind for a while
    assert checked["end_exact"] > 50 and checked["end_bracketed"] > 20, checked
    assert checked["committed_bracketed"] > 50 and checked["process"] >= 5, checked
    assert checked["rates"] >= 8, checked  # positions from the Faust sensor, moving while behind
    print(
        f"\nhealth: {sent} backlog events, {len(reports)} reports in {elapsed:.1f} s; input lag per report "
        f"{input_lags}; rss report/psutil {min(rss_ratios):.3f}..{max(rss_ratios):.3f}; checked {checked}; "
        f"loop lag max {max((r['event_loop']['lag_max_s'] or 0) for _, r in reports):.3f} s"
    )
