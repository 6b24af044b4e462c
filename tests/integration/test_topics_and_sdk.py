"""Topics, the co-partitioning check and the producer SDK against the real broker.

The SDK's records are read back with a different client (aiokafka), and each key's partition is compared
with the choice of Kafka's own Java client (org.apache.kafka.common.utils.Utils.murmur2, run with `java`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka.admin import NewTopic

from modelmon.client import DeliveryError, MonitorClient
from modelmon.kafka_clients import admin_client
from modelmon.schemas import validate_prediction
from modelmon.topics import (
    ALL_TOPICS,
    CoPartitionError,
    check_copartitioned,
    create_topics,
    topic_name,
    wait_for_topics,
)
from tests.conftest import env_for

pytestmark = pytest.mark.integration

JAVA_PARTITIONER = """
import org.apache.kafka.common.utils.Utils;
public class JavaPartition {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        java.io.BufferedReader in = new java.io.BufferedReader(
            new java.io.InputStreamReader(System.in, "UTF-8"));
        String line;
        while ((line = in.readLine()) != null) {
            byte[] key = line.getBytes("UTF-8");
            System.out.println(Utils.toPositive(Utils.murmur2(key)) % n);
        }
    }
}
"""


def java_partitions(settings, keys: list[str], partitions: int, tmp_path: Path) -> list[int]:
    """Partitions Kafka's Java producer picks for keys (DefaultPartitioner / BuiltInPartitioner)."""
    src = tmp_path / "JavaPartition.java"
    src.write_text(JAVA_PARTITIONER)
    out = subprocess.run(
        [shutil.which("java"), "-cp", f"{settings.jars_dir}/*", str(src), str(partitions)],
        input="\n".join(keys) + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [int(x) for x in out.stdout.split()]


def test_create_topics_is_idempotent(settings):
    first = create_topics(settings)
    assert {r.name for r in first} == {topic_name(settings, b) for b in ALL_TOPICS}
    assert all(r.created for r in first)
    by_name = {r.name: r.partitions for r in first}
    assert by_name[topic_name(settings, "predictions")] == 8
    assert by_name[topic_name(settings, "ground-truth")] == 8
    second = create_topics(settings)
    assert not any(r.created for r in second)
    assert check_copartitioned(settings) == 8


def create_inputs(settings, predictions: int, ground_truth: int) -> None:
    """The two input topics with the given partition counts (possibly not co-partitioned)."""
    admin = admin_client(settings)
    names = [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")]
    futures = admin.create_topics([NewTopic(names[0], predictions, 1), NewTopic(names[1], ground_truth, 1)])
    for fut in futures.values():
        fut.result(30)
    wait_for_topics(settings, names)


def test_copartition_mismatch_is_refused(settings):
    create_inputs(settings, 8, 4)
    with pytest.raises(CoPartitionError) as info:
        check_copartitioned(settings)
    message = str(info.value)
    assert "8 partitions" in message and "has 4" in message
    cli = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "topics", "check"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1
    assert "co-partitioned" in cli.stderr and cli.stderr.strip().count("\n") == 0


async def _read_back(settings, topics: list[str], expected: int) -> list:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records = []
    try:
        while len(records) < expected:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=30)
            for msgs in batch.values():
                records.extend(msgs)
    finally:
        await consumer.stop()
    return records


def test_sdk_round_trip_and_java_partitioning(settings, tmp_path):
    create_topics(settings)
    sent = {}
    with MonitorClient(settings) as mon:
        for i in range(300):
            rid = f"req-{i}-é"
            mon.log_prediction(
                rid,
                "fraud",
                "fraud" if i % 3 else "ok",
                model_version="2",
                ts=1.7e9 + i,
                scores={"fraud": 0.7, "ok": 0.3},
                latency_ms=12.5,
                features={"amount": i, "country": "de"},
                segment={"device": "ios"},
            )
            mon.log_ground_truth(rid, "ok", ts="2026-11-27T10:00:00Z", model="fraud")
            sent[rid] = i
    assert mon.delivered == 600 and mon.failed == 0
    records = asyncio.run(
        _read_back(settings, [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")], 600)
    )
    assert len(records) == 600
    preds = {r.key.decode(): r for r in records if r.topic.endswith("predictions")}
    labels = {r.key.decode(): r for r in records if r.topic.endswith("ground-truth")}
    assert set(preds) == set(labels) == set(sent)
    for rid, record in preds.items():
        body = orjson.loads(record.value)
        assert body["request_id"] == rid and body["model"] == "fraud" and body["ts"] == 1.7e9 + sent[rid]
        assert labels[rid].partition == record.partition  # co-partitioned by request_id
    keys = sorted(preds)
    java = java_partitions(settings, keys, 8, tmp_path)
    assert [preds[k].partition for k in keys] == java


def test_sdk_rejects_bad_events_naming_the_field(settings):
    mon = MonitorClient(settings)
    with pytest.raises(ValueError, match="latency_ms"):
        mon.log_prediction("r1", "fraud", "ok", latency_ms=-1)
    with pytest.raises(ValueError, match="model"):
        mon.log_prediction("r1", "bad model!", "ok")
    with pytest.raises(ValueError, match="MODELMON_MAX_PAYLOAD_BYTES"):
        mon.log_prediction("r1", "fraud", "ok", features={f"f{i}": "x" * 1000 for i in range(100)})
    assert len(mon) == 0


def test_sdk_surfaces_delivery_failures(settings):
    # No topics exist under this prefix and the broker does not auto-create them.
    errors = []
    mon = MonitorClient(
        settings,
        producer_config={"message.timeout.ms": 3000},
        on_delivery_error=lambda text, key: errors.append((text, key)),
    )
    mon.log_prediction("lost-1", "fraud", "ok")
    with pytest.raises(DeliveryError, match="1 event"):
        mon.flush(20)
    assert mon.failed == 1 and errors and errors[0][1] == b"lost-1"
    mon.flush(5)  # reported once


def test_simulated_events_are_readable_with_kcat(settings):
    """`modelmon simulate` output read back by an independent client (Debian's kcat)."""
    create_topics(settings)
    sim = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelmon.cli",
            "simulate",
            "--count",
            "300",
            "--no-realtime",
            "--seed",
            "5",
            "--quiet",
            "--invalid-fraction",
            "0",
        ],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sim.returncode == 0, sim.stderr
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by `make test` (make system-deps)"
    out = subprocess.run(
        [
            kcat,
            "-b",
            settings.bootstrap,
            "-C",
            "-t",
            topic_name(settings, "predictions"),
            "-e",
            "-q",
            "-f",
            "%k\t%s\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line for line in out.stdout.splitlines() if line]
    assert len(lines) >= 300
    for line in lines:
        key, value = line.split("\t", 1)
        event = validate_prediction(orjson.loads(value))
        assert event.request_id == key


def test_worker_refuses_topics_that_are_not_copartitioned(settings):
    create_inputs(settings, 6, 3)
    out = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "worker"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "6 partitions" in out.stderr and "has 3" in out.stderr
