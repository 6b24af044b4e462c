"""Lifecycle of the local Apache Kafka broker, on ports of its own (not the session broker's)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from modelmon.broker import BrokerError, LocalBroker
from modelmon.kafka_clients import admin_client, consumer, producer
from modelmon.settings import Settings

pytestmark = pytest.mark.integration

MODELMON = [sys.executable, "-m", "modelmon.cli"]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port < 65000:
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


@pytest.fixture
def own_broker(kafka: Settings, tmp_path: Path):
    port = _free_port_pair()
    settings = kafka.with_(home=str(tmp_path / "home"), broker_port=port, controller_port=port + 1)
    broker = LocalBroker(settings, log=lambda msg: None)
    yield settings, broker
    broker.stop()


def test_start_is_idempotent_and_restart_keeps_data(own_broker):
    settings, broker = own_broker
    assert not broker.status().running
    broker.start()
    pid = broker.pid()
    assert pid is not None and broker.status().running
    broker.start()  # second start: same broker
    assert broker.pid() == pid
    # Ready means a metadata call answers: create a topic and write to it.
    admin = admin_client(settings)
    admin.create_topics([NewTopic("keep", 1, 1)])["keep"].result(30)
    prod = producer(settings)
    prod.produce("keep", key=b"k", value=b"survives a restart")
    assert prod.flush(30) == 0
    assert broker.stop() is True
    assert broker.pid() is None and not broker.status().running
    assert broker.stop() is False  # stop when stopped is fine
    broker.start()
    cons = consumer(settings, group_id=f"g{uuid.uuid4().hex}")
    cons.subscribe(["keep"])
    deadline = time.monotonic() + 30
    got = None
    while got is None and time.monotonic() < deadline:
        msg = cons.poll(0.5)
        if msg is not None and msg.error() is None:
            got = msg.value()
    cons.close()
    assert got == b"survives a restart"


def test_port_in_use_is_a_clear_error(own_broker):
    settings, broker = own_broker
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.broker_port))
        blocker.listen()
        with pytest.raises(BrokerError, match=f"port {settings.broker_port} .* already in use"):
            broker.start()


def test_broker_that_dies_reports_its_log(own_broker):
    settings, _ = own_broker
    broker = LocalBroker(settings.with_(broker_heap="1k"), log=lambda msg: None)
    with pytest.raises(BrokerError, match="exited with code"):
        broker.start()
    assert broker.pid() is None


def _cli(args, env, timeout=60):
    return subprocess.run(MODELMON + args, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_without_java_or_maven(kafka: Settings, tmp_path: Path):
    bare = tmp_path / "bin"
    bare.mkdir()
    env = dict(
        os.environ,
        PATH=str(bare),
        MODELMON_HOME=str(tmp_path / "h"),
        MODELMON_BROKER_PORT="19592",
        MODELMON_CONTROLLER_PORT="19593",
        MODELMON_KAFKA_BOOTSTRAP="",
    )
    out = _cli(["broker", "start"], env)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "java not found on PATH" in out.stderr
    # Java present but no Maven and no cached jars.
    os.symlink(shutil.which("java"), bare / "java")
    env["MODELMON_CACHE_DIR"] = str(tmp_path / "empty-cache")
    out = _cli(["broker", "start"], env)
    assert out.returncode == 1
    assert "mvn not found on PATH" in out.stderr


def test_external_bootstrap_starts_nothing(kafka: Settings, tmp_path: Path):
    env = dict(os.environ, MODELMON_HOME=str(tmp_path / "h"), MODELMON_KAFKA_BOOTSTRAP=kafka.bootstrap)
    out = _cli(["broker", "start"], env)
    assert out.returncode == 0, out.stderr
    assert "no local broker is started" in out.stdout
    assert not (tmp_path / "h" / "broker").exists()
    status = _cli(["broker", "status"], env)
    assert status.returncode == 0 and "external cluster" in status.stdout
