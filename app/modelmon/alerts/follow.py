"""`modelmon alerts`: print the alerts topic, now or as it grows, filtered and readable or as raw JSON.

Following never joins a consumer group and never commits: it assigns every partition of the alerts topic
itself, so any number of terminals can watch without taking events away from each other (or from a
webhook sink). Decoding, filtering and formatting are pure functions; only :func:`read_records` talks to
Kafka.
"""

from __future__ import annotations

import fnmatch
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from ..errors import ModelmonError
from ..schemas import InvalidEvent, validate_output
from ..settings import Settings
from ..topics import TopicError, topic_name

SEVERITIES = ("info", "warning", "critical")
"""Alert severities, least urgent first (the order ``--severity`` / ``--min-severity`` compare in)."""

STATES = ("pending", "firing", "resolved")

_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


# --------------------------------------------------------------------------------------------------------
# Decoding, filtering and formatting (pure)


def decode_alert(raw: bytes | str | None) -> dict[str, Any]:
    """Parse and validate one alert event; raise :class:`InvalidEvent` saying what is wrong.

    Consumers of the topic must survive anything on it (another producer, an older or newer modelmon),
    so this is the one place that turns bytes into a trusted alert.
    """
    if raw is None:
        raise InvalidEvent("invalid_json", None, "empty record (null value)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", None, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("schema", None, f"expected a JSON object, got {type(obj).__name__}")
    validate_output("alert", obj)
    return obj


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show or deliver: model name globs, a minimum severity and a set of states.

    Empty ``models`` / ``states`` and a None ``min_severity`` let everything through.
    """

    models: tuple[str, ...] = ()
    min_severity: str | None = None
    states: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in _SEVERITY_RANK:
            raise ValueError(f"unknown severity {self.min_severity!r}; expected one of {SEVERITIES}")
        bad = [s for s in self.states if s not in STATES]
        if bad:
            raise ValueError(f"unknown state {bad[0]!r}; expected one of {STATES}")

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True when the (validated) alert passes every condition."""
        if self.models and not any(fnmatch.fnmatchcase(str(event.get("model")), g) for g in self.models):
            return False
        if self.min_severity is not None:
            rank = _SEVERITY_RANK.get(str(event.get("severity")), -1)
            if rank < _SEVERITY_RANK[self.min_severity]:
                return False
        return not (self.states and event.get("state") not in self.states)


def format_number(value: float | int | None) -> str:
    """Short human form of a metric value: whole numbers without '.0', others to 6 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.6g}"


def _one_line(text: str) -> str:
    """Control characters (newlines, tabs, escapes) become spaces: one alert, one line, no terminal tricks."""
    return "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in text).strip()


def subject(event: Mapping[str, Any]) -> str:
    """``model@version``, or just ``model`` for rules that apply across versions."""
    version = event.get("version")
    return f"{event.get('model')}@{version}" if version else str(event.get("model"))


def value_vs_threshold(event: Mapping[str, Any]) -> str:
    """``value 0.81 vs threshold 0.9``; parts that are null are left out (``-`` when both are)."""
    value, threshold = event.get("value"), event.get("threshold")
    if value is None and threshold is None:
        return "-"
    if threshold is None:
        return f"value {format_number(value)}"
    return f"value {format_number(value)} vs threshold {format_number(threshold)}"


def format_alert(event: Mapping[str, Any]) -> str:
    """The readable one-line rendering: ts, severity, state, rule, model@version, value vs threshold, message.

    Severity and state are padded so the columns line up in a terminal.
    """
    parts = [
        str(event.get("ts", "")),
        f"{str(event.get('severity', '')).upper():<8}",
        f"{event.get('state', '')!s:<8}",
        str(event.get("rule", "")),
        subject(event),
        value_vs_threshold(event),
        str(event.get("message", "")),
    ]
    return _one_line("  ".join(parts))


def format_json(event: Mapping[str, Any]) -> str:
    """The event as compact one-line JSON (one alert per line, ready for jq)."""
    return orjson.dumps(event).decode()


def format_invalid(where: str, exc: InvalidEvent) -> str:
    """The stderr warning for a record that is not a valid alert (it is skipped, never fatal)."""
    return _one_line(f"modelmon: warning: skipped an invalid alert at {where}: {exc.message}")


# --------------------------------------------------------------------------------------------------------
# Reading the topic


@dataclass(frozen=True)
class Record:
    """One record of the alerts topic, as read."""

    topic: str
    partition: int
    offset: int
    value: bytes | None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def topic_partitions(consumer: Any, topic: str, timeout_s: float = 10.0) -> list[int]:
    """Partition ids of ``topic``; a clear error when Kafka does not answer or the topic is missing."""
    from confluent_kafka import KafkaException

    from ..kafka_clients import KafkaUnavailable, auth_error

    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        consumer.poll(0)  # not subscribed yet: only serves error_cb, so a refused login says so
        refused = auth_error(None, consumer)
        if refused is not None:
            raise refused from None
        err = exc.args[0] if exc.args else exc
        detail = err.str() if hasattr(err, "str") else str(err)
        raise KafkaUnavailable(
            f"Kafka did not answer a metadata request for {topic} within {timeout_s:g} s ({detail}); "
            "is the broker running (`modelmon broker status`)?"
        ) from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise TopicError(
            f"topic {topic} does not exist: run `modelmon topics create` (and check MODELMON_TOPIC_PREFIX)"
        )
    return sorted(info.partitions)


def read_records(
    settings: Settings,
    *,
    follow: bool,
    from_beginning: bool,
    stop: threading.Event | None = None,
    poll_timeout_s: float = 0.5,
) -> Iterator[Record]:
    """Yield the alerts topic's records, assigning every partition (no consumer group, no commits).

    Without ``follow``: everything on the topic now, from the beginning, ending once every partition has
    reached the end offset it had at the start. With ``follow``: new records from the end (or from the
    beginning with ``from_beginning``) until ``stop`` is set.
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition

    from ..kafka_clients import consumer as make_consumer

    stop = stop or threading.Event()
    topic = topic_name(settings, "alerts")
    consumer = make_consumer(
        settings,
        f"{settings.group_id}-alerts-follow",
        **{"enable.partition.eof": True, "enable.auto.offset.store": False},
    )
    try:
        partitions = topic_partitions(consumer, topic)
        pending: dict[int, int] = {}  # partition -> end offset still to reach (catch-up mode only)
        assignment = []
        if follow:
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            assignment = [TopicPartition(topic, p, start) for p in partitions]
        else:
            for p in partitions:
                low, high = _watermarks(consumer, TopicPartition(topic, p))
                if high > low:
                    pending[p] = high
                    assignment.append(TopicPartition(topic, p, low))
            if not pending:
                return
        consumer.assign(assignment)
        while not stop.is_set():
            msg = consumer.poll(poll_timeout_s)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.pop(msg.partition(), None)
                    if not follow and not pending:
                        return
                    continue
                if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise ModelmonError(f"reading {topic} failed: {err.str()}")
                continue  # transient (broker restart, rebalance of leaders): librdkafka retries
            partition, offset = msg.partition(), msg.offset()
            if not follow and partition not in pending:
                continue  # past the snapshot end of an already finished partition
            yield Record(topic, partition, offset, msg.value())
            if not follow and offset + 1 >= pending.get(partition, 0):
                pending.pop(partition, None)
                if not pending:
                    return
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------------------
# The command


@dataclass
class FollowStats:
    """What one run printed and skipped."""

    shown: int = 0
    filtered: int = 0
    invalid: int = 0
    invalid_where: list[str] = field(default_factory=list)


def render_records(
    records: Iterable[Record],
    filt: AlertFilter,
    *,
    json_output: bool,
    write: Callable[[str], None],
    warn: Callable[[str], None],
) -> FollowStats:
    """Decode, filter and print records: the whole command minus Kafka (so tests can feed it a list)."""
    stats = FollowStats()
    fmt = format_json if json_output else format_alert
    for record in records:
        try:
            event = decode_alert(record.value)
        except InvalidEvent as exc:
            stats.invalid += 1
            stats.invalid_where.append(record.where)
            warn(format_invalid(record.where, exc))
            continue
        if not filt.matches(event):
            stats.filtered += 1
            continue
        write(fmt(event))
        stats.shown += 1
    return stats


def _watermarks(consumer: Any, tp: Any, timeout_s: float = 15.0) -> tuple[int, int]:
    """(low, high) offsets of a partition. A topic created moments ago can answer "unknown partition"
    until its leader is known: retried for ``timeout_s``, then a one-line error."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=10.0)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise ModelmonError(f"cannot read the offsets of {tp.topic}[{tp.partition}]: {exc}") from None
            time.sleep(0.5)


def run_follow(
    settings: Settings,
    filt: AlertFilter,
    *,
    follow: bool = False,
    from_beginning: bool = False,
    json_output: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> FollowStats:
    """Print the alerts topic (see :func:`read_records`) to ``out``; warnings about bad records to ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr

    def write(line: str) -> None:
        out.write(line + "\n")
        out.flush()  # a follower piped into grep or jq sees each alert at once

    def warn(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    records = read_records(settings, follow=follow, from_beginning=from_beginning, stop=stop)
    return render_records(records, filt, json_output=json_output, write=write, warn=warn)
