"""Following and delivering alerts without a broker: decoding, filters, formats, the Slack body, the retry
policy, and the webhook sender against a real local HTTP server."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelmon import cli
from modelmon.alerts.follow import (
    AlertFilter,
    Record,
    decode_alert,
    format_alert,
    format_json,
    format_number,
    render_records,
)
from modelmon.alerts.webhook import (
    ABORTED,
    DELIVERED,
    FAILED,
    Attempt,
    WebhookConfig,
    WebhookCounters,
    WebhookSender,
    backoff_ceiling,
    backoff_delay,
    check_url,
    parse_retry_after,
    post_json,
    redact_url,
    request_body,
    should_retry,
    slack_body,
)
from modelmon.schemas import InvalidEvent

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "alert"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / "valid" / f"{name}.json").read_text())


def alert(**changes) -> dict:
    event = example("firing-accuracy")
    event.update(changes)
    return event


# ----------------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.json")), ids=lambda p: p.stem)
def test_valid_examples_decode(path):
    assert decode_alert(path.read_bytes()) == json.loads(path.read_text())


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.json")), ids=lambda p: p.stem)
def test_invalid_examples_are_refused(path):
    with pytest.raises(InvalidEvent):
        decode_alert(path.read_bytes())


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1, 2]", b'"text"', b"{}"])
def test_garbage_is_refused_with_a_message(raw):
    with pytest.raises(InvalidEvent) as info:
        decode_alert(raw)
    assert info.value.message


# ----------------------------------------------------------------------------------------------------
# Formatting


def test_readable_line_has_every_part_in_order():
    line = format_alert(example("firing-accuracy"))
    assert line == (
        "2024-05-01T12:41:00Z  CRITICAL  firing    accuracy-low  churn-classifier@2024.05.1  "
        "value 0.81 vs threshold 0.9  accuracy 0.81 < 0.90 for 10m (churn-classifier 2024.05.1)"
    )


def test_readable_line_without_version_or_threshold():
    pending = format_alert(example("pending-latency"))
    assert "  eta_regressor  value 250.3 vs threshold 200  " in pending
    assert "@" not in pending.split("  ")[4]
    resolved = format_alert(example("resolved-drift"))
    assert "fraud-detector@3.2.0  value 0.31  feature drift" in resolved
    neither = format_alert(alert(value=None, threshold=None))
    assert "churn-classifier@2024.05.1  -  accuracy" in neither


def test_readable_line_is_one_line_whatever_the_message():
    line = format_alert(alert(message="first\nsecond\r\tthird \x1b[31mred"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("first second  third  [31mred")


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (0, "0"), (200, "200"), (200.0, "200"), (0.81, "0.81"), (1 / 3, "0.333333"),
     (1.5e-7, "1.5e-07"), (2e20, "2e+20"), (-3.25, "-3.25")],
)  # fmt: skip
def test_format_number(value, text):
    assert format_number(value) == text


def test_json_line_round_trips():
    event = example("firing-accuracy")
    line = format_json(event)
    assert "\n" not in line and json.loads(line) == event


# ----------------------------------------------------------------------------------------------------
# Filtering


def test_filter_by_model_globs():
    f = AlertFilter(models=("churn-*", "eta_?egressor"))
    assert f.matches(alert(model="churn-classifier"))
    assert f.matches(alert(model="eta_regressor"))
    assert not f.matches(alert(model="fraud-detector"))
    assert not AlertFilter(models=("Churn-*",)).matches(alert(model="churn-x"))  # case-sensitive


@pytest.mark.parametrize(
    ("minimum", "shown"),
    [(None, {"info", "warning", "critical"}), ("info", {"info", "warning", "critical"}),
     ("warning", {"warning", "critical"}), ("critical", {"critical"})],
)  # fmt: skip
def test_filter_by_minimum_severity(minimum, shown):
    f = AlertFilter(min_severity=minimum)
    assert {s for s in ("info", "warning", "critical") if f.matches(alert(severity=s))} == shown


def test_filter_by_states_and_all_conditions_together():
    f = AlertFilter(models=("churn-*",), min_severity="warning", states=("firing", "resolved"))
    assert f.matches(alert())
    assert not f.matches(alert(state="pending"))
    assert not f.matches(alert(severity="info"))
    assert not f.matches(alert(model="other"))
    assert AlertFilter().matches(alert(state="pending", severity="info"))


def test_filter_refuses_unknown_levels():
    with pytest.raises(ValueError, match="severity"):
        AlertFilter(min_severity="loud")
    with pytest.raises(ValueError, match="state"):
        AlertFilter(states=("open",))


def test_render_records_prints_matches_and_warns_about_bad_records():
    records = [
        Record("alerts", 0, 0, json.dumps(example("firing-accuracy")).encode()),
        Record("alerts", 1, 5, b"{broken"),
        Record("alerts", 2, 7, json.dumps(example("resolved-drift")).encode()),
        Record("alerts", 2, 8, json.dumps({"id": "x", "rule": "r"}).encode()),
        Record("alerts", 3, 1, json.dumps(example("pending-latency")).encode()),
    ]
    out, warnings = [], []
    stats = render_records(
        records, AlertFilter(min_severity="warning"), json_output=True, write=out.append, warn=warnings.append
    )
    assert [json.loads(x)["rule"] for x in out] == ["accuracy-low", "p99-latency-high"]
    assert (stats.shown, stats.filtered, stats.invalid) == (2, 1, 2)
    assert stats.invalid_where == ["alerts[1]@5", "alerts[2]@8"]
    assert len(warnings) == 2 and all(w.startswith("modelmon: warning: ") for w in warnings)
    assert "alerts[2]@8" in warnings[1] and "model" in warnings[1]


# ----------------------------------------------------------------------------------------------------
# Bodies


def test_plain_body_is_the_event():
    event = example("pending-latency")
    assert json.loads(request_body(event, slack=False)) == event


def test_slack_body_has_text_and_blocks():
    body = json.loads(request_body(example("firing-accuracy"), slack=True))
    assert body["text"].startswith(
        ":red_circle: [CRITICAL] firing: accuracy-low on churn-classifier@2024.05.1"
    )
    assert [b["type"] for b in body["blocks"]] == ["section", "section", "context"]
    head = body["blocks"][0]["text"]
    assert head["type"] == "mrkdwn"
    assert "accuracy 0.81 &lt; 0.90" in head["text"]  # Slack markup characters escaped
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert fields[0] == "*Value*\nvalue 0.81 vs threshold 0.9"
    assert "2024-05-01T12:00:00Z to 2024-05-01T12:05:00Z" in fields[1]
    context = body["blocks"][2]["elements"][0]["text"]
    assert "env=prod team=growth" in context and "accuracy-low:churn-classifier:2024.05.1" in context


def test_slack_body_per_state_and_limits():
    resolved = slack_body(example("resolved-drift"))
    assert resolved["text"].startswith(":white_check_mark: [INFO] resolved")
    assert [b["type"] for b in resolved["blocks"]] == ["section", "section", "context"]
    bare = slack_body(alert(value=None, threshold=None, window=None, started_at=None, labels={}))
    assert [b["type"] for b in bare["blocks"]] == ["section", "context"]
    assert slack_body(alert(state="pending"))["text"].startswith(":hourglass_flowing_sand:")
    huge = slack_body(alert(message="<@here> & " + "x" * 4090))
    assert len(huge["text"]) <= 3000
    assert len(huge["blocks"][0]["text"]["text"]) <= 3000
    assert "<@here>" not in huge["blocks"][0]["text"]["text"]


# ----------------------------------------------------------------------------------------------------
# Retry policy


@pytest.mark.parametrize(
    ("status", "retry"),
    [(None, True), (500, True), (502, True), (503, True), (599, True), (429, True),
     (400, False), (401, False), (403, False), (404, False), (410, False), (413, False),
     (301, False), (302, False), (200, False)],
)  # fmt: skip
def test_retry_decision_per_status(status, retry):
    assert should_retry(status) is retry


def test_backoff_schedule_doubles_up_to_the_cap():
    assert [backoff_ceiling(r, 0.5, 30.0) for r in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_ceiling(10_000, 0.5, 30.0) == 30.0  # no overflow


def test_backoff_jitter_stays_in_the_upper_half_and_varies():
    rng = random.Random(7)
    for retry in range(8):
        ceiling = backoff_ceiling(retry, 0.5, 30.0)
        delays = [backoff_delay(retry, 0.5, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # actually jittered


def test_retry_after_parsing():
    now = 1_700_000_000.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    when = format_datetime(datetime.fromtimestamp(now + 42, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(when, now=now) == pytest.approx(42.0)
    past = format_datetime(datetime.fromtimestamp(now - 42, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_retry_delay_honours_retry_after_up_to_the_cap():
    cfg = WebhookConfig("http://h/x", backoff_base_s=1.0, backoff_cap_s=8.0, retry_after_cap_s=5.0)
    assert cfg.retry_delay(0, 2.0) == 2.0
    assert cfg.retry_delay(3, 120.0) == 5.0
    assert 4.0 <= cfg.retry_delay(3, None, random.Random(1)) <= 8.0


def test_budget_bounds_the_worst_case():
    cfg = WebhookConfig("http://h/x", timeout_s=2.0, retries=3, backoff_base_s=1, retry_after_cap_s=10)
    assert cfg.budget_s() == 4 * 3 * 2.0 + 3 * 10


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "h/x", "http://", "http:///x", "http://h:99999/", "http://h/a b"]
)
def test_bad_urls(url):
    with pytest.raises(ValueError):
        check_url(url)


def test_redacted_url_hides_the_secret_path():
    assert redact_url("https://hooks.slack.com/services/T0/B0/secret") == "https://hooks.slack.com/…"
    assert redact_url("http://user:pw@127.0.0.1:8080/hook?token=x") == "http://127.0.0.1:8080/…"
    assert redact_url("http://[::1]:9/") == "http://[::1]:9/"


# ----------------------------------------------------------------------------------------------------
# The sender with a scripted transport


class Waits:
    """Stands in for the stop event: records the waits, never sleeps; can report a stop."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.delays: list[float] = []
        self.stop_at = stop_at

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        return self.stop_at is not None and len(self.delays) >= self.stop_at


