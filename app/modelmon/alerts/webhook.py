"""`modelmon alerts sink`: POST every alert to a webhook (plain JSON or a Slack-compatible body).

The sink is a consumer group of its own (``<prefix><app_id>-webhook`` unless told otherwise) and commits an
event's offset once its delivery sequence is over — delivered, or given up after the retry budget — so a
crash re-sends at most the event in flight (at-least-once; receivers dedupe on the alert's ``(id, state)``,
or on the ``X-Modelmon-Delivery`` header naming the record). A failing endpoint costs each event at most
the retry budget and never stops the sink: failures are counted and logged, and the counters appear in a
periodic and a final log line in Prometheus notation.

Retries: connection errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter
(``Retry-After`` honoured up to a cap); any other status (3xx, 4xx) means the request itself is wrong
and is not retried. Only the standard library speaks HTTP here (http.client): no redirects are followed,
since a redirected POST would silently lose its body.
"""

from __future__ import annotations

import base64
import http.client
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from ..errors import ModelmonError
from ..schemas import InvalidEvent
from ..settings import Settings
from ..topics import topic_name
from .follow import AlertFilter, decode_alert, subject, value_vs_threshold

RESPONSE_SNIPPET_BYTES = 200
"""How much of a failed plain-text or JSON response body is quoted in the log (receivers often explain a 400
there; HTML error pages are left out)."""


class WebhookError(ModelmonError):
    """The webhook sink cannot run (bad URL, unreachable Kafka, missing topic)."""


def check_url(url: str) -> str:
    """Return ``url`` if it is an http(s) URL with a host; raise ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        raise ValueError(f"the URL has an invalid port: {url!r}") from None
    if any(c.isspace() for c in url):
        raise ValueError(f"the URL contains whitespace: {url!r}")
    return url


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook paths (Slack's among them) are secrets and stay out of logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


# --------------------------------------------------------------------------------------------------------
# Bodies


_STATE_EMOJI = {"pending": ":hourglass_flowing_sand:", "resolved": ":white_check_mark:"}
_FIRING_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}
_SLACK_SECTION_MAX = 3000
_SLACK_FIELD_MAX = 2000


def _slack_escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as markup (links, mentions); alert text must not trigger them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_emoji(event: Mapping[str, Any]) -> str:
    """One emoji per state (and per severity when firing), so a channel can be scanned at a glance."""
    state = event.get("state")
    if state in _STATE_EMOJI:
        return _STATE_EMOJI[state]
    return _FIRING_EMOJI.get(str(event.get("severity")), ":bell:")


def slack_body(event: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (notifications, fallback) plus Block Kit ``blocks``."""
    emoji = slack_emoji(event)
    severity = str(event.get("severity", "")).upper()
    state = str(event.get("state", ""))
    rule = str(event.get("rule", ""))
    who = subject(event)
    message = str(event.get("message", ""))
    text = _truncate(f"{emoji} [{severity}] {state}: {rule} on {who} - {message}", _SLACK_SECTION_MAX)
    headline = (
        f"{emoji} *{severity} {_slack_escape(state)}*  `{_slack_escape(rule)}` on *{_slack_escape(who)}*"
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _truncate(f"{headline}\n{_slack_escape(message)}", _SLACK_SECTION_MAX),
            },
        }
    ]
    fields = []
    if event.get("value") is not None or event.get("threshold") is not None:
        fields.append(f"*Value*\n{value_vs_threshold(event)}")
    window = event.get("window")
    if isinstance(window, dict):
        fields.append(f"*Window*\n{window.get('start')} to {window.get('end')}")
    if event.get("started_at"):
        fields.append(f"*Since*\n{event['started_at']}")
    if fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _truncate(_slack_escape(f), _SLACK_FIELD_MAX)} for f in fields
                ],
            }
        )
    context = [f"{event.get('ts', '')}", f"alert {event.get('id', '')}"]
    labels = event.get("labels") or {}
    if labels:
        context.append(" ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _truncate(_slack_escape(" · ".join(context)), _SLACK_FIELD_MAX)}
            ],
        }
    )
    return {"text": text, "blocks": blocks}


def request_body(event: Mapping[str, Any], *, slack: bool) -> bytes:
    """The POST body: the alert event itself, or the Slack body built from it."""
    return orjson.dumps(slack_body(event) if slack else event)


# --------------------------------------------------------------------------------------------------------
# Retry policy (pure)


def should_retry(status: int | None) -> bool:
    """Whether an attempt that ended with ``status`` (None: no response at all) is worth repeating.

    Connection errors, timeouts, 5xx and 429 are the receiver's passing trouble; any other non-2xx status
    says the request itself is unwelcome, and sending it again would only get the same answer.
    """
    if status is None:
        return True
    return status == 429 or 500 <= status <= 599


def is_success(status: int | None) -> bool:
    return status is not None and 200 <= status <= 299


