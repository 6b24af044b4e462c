"""One settings object for every modelmon command, read from MODELMON_* environment variables.

Every variable, its default and its meaning are listed in ``ENV_VARS`` (the README's configuration table
is generated from the same list), so there is one place to look.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _default_home() -> str:
    return str(Path.cwd() / ".modelmon")


def _default_cache() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(xdg) / "modelmon")


def _port(name: str, raw: str) -> int:
    value = _int(name, raw)
    if not 1 <= value <= 65535:
        raise SettingsError(f"{name}: port must be between 1 and 65535, got {value}")
    return value


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None


def _positive_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value < 1:
        raise SettingsError(f"{name}: must be at least 1, got {value}")
    return value


def _nonneg_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value < 0:
        raise SettingsError(f"{name}: must be 0 or more, got {value}")
    return value


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from None


def _positive_float(name: str, raw: str) -> float:
    value = _float(name, raw)
    if not value > 0:
        raise SettingsError(f"{name}: must be greater than 0, got {raw}")
    return value


def _feedback_mode(name: str, raw: str) -> str:
    if raw not in ("all", "errors", "off"):
        raise SettingsError(f"{name}: must be 'all', 'errors' or 'off', got {raw!r}")
    return raw


def _share(name: str, raw: str) -> float:
    value = _positive_float(name, raw)
    if value > 1:
        raise SettingsError(f"{name}: must be a share in (0, 1], got {raw}")
    return value


def _nonneg_float(name: str, raw: str) -> float:
    value = _float(name, raw)
    if not 0 <= value < float("inf"):
        raise SettingsError(f"{name}: must be a finite number >= 0, got {raw}")
    return value


def _str(name: str, raw: str) -> str:
    return raw


def _url(name: str, raw: str) -> str:
    if not (raw.startswith("http://") or raw.startswith("https://")) or len(raw) < 10:
        raise SettingsError(f"{name}: expected an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not (origin.startswith("http://") or origin.startswith("https://")):
            raise SettingsError(
                f"{name}: each origin must be '*' or start with http:// or https://, got {origin!r}"
            )
    return origins


def _store(name: str, raw: str) -> str:
    if raw not in ("rocksdb", "memory"):
        raise SettingsError(f"{name}: must be 'rocksdb' or 'memory', got {raw!r}")
    return raw


def _optional_port(name: str, raw: str) -> int:
    """A port, or 0 for "off"."""
    value = _int(name, raw)
    if value == 0:
        return 0
    return _port(name, raw)


def _protocol(name: str, raw: str) -> str:
    return raw.upper()


def _mechanism(name: str, raw: str) -> str:
    return raw.upper()


_USER_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
_PASSWORD_BANNED = set('",\\ ')


def parse_sasl_users(name: str, raw: str) -> dict[str, str]:
    """'alice:secret,bob:other' -> {user: password}. Errors name the user, never echo a password."""
    users: dict[str, str] = {}
    for i, item in enumerate(raw.split(","), 1):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise SettingsError(f"{name}: entry {i} must be 'user:password' (comma-separated list)")
        if set(user) - _USER_CHARS:
            raise SettingsError(
                f"{name}: user name {user[:64]!r} may only contain letters, digits, '.', '_', '-', '@'"
            )
        if set(password) & _PASSWORD_BANNED or not password.isprintable():
            raise SettingsError(
                f"{name}: the password of {user!r} may not contain spaces, quotes, backslashes or ',' "
                "(it is written into the broker's JAAS configuration)"
            )
        if user in users:
            raise SettingsError(f"{name}: user {user!r} is listed twice")
        users[user] = password
    return users


def _sasl_users(name: str, raw: str) -> str:
    parse_sasl_users(name, raw)
    return raw


def _default_worker_id() -> str:
    import socket

    return socket.gethostname().split(".")[0] or "worker"


def _topic_prefix(name: str, raw: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    bad = sorted(set(raw) - allowed)
    if bad:
        raise SettingsError(
            f"{name}: topic prefix may only contain letters, digits, '.', '_' and '-', got {raw!r}"
        )
    return raw


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable and how to parse it into a Settings field."""

    name: str
    attr: str
    default: str | Callable[[], str]
    parse: Callable[[str, str], Any]
    help: str

    def default_text(self) -> str:
        return self.default() if callable(self.default) else self.default


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(
        "MODELMON_KAFKA_BOOTSTRAP",
        "kafka_bootstrap",
        "",
        _str,
        "Bootstrap servers of an existing Kafka cluster; when set, no local broker is started.",
    ),
    EnvVar(
        "MODELMON_HOME",
        "home",
        _default_home,
        _str,
        "State folder: local broker data and logs, worker data (default ./.modelmon).",
    ),
    EnvVar(
        "MODELMON_CACHE_DIR",
        "cache_dir",
        _default_cache,
        _str,
        "Where the Kafka broker jars from Maven Central are cached (default ~/.cache/modelmon).",
    ),
    EnvVar(
        "MODELMON_BROKER_PORT", "broker_port", "9092", _port, "Client port of the local broker (127.0.0.1)."
    ),
    EnvVar(
        "MODELMON_CONTROLLER_PORT",
        "controller_port",
        "9093",
        _port,
        "KRaft controller port of the local broker (127.0.0.1).",
    ),
    EnvVar("MODELMON_BROKER_HEAP", "broker_heap", "512m", _str, "Java heap (-Xmx) of the local broker."),
    EnvVar(
        "MODELMON_BROKER_SASL_PORT",
        "broker_sasl_port",
        "0",
        _optional_port,
        "Also open a SASL_PLAINTEXT (PLAIN) listener on this port of the local broker; 0: none. Clients "
        "use it when MODELMON_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT.",
    ),
    EnvVar(
        "MODELMON_BROKER_SASL_USERS",
        "broker_sasl_users",
        "",
        _sasl_users,
        "Users of the local broker's SASL listener: 'user:password,...' (never logged).",
    ),
    EnvVar(
        "MODELMON_BROKER_SSL_PORT",
        "broker_ssl_port",
        "0",
        _optional_port,
        "Also open an SSL (TLS) listener on this port of the local broker; 0: none. Clients use it when "
        "MODELMON_KAFKA_SECURITY_PROTOCOL=SSL. Needs MODELMON_BROKER_SSL_CERT and MODELMON_BROKER_SSL_KEY.",
    ),
    EnvVar(
        "MODELMON_BROKER_SSL_CERT",
        "broker_ssl_cert",
        "",
        _str,
        "The local broker's TLS certificate (PEM, the chain after it if any), valid for 127.0.0.1.",
    ),
    EnvVar(
        "MODELMON_BROKER_SSL_KEY",
        "broker_ssl_key",
        "",
        _str,
        "Its private key (PEM, unencrypted PKCS#8: '-----BEGIN PRIVATE KEY-----').",
    ),
    EnvVar(
        "MODELMON_BROKER_SSL_CLIENT_CA",
        "broker_ssl_client_ca",
        "",
        _str,
        "CA certificate (PEM): when set, the SSL listener requires client certificates it signed "
        "(mutual TLS); empty: no client certificates.",
    ),
    EnvVar(
        "MODELMON_BROKER_START_TIMEOUT",
        "broker_start_timeout",
        "60",
        _positive_float,
        "Seconds to wait for the local broker to answer a metadata request.",
    ),
    EnvVar(
        "MODELMON_TOPIC_PREFIX",
        "topic_prefix",
        "",
        _topic_prefix,
        "Prefix put before every topic name (e.g. 'prod.' gives prod.predictions).",
    ),
    EnvVar(
        "MODELMON_INPUT_PARTITIONS",
        "input_partitions",
        "8",
        _positive_int,
        "Partitions of predictions and ground-truth (they must be equal: co-partitioning).",
    ),
    EnvVar(
        "MODELMON_OUTPUT_PARTITIONS",
        "output_partitions",
        "4",
        _positive_int,
        "Partitions of the model-keyed output topics and of dead-letter and monitor-health.",
    ),
    EnvVar(
        "MODELMON_REPLICATION_FACTOR",
        "replication_factor",
        "1",
        _positive_int,
        "Replication factor of the topics modelmon creates.",
    ),
    EnvVar(
        "MODELMON_MAX_PAYLOAD_BYTES",
        "max_payload_bytes",
        "65536",
        _positive_int,
        "Largest accepted event payload; larger events are dead-lettered (and refused by the SDK).",
    ),
    EnvVar(
        "MODELMON_APP_ID",
        "app_id",
        "modelmon",
        _topic_prefix,
        "Consumer group (after the topic prefix) and internal topic names; workers with one id share work.",
    ),
    EnvVar(
        "MODELMON_WORKER_ID",
        "worker_id",
        _default_worker_id,
        _topic_prefix,
        "This worker's name (health events, data folder); unique per worker (default: host name).",
    ),
    EnvVar("MODELMON_WEB_HOST", "web_host", "127.0.0.1", _str, "Bind address of the worker's web server."),
    EnvVar("MODELMON_WEB_PORT", "web_port", "6066", _port, "Port of the worker's web server."),
    EnvVar(
        "MODELMON_WEB_ADVERTISED_URL",
        "web_advertised_url",
        "",
        _url,
        "URL other workers use to forward API requests here (default http://<web host>:<web port>).",
    ),
    EnvVar(
        "MODELMON_API_TOKEN",
        "api_token",
        "",
        _str,
        "When set, /api/ and /metrics require 'Authorization: Bearer <token>' (never logged).",
    ),
    EnvVar(
        "MODELMON_CORS_ORIGINS",
        "cors_origins",
        "",
        _origins,
        "Comma-separated origins allowed to call the API from a browser ('*' for any); empty: CORS off.",
    ),
    EnvVar(
        "MODELMON_STORE",
        "store",
        "rocksdb",
        _store,
        "Table store: 'rocksdb' (rocksdict, durable, fast restart) or 'memory' (rebuilt from changelogs).",
    ),
    EnvVar(
        "MODELMON_WINDOW_S", "window_s", "60", _positive_float, "Size of the event-time tumbling windows."
    ),
    EnvVar(
        "MODELMON_JOIN_HORIZON_S",
        "join_horizon_s",
        "86400",
        _positive_float,
        "How long (event time) a prediction waits for its label, and a label for its prediction.",
    ),
    EnvVar(
        "MODELMON_EMIT_INTERVAL_S",
        "emit_interval_s",
        "5",
        _positive_float,
        "How often changed windows are published to model-metrics.",
    ),
    EnvVar(
        "MODELMON_HEALTH_INTERVAL_S",
        "health_interval_s",
        "10",
        _positive_float,
        "How often each worker publishes a health report to monitor-health (resources, lag, table sizes).",
    ),
    EnvVar(
        "MODELMON_REFERENCE_S",
        "reference_s",
        "3600",
        _positive_float,
        "Event time at the start of each model version whose features are its data-quality reference.",
    ),
    EnvVar(
        "MODELMON_FEEDBACK",
        "feedback",
        "all",
        _feedback_mode,
        "Joined records on model-feedback: 'all', 'errors' (wrong predictions, failed inferences) or 'off'.",
    ),
    EnvVar(
        "MODELMON_FEEDBACK_SAMPLE",
        "feedback_sample",
        "1",
        _share,
        "Share of requests (chosen by a hash of the request id) whose joined records go to model-feedback.",
    ),
    EnvVar(
        "MODELMON_FEEDBACK_MIN_ABS_ERROR",
        "feedback_min_abs_error",
        "0",
        _nonneg_float,
        "With MODELMON_FEEDBACK=errors: a regression record is an error when |prediction - label| > this.",
    ),
    EnvVar(
        "MODELMON_ALERT_RULES",
        "alert_rules",
        "",
        _str,
        "Alert rules file (YAML, see deploy/alert-rules.yaml); reloaded when it changes. Empty: no alerts.",
    ),
    EnvVar(
        "MODELMON_TICK_INTERVAL_S",
        "tick_interval_s",
        "1",
        _positive_float,
        "How often each input partition is ticked (expiry, flushes).",
    ),
    EnvVar(
        "MODELMON_IDLE_ADVANCE_S",
        "idle_advance_s",
        "30",
        _positive_float,
        "After this many wall seconds without input, a partition's event time advances with the clock.",
    ),
    EnvVar(
        "MODELMON_SESSION_TIMEOUT_S",
        "session_timeout_s",
        "30",
        _positive_float,
        "Consumer-group session timeout: how soon the partitions of a dead worker move to the others.",
    ),
    EnvVar(
        "MODELMON_RECOVERY_STALL_S",
        "recovery_stall_s",
        "60",
        _positive_float,
        "A worker whose table recovery (or stage-1 processing) makes no progress this long restarts itself.",
    ),
    EnvVar(
        "MODELMON_STANDBY_REPLICAS",
        "standby_replicas",
        "0",
        _nonneg_int,
        "Standby copies of each table partition kept on other workers (rocksdb store only): a failover "
        "restores only the changelog's tail.",
    ),
    EnvVar(
        "MODELMON_KAFKA_SECURITY_PROTOCOL",
        "security_protocol",
        "PLAINTEXT",
        _protocol,
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL for every Kafka client: worker, SDK, CLI, admin.",
    ),
    EnvVar(
        "MODELMON_KAFKA_SASL_MECHANISM",
        "sasl_mechanism",
        "",
        _mechanism,
        "With SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or GSSAPI (Kerberos ticket, no user/password).",
    ),
    EnvVar("MODELMON_KAFKA_SASL_USERNAME", "sasl_username", "", _str, "SASL user name."),
    EnvVar("MODELMON_KAFKA_SASL_PASSWORD", "sasl_password", "", _str, "SASL password (never logged)."),
    EnvVar(
        "MODELMON_KAFKA_SSL_CA",
        "ssl_ca_location",
        "",
        _str,
        "With SSL/SASL_SSL: CA certificate file (PEM) to verify the brokers; empty: the system's CAs.",
    ),
    EnvVar(
        "MODELMON_KAFKA_SSL_CERT",
        "ssl_cert_location",
        "",
        _str,
        "With SSL/SASL_SSL: client certificate file (PEM) for mutual TLS; needs MODELMON_KAFKA_SSL_KEY.",
    ),
    EnvVar(
        "MODELMON_KAFKA_SSL_KEY",
        "ssl_key_location",
        "",
        _str,
        "With SSL/SASL_SSL: the client certificate's private key file (PEM, unencrypted).",
    ),
)