def scripted(*attempts: Attempt):
    calls = []
    queue = list(attempts)

    def post(url, body, *, timeout_s, headers):
        calls.append((url, body, timeout_s, dict(headers)))
        return queue.pop(0)

    return post, calls


def sender_with(post, waits, **cfg):
    logs: list[str] = []
    config = WebhookConfig("http://hook.example/x", **{"backoff_base_s": 1.0, "backoff_cap_s": 8.0, **cfg})
    sender = WebhookSender(config, post=post, stop=waits, rng=random.Random(3), log=logs.append)
    return sender, logs


def test_retries_then_success():
    post, calls = scripted(Attempt(None, "refused"), Attempt(503), Attempt(500), Attempt(204))
    waits = Waits()
    sender, logs = sender_with(post, waits, retries=5)
    assert sender.deliver(alert(), delivery_id="alerts-1-7") == DELIVERED
    assert (sender.counters.ok, sender.counters.failed, sender.counters.retried) == (1, 0, 3)
    assert len(calls) == 4 and len({c[1] for c in calls}) == 1  # the same body every time
    assert calls[0][3]["X-Modelmon-Delivery"] == "alerts-1-7"
    assert [c / 2 <= d <= c for c, d in zip((1.0, 2.0, 4.0), waits.delays, strict=True)] == [True] * 3
    assert len(logs) == 3 and "retry 1/5" in logs[0]


