"""Topic names, idempotent creation, and the co-partitioning check (design rule 1)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from .errors import ModelmonError
from .kafka_clients import admin_client, cluster_metadata
from .settings import Settings

INPUT_TOPICS = ("predictions", "ground-truth")
OUTPUT_TOPICS = ("model-metrics", "alerts", "dead-letter", "monitor-health", "model-feedback")
ALL_TOPICS = INPUT_TOPICS + OUTPUT_TOPICS


class TopicError(ModelmonError):
    """A topic is missing or misconfigured; the message says which and how."""


class CoPartitionError(TopicError):
    """predictions and ground-truth have different partition counts."""


def topic_name(settings: Settings, base: str) -> str:
    """The full topic name for a base name such as 'predictions' (prefix applied)."""
    if base not in ALL_TOPICS:
        raise ValueError(f"unknown topic {base!r}; expected one of {', '.join(ALL_TOPICS)}")
    return f"{settings.topic_prefix}{base}"


@dataclass(frozen=True)
class TopicResult:
    name: str
    partitions: int
    created: bool


def _partitions_for(settings: Settings, base: str) -> int:
    return settings.input_partitions if base in INPUT_TOPICS else settings.output_partitions


def model_partition(model: str, partitions: int) -> int:
    """The partition of a model-keyed record: Kafka's default partitioner (murmur2) on the model name."""
    return (murmur2(model.encode()) & 0x7FFFFFFF) % partitions


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[TopicResult]:
    """Create every modelmon topic that does not exist yet; leave existing ones alone.

    Then check co-partitioning of the inputs, so a pre-existing mismatch is reported at once.
    """
    admin = admin_client(settings)
    existing = describe_partitions(settings, timeout_s)
    wanted = []
    for base in ALL_TOPICS:
        name = topic_name(settings, base)
        if name not in existing:
            config = {"retention.ms": str(7 * 24 * 3600 * 1000)}
            if base == "dead-letter":
                config["retention.ms"] = str(30 * 24 * 3600 * 1000)
            wanted.append(
                NewTopic(name, _partitions_for(settings, base), settings.replication_factor, config=config)
            )
    created: set[str] = set()
    if wanted:
        futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, fut in futures.items():
            try:
                fut.result()
                created.add(name)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"could not create topic {name}: {err.str()}") from None
    counts = wait_for_topics(settings, [topic_name(settings, b) for b in ALL_TOPICS], timeout_s)
    check_copartitioned(settings, counts)
    return [
        TopicResult(
            topic_name(settings, b),
            counts.get(topic_name(settings, b), 0),
            topic_name(settings, b) in created,
        )
        for b in ALL_TOPICS
    ]


def describe_partitions(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Partition count of every topic in the cluster (KafkaAuthError at once if the login is refused)."""
    meta = cluster_metadata(settings, admin_client(settings), timeout_s)
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


def wait_for_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Wait until metadata shows every named topic (creation is acknowledged before it propagates)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = describe_partitions(settings, timeout_s)
        missing = [n for n in names if counts.get(n, 0) == 0]
        if not missing:
            return counts
        if time.monotonic() > deadline:
            raise TopicError(
                f"topic(s) {', '.join(missing)} did not appear in the cluster metadata in {timeout_s:g} s"
            )
        time.sleep(0.1)


def check_copartitioned(settings: Settings, counts: dict[str, int] | None = None) -> int:
    """Return the shared partition count of the inputs or raise a clear error (design rule 1)."""
    counts = describe_partitions(settings) if counts is None else counts
    pred, truth = topic_name(settings, "predictions"), topic_name(settings, "ground-truth")
    missing = [t for t in (pred, truth) if t not in counts]
    if missing:
        raise TopicError(f"missing input topic(s) {', '.join(missing)}: run `modelmon topics create` first")
    if counts[pred] != counts[truth]:
        raise CoPartitionError(
            f"{pred} has {counts[pred]} partitions but {truth} has {counts[truth]}: the inputs must be "
            "co-partitioned (same partition count, keyed by request_id) for the join to be correct"
        )
    return counts[pred]


def ensure_internal_topics(
    settings: Settings, names_partitions: dict[str, int], timeout_s: float = 30.0
) -> None:
    """Create the worker's internal topics (ticks, partials) with the partition counts the design needs."""
    existing = describe_partitions(settings, timeout_s)
    wanted = []
    for name, partitions in names_partitions.items():
        if name in existing:
            if existing[name] != partitions:
                raise TopicError(
                    f"internal topic {name} has {existing[name]} partitions, expected {partitions}: "
                    "delete it (it holds no user data) or restore the previous partition settings"
                )
            continue
        config = {"retention.ms": str(24 * 3600 * 1000)}
        wanted.append(NewTopic(name, partitions, settings.replication_factor, config=config))
    if not wanted:
        return
    admin = admin_client(settings)  # must outlive the futures
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"could not create topic {name}: {exc.args[0].str()}") from None
    wait_for_topics(settings, list(names_partitions), timeout_s)
