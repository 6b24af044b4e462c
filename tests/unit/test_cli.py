"""CLI argument and configuration errors: one line on stderr and a non-zero exit, before any Kafka call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmon.settings import ENV_VARS, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "modelmon.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["broker"], "the following arguments are required"),
        (["topics", "create", "--partitions", "0"], "--partitions: must be at least 1"),
        (["simulate", "--rate", "fast"], "--rate: expected a number, got 'fast'"),
        (["simulate", "--label-fraction", "1.5"], "--label-fraction: must be between 0 and 1"),
        (["simulate", "--incident", "accuracy_drop@x"], "incident 'accuracy_drop@x'"),
        (["worker", "--web-port", "70000"], "--web-port: must be a port between 1 and 65535"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle):
    out = run_cli(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("modelmon: error: ") and needle in out.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MODELMON_BROKER_PORT": "ninety"}, "MODELMON_BROKER_PORT: expected an integer, got 'ninety'"),
        ({"MODELMON_BROKER_PORT": "0"}, "MODELMON_BROKER_PORT: port must be between 1 and 65535"),
        ({"MODELMON_TOPIC_PREFIX": "bad prefix"}, "MODELMON_TOPIC_PREFIX: topic prefix may only contain"),
        ({"MODELMON_STORE": "redis"}, "MODELMON_STORE: must be 'rocksdb' or 'memory'"),
        ({"MODELMON_WINDOW_S": "-5"}, "MODELMON_WINDOW_S: must be greater than 0"),
        ({"MODELMON_KAFKA_SECURITY_PROTOCOL": "TLS"}, "MODELMON_KAFKA_SECURITY_PROTOCOL: must be one of"),
        ({"MODELMON_BROKER_PORT": "9093"}, "MODELMON_CONTROLLER_PORT: must differ"),
        ({"MODELMON_STANDBY_REPLICAS": "-1"}, "MODELMON_STANDBY_REPLICAS: must be 0 or more, got -1"),
        ({"MODELMON_STANDBY_REPLICAS": "one"}, "MODELMON_STANDBY_REPLICAS: expected an integer, got 'one'"),
        (
            {"MODELMON_STANDBY_REPLICAS": "1", "MODELMON_STORE": "memory"},
            "MODELMON_STANDBY_REPLICAS: needs MODELMON_STORE=rocksdb",
        ),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(env, needle):
    out = run_cli("topics", "list", **env)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and needle in out.stderr


def test_settings_parse_every_variable():
    env = {var.name: var.default_text() for var in ENV_VARS}
    env.update(MODELMON_WINDOW_S="15", MODELMON_INPUT_PARTITIONS="12", MODELMON_KAFKA_BOOTSTRAP="k:9092")
    s = Settings.from_env(env)
    assert (s.window_s, s.input_partitions, s.bootstrap, s.uses_local_broker) == (15.0, 12, "k:9092", False)
    with pytest.raises(SettingsError, match="MODELMON_OUTPUT_PARTITIONS"):
        Settings.from_env({"MODELMON_OUTPUT_PARTITIONS": "0"})


def test_readme_documents_every_variable_and_both_commands():
    readme = (ROOT / "README.md").read_text()
    missing = [var.name for var in ENV_VARS if f"`{var.name}`" not in readme]
    assert not missing, f"README lacks {missing}"
    assert "make demo" in readme and "make test" in readme