@pytest.mark.parametrize("status", [400, 401, 404, 301])
def test_client_errors_are_not_retried(status):
    post, calls = scripted(Attempt(status, body="bad payload"))
    waits = Waits()
    sender, logs = sender_with(post, waits)
    assert sender.deliver(alert()) == FAILED
    assert len(calls) == 1 and waits.delays == []
    assert (sender.counters.ok, sender.counters.failed, sender.counters.retried) == (0, 1, 0)
    assert f"HTTP {status}: bad payload" in logs[0] and "not retried" in logs[0]


def test_gives_up_after_the_retry_budget():
    post, calls = scripted(*[Attempt(503)] * 4)
    sender, logs = sender_with(post, Waits(), retries=3)
    assert sender.deliver(alert()) == FAILED
    assert len(calls) == 4
    assert (sender.counters.ok, sender.counters.failed, sender.counters.retried) == (0, 1, 3)
    assert "gave up after 4 attempts" in logs[-1]


def test_zero_retries_means_one_attempt():
    post, calls = scripted(Attempt(503))
    sender, _ = sender_with(post, Waits(), retries=0)
    assert sender.deliver(alert()) == FAILED and len(calls) == 1


def test_429_waits_for_retry_after_capped():
    post, _ = scripted(Attempt(429, retry_after_s=3.0), Attempt(429, retry_after_s=500.0), Attempt(200))
    waits = Waits()
    sender, _ = sender_with(post, waits, retry_after_cap_s=20.0)
    assert sender.deliver(alert()) == DELIVERED
    assert waits.delays == [3.0, 20.0]


