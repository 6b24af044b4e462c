"""Builders for every Kafka client modelmon makes, sharing one configuration and a quiet logger.

confluent-kafka clients (SDK, CLI, admin, the worker's changelog writer, read-back, health and alert
consumers) are built here from ``Settings.kafka_client_config()``; the worker's Faust app (aiokafka) gets
the same security settings from :func:`faust_credentials`. librdkafka prints every failed connection
attempt to stderr; routing its log through Python logging keeps CLI output readable while the messages
stay available at DEBUG level. A refused login or TLS handshake is recorded on the client (error_cb), so
callers fail at once with :class:`KafkaAuthError` instead of retrying until a timeout.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from .errors import ModelmonError
from .settings import Settings

_RDKAFKA_LOG = logging.getLogger("modelmon.rdkafka")
# No last-resort printing to stderr where logging is not configured (the CLI); the worker's handlers on
# the root logger still get these records.
_RDKAFKA_LOG.addHandler(logging.NullHandler())


class KafkaUnavailable(ModelmonError):
    """The configured Kafka cluster did not answer in time."""


class KafkaAuthError(ModelmonError):
    """The cluster refused the client's credentials or TLS handshake: retrying will not help."""


_AUTH_CODES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
# A TLS alert from the broker (OpenSSL: "ssl/tls alert bad certificate", "tlsv13 alert certificate
# required", ...): it refused our certificate or handshake. librdkafka reports it as a transport error.
_TLS_ALERT = re.compile(r"(ssl/tls|sslv3|tlsv1\d*) alert ", re.IGNORECASE)


class _ErrorWatch:
    """librdkafka's error_cb: keeps the last authentication/TLS error (its text has no secret)."""

    def __init__(self) -> None:
        self.auth_error: str | None = None

    def __call__(self, err: KafkaError) -> None:
        text = err.str()
        if err.code() in _AUTH_CODES or "SSL handshake failed" in text or _TLS_ALERT.search(text):
            self.auth_error = text
        _RDKAFKA_LOG.debug("librdkafka error: %s", text)


class WatchedAdminClient(AdminClient):
    _watch: _ErrorWatch


class WatchedProducer(Producer):
    _watch: _ErrorWatch


class WatchedConsumer(Consumer):
    _watch: _ErrorWatch


def _base(settings: Settings, extra: dict[str, Any] | None) -> tuple[dict[str, Any], _ErrorWatch]:
    conf: dict[str, Any] = dict(settings.kafka_client_config())
    conf["logger"] = _RDKAFKA_LOG
    watch = _ErrorWatch()
    conf["error_cb"] = watch
    if extra:
        conf.update(extra)
    return conf, watch


def _watched(cls: type, settings: Settings, extra: dict[str, Any] | None) -> Any:
    conf, watch = _base(settings, extra)
    client = cls(conf)
    client._watch = watch
    return client


def auth_error(settings: Settings | None, client: Any) -> KafkaAuthError | None:
    """The client's recorded login/TLS failure as a user-facing error (None if there was none).

    librdkafka serves error_cb from poll(), flush() and consume(); call one of them first.
    """
    watch = getattr(client, "_watch", None)
    if watch is None or watch.auth_error is None:
        return None
    who = f"Kafka at {settings.bootstrap}" if settings else "Kafka"
    how = f" ({settings.security_summary()})" if settings else ""
    what, check = _refusal(watch.auth_error)
    return KafkaAuthError(f"{who} {what}{how}: {watch.auth_error}; {check}")


def _refusal(detail: str) -> tuple[str, str]:
    """What a login/TLS error text means and which settings to check, for a one-line message."""
    if "certificate verify failed" in detail.lower():
        return (
            "has a TLS certificate this client does not trust",
            "check MODELMON_KAFKA_SSL_CA (the CA that signed the brokers' certificates)",
        )
    if _TLS_ALERT.search(detail):
        return (
            "refused this client's TLS handshake (no client certificate, or one it does not trust)",
            "check MODELMON_KAFKA_SSL_CERT and MODELMON_KAFKA_SSL_KEY (mutual TLS)",
        )
    return (
        "refused to authenticate this client",
        "check MODELMON_KAFKA_SECURITY_PROTOCOL and the MODELMON_KAFKA_SASL_* / MODELMON_KAFKA_SSL_* "
        "settings",
    )


