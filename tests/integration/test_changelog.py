"""ChangelogWriter against the real broker: the commit barrier waits for exactly what it must.

The table here is a stand-in with the two things the writer touches (a store mapping and the changelog
topic's name); what lands on the topic is read back with an independent consumer.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from modelmon.changelog import ChangelogError, ChangelogWriter
from modelmon.kafka_clients import admin_client, consumer

pytestmark = pytest.mark.integration


def _table(topic: str) -> SimpleNamespace:
    return SimpleNamespace(data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: topic))


def _create(settings, topic: str, partitions: int) -> None:
    admin = admin_client(settings)  # kept referenced until the futures resolve
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    for fut in futures.values():
        fut.result(30)


def _read_all(settings, topic: str, partitions: int) -> dict[int, list[tuple[bytes, bytes | None]]]:
    cons = consumer(settings, group_id=f"read-{time.time_ns()}")
    cons.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    ends = {p: cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    out: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 30
    while any(len(out[p]) < ends[p] for p in out) and time.monotonic() < deadline:
        for msg in cons.consume(1000, timeout=1.0):
            if msg.error() is None:
                out[msg.partition()].append((msg.key(), msg.value()))
    cons.close()
    return out


def test_wait_returns_once_the_barrier_records_are_on_the_broker(settings):
    topic = f"{settings.topic_prefix}cl"
    _create(settings, topic, 3)
    table = _table(topic)
    writer = ChangelogWriter(settings)
    expected: dict[int, list[tuple[bytes, bytes | None]]] = {0: [], 1: [], 2: []}
    for i in range(3000):
        key, value = f"k{i % 700}".encode(), (None if i % 11 == 0 else f"v{i}".encode())
        writer.put(table, key, value, i % 3)
        expected[i % 3].append((key, value))
    barrier = writer.barrier()
    assert barrier == {(topic, 0): 1000, (topic, 1): 1000, (topic, 2): 1000}
    acked = writer.wait(barrier)

    # Everything counted by the barrier is on the broker, in order, deletes as tombstones.
    assert _read_all(settings, topic, 3) == expected
    assert acked == {(topic, p): 999 for p in range(3)}
    # The local store reflects the last write of each key (a None value deletes it).
    last: dict[bytes, bytes | None] = {}
    for i in range(3000):
        last[f"k{i % 700}".encode()] = None if i % 11 == 0 else f"v{i}".encode()
    assert table.data == {k: v for k, v in last.items() if v is not None}


def test_a_refused_record_fails_the_wait(settings):
    topic = f"{settings.topic_prefix}cl1"
    _create(settings, topic, 1)
    writer = ChangelogWriter(settings)
    writer.put(_table(topic), b"k", b"v", 5)  # partition 5 does not exist
    with pytest.raises(ChangelogError, match=rf"{topic}\[5\]"):
        writer.wait(writer.barrier(), timeout_s=20)