def test_stop_during_a_wait_aborts_without_counting():
    post, calls = scripted(Attempt(503), Attempt(200))
    sender, _ = sender_with(post, Waits(stop_at=1))
    assert sender.deliver(alert()) == ABORTED
    assert len(calls) == 1
    assert sender.counters.snapshot() == (0, 0, 0, 0, 0)


def test_counters_render_in_prometheus_notation():
    text = WebhookCounters(ok=3, failed=1, retried=2, filtered=4, invalid=5).render()
    assert 'modelmon_webhook_deliveries_total{result="ok"} 3' in text
    assert 'modelmon_webhook_deliveries_total{result="failed"} 1' in text
    assert 'modelmon_webhook_deliveries_total{result="retried"} 2' in text
    assert 'modelmon_webhook_events_skipped_total{reason="invalid"} 5' in text
    assert "\n" not in text


# ----------------------------------------------------------------------------------------------------
# Against a real HTTP server


class Hook:
    """A local webhook receiver answering from a script of (status, headers, delay) per request."""

    def __init__(self, script=(), default=(200, {}, 0.0)) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.requests.append((self.path, dict(self.headers), body))
                    status, headers, delay = hook.script.pop(0) if hook.script else hook.default
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    payload = b"ok" if status < 300 else b"nope"
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/abc?x=1"

    def __enter__(self) -> Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def real_sender(url, **cfg):
    logs: list[str] = []
    config = WebhookConfig(url, **{"backoff_base_s": 0.01, "backoff_cap_s": 0.05, **cfg})
    return WebhookSender(config, rng=random.Random(1), log=logs.append), logs


def test_http_retries_then_success():
    with Hook([(503, {}, 0), (500, {}, 0)]) as hook:
        sender, _ = real_sender(hook.url, retries=3)
        assert sender.deliver(alert(), delivery_id="t-0-1") == DELIVERED
    assert (sender.counters.ok, sender.counters.failed, sender.counters.retried) == (1, 0, 2)
    assert len(hook.requests) == 3
    path, headers, body = hook.requests[-1]
    assert path == "/hooks/abc?x=1"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Modelmon-Delivery"] == "t-0-1"
    assert headers["User-Agent"].startswith("modelmon/")
    assert json.loads(body) == alert()


def test_http_429_retry_after_is_honoured():
    with Hook([(429, {"Retry-After": "0"}, 0)]) as hook:
        sender, logs = real_sender(hook.url, retries=2)
        assert sender.deliver(alert()) == DELIVERED
    assert len(hook.requests) == 2 and "HTTP 429" in logs[0] and "in 0.0 s" in logs[0]


