"""Producer SDK for model servers and labelling systems.

    from modelmon.client import MonitorClient

    with MonitorClient() as mon:                       # settings from MODELMON_* variables
        mon.log_prediction("req-1", "fraud", "fraud", scores={"fraud": 0.91, "ok": 0.09}, latency_ms=12.5)
        mon.log_ground_truth("req-1", "ok")
    # leaving the block flushes; failed deliveries raise DeliveryError

`log_*` validate the event against schemas/ before sending (ValueError naming the field) and return at
once: sends are asynchronous, batched by librdkafka (idempotent, acks=all). The record key is the
request_id and the partitioner is murmur2, so a key lands on the same partition as with Java or aiokafka
producers — predictions and labels of one request meet in the same join partition.
Delivery failures are never swallowed: they are counted, passed to ``on_delivery_error`` if given, and
raised by the next ``flush()``. Credentials the cluster refuses (MODELMON_KAFKA_SASL_* / _SSL_*) raise
:class:`AuthenticationError` from ``flush()`` and from the next ``log_*`` as soon as the broker says so,
instead of queueing until the delivery timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from . import schemas
from .errors import ModelmonError
from .kafka_clients import auth_error, producer
from .settings import Settings
from .topics import topic_name


class DeliveryError(ModelmonError):
    """One or more events could not be delivered to Kafka."""

    def __init__(self, failed: int, first_error: str) -> None:
        super().__init__(f"{failed} event(s) were not delivered to Kafka; first error: {first_error}")
        self.failed = failed
        self.first_error = first_error


class AuthenticationError(DeliveryError):
    """Kafka refused this client's credentials or TLS handshake; nothing will be delivered until fixed."""

    def __init__(self, queued: int, message: str) -> None:
        super().__init__(queued, message)
        self.args = (message,)

    def __str__(self) -> str:
        return self.first_error


def _event_time(ts: float | int | str | datetime | None) -> float | str | None:
    if ts is None or isinstance(ts, str):
        return ts
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("ts: datetime must be timezone-aware")
        return ts.timestamp()
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise ValueError(
            f"ts: expected epoch seconds, an RFC 3339 string or a datetime, got {type(ts).__name__}"
        )
    return float(ts)


class MonitorClient:
    """Sends prediction and ground-truth events to modelmon's input topics."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        validate: bool = True,
        producer_config: Mapping[str, Any] | None = None,
        on_delivery_error: Callable[[str, bytes | None], None] | None = None,
        queue_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.validate = validate
        self.queue_timeout_s = queue_timeout_s
        self._on_delivery_error = on_delivery_error
        self._producer = producer(self.settings, **dict(producer_config or {}))
        self._predictions = topic_name(self.settings, "predictions")
        self._ground_truth = topic_name(self.settings, "ground-truth")
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self._first_error: str | None = None
        self._unreported = 0

    # -- public API ------------------------------------------------------------------------------

    def log_prediction(
        self,
        request_id: str,
        model: str,
        prediction: Any,
        *,
        model_version: str | None = None,
        ts: float | str | datetime | None = None,
        task: str | None = None,
        scores: Mapping[str, float] | None = None,
        latency_ms: float | None = None,
        features: Mapping[str, Any] | None = None,
        segment: Mapping[str, str] | None = None,
        error: str | None = None,
    ) -> None:
        """Queue one prediction event (key = request_id). Raises ValueError naming a bad field."""
        event: dict[str, Any] = {"request_id": request_id, "model": model, "prediction": prediction}
        optional = {
            "model_version": model_version,
            "ts": _event_time(ts),
            "task": task,
            "scores": dict(scores) if scores is not None else None,
            "latency_ms": latency_ms,
            "features": dict(features) if features is not None else None,
            "segment": dict(segment) if segment is not None else None,
            "error": error,
        }
        event.update({k: v for k, v in optional.items() if v is not None})
        if self.validate:
            schemas.validate_prediction(event)
        self._send(self._predictions, request_id, event)

    def log_ground_truth(
        self,
        request_id: str,
        label: Any,
        *,
        ts: float | str | datetime | None = None,
        model: str | None = None,
    ) -> None:
        """Queue one ground-truth event for an earlier (or later) prediction with the same request_id."""
        event: dict[str, Any] = {"request_id": request_id, "label": label}
        if ts is not None:
            event["ts"] = _event_time(ts)
        if model is not None:
            event["model"] = model
        if self.validate:
            schemas.validate_ground_truth(event)
        self._send(self._ground_truth, request_id, event)

    def send_raw(self, topic_base: str, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are (no validation): for replaying captured traffic and for tests."""
        self._produce(topic_name(self.settings, topic_base), key, value)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued event is delivered; raise DeliveryError if any failed since last time.

        AuthenticationError (a DeliveryError) as soon as the cluster refuses the credentials.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self._producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
            if not remaining or time.monotonic() >= deadline:
                break
            self._raise_if_refused()
        if remaining:
            self._raise_if_refused()
            raise DeliveryError(remaining, f"{remaining} event(s) still queued after {timeout_s:g} s")
        with self._lock:
            failed, first = self._unreported, self._first_error
            self._unreported, self._first_error = 0, None
        if failed:
            raise DeliveryError(failed, first or "unknown error")

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks (called automatically on every send)."""
        self._producer.poll(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)

    def __enter__(self) -> MonitorClient:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the original exception, but still try to deliver what was queued
            self._producer.flush(5.0)

    def __len__(self) -> int:
        """Events queued and not yet delivered."""
        return len(self._producer)

    # -- internals -------------------------------------------------------------------------------

    def _send(self, topic: str, request_id: str, event: dict[str, Any]) -> None:
        value = orjson.dumps(event)
        if len(value) > self.settings.max_payload_bytes:
            raise ValueError(
                f"event: encoded size {len(value)} bytes exceeds MODELMON_MAX_PAYLOAD_BYTES "
                f"({self.settings.max_payload_bytes})"
            )
        self._produce(topic, request_id.encode("utf-8"), value)

    def _raise_if_refused(self) -> None:
        refused = auth_error(self.settings, self._producer)
        if refused is not None:
            raise AuthenticationError(len(self._producer), str(refused))

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._raise_if_refused()
        deadline = time.monotonic() + self.queue_timeout_s
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:
                # librdkafka's local queue is full: serve callbacks until there is room, bounded in time.
                if time.monotonic() > deadline:
                    raise DeliveryError(
                        1,
                        f"local producer queue stayed full for {self.queue_timeout_s:g} s "
                        "(is Kafka reachable?)",
                    ) from None
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self._producer._watch.auth_error = None  # the cluster accepts us (again)
            return
        text = f"{msg.topic()}: {err.str()}"
        with self._lock:
            self.failed += 1
            self._unreported += 1
            if self._first_error is None:
                self._first_error = text
        if self._on_delivery_error is not None:
            self._on_delivery_error(text, msg.key())
