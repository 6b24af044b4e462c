"""The embedded default: a real Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1.

The jars come from Maven Central through deploy/local-kafka/pom.xml and are cached; storage is formatted
once; "ready" means an AdminClient metadata call answers, not merely an open port. When
MODELMON_KAFKA_BOOTSTRAP names a cluster, nothing here starts or stops anything.

With MODELMON_BROKER_SASL_PORT the broker also listens for SASL_PLAINTEXT clients (mechanism PLAIN, the
users of MODELMON_BROKER_SASL_USERS), so SASL can be tried locally; with MODELMON_BROKER_SSL_PORT it
listens for SSL clients too (certificate MODELMON_BROKER_SSL_CERT/_KEY; client certificates required when
MODELMON_BROKER_SSL_CLIENT_CA is set). The PLAINTEXT listener stays for the controller, inter-broker
traffic and the readiness probe, on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ModelmonError
from .kafka_clients import KafkaUnavailable, wait_for_cluster
from .settings import Settings, parse_sasl_users


class BrokerError(ModelmonError):
    """A one-line, user-facing reason why the local broker could not be managed."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    external: bool
    detail: str


def pom_path() -> Path:
    """deploy/local-kafka/pom.xml in a checkout, or the copy packaged into the wheel."""
    packaged = Path(__file__).parent / "_local_kafka" / "pom.xml"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "deploy" / "local-kafka" / "pom.xml"


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BrokerError(f"{name} not found on PATH: {hint}")
    return path


def java_major_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr + out.stdout
    for token in text.split():
        token = token.strip('"')
        if token[:1].isdigit():
            major = token.split(".")[0]
            if major == "1":  # 1.8.0_x style
                return int(token.split(".")[1])
            if major.isdigit():
                return int(major)
    raise BrokerError(f"could not read the Java version from `java -version`: {text.strip()[:200]}")


def ensure_jars(settings: Settings, log=print) -> Path:
    """Download the broker jars with Maven once; return the folder. Cached by the pom's hash."""
    pom = pom_path()
    if not pom.exists():
        raise BrokerError(f"missing {pom}: the local broker recipe is not installed")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    jars = settings.jars_dir
    marker = jars / ".complete"
    if marker.exists() and marker.read_text().strip() == digest and any(jars.glob("kafka_2.13-*.jar")):
        return jars
    mvn = _require_tool("mvn", "install Maven 3.8+ (apt-get install maven) to assemble the Kafka broker")
    jars.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kafka-jars-", dir=jars.parent))
    log(f"Fetching Apache Kafka jars from Maven Central into {jars} (first run only)...")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise BrokerError("Maven could not fetch the Kafka jars: " + " | ".join(tail))
    (tmp / ".complete").write_text(digest + "\n")
    if jars.exists():
        shutil.rmtree(jars)
    tmp.rename(jars)
    return jars


def _sasl_properties(settings: Settings) -> list[str]:
    """The SASL_PLAINTEXT listener's JAAS users (PLAIN). Kafka hides sasl.jaas.config in its own log."""
    users = parse_sasl_users("MODELMON_BROKER_SASL_USERS", settings.broker_sasl_users)
    entries = " ".join(f'user_{user}="{password}"' for user, password in users.items())
    return [
        "sasl.enabled.mechanisms=PLAIN",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {entries};",
    ]


def _ssl_properties(settings: Settings, keystore: Path) -> list[str]:
    """The SSL listener: a PEM key store (key + certificate chain) and, for mutual TLS, a PEM trust store."""
    props = [
        "listener.name.ssl.ssl.keystore.type=PEM",
        f"listener.name.ssl.ssl.keystore.location={keystore}",
    ]
    if settings.broker_ssl_client_ca:
        props += [
            "listener.name.ssl.ssl.truststore.type=PEM",
            f"listener.name.ssl.ssl.truststore.location={Path(settings.broker_ssl_client_ca).resolve()}",
            "listener.name.ssl.ssl.client.auth=required",
        ]
    else:
        props.append("listener.name.ssl.ssl.client.auth=none")
    return props


