"""Stage 1's read-back of records the consumer skipped, against the real broker (see Worker._read_skipped).

The kill -9 tests exercise it when faust-streaming drops records after a rebalance (it cannot be provoked
on purpose); here the reading itself is checked: exactly the records of the range, with their keys,
values, offsets and timestamps, and an error rather than a short answer when the range cannot be read.
"""

from __future__ import annotations

import orjson
import pytest

from modelmon.client import MonitorClient
from modelmon.topics import create_topics, topic_name
from modelmon.worker import Worker

from .streamcheck import read_inputs

pytestmark = pytest.mark.integration


def test_the_skipped_range_is_read_back_exactly(settings) -> None:
    create_topics(settings)
    with MonitorClient(settings) as mon:
        for i in range(200):
            rid = f"rb-{i}"
            payload = {"request_id": rid, "model": "m", "prediction": "a", "ts": 1_767_571_200.0 + i}
            mon.send_raw("predictions", rid.encode(), orjson.dumps(payload))
    records = [r for r in read_inputs(settings) if r.topic.endswith("predictions")]
    partition = max({r.partition for r in records}, key=lambda p: sum(r.partition == p for r in records))
    mine = sorted((r for r in records if r.partition == partition), key=lambda r: r.offset)
    assert len(mine) >= 10
    worker = Worker(settings, settings.input_partitions)
    topic = topic_name(settings, "predictions")
    first, end = mine[2].offset, mine[-3].offset
    got = worker._fetch_range(topic, partition, first, end)
    want = [r for r in mine if first <= r.offset < end]
    assert [(g.offset, g.key, g.value, g.timestamp) for g in got] == [
        (r.offset, r.key, r.value, r.timestamp) for r in want
    ]
    assert all(g.topic == topic and g.partition == partition for g in got)
    assert worker._fetch_range(topic, partition, first, first) == []
    with pytest.raises(TimeoutError):  # the partition ends before the range does: not a short answer
        worker._fetch_range(topic, partition, mine[-1].offset, mine[-1].offset + 5, timeout_s=3.0)
