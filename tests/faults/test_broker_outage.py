"""Broker outages under load (issue 8): the broker goes away for longer than the client timeouts, twice,
and comes back on the same data directory; the worker carries on by itself and the SDK loses nothing.

The test runs a broker of its own (own MODELMON_HOME under tmp_path, ports 19720-19729), so stopping it
cannot disturb the session broker other tests use. One outage is a clean stop (SIGTERM, the broker
writes its clean-shutdown marker), the other a kill -9 (log recovery on start). Each lasts OUTAGE_S,
longer than the consumer session timeout, the worker's watchdog stall time and first-start wait,
librdkafka's socket timeout and the SDK's queue and flush timeouts (docs/operations.md, "Broker
outage"). One worker process (rocksdb store) runs throughout: the test never restarts it; its PID must
stay the same and it must still be running at the end. A watchdog restart would keep the PID (os.execv),
so the log must also show none: the watchdog holds off while the broker is away. Model servers are a
thread sending the stream-core stream through one MonitorClient at a steady rate, through both outages.

Checked afterwards: the final metric events, dead letters and feedback records equal the offline
oracle (test_stream_core._verify); every event the SDK accepted is on its input topic exactly once; and
a second client with a short delivery timeout reports, during the outage, what it could not deliver
(queue full, flush, delivery callbacks), and nothing it reported lost reaches its topic.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException, TopicPartition

from modelmon.broker import LocalBroker
from modelmon.client import DeliveryError, MonitorClient
from modelmon.kafka_clients import consumer
from modelmon.settings import Settings
from modelmon.topics import create_topics, topic_name
from tests.integration.streamcheck import (
    WorkerProcess,
    closers,
    make_stream,
    produce,
    read_inputs,
    read_topic,
    stream_settings,
)
from tests.integration.test_stream_core import _verify

pytestmark = pytest.mark.integration

OUTAGE_S = 65.0
"""Each outage: above the session timeout (6 s here, 30 s by default), the watchdog's stall time (20 s
here), the worker's 30 s first-start wait, librdkafka's socket.timeout.ms (60 s) and the SDK's 30 s
queue and flush timeouts; below message.timeout.ms (300 s: the SDK's events and the worker's changelog
records), so the load client must lose nothing and the worker need not restart."""
LEAD_S = 10.0  # load before the first outage
BETWEEN_S = 30.0  # load between the outages (the worker catches up on the first one's backlog)
PROBE_TIMEOUT_MS = 8000  # the probe client's message.timeout.ms: shorter than the outage
PROBE_QUEUE = 40  # the probe client's queue.buffering.max.messages


def _free_pair() -> tuple[int, int]:
    """A free (broker, controller) port pair in 19720-19729, the range reserved for this test."""
    for port in range(19720, 19730, 2):
        if all(_port_free(p) for p in (port, port + 1)):
            return port, port + 1
    pytest.fail("no free port pair in 19720-19729 for the outage test's broker")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Sender(threading.Thread):
    """Model servers and labellers: one SDK client, a steady rate, through the outages.

    ``accepted`` counts every event the client accepted (send_raw returned); ``rush`` sends the rest at
    once. Errors are kept, never raised in the thread, so the test can report them."""

    def __init__(self, settings: Settings, events: list[tuple[str, Any]], rate: float) -> None:
        super().__init__(name="sdk-sender", daemon=True)
        self.settings = settings
        self.events = events
        self.rate = rate
        self.rush = threading.Event()
        self.accepted: Counter = Counter()
        self.lost: list[str] = []
        self.errors: list[BaseException] = []
        self.sent_during_outage = 0
        self.outage = threading.Event()
        self.client = MonitorClient(settings, on_delivery_error=lambda text, key: self.lost.append(text))

    def run(self) -> None:
        try:
            start = time.monotonic()
            for i, (kind, payload) in enumerate(self.events):
                if not self.rush.is_set():
                    self.rush.wait(max(0.0, start + i / self.rate - time.monotonic()))
                if kind == "raw":
                    base, key, value = payload
                else:
                    base = "predictions" if kind == "p" else "ground-truth"
                    key, value = payload["request_id"].encode(), orjson.dumps(payload)
                self.client.send_raw(base, key, value)
                self.accepted[(topic_name(self.settings, base), key, value)] += 1
                if self.outage.is_set():
                    self.sent_during_outage += 1
            self.client.flush(120.0)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


def _wait_for_lag_zero(settings: Settings, timeout_s: float) -> None:
    """streamcheck.wait_for_lag_zero, with the group's offsets read by a consumer that never joins the
    group: right after a broker restart the admin API's group-offset request can abort the process
    (librdkafka issue 4605; see Worker.committed_offsets)."""
    topics = [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")]
    reader = consumer(settings, group_id=settings.group_id)
    deadline = time.monotonic() + timeout_s
    lag: int | str = "unknown"
    try:
        while time.monotonic() < deadline:
            try:
                meta = reader.list_topics(timeout=10)
                tps = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
                committed = {(tp.topic, tp.partition): tp.offset for tp in reader.committed(tps, timeout=10)}
                lag = sum(
                    reader.get_watermark_offsets(tp, timeout=10)[1]
                    - max(0, committed.get((tp.topic, tp.partition), 0))
                    for tp in tps
                )
                if lag == 0:
                    return
            except KafkaException as exc:  # the coordinator may still be loading after the restart
                lag = f"unknown ({exc})"
            time.sleep(0.5)
    finally:
        reader.close()
    raise AssertionError(f"the worker group did not catch up within {timeout_s} s (lag {lag})")


def _probe_sdk_limits(probe: MonitorClient, probe_settings: Settings) -> dict[str, Any]:
    """While the broker is down: what the SDK does when its queue fills and when delivery times out.

    Returns what it observed; the caller asserts. Takes about PROBE_TIMEOUT_MS plus a few seconds."""
    seen: dict[str, Any] = {}
    delivered_before = probe.delivered
    for i in range(PROBE_QUEUE):
        probe.log_prediction(f"probe-{i}", "probe", "a", ts=time.time())
    seen["queued"] = len(probe)
    try:
        probe.log_prediction("probe-overflow", "probe", "a", ts=time.time())
        seen["overflow"] = None
    except DeliveryError as exc:  # the queue is full and stays full for queue_timeout_s
        seen["overflow"] = exc
    try:
        probe.flush(1.0)
        seen["flush_pending"] = None
    except DeliveryError as exc:  # events still queued
        seen["flush_pending"] = exc
    deadline = time.monotonic() + PROBE_TIMEOUT_MS / 1000 + 20
    while probe.failed < PROBE_QUEUE and time.monotonic() < deadline:
        probe.poll(0.5)  # serves the delivery reports: message.timeout.ms has passed for each
    try:
        probe.flush(5.0)
        seen["flush_failed"] = None
    except DeliveryError as exc:
        seen["flush_failed"] = exc
    seen["failed"], seen["delivered"] = probe.failed, probe.delivered - delivered_before
    try:
        probe.flush(1.0)  # reported once: the next flush has nothing new to say
        seen["flush_again"] = None
    except DeliveryError as exc:
        seen["flush_again"] = exc
    return seen


def _outage(broker: LocalBroker, how: str, sender: Sender, work=None) -> dict[str, Any]:
    """Stop the broker (``term``: LocalBroker.stop, a clean SIGTERM stop; ``kill``: SIGKILL), keep it
    down for OUTAGE_S while the load continues (running ``work`` meanwhile), then start it again on the
    same data directory."""
    pid = broker.pid()
    assert pid is not None
    marker = broker.data_dir / ".kafka_cleanshutdown"
    sender.outage.set()
    down_at = time.monotonic()
    if how == "term":
        assert broker.stop(timeout_s=60.0)
        clean = marker.exists()  # Kafka writes it at the end of a clean shutdown, removes it on start
    else:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while broker.pid() is not None:
            assert time.monotonic() < deadline, "the killed broker did not go away"
            time.sleep(0.05)
        broker.pid_file.unlink(missing_ok=True)
        clean = marker.exists()
    result = work() if work is not None else None
    time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
    down_s = time.monotonic() - down_at
    broker.start()
    sender.outage.clear()
    return {"how": how, "clean_shutdown_marker": clean, "down_s": down_s, "work": result}


@pytest.mark.timeout(480)
def test_broker_outages_under_load_worker_resumes_and_sdk_loses_nothing(tmp_path) -> None:
    if os.environ.get("MODELMON_KAFKA_BOOTSTRAP"):
        pytest.skip("an external cluster is configured: this test must stop and start a broker of its own")
    bport, cport = _free_pair()
    env = {
        "MODELMON_HOME": str(tmp_path),
        "MODELMON_BROKER_PORT": str(bport),
        "MODELMON_CONTROLLER_PORT": str(cport),
    }
    if os.environ.get("MODELMON_CACHE_DIR"):
        env["MODELMON_CACHE_DIR"] = os.environ["MODELMON_CACHE_DIR"]
    base = Settings.from_env(env).with_(topic_prefix="outage.", app_id=f"mm{uuid.uuid4().hex[:8]}")
    s = stream_settings(base, home=str(tmp_path), store="rocksdb")
    broker = LocalBroker(s, log=lambda msg: None)
    broker.start()
    worker = WorkerProcess(s, "outage", tmp_path)
    sender: Sender | None = None
    probe: MonitorClient | None = None
    try:
        create_topics(s)
        probe_settings = s.with_(topic_prefix="probe.")
        create_topics(probe_settings)
        worker.start()
        assert worker.proc is not None
        worker_pid = worker.proc.pid
        stream = make_stream(seed=8, n=2400)
        # As in the crash test: predictions without ts would take Kafka timestamps spread over minutes and
        # move event time past the horizon while earlier labels still wait (a timing dependence, §9).
        for kind, payload in stream.events:
            if kind == "p" and "ts" not in payload:
                payload["ts"] = stream.base + 5.0
        planned = LEAD_S + OUTAGE_S + BETWEEN_S + OUTAGE_S
        sender = Sender(s, stream.events, rate=len(stream.events) / (planned + 20.0))
        probe_lost: list[bytes | None] = []
        probe = MonitorClient(
            probe_settings,
            producer_config={
                "message.timeout.ms": PROBE_TIMEOUT_MS,
                "queue.buffering.max.messages": PROBE_QUEUE,
            },
            queue_timeout_s=1.0,
            on_delivery_error=lambda text, key: probe_lost.append(key),
        )
        probe.log_prediction("probe-before", "probe", "a", ts=time.time())
        probe.flush(30.0)  # connected, with metadata, before the broker goes away
        sender.start()
        time.sleep(LEAD_S)
        term = _outage(broker, "term", sender, work=lambda: _probe_sdk_limits(probe, probe_settings))
        time.sleep(BETWEEN_S)
        kill = _outage(broker, "kill", sender)
        sender.rush.set()
        sender.join(180)
        assert not sender.is_alive(), "the SDK sender did not finish"
        assert not sender.errors, f"the SDK raised: {sender.errors!r}"
        _wait_for_lag_zero(s, timeout_s=180)
        produce(s, [("g", lab) for lab in stream.late_labels])
        _wait_for_lag_zero(s, timeout_s=120)
        produce(s, closers(stream))

        # The worker resumed on its own: same process, still running, every window exact.
        assert worker.proc.poll() is None, worker.log_tail(60)
        assert worker.proc.pid == worker_pid
        _verify(s, stream, [worker], feedback=True)
        log_text = worker.log_path.read_text(errors="replace")
        restarts = log_text.count("restarting")
        assert restarts == 0, "the worker restarted itself during or after an outage"
        assert log_text.count("Kafka answers again") == 2  # the watchdog saw both outages end
        # Two 65 s storms of client retries (about 70 errors a second) are throttled, and say so.
        assert "more like this in the last 30 s]" in log_text
        assert log_text.count("Unable connect to node with id") < 200, "retry errors flooded the log"

        # The SDK lost nothing and sent nothing twice (idempotent producer, buffered through the outage).
        stored = Counter(
            (r.topic, r.key, r.value) for r in read_inputs(s) if not (r.key or b"").startswith(b"closer-")
        )
        sent = sender.accepted + Counter(
            (topic_name(s, "ground-truth"), lab["request_id"].encode(), orjson.dumps(lab))
            for lab in stream.late_labels
        )
        lost, extra = sent - stored, stored - sent
        assert not lost and not extra, f"lost {sum(lost.values())}, duplicated/extra {sum(extra.values())}"
        assert sender.client.failed == 0 and not sender.lost
        assert sender.client.delivered == sum(sender.accepted.values())
        assert sender.sent_during_outage > 0

        # What the SDK reports when an outage outlasts its limits.
        seen = term["work"]
        assert seen["queued"] == PROBE_QUEUE
        assert isinstance(seen["overflow"], DeliveryError), seen
        pending = seen["flush_pending"]
        assert isinstance(pending, DeliveryError) and "still queued" in str(pending), seen
        assert seen["failed"] == PROBE_QUEUE and seen["delivered"] == 0, seen
        assert isinstance(seen["flush_failed"], DeliveryError) and seen["flush_failed"].failed == PROBE_QUEUE
        assert "timed out" in seen["flush_failed"].first_error.lower(), seen["flush_failed"].first_error
        assert seen["flush_again"] is None
        assert sorted(probe_lost) == sorted(f"probe-{i}".encode() for i in range(PROBE_QUEUE))
        # Reported lost means not delivered: only the records sent around the outage are on the topic.
        probe.log_prediction("probe-after", "probe", "a", ts=time.time())
        probe.flush(30.0)  # the same client works again once the broker is back
        probe_ids = sorted(r["request_id"] for r in read_topic(probe_settings, "predictions"))
        assert probe_ids == ["probe-after", "probe-before"]

        assert term["clean_shutdown_marker"] and not kill["clean_shutdown_marker"]
        print(
            f"\noutages: {term['how']} {term['down_s']:.1f} s, {kill['how']} {kill['down_s']:.1f} s; "
            f"events accepted by the SDK {sum(sender.accepted.values())} "
            f"({sender.sent_during_outage} during outages), stored {sum(stored.values())}, "
            f"worker restarts {restarts} (pid {worker_pid} unchanged)"
        )
    finally:
        worker.stop()
        broker.stop()