def _write_keystore(settings: Settings, path: Path) -> None:
    """Kafka's PEM key store file: the private key, then the certificate chain (mode 0600)."""
    key = Path(settings.broker_ssl_key).read_text().strip()
    chain = Path(settings.broker_ssl_cert).read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{key}\n{chain}\n")


def _server_properties(settings: Settings, data_dir: Path, keystore: Path | None = None) -> str:
    bp, cp, sp = settings.broker_port, settings.controller_port, settings.broker_sasl_port
    tp = settings.broker_ssl_port
    listeners = f"PLAINTEXT://127.0.0.1:{bp},CONTROLLER://127.0.0.1:{cp}"
    advertised = f"PLAINTEXT://127.0.0.1:{bp}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if sp:
        listeners += f",SASL_PLAINTEXT://127.0.0.1:{sp}"
        advertised += f",SASL_PLAINTEXT://127.0.0.1:{sp}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
    if tp:
        listeners += f",SSL://127.0.0.1:{tp}"
        advertised += f",SSL://127.0.0.1:{tp}"
        protocols += ",SSL:SSL"
    return "\n".join(
        [
            "# Written by `modelmon broker start`; regenerated on every start.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cp}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *(_sasl_properties(settings) if sp else []),
            *(_ssl_properties(settings, keystore or data_dir.parent / "keystore.pem") if tp else []),
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.dedupe.buffer.size=2097152",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "message.max.bytes=2097152",
            "",
        ]
    )


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server
logger.kafka.level = INFO
logger.kafkamain.name = kafka.Kafka$
logger.kafkamain.level = INFO
"""


class LocalBroker:
    """Lifecycle of the local broker. Every method is idempotent."""

    def __init__(self, settings: Settings, log=print) -> None:
        self.settings = settings
        # The readiness probe of a local broker uses its PLAINTEXT listener, without client credentials.
        self.probe = settings
        if settings.uses_local_broker:
            self.probe = replace(
                settings,
                security_protocol="PLAINTEXT",
                sasl_mechanism="",
                sasl_username="",
                sasl_password="",
                ssl_ca_location="",
                ssl_cert_location="",
                ssl_key_location="",
                broker_sasl_port=0,
                broker_sasl_users="",
                broker_ssl_port=0,
                broker_ssl_cert="",
                broker_ssl_key="",
                broker_ssl_client_ca="",
            )
        self.log = log
        self.dir = settings.broker_dir
        self.data_dir = self.dir / "data"
        self.pid_file = self.dir / "broker.pid"
        self.log_file = self.dir / "broker.log"

    # -- queries -------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of our broker if it is alive (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        return pid if b"kafka.Kafka" in cmdline and str(self.dir).encode() in cmdline else None

    def status(self) -> BrokerStatus:
        s = self.settings
        if not s.uses_local_broker:
            try:
                brokers = wait_for_cluster(s, timeout_s=5)
                return BrokerStatus(
                    True, None, s.bootstrap, True, f"external cluster, {len(brokers)} broker(s)"
                )
            except KafkaUnavailable as exc:
                return BrokerStatus(False, None, s.bootstrap, True, str(exc))
        pid = self.pid()
        if pid is None:
            return BrokerStatus(False, None, s.bootstrap, False, "stopped")
        try:
            wait_for_cluster(self.probe, timeout_s=3)
            return BrokerStatus(True, pid, s.bootstrap, False, "running")
        except KafkaUnavailable:
            return BrokerStatus(False, pid, s.bootstrap, False, "process alive but not answering")

    def tail_log(self, lines: int = 20) -> list[str]:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return text.splitlines()[-lines:]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> BrokerStatus:
        s = self.settings
        if not s.uses_local_broker:
            self.log(f"Using the configured cluster at {s.bootstrap}; no local broker is started.")
            wait_for_cluster(s, timeout_s=s.broker_start_timeout)
            return self.status()
        if self.pid() is not None:
            try:
                wait_for_cluster(self.probe, timeout_s=s.broker_start_timeout)
            except KafkaUnavailable as exc:
                raise BrokerError(
                    f"a local broker (pid {self.pid()}) is running but not answering: {exc}"
                ) from None
            self.log(f"Local Kafka broker already running at {s.bootstrap} (pid {self.pid()}).")
            return self.status()
        java = _require_tool("java", "install a JDK 17+ (apt-get install openjdk-17-jre-headless)")
        major = java_major_version(java)
        if major < 17:
            raise BrokerError(f"Java {major} found, Apache Kafka 4 needs Java 17 or newer")
        for port, var in (
            (s.broker_port, "MODELMON_BROKER_PORT"),
            (s.controller_port, "MODELMON_CONTROLLER_PORT"),
            (s.broker_sasl_port, "MODELMON_BROKER_SASL_PORT"),
            (s.broker_ssl_port, "MODELMON_BROKER_SSL_PORT"),
        ):
            if port and not _port_free(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is already in use ({var}); "
                    "stop that process or pick another port"
                )
        jars = ensure_jars(s, self.log)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        keystore = self.dir / "keystore.pem"
        if s.broker_ssl_port:
            _write_keystore(s, keystore)
        else:
            keystore.unlink(missing_ok=True)
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold SASL passwords
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_server_properties(s, self.data_dir, keystore))
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        classpath = f"{jars}/*"
        self._format(java, classpath, props)
        cmd = [
            java,
            f"-Xmx{s.broker_heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-Djava.awt.headless=true",
            f"-Dmodelmon.home={self.dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]
        started = time.monotonic()
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = started + s.broker_start_timeout
        while True:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = " | ".join(self.tail_log(8))
                raise BrokerError(
                    f"the Kafka broker exited with code {proc.returncode} during start-up: {tail}"
                )
            try:
                wait_for_cluster(self.probe, timeout_s=1.0)
                break
            except KafkaUnavailable:
                if time.monotonic() > deadline:
                    self._terminate(proc.pid)
                    tail = " | ".join(self.tail_log(8))
                    raise BrokerError(
                        f"the Kafka broker did not answer within {s.broker_start_timeout:g} s: {tail}"
                    ) from None
        elapsed = time.monotonic() - started
        self.log(f"Local Kafka broker ready at {s.bootstrap} (pid {proc.pid}, {elapsed:.1f} s).")
        return self.status()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop our broker; True if one was running."""
        if not self.settings.uses_local_broker:
            self.log(f"Using the configured cluster at {self.settings.bootstrap}; nothing to stop.")
            return False
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            self.log("Local Kafka broker is not running.")
            return False
        self._terminate(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        self.log(f"Local Kafka broker stopped (pid {pid}).")
        return True

    def _terminate(self, pid: int, timeout_s: float = 30.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _alive(pid):
            time.sleep(0.05)

    def _format(self, java: str, classpath: str, props: Path) -> None:
        id_file = self.dir / "cluster.id"
        formatted = (self.data_dir / "meta.properties").exists()
        # An id starting with "-" reads as an option to the storage tool (Kafka's own ids avoid it too).
        if not id_file.exists() or (not formatted and id_file.read_text().startswith("-")):
            cluster_id = "-"
            while cluster_id.startswith("-"):
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            id_file.write_text(cluster_id + "\n")
        cluster_id = id_file.read_text().strip()
        if formatted:
            return
        proc = subprocess.run(
            [
                java,
                "-Xmx256m",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            lines = [
                ln for ln in (proc.stdout + proc.stderr).splitlines() if not ln.lstrip().startswith("at ")
            ]
            raise BrokerError("formatting the broker storage failed: " + " | ".join(lines[-3:]))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
