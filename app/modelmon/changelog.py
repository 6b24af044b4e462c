"""Table writes whose changelog records go out through librdkafka instead of Faust's producer path.

A Faust table write costs a Python future, a trip through Faust's producer buffer and aiokafka's sender
per record; profiled, that was the largest single cost of the worker after Faust's own event delivery.
The tables stay Faust tables (local store, changelog topic, recovery on rebalance and restart): this
module only writes the local store and produces the changelog record with a confluent-kafka producer,
which batches in C.

Durability contract, the same as Faust's: before the worker commits an input offset, every changelog
record written while processing it is acknowledged by the broker (:meth:`ChangelogWriter.flush`, called
from the commit barrier and before partitions are revoked). After that flush the store's persisted
changelog offsets are advanced, so a restart with the rocksdb store only replays what came later.
"""

from __future__ import annotations

import threading
from typing import Any

from faust.types import TP

from .kafka_clients import producer
from .settings import Settings


class ChangelogError(RuntimeError):
    """The broker refused a changelog record: the table is no longer durable, so the worker must stop."""


class ChangelogWriter:
    """Writes Faust table keys and produces their changelog records with one idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        # Idempotent and acks=all: records of one changelog partition land once and in order.
        self._producer = producer(settings, **{"linger.ms": 10, "batch.num.messages": 10000})
        self._lock = threading.Lock()
        self._acked: dict[tuple[str, int], int] = {}  # changelog (topic, partition) -> highest acked offset
        self._error: str | None = None
        self._unpolled = 0

    def put(self, table: Any, key: bytes, value: bytes | None, partition: int) -> None:
        """Set (or delete, value None) ``key`` in ``table``'s store and queue its changelog record."""
        store = table.data
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
        self._producer.produce(
            table.changelog_topic.get_topic_name(),
            value,
            key,
            partition=partition,
            on_delivery=self._on_delivery,
        )
        self._unpolled += 1
        if self._unpolled >= 1000:  # serve delivery reports; never blocks
            self._unpolled = 0
            self._producer.poll(0)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._error = f"changelog record to {msg.topic()}[{msg.partition()}] failed: {err}"
            return
        key = (msg.topic(), msg.partition())
        with self._lock:
            if msg.offset() > self._acked.get(key, -1):
                self._acked[key] = msg.offset()

    def flush(self, timeout_s: float = 60.0) -> dict[tuple[str, int], int]:
        """Block until every queued record is acknowledged; return and forget the highest offsets acked.

        Raises ChangelogError when a record failed or the flush timed out: the caller must not commit.
        """
        remaining = self._producer.flush(timeout_s)
        if self._error is not None:
            raise ChangelogError(self._error)
        if remaining:
            raise ChangelogError(
                f"{remaining} changelog record(s) still unacknowledged after {timeout_s:g} s"
            )
        with self._lock:
            acked, self._acked = self._acked, {}
        return acked

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