_SECURITY_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")


@dataclass(frozen=True)
class Settings:
    """Everything configurable in modelmon. Build with :meth:`from_env`; override with :meth:`with_`."""

    kafka_bootstrap: str = ""
    home: str = field(default_factory=_default_home)
    cache_dir: str = field(default_factory=_default_cache)
    broker_port: int = 9092
    controller_port: int = 9093
    broker_heap: str = "512m"
    broker_sasl_port: int = 0
    broker_sasl_users: str = field(default="", repr=False)
    broker_ssl_port: int = 0
    broker_ssl_cert: str = ""
    broker_ssl_key: str = ""
    broker_ssl_client_ca: str = ""
    broker_start_timeout: float = 60.0
    topic_prefix: str = ""
    input_partitions: int = 8
    output_partitions: int = 4
    replication_factor: int = 1
    max_payload_bytes: int = 65536
    app_id: str = "modelmon"
    worker_id: str = field(default_factory=_default_worker_id)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_advertised_url: str = ""
    api_token: str = field(default="", repr=False)
    cors_origins: tuple[str, ...] = ()
    store: str = "rocksdb"
    window_s: float = 60.0
    join_horizon_s: float = 86400.0
    emit_interval_s: float = 5.0
    health_interval_s: float = 10.0
    reference_s: float = 3600.0
    feedback: str = "all"
    feedback_sample: float = 1.0
    feedback_min_abs_error: float = 0.0
    alert_rules: str = ""
    tick_interval_s: float = 1.0
    idle_advance_s: float = 30.0
    session_timeout_s: float = 30.0
    recovery_stall_s: float = 60.0
    standby_replicas: int = 0
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_ca_location: str = ""
    ssl_cert_location: str = ""
    ssl_key_location: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every MODELMON_* variable; raise SettingsError naming the first bad one."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var in ENV_VARS:
            raw = env.get(var.name)
            if raw is None or raw == "":
                raw = var.default_text()
                if raw == "":
                    values[var.attr] = () if var.attr == "cors_origins" else ""
                    continue
            values[var.attr] = var.parse(var.name, raw.strip())
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """Every MODELMON_* variable with this object's values: the environment of a worker subprocess."""
        out = {}
        for var in ENV_VARS:
            value = getattr(self, var.attr)
            out[var.name] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated)."""
        settings = replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.security_protocol.upper() not in _SECURITY_PROTOCOLS:
            raise SettingsError(
                f"MODELMON_KAFKA_SECURITY_PROTOCOL: must be one of {sorted(_SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            )
        if self.broker_port == self.controller_port:
            raise SettingsError("MODELMON_CONTROLLER_PORT: must differ from MODELMON_BROKER_PORT")
        if self.broker_sasl_port in (self.broker_port, self.controller_port):
            raise SettingsError(
                "MODELMON_BROKER_SASL_PORT: must differ from MODELMON_BROKER_PORT and "
                "MODELMON_CONTROLLER_PORT"
            )
        if self.broker_sasl_port and not self.broker_sasl_users:
            raise SettingsError("MODELMON_BROKER_SASL_USERS: required when MODELMON_BROKER_SASL_PORT is set")
        if self.broker_sasl_users and not self.broker_sasl_port:
            raise SettingsError("MODELMON_BROKER_SASL_USERS: only used with MODELMON_BROKER_SASL_PORT")
        if self.standby_replicas and self.store != "rocksdb":
            # The memory store keeps no restore offset: a promoted standby restores the whole changelog
            # anyway, and the standby's keys would only double the memory (faust stores/memory.py).
            raise SettingsError(
                "MODELMON_STANDBY_REPLICAS: needs MODELMON_STORE=rocksdb (0 with the memory store)"
            )
        self._validate_broker_tls()
        self._validate_security()

    def _validate_broker_tls(self) -> None:
        """The local broker's SSL listener: its port, certificate, key and client CA (one line each)."""
        files = (
            ("MODELMON_BROKER_SSL_CERT", self.broker_ssl_cert),
            ("MODELMON_BROKER_SSL_KEY", self.broker_ssl_key),
            ("MODELMON_BROKER_SSL_CLIENT_CA", self.broker_ssl_client_ca),
        )
        if not self.broker_ssl_port:
            for name, value in files:
                if value:
                    raise SettingsError(f"{name}: only used with MODELMON_BROKER_SSL_PORT")
            return
        if self.broker_ssl_port in (self.broker_port, self.controller_port, self.broker_sasl_port):
            raise SettingsError(
                "MODELMON_BROKER_SSL_PORT: must differ from MODELMON_BROKER_PORT, MODELMON_CONTROLLER_PORT "
                "and MODELMON_BROKER_SASL_PORT"
            )
        for name, value in files:
            if not value:
                if name != "MODELMON_BROKER_SSL_CLIENT_CA":
                    raise SettingsError(f"{name}: required when MODELMON_BROKER_SSL_PORT is set")
                continue
            if not os.access(value, os.R_OK):
                why = "no such file" if not os.path.exists(value) else "not readable"
                raise SettingsError(f"{name}: {why}: {value!r}")
            if os.path.isdir(value):
                raise SettingsError(f"{name}: is a folder, expected a PEM file: {value!r}")
        # Kafka's PEM key store reads PKCS#8 keys only (openssl pkcs8 -topk8 -nocrypt converts others).
        with open(self.broker_ssl_key, encoding="ascii", errors="replace") as fh:
            if "-----BEGIN PRIVATE KEY-----" not in fh.read():
                raise SettingsError(
                    "MODELMON_BROKER_SSL_KEY: expected an unencrypted PKCS#8 PEM key "
                    "('-----BEGIN PRIVATE KEY-----'; convert with `openssl pkcs8 -topk8 -nocrypt`)"
                )
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.broker_ssl_cert, self.broker_ssl_key)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                "MODELMON_BROKER_SSL_CERT: the certificate and its key (MODELMON_BROKER_SSL_KEY) are not "
                f"a matching PEM pair ({exc})"
            ) from None
        if self.broker_ssl_client_ca:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(self.broker_ssl_client_ca)
            except (ssl.SSLError, OSError) as exc:
                raise SettingsError(
                    f"MODELMON_BROKER_SSL_CLIENT_CA: not a PEM CA certificate file ({exc})"
                ) from None

    def _validate_security(self) -> None:
        """Refuse combinations a Kafka client would reject or silently ignore; name the variable."""
        protocol = self.security_protocol.upper()
        sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        tls = protocol in ("SSL", "SASL_SSL")
        where = f"(MODELMON_KAFKA_SECURITY_PROTOCOL is {protocol})"
        mechanism = self.sasl_mechanism.upper()
        sasl_vars = (
            ("MODELMON_KAFKA_SASL_MECHANISM", mechanism),
            ("MODELMON_KAFKA_SASL_USERNAME", self.sasl_username),
            ("MODELMON_KAFKA_SASL_PASSWORD", self.sasl_password),
        )
        if not sasl:
            for name, value in sasl_vars:
                if value:
                    raise SettingsError(f"{name}: only used with SASL_PLAINTEXT or SASL_SSL {where}")
        elif not mechanism:
            raise SettingsError(
                f"MODELMON_KAFKA_SASL_MECHANISM: required with {protocol} "
                f"(one of {', '.join(SASL_MECHANISMS)})"
            )
        elif mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"MODELMON_KAFKA_SASL_MECHANISM: must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {self.sasl_mechanism!r}"
            )
        elif mechanism == "GSSAPI":
            for name, value in sasl_vars[1:]:
                if value:
                    raise SettingsError(f"{name}: not used with GSSAPI (Kerberos uses its ticket cache)")
        else:
            for name, value in sasl_vars[1:]:
                if not value:
                    raise SettingsError(f"{name}: required with MODELMON_KAFKA_SASL_MECHANISM={mechanism}")
        files = (
            ("MODELMON_KAFKA_SSL_CA", self.ssl_ca_location),
            ("MODELMON_KAFKA_SSL_CERT", self.ssl_cert_location),
            ("MODELMON_KAFKA_SSL_KEY", self.ssl_key_location),
        )
        if not tls:
            for name, value in files:
                if value:
                    raise SettingsError(f"{name}: only used with SSL or SASL_SSL {where}")
            return
        if self.ssl_key_location and not self.ssl_cert_location:
            raise SettingsError(
                "MODELMON_KAFKA_SSL_KEY: needs MODELMON_KAFKA_SSL_CERT (the client certificate)"
            )
        if self.ssl_cert_location and not self.ssl_key_location:
            raise SettingsError("MODELMON_KAFKA_SSL_CERT: needs MODELMON_KAFKA_SSL_KEY (its private key)")
        for name, value in files:
            if value and not os.access(value, os.R_OK):
                why = "no such file" if not os.path.exists(value) else "not readable"
                raise SettingsError(f"{name}: {why}: {value!r}")
            if value and os.path.isdir(value):
                raise SettingsError(f"{name}: is a folder, expected a PEM file: {value!r}")
        self.ssl_context()  # a file that is not PEM is reported now, naming its variable

    # -- derived values -------------------------------------------------------------------------

    @property
    def uses_local_broker(self) -> bool:
        """True when no external cluster is configured, so modelmon runs its own broker."""
        return not self.kafka_bootstrap

    @property
    def group_id(self) -> str:
        """The workers' consumer group and Faust app id; prefixes their internal and changelog topics too."""
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers every client connects to (the local broker's SASL/SSL listener for those)."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        if self.broker_sasl_port and self.security_protocol.upper() == "SASL_PLAINTEXT":
            return f"127.0.0.1:{self.broker_sasl_port}"
        if self.broker_ssl_port and self.security_protocol.upper() == "SSL":
            return f"127.0.0.1:{self.broker_ssl_port}"
        return f"127.0.0.1:{self.broker_port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the worker's aiokafka clients (None without SSL/SASL_SSL).

        Like librdkafka's defaults: the broker's certificate and host name are verified, against
        MODELMON_KAFKA_SSL_CA or the system's CAs; a client certificate is presented when configured.
        """
        if self.security_protocol.upper() not in ("SSL", "SASL_SSL"):
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_ca_location or None)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(f"MODELMON_KAFKA_SSL_CA: not a PEM CA certificate file ({exc})") from None
        if self.ssl_cert_location:
            try:
                context.load_cert_chain(self.ssl_cert_location, self.ssl_key_location or None)
            except (ssl.SSLError, OSError) as exc:
                raise SettingsError(
                    "MODELMON_KAFKA_SSL_CERT: the certificate or its key (MODELMON_KAFKA_SSL_KEY) "
                    f"is not a matching, unencrypted PEM pair ({exc})"
                ) from None
        return context

    def security_summary(self) -> str:
        """How clients authenticate, for messages: protocol, mechanism and user; never the password."""
        protocol = self.security_protocol.upper()
        parts = [protocol]
        if self.sasl_mechanism:
            parts.append(self.sasl_mechanism.upper())
        if self.sasl_username:
            parts.append(f"user {self.sasl_username!r}")
        return ", ".join(parts)

    @property
    def web_url(self) -> str:
        """Where other workers reach this worker's web server."""
        if self.web_advertised_url:
            return self.web_advertised_url
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        return f"http://{host}:{self.web_port}"

    @property
    def broker_dir(self) -> Path:
        return Path(self.home) / "broker"

    @property
    def worker_dir(self) -> Path:
        """This worker's table data; per consumer group, since Faust names store files by table only."""
        return Path(self.home) / "workers" / self.group_id / self.worker_id

    @property
    def jars_dir(self) -> Path:
        return Path(self.cache_dir) / "kafka-jars"

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) settings shared by every producer, consumer and admin client."""
        conf: dict[str, str] = {"bootstrap.servers": self.bootstrap}
        protocol = self.security_protocol.upper()
        if protocol != "PLAINTEXT":
            conf["security.protocol"] = protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism.upper()
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_cert_location:
            conf["ssl.certificate.location"] = self.ssl_cert_location
        if self.ssl_key_location:
            conf["ssl.key.location"] = self.ssl_key_location
        return conf


def settings_fields() -> list[str]:
    """Names of all Settings fields (used by docs checks)."""
    return [f.name for f in fields(Settings)]
