"""`modelmon alerts` and `modelmon alerts sink` against the real broker and a real local HTTP receiver.

Alerts are produced with a plain confluent-kafka producer (key = model), not through modelmon, and the
commands run as subprocesses with the test's settings.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka import Producer

from modelmon.topics import create_topics, topic_name
from tests.conftest import env_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def make_alert(n: int, model: str, *, severity: str = "warning", state: str = "firing", **extra) -> dict:
    event = {
        "id": f"rule-{n}:{model}",
        "rule": f"rule-{n}",
        "model": model,
        "version": "1.0",
        "severity": severity,
        "state": state,
        "value": 0.5 + n / 100,
        "threshold": 0.9,
        "window": {"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T12:01:00Z", "size_s": 60},
        "started_at": "2024-05-01T12:01:00Z",
        "ts": f"2024-05-01T12:{n % 60:02d}:00Z",
        "message": f"metric {n} below threshold ({model})",
        "labels": {"team": "ml"},
    }
    event.update(extra)
    return event


ALERTS = [
    make_alert(1, "churn-classifier", severity="critical"),
    make_alert(2, "churn-classifier", severity="info", state="pending"),
    make_alert(3, "fraud-detector", severity="warning"),
    make_alert(4, "fraud-detector", severity="critical", state="resolved"),
    make_alert(5, "eta_regressor", severity="info", version=None),
]


def produce(settings, events: list[dict], raw: list[tuple[str, bytes]] = ()) -> None:
    producer = Producer(settings.kafka_client_config())
    topic = topic_name(settings, "alerts")
    for event in events:
        producer.produce(topic, key=event["model"], value=json.dumps(event).encode())
    for key, value in raw:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def modelmon(settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelmon.cli", *args],
        env=env_for(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", *args],
        env=env_for(settings),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    """Ctrl-C the process; return (exit code, stdout, stderr)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process did not stop on SIGINT within {timeout} s; stderr: {err}")
    return proc.returncode, out, err


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def alert_settings(settings):
    create_topics(settings)
    return settings


# ----------------------------------------------------------------------------------------------------
# Following


def test_alerts_json_prints_everything_on_the_topic_and_exits(alert_settings):
    produce(alert_settings, ALERTS)
    out = modelmon(alert_settings, "alerts", "--json")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(events, key=lambda e: e["id"]) == sorted(ALERTS, key=lambda e: e["id"])
    for model in {a["model"] for a in ALERTS}:  # one model, one partition: its order is kept
        assert [e["id"] for e in events if e["model"] == model] == [
            a["id"] for a in ALERTS if a["model"] == model
        ]


def test_alerts_on_an_empty_topic_print_nothing(alert_settings):
    out = modelmon(alert_settings, "alerts")
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_readable_output_and_filters(alert_settings):
    produce(alert_settings, ALERTS)
    out = modelmon(alert_settings, "alerts")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(ALERTS)
    assert (
        "2024-05-01T12:01:00Z  CRITICAL  firing    rule-1  churn-classifier@1.0  "
        "value 0.51 vs threshold 0.9  metric 1 below threshold (churn-classifier)"
    ) in lines
    assert any(
        "  INFO      firing    rule-5  eta_regressor  value 0.55 vs threshold 0.9  " in x for x in lines
    )

    def ids(*args: str) -> list[str]:
        result = modelmon(alert_settings, "alerts", "--json", *args)
        assert result.returncode == 0, result.stderr
        return sorted(json.loads(line)["id"] for line in result.stdout.splitlines())

    assert ids("--model", "churn-*") == ["rule-1:churn-classifier", "rule-2:churn-classifier"]
    assert ids("--model", "fraud*", "--model", "eta_*") == [
        "rule-3:fraud-detector",
        "rule-4:fraud-detector",
        "rule-5:eta_regressor",
    ]
    assert ids("--severity", "critical") == ["rule-1:churn-classifier", "rule-4:fraud-detector"]
    assert ids("--severity", "warning", "--state", "firing") == [
        "rule-1:churn-classifier",
        "rule-3:fraud-detector",
    ]
    assert ids("--state", "pending", "--state", "resolved") == [
        "rule-2:churn-classifier",
        "rule-4:fraud-detector",
    ]
    assert ids("--model", "nobody") == []


