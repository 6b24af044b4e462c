"""Builders for confluent-kafka clients that share one configuration and a quiet logger.

librdkafka prints every failed connection attempt to stderr; routing its log through Python logging
keeps CLI output readable while the messages stay available at DEBUG level.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from .errors import ModelmonError
from .settings import Settings

_RDKAFKA_LOG = logging.getLogger("modelmon.rdkafka")


class KafkaUnavailable(ModelmonError):
    """The configured Kafka cluster did not answer in time."""


def _base(settings: Settings, extra: dict[str, Any] | None) -> dict[str, Any]:
    conf: dict[str, Any] = dict(settings.kafka_client_config())
    conf["logger"] = _RDKAFKA_LOG
    if extra:
        conf.update(extra)
    return conf


def admin_client(settings: Settings, **extra: Any) -> AdminClient:
    return AdminClient(_base(settings, extra))


def producer(settings: Settings, **extra: Any) -> Producer:
    """An idempotent producer partitioning like Java and aiokafka clients (murmur2) — design rule 1."""
    conf = {
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    conf.update(extra)
    return Producer(_base(settings, conf))


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    conf = {"group.id": group_id, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    conf.update(extra)
    return Consumer(_base(settings, conf))


def wait_for_cluster(settings: Settings, timeout_s: float) -> dict[int, str]:
    """Block until a metadata request answers; return {broker id: host:port}. Raise KafkaUnavailable."""
    import time

    deadline = time.monotonic() + timeout_s
    client = admin_client(settings)
    last_error = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaUnavailable(
                f"Kafka at {settings.bootstrap} did not answer a metadata request within {timeout_s:g} s "
                f"({last_error})"
            )
        try:
            meta = client.list_topics(timeout=min(2.0, max(remaining, 0.1)))
            if meta.brokers:
                return {b.id: f"{b.host}:{b.port}" for b in meta.brokers.values()}
        except KafkaException as exc:
            last_error = str(exc.args[0].str() if exc.args else exc)
        time.sleep(0.2)
