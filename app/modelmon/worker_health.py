"""The worker's health report: gathered every MODELMON_HEALTH_INTERVAL_S, published to monitor-health.

Plumbing only: the figures come from :mod:`modelmon.health` (pure) and from the worker's own state.
:class:`WorkerHealth` is created by the Worker; its :meth:`~WorkerHealth.publish` runs on a Faust
timer and :attr:`~WorkerHealth.loop_lag` runs as an app task. Each report (schemas/
monitor-health.schema.json) goes to the ``monitor-health`` topic with key = worker_id, and the latest
one is kept for ``/api/v1/health`` and ``/metrics``.

Consumer lag covers every partition of predictions, ground-truth, the internal ticks and partials
topics assigned to this worker. The worker's position per partition (the next offset it will process)
comes from a Faust sensor called when a stream finishes an event; the log end offsets and the group's
committed offsets come from a confluent-kafka AdminClient in an executor thread, so the event loop
never waits on the broker. A failed admin call gives null offsets and lag (and the reason in
``consumer_lag.error``), never a missing report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import faust
import orjson

from . import rollup
from .health import LagTracker, LoopLagMonitor, OffsetReading, ResourceSampler
from .topics import topic_name

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("modelmon.health")

LOOP_PROBE_INTERVAL_S = 0.1
"""How often the event-loop lag probe wakes up."""
ADMIN_TIMEOUT_S = 5.0
"""Timeout of each admin request (end offsets, committed offsets)."""


def _reason(exc: BaseException) -> str:
    """A one-line reason for a failed admin request (a KafkaException carries a KafkaError)."""
    err = exc.args[0] if exc.args else None
    if hasattr(err, "name") and hasattr(err, "str"):
        return f"{err.name()}: {err.str()}"
    return f"{type(exc).__name__}: {exc}"


class PositionSensor(faust.Sensor):
    """Faust sensor: per topic partition, the offset after the last event a stream finished processing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions: dict[tuple[str, int], int] = {}

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict | None = None
    ) -> None:
        self.positions[tp] = offset + 1  # tp is a faust TP, a (topic, partition) named tuple

    def forget(self) -> None:
        """Forget every position (after a rebalance: a partition may come back where another left it)."""
        self.positions = {}