def test_invalid_records_are_warned_about_and_skipped(alert_settings):
    bad = make_alert(9, "churn-classifier", severity="loud")
    produce(
        alert_settings,
        ALERTS[:1],
        raw=[("churn-classifier", b"{not json"), ("churn-classifier", json.dumps(bad).encode())],
    )
    produce(alert_settings, ALERTS[1:2])
    out = modelmon(alert_settings, "alerts", "--json")
    assert out.returncode == 0
    assert [json.loads(x)["id"] for x in out.stdout.splitlines()] == [ALERTS[0]["id"], ALERTS[1]["id"]]
    warnings = out.stderr.splitlines()
    assert len(warnings) == 2
    assert all(w.startswith("modelmon: warning: skipped an invalid alert at ") for w in warnings)
    assert "not valid JSON" in warnings[0] and "severity" in warnings[1]


def test_follow_prints_new_alerts_until_ctrl_c(alert_settings):
    produce(alert_settings, ALERTS[:1])  # before the follower starts: not shown (it starts at the end)
    proc = start(alert_settings, "alerts", "--follow", "--json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    probe = make_alert(42, "probe-model")
    # The follower gives no sign of being positioned: send probes until one shows up.
    deadline = time.monotonic() + 60
    while not lines and time.monotonic() < deadline:
        produce(alert_settings, [probe])
        time.sleep(0.5)
    assert lines, "the follower printed nothing"
    produce(alert_settings, [make_alert(43, "fraud-detector")])
    wait_until(lambda: any("rule-43" in x for x in lines), 30, "the follower to print a new alert")
    code, _, err = interrupt(proc)
    reader.join(5)
    assert code == 0, err
    ids = [json.loads(x)["id"] for x in lines]
    assert ALERTS[0]["id"] not in ids
    assert set(ids) == {probe["id"], "rule-43:fraud-detector"}


def test_follow_from_beginning_with_filters(alert_settings):
    produce(alert_settings, ALERTS)
    proc = start(alert_settings, "alerts", "-f", "--from-beginning", "--model", "fraud-*")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    wait_until(lambda: len(lines) >= 2, 30, "the follower to print the kept alerts")
    produce(alert_settings, [make_alert(44, "churn-classifier"), make_alert(45, "fraud-detector")])
    wait_until(lambda: len(lines) >= 3, 30, "the follower to print a new alert")
    code, _, err = interrupt(proc)
    reader.join(5)
    assert code == 0, err
    assert [re.search(r"rule-\d+", x).group() for x in lines] == ["rule-3", "rule-4", "rule-45"]


# ----------------------------------------------------------------------------------------------------
# Webhook sink


class Receiver:
    """A webhook receiver: answers each request with ``respond(alert_id, attempt_no)``'s status."""

    def __init__(self, respond) -> None:
        self.respond = respond
        self.requests: list[tuple[str, int, dict, int]] = []  # (alert id, attempt no, body, status)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = body.get("id") or body["text"]
                with receiver.lock:
                    attempt = 1 + sum(1 for r in receiver.requests if r[0] == key)
                    status = receiver.respond(key, attempt)
                    receiver.requests.append((key, attempt, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"

    def ok_ids(self) -> set[str]:
        with self.lock:
            return {r[0] for r in self.requests if r[3] == 200}

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    receivers = []

    def make(respond) -> Receiver:
        receivers.append(Receiver(respond))
        return receivers[-1]

    yield make
    for r in receivers:
        r.close()


def counters(stderr: str) -> dict[str, int]:
    final = [line for line in stderr.splitlines() if "stopped;" in line]
    assert final, stderr
    found = re.findall(r'modelmon_webhook_\w+_total\{\w+="(\w+)"\} (\d+)', final[-1])
    return {name: int(value) for name, value in found}


def test_sink_retries_a_503_and_delivers_every_alert_once_or_more(alert_settings, receiver_factory):
    hook = receiver_factory(lambda key, attempt: 503 if attempt == 1 else 200)
    produce(alert_settings, ALERTS)
    group = f"{alert_settings.group_id}-webhook-test"
    args = ("alerts", "sink", "--webhook", hook.url, "--retries", "3", "--timeout", "5", "--group", group)
    proc = start(alert_settings, *args, "--from-beginning")
    wanted = {a["id"] for a in ALERTS}
    wait_until(lambda: hook.ok_ids() >= wanted or proc.poll() is not None, 90, "every alert delivered")
    code, _, err = interrupt(proc)
    assert code == 0, err
    assert hook.ok_ids() == wanted
    bodies = {r[0]: r[2] for r in hook.requests if r[3] == 200}
    assert bodies == {a["id"]: a for a in ALERTS}  # the event itself is the body
    c = counters(err)
    assert c["ok"] == len(ALERTS) and c["failed"] == 0
    assert c["retried"] == sum(1 for r in hook.requests if r[3] == 503) >= len(ALERTS)
    assert "secret-token" not in err  # the webhook path stays out of the log
    assert "HTTP 503" in err

    # The same group resumes after its committed offsets: only the new alert is sent.
    before = hook.count()
    new = make_alert(50, "churn-classifier", severity="critical")
    proc = start(alert_settings, *args)
    produce(alert_settings, [new])
    wait_until(lambda: new["id"] in hook.ok_ids() or proc.poll() is not None, 90, "the new alert")
    code, _, err = interrupt(proc)
    assert code == 0, err
    assert {r[0] for r in hook.requests[before:]} == {new["id"]}


def test_sink_does_not_retry_a_400_and_keeps_going(alert_settings, receiver_factory):
    hook = receiver_factory(lambda key, attempt: 400)
    produce(alert_settings, ALERTS)
    proc = start(alert_settings, "alerts", "sink", "--webhook", hook.url, "--from-beginning")
    wait_until(lambda: hook.count() >= len(ALERTS) or proc.poll() is not None, 90, "every alert tried")
    later = make_alert(51, "fraud-detector")
    produce(alert_settings, [later])
    wait_until(lambda: hook.count() >= len(ALERTS) + 1 or proc.poll() is not None, 60, "a later alert")
    time.sleep(1.0)  # room for any (wrong) retry to show up
    code, _, err = interrupt(proc)
    assert code == 0, err
    ids = [r[0] for r in hook.requests]
    assert sorted(ids) == sorted([a["id"] for a in ALERTS] + [later["id"]])  # exactly one attempt each
    c = counters(err)
    assert (c["ok"], c["failed"], c["retried"]) == (0, len(ALERTS) + 1, 0)
    assert err.count("HTTP 400") == len(ALERTS) + 1 and "not retried" in err


def test_sink_filters_and_slack_body(alert_settings, receiver_factory):
    hook = receiver_factory(lambda key, attempt: 200)
    produce(alert_settings, ALERTS, raw=[("x", b"garbage")])
    proc = start(
        alert_settings,
        "alerts",
        "sink",
        "--webhook",
        hook.url,
        "--slack",
        "--min-severity",
        "warning",
        "--model",
        "fraud-*",
        "--model",
        "churn-*",
        "--from-beginning",
    )
    wanted = [a for a in ALERTS if a["severity"] != "info" and not a["model"].startswith("eta")]
    wait_until(lambda: hook.count() >= len(wanted) or proc.poll() is not None, 90, "the matching alerts")
    time.sleep(1.0)
    code, _, err = interrupt(proc)
    assert code == 0, err
    bodies = [r[2] for r in hook.requests]
    assert len(bodies) == len(wanted)
    assert all(set(b) == {"text", "blocks"} for b in bodies)
    rules = sorted(re.search(r"rule-\d+", b["text"]).group() for b in bodies)
    assert rules == sorted(a["rule"] for a in wanted)
    c = counters(err)
    assert c["ok"] == len(wanted)
    assert c["filtered"] == len(ALERTS) - len(wanted)
    assert c["invalid"] == 1 and "skipped an invalid alert" in err