def admin_client(settings: Settings, **extra: Any) -> AdminClient:
    return _watched(WatchedAdminClient, settings, extra)


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
    return _watched(WatchedProducer, settings, conf)


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    conf = {"group.id": group_id, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    conf.update(extra)
    return _watched(WatchedConsumer, settings, conf)


def cluster_metadata(settings: Settings, client: Any, timeout_s: float, topic: str | None = None) -> Any:
    """list_topics in short steps: KafkaAuthError as soon as a login fails, KafkaUnavailable on timeout."""
    import time

    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaUnavailable(
                f"Kafka at {settings.bootstrap} did not answer a metadata request within {timeout_s:g} s "
                f"({last_error})"
            )
        try:
            meta = client.list_topics(topic, timeout=min(1.0, max(remaining, 0.1)))
            if meta.brokers:
                return meta
        except KafkaException as exc:
            last_error = str(exc.args[0].str() if exc.args else exc)
        client.poll(0)  # serve error_cb
        error = auth_error(settings, client)
        if error is not None:
            raise error
        time.sleep(0.1)


def wait_for_cluster(settings: Settings, timeout_s: float) -> dict[int, str]:
    """Block until a metadata request answers; return {broker id: host:port}.

    Raise KafkaAuthError when the credentials are refused, KafkaUnavailable when nothing answers in time.
    """
    meta = cluster_metadata(settings, admin_client(settings), timeout_s)
    return {b.id: f"{b.host}:{b.port}" for b in meta.brokers.values()}


def faust_credentials(settings: Settings) -> Any:
    """The Faust app's ``broker_credentials``: the same security as the librdkafka clients, for aiokafka.

    SASL_PLAINTEXT/SASL_SSL give SASLCredentials (PLAIN, SCRAM-*) or GSSAPICredentials, with the TLS
    context of :meth:`Settings.ssl_context` for SASL_SSL; SSL gives SSLCredentials; PLAINTEXT gives None.
    """
    import faust

    protocol = settings.security_protocol.upper()
    context = settings.ssl_context()
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism = settings.sasl_mechanism.upper()
        if mechanism == "GSSAPI":
            return faust.GSSAPICredentials(ssl_context=context, mechanism=mechanism)
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            ssl_context=context,
            mechanism=mechanism,
        )
    return None


def aiokafka_auth(settings: Settings) -> dict[str, Any]:
    """The connection options Faust hands to every aiokafka client for these settings."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return credentials_to_aiokafka_auth(faust_credentials(settings))


async def check_aiokafka_login(settings: Settings, timeout_s: float = 15.0) -> None:
    """Open one aiokafka connection as the worker's Faust clients will, and ask for metadata.

    The worker checks the cluster with librdkafka first; this proves that the same credentials also
    work through aiokafka (a different client library) before Faust starts and retries forever.
    """
    import asyncio

    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError as AioKafkaError
    from aiokafka.protocol.metadata import MetadataRequest

    auth = aiokafka_auth(settings)
    last = "no bootstrap server"
    for server in settings.bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **auth), timeout_s)
        except (AioKafkaError, asyncio.TimeoutError, OSError, ValueError) as exc:
            last = f"{server}: {type(exc).__name__}: {exc}"
            cause = _auth_cause(exc)
            if cause is not None:
                what, check = _refusal(str(cause))
                if what.startswith("refused to authenticate"):
                    what = "refused the worker's aiokafka login"
                raise KafkaAuthError(
                    f"Kafka at {server} {what} ({settings.security_summary()}): "
                    f"{cause or type(cause).__name__}; {check}"
                ) from None
            continue
        try:
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
            return
        except (AioKafkaError, asyncio.TimeoutError, OSError) as exc:
            last = f"{server}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
    raise KafkaUnavailable(f"the worker's aiokafka client could not reach Kafka ({last})")


def _auth_cause(exc: BaseException) -> BaseException | None:
    """The login or TLS failure behind an aiokafka connection error (aiokafka wraps a TLS alert from the
    broker in "Connection ... closed"), or None when the error is not one."""
    import ssl

    from aiokafka.errors import AuthenticationFailedError, SaslAuthenticationFailed

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        if isinstance(seen, (AuthenticationFailedError, SaslAuthenticationFailed)):
            return seen
        seen = seen.__cause__
    if "authentication" in str(exc).lower() or "SASL" in str(exc):
        return exc
    return None