class WorkerHealth:
    """Builds and publishes this worker's health reports; keeps the latest for the web side."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.s = worker.s
        app = worker.app
        self.sampler = ResourceSampler()
        self.loop_lag = LoopLagMonitor(LOOP_PROBE_INTERVAL_S)
        self.lag = LagTracker()
        self.sensor = PositionSensor()
        app.sensors.add(self.sensor)
        app.on_partitions_revoked.connect(self._on_revoked)
        self.topic = app.topic(
            topic_name(self.s, "monitor-health"), key_serializer="raw", value_serializer="raw"
        )
        self.latest: dict[str, Any] | None = None  # the last report built
        self.published = 0  # reports the broker acknowledged
        self.failed = 0  # reports whose send failed
        self.published_at: float | None = None  # wall time of the last acknowledged report

    async def _on_revoked(self, *args: Any, **kwargs: Any) -> None:
        self.sensor.forget()

    # -- the report ---------------------------------------------------------------------------------

    def _consumed_partitions(self) -> list[tuple[str, int]]:
        w = self.w
        topics = {w.pred_name, w.gt_name, w.ticks_name, w.partials.get_topic_name()}
        try:
            assigned = w.app.consumer.assignment()
        except Exception:  # the consumer is not started yet: nothing is assigned
            return []
        return sorted({(tp.topic, tp.partition) for tp in assigned if tp.topic in topics})

    def _read_offsets(
        self, tps: list[tuple[str, int]]
    ) -> tuple[dict[str, dict[tuple[str, int], int]], str | None]:
        """({"end": end offsets, "start": log start offsets, "committed": the group's committed offsets},
        error) via the admin API; runs in an executor thread.

        A partition whose offset could not be read is left out (its fields become null), and the first
        problem is returned as ``error``.
        """
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        admin = self.w.admin()
        errors: list[str] = []
        out: dict[str, dict[tuple[str, int], int]] = {"end": {}, "start": {}, "committed": {}}
        for name, spec in (("end", OffsetSpec.latest()), ("start", OffsetSpec.earliest())):
            request = {TopicPartition(t, p): spec for t, p in tps}
            try:
                futures = admin.list_offsets(request, request_timeout=ADMIN_TIMEOUT_S)
                for tp, fut in futures.items():
                    try:
                        out[name][(tp.topic, tp.partition)] = fut.result(ADMIN_TIMEOUT_S).offset
                    except Exception as exc:
                        errors.append(f"{name} offset of {tp.topic}-{tp.partition}: {_reason(exc)}")
            except Exception as exc:
                errors.append(f"{name} offsets: {_reason(exc)}")
            if errors and not out[name]:
                return out, errors[0]  # the cluster does not answer: do not wait for every request
        committed = out["committed"]
        try:  # not the admin API's group offsets: they can abort the process (Worker.committed_offsets)
            for key, offset in self.w.committed_offsets(tps, ADMIN_TIMEOUT_S).items():
                if offset >= 0:  # negative: nothing committed yet
                    committed[key] = offset
        except Exception as exc:
            errors.append(f"committed offsets: {_reason(exc)}")
        return out, errors[0] if errors else None

    def _tables(self) -> dict[str, int | None]:
        w = self.w
        stage1 = None if w.stale else list(w.parts.values())
        stage2 = (
            None
            if w.stage2_stale
            else [fin for index in w.window_index.values() for _, fin in index.values()]
        )
        return {
            "pending_joins": None if stage1 is None else sum(state.pending for state in stage1),
            "stage1_open_windows": None if stage1 is None else sum(len(state.accs) for state in stage1),
            "stage2_open_windows": None if stage2 is None else stage2.count(False),
            "stage2_final_windows": None if stage2 is None else stage2.count(True),
            "alert_states": sum(len(index) for index in w.alert_index.values()),
        }

    async def build(self) -> dict[str, Any]:
        """One report (schemas/monitor-health.schema.json); ``ts`` is taken before any figure is read."""
        ts = time.time()
        at = time.monotonic()
        tps = self._consumed_partitions()
        positions = dict(self.sensor.positions)  # before the end offsets: position <= end offset
        error = None
        offsets: dict[str, dict[tuple[str, int], int]] = {"end": {}, "start": {}, "committed": {}}
        if tps:
            loop = asyncio.get_running_loop()
            try:
                offsets, error = await loop.run_in_executor(None, self._read_offsets, tps)
            except Exception as exc:  # e.g. the admin client could not be created
                error = _reason(exc)
        if error:
            log.warning("health: offsets not (all) read: %s", error)
        end, start, committed = offsets["end"], offsets["start"], offsets["committed"]
        readings = [
            OffsetReading(
                t, p, end.get((t, p)), committed.get((t, p)), positions.get((t, p)), start.get((t, p))
            )
            for t, p in tps
        ]
        sample = self.sampler.sample()
        return {
            "worker_id": self.s.worker_id,
            "ts": rollup.rfc3339(ts),
            "interval_s": self.s.health_interval_s,
            "process": sample["process"],
            "host": sample["host"],
            "network": sample["network"],
            "event_loop": self.loop_lag.report(),
            "consumer_lag": self.lag.update(readings, at, error),
            "tables": self._tables(),
        }

    # -- publishing ----------------------------------------------------------------------------------

    async def publish(self) -> None:
        """The timer: build a report, keep it as the latest, send it (key = worker_id) without waiting."""
        try:
            report = await self.build()
        except Exception:
            log.exception("health: building the report failed")
            return
        self.latest = report
        try:
            fut = await self.topic.send(key=self.s.worker_id.encode(), value=orjson.dumps(report))
        except Exception as exc:
            self.failed += 1
            log.warning("health: sending the report failed: %s", exc)
            return
        fut.add_done_callback(self._delivered)

    def _delivered(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1
            log.warning(
                "health: the report was not delivered: %s",
                "cancelled" if fut.cancelled() else fut.exception(),
            )
            return
        self.published += 1
        self.published_at = time.time()

    def publisher_state(self) -> dict[str, Any]:
        """For /metrics: the report interval, reports delivered and failed, when the last was delivered."""
        return {
            "interval_s": self.s.health_interval_s,
            "published": self.published,
            "failed": self.failed,
            "published_at": self.published_at,
        }
