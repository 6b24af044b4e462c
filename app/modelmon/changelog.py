"""Table writes whose changelog records go out through librdkafka instead of Faust's producer path.

A Faust table write costs a Python future, a trip through Faust's producer buffer and aiokafka's sender
per record; profiled, that was the largest single cost of the worker after Faust's own event delivery.
The tables stay Faust tables (local store, changelog topic, recovery on rebalance and restart): this
module only writes the local store and produces the changelog record with a confluent-kafka producer,
which batches in C.

Durability contract, the same as Faust's: before the worker commits an input offset, every changelog
record written while processing it is acknowledged by the broker (:meth:`ChangelogWriter.barrier` and
:meth:`ChangelogWriter.wait`, called from the commit barrier and before partitions are revoked). Then
the store's persisted changelog offsets are advanced, so a restart with the rocksdb store only replays
what came later.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from faust.types import TP

from .kafka_clients import producer
from .settings import Settings

DELIVERY_TIMEOUT_S = 300.0
"""librdkafka's message.timeout.ms for changelog records (its default, stated): a record not acknowledged
by then fails, and the worker restarts (the table is no longer known to be durable)."""


class ChangelogError(RuntimeError):
    """The broker refused a changelog record: the table is no longer durable, so the worker must stop."""


class ChangelogWriter:
    """Writes Faust table keys and produces their changelog records with one idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        # Idempotent and acks=all: records of one changelog partition land once and in order.
        self._producer = producer(
            settings,
            **{
                "linger.ms": 10,
                "batch.num.messages": 10000,
                "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
            },
        )
        self._lock = threading.Lock()
        self._produced: dict[tuple[str, int], int] = {}  # changelog (topic, partition) -> records queued
        self._delivered: dict[tuple[str, int], int] = {}  # ... -> records acknowledged (in order)
        self._acked: dict[tuple[str, int], int] = {}  # ... -> highest acknowledged offset
        self._error: str | None = None
        self._unpolled = 0

    def put(self, table: Any, key: bytes, value: bytes | None, partition: int) -> None:
        """Set (or delete, value None) ``key`` in ``table``'s store and queue its changelog record."""
        store = table.data
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
        self.send(table.changelog_topic.get_topic_name(), key, value, partition)

    def send(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        """Queue a record for any topic on this producer, so the commit barrier waits for it as well.

        Stage 1's model-feedback records go this way: at least once like the table writes, and a
        librdkafka produce instead of a Faust send (about a tenth of the cost per record).
        """
        self._producer.produce(topic, value, key, partition=partition, on_delivery=self._on_delivery)
        tp = (topic, partition)
        self._produced[tp] = self._produced.get(tp, 0) + 1
        self._unpolled += 1
        if self._unpolled >= 1000:  # serve delivery reports; never blocks
            self._unpolled = 0
            self._producer.poll(0)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        tp = (msg.topic(), msg.partition())
        with self._lock:
            if err is not None:
                self._error = f"changelog record to {tp[0]}[{tp[1]}] failed: {err}"
                return
            self._delivered[tp] = self._delivered.get(tp, 0) + 1
            if msg.offset() > self._acked.get(tp, -1):
                self._acked[tp] = msg.offset()

    def barrier(self) -> dict[tuple[str, int], int]:
        """What must be acknowledged before the next commit: the records queued so far, per partition.

        Taken on the event loop thread (the only one that produces), then handed to :meth:`wait`.
        """
        return dict(self._produced)

    def wait(
        self, barrier: dict[tuple[str, int], int], timeout_s: float = DELIVERY_TIMEOUT_S + 30.0
    ) -> dict[tuple[str, int], int]:
        """Block until every record counted in ``barrier`` is acknowledged; return the highest offsets acked.

        Records of one partition are acknowledged in order, so a delivered count at or past the barrier's
        means all of them landed; records queued after the barrier are not waited for (a flush would,
        and under steady input it would never finish). Raises ChangelogError when a record failed or the
        wait timed out: the caller must not commit. The wait outlasts the records' delivery timeout, so a
        broker outage shorter than that delays the commit instead of restarting the worker; longer, the
        records fail and the worker restarts.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                error = self._error
                behind = sum(1 for tp, n in barrier.items() if self._delivered.get(tp, 0) < n)
                acked = dict(self._acked)
            if error is not None:
                raise ChangelogError(error)
            if not behind:
                return acked
            if time.monotonic() >= deadline:
                raise ChangelogError(
                    f"changelog records of {behind} partition(s) unacknowledged after {timeout_s:g} s"
                )
            self._producer.poll(0.005)

    @staticmethod
    def persist_offsets(tables: list[Any], acked: dict[tuple[str, int], int], active: set[TP]) -> None:
        """Record in each table's store how far its changelog is reflected locally (owned partitions only).

        A partition revoked meanwhile is skipped: its next owner restores from the changelog anyway.
        """
        for table in tables:
            topic = table.changelog_topic.get_topic_name()
            for (name, partition), offset in acked.items():
                tp = TP(topic, partition)
                if name == topic and tp in active:
                    table.data.set_persisted_offset(tp, offset)