def test_http_4xx_is_not_retried():
    with Hook(default=(400, {}, 0)) as hook:
        sender, logs = real_sender(hook.url, retries=5)
        assert sender.deliver(alert()) == FAILED
        assert sender.deliver(alert(state="resolved")) == FAILED
    assert len(hook.requests) == 2
    assert (sender.counters.ok, sender.counters.failed, sender.counters.retried) == (0, 2, 0)
    assert "HTTP 400: nope" in logs[0]


def test_html_error_pages_stay_out_of_the_log():
    with Hook([(404, {"Content-Type": "text/html; charset=utf-8"}, 0)]) as hook:
        sender, logs = real_sender(hook.url)
        assert sender.deliver(alert()) == FAILED
    assert "HTTP 404 (not retried)" in logs[0] and "nope" not in logs[0]


def test_http_timeout_is_retried_and_counted():
    with Hook(default=(200, {}, 1.0)) as hook:
        sender, logs = real_sender(hook.url, retries=1, timeout_s=0.2)
        started = time.monotonic()
        assert sender.deliver(alert()) == FAILED
        elapsed = time.monotonic() - started
    assert len(hook.requests) == 2
    assert (sender.counters.ok, sender.counters.failed, sender.counters.retried) == (0, 1, 1)
    assert "timed out after 0.2 s" in logs[-1]
    assert elapsed < 1.5  # bounded by the budget, not by the slow server


def test_http_connection_refused_is_retried():
    with Hook() as hook:
        url = hook.url
    sender, logs = real_sender(url, retries=2)  # the server is gone: nothing listens on the port
    assert sender.deliver(alert()) == FAILED
    assert sender.counters.retried == 2 and sender.counters.failed == 1
    assert "ConnectionRefusedError" in logs[-1]


def test_http_slack_body_and_basic_auth():
    with Hook() as hook:
        url = hook.url.replace("http://", "http://bot:s%40cret@")
        sender, _ = real_sender(url, slack=True)
        assert sender.deliver(example("resolved-drift")) == DELIVERED
    _, headers, body = hook.requests[0]
    assert headers["Authorization"] == "Basic Ym90OnNAY3JldA=="  # bot:s@cret
    assert set(json.loads(body)) == {"text", "blocks"}


def test_post_json_never_raises():
    attempt = post_json("http://127.0.0.1:1/x", b"{}", timeout_s=0.5)
    assert attempt.status is None and attempt.error


# ----------------------------------------------------------------------------------------------------
# CLI arguments (no Kafka is touched: every case fails while parsing)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["alerts", "sink", "--webhook", "ftp://x/y"], "argument --webhook: expected an http:// or https://"),
        (["alerts", "sink", "--webhook", "hooks.example/x"], "argument --webhook"),
        (["alerts", "sink"], "the following arguments are required: --webhook"),
        (["alerts", "sink", "--webhook", "http://h/x", "--timeout", "-1"], "argument --timeout: must be"),
        (["alerts", "sink", "--webhook", "http://h/x", "--timeout", "soon"], "argument --timeout: expected"),
        (["alerts", "sink", "--webhook", "http://h/x", "--retries", "-3"], "argument --retries: must be 0"),
        (["alerts", "sink", "--webhook", "http://h/x", "--min-severity", "loud"], "--min-severity"),
        (["alerts", "--severity", "urgent"], "argument --severity: invalid choice"),
        (["alerts", "--state", "open"], "argument --state: invalid choice"),
        (["alerts", "tail"], "invalid choice: 'tail'"),
        (["alerts", "--json", "sink", "--webhook", "http://h/x"], "--json does not apply"),
        (["alerts", "--model", "a*", "sink", "--webhook", "http://h/x"], "--model must come after `sink`"),
    ],
)
def test_bad_alerts_arguments_exit_2_with_one_line(args, needle, capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("MODELMON_")]:
        monkeypatch.delenv(name)
    assert cli.main(args) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1, out.err
    assert out.err.startswith("modelmon: error: ") and needle in out.err


def test_help_lists_the_alerts_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "alerts    print or follow alerts" in capsys.readouterr().out