def backoff_ceiling(retry: int, base_s: float, cap_s: float) -> float:
    """The un-jittered wait before retry number ``retry`` (0 = the first retry): base * 2^retry, capped."""
    return min(cap_s, base_s * (2.0**retry)) if retry < 64 else cap_s


def backoff_delay(retry: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Wait before retry ``retry``: "equal jitter", uniform in [ceiling/2, ceiling].

    Half the ceiling is kept so the waits still grow; the random half spreads the retries of many sinks
    hitting one recovering endpoint.
    """
    ceiling = backoff_ceiling(retry, base_s, cap_s)
    return ceiling / 2 + (rng or random).uniform(0.0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to deliver. Times in seconds."""

    url: str
    slack: bool = False
    timeout_s: float = 10.0
    retries: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 60.0
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_url(self.url)
        if not self.timeout_s > 0:
            raise ValueError(f"timeout must be greater than 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")

    def retry_delay(self, retry: int, retry_after_s: float | None, rng: random.Random | None = None) -> float:
        """Wait before retry ``retry``: the server's Retry-After (capped) if it sent one, else the backoff."""
        if retry_after_s is not None:
            return min(retry_after_s, self.retry_after_cap_s)
        return backoff_delay(retry, self.backoff_base_s, self.backoff_cap_s, rng)

    def budget_s(self) -> float:
        """Longest time one event's delivery sequence can take (every attempt timing out, longest waits)."""
        waits = sum(
            max(backoff_ceiling(r, self.backoff_base_s, self.backoff_cap_s), self.retry_after_cap_s)
            for r in range(self.retries)
        )
        # http.client's timeout is per socket operation: allow connect + send + read for each attempt.
        return (self.retries + 1) * 3 * self.timeout_s + waits


# --------------------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Attempt:
    """How one POST ended: an HTTP status, or no response (``status`` None, ``error`` says why)."""

    status: int | None
    error: str | None = None
    retry_after_s: float | None = None
    body: str = ""

    def describe(self) -> str:
        if self.status is None:
            return self.error or "no response"
        reason = f"HTTP {self.status}"
        return f"{reason}: {self.body}" if self.body else reason


def post_json(
    url: str, body: bytes, *, timeout_s: float, headers: Mapping[str, str] | None = None
) -> Attempt:
    """POST ``body`` as JSON once; never raises for network or HTTP trouble (it returns an Attempt)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout_s, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    all_headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/plain, */*",
        "User-Agent": _user_agent(),
    }
    if parts.username is not None:
        creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        all_headers["Authorization"] = "Basic " + base64.b64encode(creds).decode("ascii")
    all_headers.update(headers or {})
    try:
        conn.request("POST", path, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read(64 * 1024)
        snippet = ""
        kind = (resp.getheader("Content-Type") or "text/plain").lower()
        if not 200 <= resp.status <= 299 and ("text/plain" in kind or "json" in kind):
            snippet = " ".join(data[:RESPONSE_SNIPPET_BYTES].decode("utf-8", "replace").split())
        return Attempt(resp.status, None, parse_retry_after(resp.getheader("Retry-After")), snippet)
    except TimeoutError:
        return Attempt(None, f"timed out after {timeout_s:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        conn.close()


def _user_agent() -> str:
    from .. import __version__

    return f"modelmon/{__version__}"


# --------------------------------------------------------------------------------------------------------
# Delivery with retries


@dataclass
class WebhookCounters:
    """Delivery counters. ``retried`` counts repeated attempts; ``ok``/``failed`` count events."""

    ok: int = 0
    failed: int = 0
    retried: int = 0
    filtered: int = 0
    invalid: int = 0

    def snapshot(self) -> tuple[int, ...]:
        return (self.ok, self.failed, self.retried, self.filtered, self.invalid)

    def render(self) -> str:
        """The counters in Prometheus notation, on one line."""
        return (
            f'modelmon_webhook_deliveries_total{{result="ok"}} {self.ok}, '
            f'modelmon_webhook_deliveries_total{{result="failed"}} {self.failed}, '
            f'modelmon_webhook_deliveries_total{{result="retried"}} {self.retried}, '
            f'modelmon_webhook_events_skipped_total{{reason="filtered"}} {self.filtered}, '
            f'modelmon_webhook_events_skipped_total{{reason="invalid"}} {self.invalid}'
        )


DELIVERED = "delivered"
FAILED = "failed"
ABORTED = "aborted"


def _stderr_log(message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} modelmon alerts sink: {message}", file=sys.stderr, flush=True)


class WebhookSender:
    """Runs one event's delivery sequence: attempts, waits between them, counters and log lines."""

    def __init__(
        self,
        config: WebhookConfig,
        counters: WebhookCounters | None = None,
        *,
        post: Callable[..., Attempt] = post_json,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        log: Callable[[str], None] = _stderr_log,
    ) -> None:
        self.config = config
        self.counters = counters if counters is not None else WebhookCounters()
        self.post = post
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.log = log

    def deliver(self, event: Mapping[str, Any], *, delivery_id: str | None = None) -> str:
        """POST one alert, retrying per policy; return DELIVERED, FAILED (counted, logged) or ABORTED.

        ABORTED means ``stop`` was set during a wait: nothing is counted and the caller should not commit,
        so the event is sent again by the next run.
        """
        cfg = self.config
        body = request_body(event, slack=cfg.slack)
        headers = dict(cfg.headers)
        if delivery_id:
            headers["X-Modelmon-Delivery"] = delivery_id
        what = f"{event.get('rule')} {event.get('state')} on {subject(event)}"
        retry = 0
        while True:
            attempt = self.post(cfg.url, body, timeout_s=cfg.timeout_s, headers=headers)
            if is_success(attempt.status):
                self.counters.ok += 1
                return DELIVERED
            if not should_retry(attempt.status):
                self.counters.failed += 1
                self.log(f"failed to deliver {what}: {attempt.describe()} (not retried)")
                return FAILED
            if retry >= cfg.retries:
                self.counters.failed += 1
                self.log(
                    f"failed to deliver {what}: {attempt.describe()} "
                    f"(gave up after {retry + 1} attempt{'s' if retry else ''})"
                )
                return FAILED
            delay = cfg.retry_delay(retry, attempt.retry_after_s, self.rng)
            self.log(
                f"delivery of {what} failed: {attempt.describe()}; retry {retry + 1}/{cfg.retries} in "
                f"{delay:.1f} s"
            )
            if self.stop.wait(delay):
                return ABORTED
            self.counters.retried += 1
            retry += 1


# --------------------------------------------------------------------------------------------------------
# The sink (Kafka loop)


def default_group(settings: Settings) -> str:
    """The sink's own consumer group: one sink per group; give each webhook its own group."""
    return f"{settings.group_id}-webhook"


def run_sink(
    settings: Settings,
    config: WebhookConfig,
    filt: AlertFilter | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = _stderr_log,
    stats_interval_s: float = 60.0,
    rng: random.Random | None = None,
) -> WebhookCounters:
    """Deliver alerts until ``stop`` is set; return the counters (also logged periodically and at the end).

    A new group starts at the end of the topic (an alert backlog of days is not news), or at the
    beginning with ``from_beginning``; afterwards it resumes from its committed offsets.
    """
    from confluent_kafka import KafkaError, KafkaException

    from ..kafka_clients import consumer as make_consumer
    from .follow import topic_partitions

    filt = filt or AlertFilter()
    stop = stop or threading.Event()
    counters = WebhookCounters()
    sender = WebhookSender(config, counters, stop=stop, rng=rng, log=log)
    topic = topic_name(settings, "alerts")
    group = group_id or default_group(settings)
    # One event may take the whole retry budget between two polls: keep the group from evicting the sink.
    max_poll_ms = min(86_400_000, int(max(300.0, config.budget_s() * 1.5 + 60.0) * 1000))  # librdkafka max
    consumer = make_consumer(
        settings,
        group,
        **{
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "max.poll.interval.ms": max_poll_ms,
        },
    )
    try:
        topic_partitions(consumer, topic)
        consumer.subscribe([topic])
        log(
            f"delivering alerts from {topic} (group {group}) to {redact_url(config.url)}"
            f"{' as Slack messages' if config.slack else ''}; timeout {config.timeout_s:g} s, "
            f"{config.retries} {'retry' if config.retries == 1 else 'retries'}; Ctrl-C stops"
        )
        last_stats, last_snapshot = time.monotonic(), counters.snapshot()
        while not stop.is_set():
            now = time.monotonic()
            if now - last_stats >= stats_interval_s:
                if counters.snapshot() != last_snapshot:
                    log(counters.render())
                    last_snapshot = counters.snapshot()
                last_stats = now
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise WebhookError(f"reading {topic} failed: {err.str()}")
                continue
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            try:
                event = decode_alert(msg.value())
            except InvalidEvent as exc:
                counters.invalid += 1
                log(f"skipped an invalid alert at {where}: {exc.message}")
            else:
                if not filt.matches(event):
                    counters.filtered += 1
                else:
                    delivery_id = f"{msg.topic()}-{msg.partition()}-{msg.offset()}"
                    if sender.deliver(event, delivery_id=delivery_id) == ABORTED:
                        break  # not committed: the next run sends it again
            try:
                consumer.commit(message=msg, asynchronous=False)
            except KafkaException as exc:
                # Typically a rebalance took the partition away: the new owner re-sends (at-least-once).
                log(f"could not commit {where}: {exc.args[0].str() if exc.args else exc}")
    finally:
        log(f"stopped; {counters.render()}")
        consumer.close()
    return counters
