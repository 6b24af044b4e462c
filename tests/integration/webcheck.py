"""Harness of the web tests: workers with their web server on free ports, loaded with simulated traffic.

The traffic is two hours of event time for three models (two classifiers and a regressor, on stage-2
partitions 0, 1 and 2) at 6 predictions/s, with an accuracy drop of 25
points on fraud-detector from minute 75 to the end, so the example rules' accuracy alerts are firing when
the load is caught up. Event time moves with the events only (no idle advance), so the windows stay
where the test put them, whatever the wall clock does.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from modelmon.client import MonitorClient
from modelmon.settings import Settings
from modelmon.simulate import Incident, LabelDelay, SimConfig, generate
from modelmon.topics import create_topics

from .streamcheck import WorkerProcess, wait_for_lag_zero

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = ROOT / "deploy" / "alert-rules.yaml"
ARTIFACTS = ROOT / ".test-artifacts"
T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
DURATION_S = 7200.0
INCIDENT_MODEL = "fraud-detector"
INCIDENT_START_S = 4500.0


def web_settings(settings: Settings, **changes: Any) -> Settings:
    """The test's settings for web tests: one-minute windows, event time driven by the events."""
    base = dict(
        window_s=60.0,
        join_horizon_s=3600.0,
        idle_advance_s=36000.0,
        emit_interval_s=1.0,
        tick_interval_s=0.5,
        session_timeout_s=6.0,
        recovery_stall_s=30.0,
        alert_rules=str(EXAMPLE_RULES),
    )
    base.update(changes)
    return settings.with_(**base)


class WebWorker(WorkerProcess):
    """A worker subprocess and a small HTTP client for its web server."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, token: str | None = None, timeout: float = 30.0) -> tuple[int, Any, dict]:
        """(status, decoded body (JSON, else text), headers) of a GET."""
        request = urllib.request.Request(self.url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status, raw, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, raw, headers = err.code, err.read(), dict(err.headers)
        ctype = headers.get("Content-Type", "")
        return status, orjson.loads(raw) if "json" in ctype else raw.decode(), headers

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if self.get("/ready", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"worker not ready within {timeout_s} s\n{self.log_tail()}")


def traffic_config(seed: int = 20261128) -> SimConfig:
    return SimConfig(
        models=3,
        versions=1,
        rate=6.0,
        duration_s=DURATION_S,
        label_delay=LabelDelay(median_s=5.0, sigma=0.5, max_s=120.0),
        seed=seed,
        start_ts=T0,
        incidents=(
            Incident(
                "accuracy_drop",
                INCIDENT_START_S,
                DURATION_S - INCIDENT_START_S,
                model=INCIDENT_MODEL,
                magnitude=0.25,
            ),
        ),
        speed=1e9,
    )


def load_traffic(settings: Settings, config: SimConfig | None = None) -> int:
    """Create the topics and produce the simulated traffic; return how many events were sent."""
    create_topics(settings)
    n = 0
    with MonitorClient(settings) as mon:
        for event in generate(config or traffic_config()):
            mon.send_raw(event.topic, event.key, event.value())
            n += 1
    return n


def expected_predictions(config: SimConfig | None = None) -> dict[tuple[str, str | None], int]:
    """Offline count of the valid predictions per (model, version): first event per request_id."""
    seen: set[str] = set()
    counts: dict[tuple[str, str | None], int] = {}
    for event in generate(config or traffic_config()):
        if event.kind != "prediction" or event.key in seen:
            continue
        seen.add(event.key)
        series = (event.payload["model"], event.payload.get("model_version"))
        counts[series] = counts.get(series, 0) + 1
    return counts


def caught_up(
    settings: Settings,
    workers: list[WebWorker],
    expected: dict[tuple[str, str | None], int] | None = None,
    timeout_s: float = 240.0,
) -> None:
    """Wait until the group committed every input, every worker serves, and (given the offline counts)
    the API's windows hold every prediction: stage 2 reads its own topic, behind the inputs."""
    wait_for_lag_zero(settings, timeout_s=timeout_s)
    for worker in workers:
        worker.wait_ready()
    if expected is None:
        return
    counted: dict = {}

    def complete() -> bool:
        for (model, version), want in expected.items():
            path = f"/api/v1/models/{model}/windows?version={version or ''}&limit=10000"
            status, body, _ = workers[0].get(path, token=settings.api_token or None)
            got = sum(w["traffic"]["predictions"] for w in body["windows"]) if status == 200 else None
            counted[(model, version)] = got
            if got != want:
                return False
        return True

    try:
        wait_for(complete, timeout_s, "the windows to hold every prediction", workers[0])
    except AssertionError as exc:
        raise AssertionError(f"windows hold {counted} predictions, expected {expected}: {exc}") from None


def wait_for(predicate: Any, timeout_s: float, what: str, worker: WorkerProcess | None = None) -> Any:
    """Poll ``predicate()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = worker.log_tail(60) if worker is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tail}")
        time.sleep(0.5)
