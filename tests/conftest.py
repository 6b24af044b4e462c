"""Shared fixtures. Integration tests run against the real Apache Kafka broker that modelmon starts.

The session broker lives under .modelmon-test/ on its own ports (19092/19093 unless MODELMON_TEST_BROKER_PORT
is set), so it never collides with a `make demo` broker. When MODELMON_KAFKA_BOOTSTRAP is set, that cluster
is used instead. A broker that cannot start fails the run; it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from modelmon.broker import LocalBroker
from modelmon.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEST_HOME = ROOT / ".modelmon-test"


def _test_settings(**changes) -> Settings:
    env = dict(os.environ)
    env.setdefault("MODELMON_HOME", str(TEST_HOME))
    port = int(env.get("MODELMON_TEST_BROKER_PORT", "19092"))
    env.setdefault("MODELMON_BROKER_PORT", str(port))
    env.setdefault("MODELMON_CONTROLLER_PORT", str(port + 1))
    return Settings.from_env(env).with_(**changes) if changes else Settings.from_env(env)


@pytest.fixture(scope="session")
def kafka() -> Settings:
    """Settings pointing at a running broker (started once per session, stopped at the end)."""
    settings = _test_settings()
    broker = LocalBroker(settings, log=lambda msg: None)
    started_here = settings.uses_local_broker and broker.pid() is None
    try:
        broker.start()
    except Exception as exc:
        pytest.fail(f"the local Kafka broker could not start: {exc}", pytrace=False)
    yield settings
    if started_here:
        broker.stop()


@pytest.fixture
def settings(kafka: Settings) -> Settings:
    """The session broker with a topic prefix of its own, so tests never see each other's events."""
    return kafka.with_(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", app_id=f"mm{uuid.uuid4().hex[:8]}")


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `modelmon` subprocess with exactly these settings (every MODELMON_* variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env.update(settings.to_env())
    env.update(extra)
    return env
