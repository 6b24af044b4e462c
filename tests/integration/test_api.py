"""The HTTP API against a live worker on the real broker: its answers equal the events on model-metrics and
alerts, bad parameters get a 400 naming the parameter, the token and CORS settings hold, and /metrics
agrees with the windows (read by prometheus_client's parser).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..promql import PROMETHEUS_SERIES, dashboard_targets, metric_names
from .streamcheck import read_topic
from .webcheck import (
    INCIDENT_MODEL,
    T0,
    WebWorker,
    caught_up,
    expected_predictions,
    load_traffic,
    wait_for,
    web_settings,
)

pytestmark = pytest.mark.integration

TOKEN = "s3cret-" + uuid.uuid4().hex
ALLOWED_ORIGIN = "http://dashboards.example"
VERSIONS = {"fraud-detector": "1.0.0", "churn": "2.0.0", "price-regressor": "3.0.0"}
MODELS = tuple(VERSIONS)


@pytest.fixture(scope="module")
def live(kafka, tmp_path_factory):
    s = web_settings(
        kafka.with_(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", app_id=f"mm{uuid.uuid4().hex[:8]}"),
        api_token=TOKEN,
        cors_origins=(ALLOWED_ORIGIN,),
    )
    load_traffic(s)
    worker = WebWorker(s, "api1", tmp_path_factory.mktemp("api")).start()
    try:
        caught_up(s, [worker], expected_predictions())
        yield s, worker
    finally:
        worker.stop()


def _get(worker: WebWorker, path: str):
    status, body, _ = worker.get(path, token=TOKEN)
    assert status == 200, (path, status, body)
    return body


def _strip(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "emitted_at"}


def _latest_metric_events(s) -> tuple[dict, dict]:
    """Newest revision of every window, and the last rolling event of every (model, version, view)."""
    windows: dict[tuple, dict] = {}
    views: dict[tuple, dict] = {}
    for e in read_topic(s, "model-metrics"):
        if e["view"] == "window":
            key = (e["model"], e["model_version"], e["window"]["start"])
            if key not in windows or e["revision"] >= windows[key]["revision"]:
                windows[key] = e
        else:
            views[(e["model"], e["model_version"], e["view"])] = e  # same key, same partition: in order
    return windows, views


def test_api_answers_equal_the_metric_and_alert_events(live) -> None:
    s, worker = live
    models = _get(worker, "/api/v1/models")["models"]
    # Invalid events that name a model are counted in a series without a version (see the README).
    versioned = [(m["model"], m["model_version"]) for m in models if m["model_version"] is not None]
    assert versioned == sorted(VERSIONS.items())
    tasks = {m["model"]: m["task"] for m in models if m["model_version"] is not None}
    assert tasks["fraud-detector"] == "classification" and tasks["price-regressor"] == "regression"

    def in_sync():
        topic_windows, topic_views = _latest_metric_events(s)
        for model in MODELS:
            api = _get(worker, f"/api/v1/models/{model}/windows?limit=10000")
            if api["truncated"]:
                return None
            for event in api["windows"]:
                key = (event["model"], event["model_version"], event["window"]["start"])
                if key not in topic_windows or _strip(topic_windows[key]) != _strip(event):
                    return None
            version = VERSIONS[model]
            views = _get(worker, f"/api/v1/models/{model}?version={version}")["versions"][0]["views"]
            for view, event in views.items():
                published = topic_views.get((model, version, view))
                if published is None or _strip(published) != _strip(event):
                    return None
        return topic_windows, topic_views

    # The worker publishes changed windows, then the views, every second; once the input is caught up
    # both sides settle (a read of the topic can fall between a window and its views: poll).
    topic_windows, topic_views = wait_for(
        in_sync, 60, "API windows equal to the model-metrics events", worker
    )
    for model, version in VERSIONS.items():
        query = f"version={version}&limit=10000"
        api_windows = _get(worker, f"/api/v1/models/{model}/windows?{query}")["windows"]
        mine = {k: e for k, e in topic_windows.items() if k[:2] == (model, version)}
        assert len(api_windows) == len(mine) > 100, model
        assert [e["window"]["start"] for e in api_windows] == sorted(k[2] for k in mine)

        body = _get(worker, f"/api/v1/models/{model}?version={version}")
        assert body["model"] == model and len(body["versions"]) == 1
        entry = body["versions"][0]
        newest = max(mine)
        assert _strip(entry["current"]) == _strip(mine[newest])
        assert entry["windows"] == len(mine)
        assert entry["last_window_end"] == mine[newest]["window"]["end"]
        for view in ("5m", "1h", "24h"):
            assert _strip(entry["views"][view]) == _strip(topic_views[(model, entry["model_version"], view)])

        listed = next(
            m
            for m in _get(worker, "/api/v1/models")["models"]
            if (m["model"], m["model_version"]) == (model, version)
        )
        assert {k: listed[k] for k in listed} == {k: entry[k] for k in listed}

    # Alerts: the API's last event per (rule, model, version) is the last one on the alerts topic.
    last: dict[tuple, dict] = {}
    for e in read_topic(s, "alerts"):
        last[(e["rule"], e["model"], e["version"])] = e
    api_alerts = _get(worker, "/api/v1/alerts?limit=1000")["alerts"]
    assert sorted((a["rule"], a["model"], a["version"]) for a in api_alerts) == sorted(last)
    for a in api_alerts:
        assert a == last[(a["rule"], a["model"], a["version"])]
    firing = _get(worker, f"/api/v1/alerts?state=firing&model={INCIDENT_MODEL}")["alerts"]
    assert any(a["rule"].startswith("accuracy") for a in firing), firing
    assert all(a["state"] == "firing" and a["model"] == INCIDENT_MODEL for a in firing)
    states = [a["state"] for a in api_alerts]
    assert states == sorted(states, key=["firing", "pending", "resolved"].index)


def test_window_ranges_and_limits(live) -> None:
    _, worker = live
    every = _get(worker, "/api/v1/models/churn/windows?version=2.0.0&limit=10000")["windows"]
    starts = [e["window"]["start"] for e in every]
    # [from, to) in RFC 3339 and in unix seconds select the same windows
    a, b = T0 + 600, T0 + 1800
    by_text = _get(
        worker, "/api/v1/models/churn/windows?version=2.0.0&from=2026-01-05T00:10:00Z&to=2026-01-05T00:30:00Z"
    )
    by_unix = _get(worker, f"/api/v1/models/churn/windows?version=2.0.0&from={a:.0f}&to={b:.0f}")
    assert by_text["windows"] == by_unix["windows"]
    assert [e["window"]["start"] for e in by_text["windows"]] == [
        t for t in starts if "2026-01-05T00:10:00Z" <= t < "2026-01-05T00:30:00Z"
    ]
    assert len(by_text["windows"]) == 20 and not by_text["truncated"]
    assert by_text["from"] == "2026-01-05T00:10:00Z" and by_text["to"] == "2026-01-05T00:30:00Z"
    # a limit keeps the newest windows and says so
    cut = _get(worker, "/api/v1/models/churn/windows?version=2.0.0&limit=5")
    assert cut["truncated"] and [e["window"]["start"] for e in cut["windows"]] == starts[-5:]
    # without a version filter, the versionless series (invalid events naming the model) comes too
    both = _get(worker, "/api/v1/models/churn/windows?limit=10000")["windows"]
    assert [e for e in both if e["model_version"] == "2.0.0"] == every
    assert {e["model_version"] for e in both} == {None, "2.0.0"}
    assert worker.get("/api/v1/models/churn?version=9.9.9", token=TOKEN)[0] == 404


@pytest.mark.parametrize(
    ("path", "status", "parameter"),
    [
        ("/api/v1/models/no-such-model", 404, None),
        ("/api/v1/models/no-such-model/windows", 404, None),
        ("/api/v1/models/churn/windows?from=yesterday", 400, "from"),
        ("/api/v1/models/churn/windows?to=2026-13-01T00:00:00Z", 400, "to"),
        ("/api/v1/models/churn/windows?from=2026-01-05T01:00:00Z&to=2026-01-05T00:00:00Z", 400, "from"),
        ("/api/v1/models/churn/windows?from=2026-01-05T01:00:00", 400, "from"),
        ("/api/v1/models/churn/windows?limit=0", 400, "limit"),
        ("/api/v1/models/churn/windows?limit=10001", 400, "limit"),
        ("/api/v1/models/churn/windows?limit=ten", 400, "limit"),
        ("/api/v1/models/churn/windows?from=1e300", 400, "from"),
        ("/api/v1/alerts?state=burning", 400, "state"),
        ("/api/v1/alerts?severity=fatal", 400, "severity"),
        ("/api/v1/alerts?limit=1001", 400, "limit"),
        ("/api/v1/models/" + "m" * 129, 400, "model"),
        ("/api/v1/nothing-here", 404, None),
    ],
)
def test_bad_requests_get_a_clear_4xx(live, path: str, status: int, parameter: str | None) -> None:
    _, worker = live
    got, body, headers = worker.get(path, token=TOKEN)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/json")
    err = body["error"]
    assert err["status"] == status and err["message"]
    assert err["code"] == ("bad_parameter" if status == 400 else "not_found")
    assert err.get("parameter") == parameter
    if parameter is not None:
        assert err["message"].startswith(f"{parameter}: ")


def test_token_guards_the_api_and_metrics_but_not_probes(live) -> None:
    _, worker = live
    for path in ("/api/v1/models", "/api/v1/alerts", "/api/v1/health", "/api/v1/openapi.json", "/metrics"):
        status, body, headers = worker.get(path)
        assert status == 401, path
        assert body["error"]["code"] == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert worker.get(path, token="wrong-" + TOKEN)[0] == 401
        assert worker.get(path, token=TOKEN)[0] == 200
    for path in ("/health", "/ready", "/"):
        assert worker.get(path)[0] == 200, path
    # Faust's own pages are not served
    for path in ("/router", "/table", "/stats", "/graph"):
        assert worker.get(path, token=TOKEN)[0] == 404, path


def test_cors_only_for_the_configured_origin(live) -> None:
    import urllib.request

    _, worker = live

    def headers_for(origin: str, method: str = "GET") -> dict:
        req = urllib.request.Request(worker.url + "/api/v1/models", method=method)
        req.add_header("Origin", origin)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        if method == "OPTIONS":
            req.add_header("Access-Control-Request-Method", "GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return dict(resp.headers)
        except urllib.error.HTTPError as err:
            return dict(err.headers)

    assert headers_for(ALLOWED_ORIGIN)["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Access-Control-Allow-Origin" not in headers_for("http://evil.example")
    preflight = headers_for(ALLOWED_ORIGIN, "OPTIONS")
    assert preflight["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in headers_for("http://evil.example", "OPTIONS")


def test_prometheus_metrics_agree_with_the_windows(live) -> None:
    _, worker = live
    status, text, headers = worker.get("/metrics", token=TOKEN)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("modelmon_"), family.name
        for sample in family.samples:
            assert "request_id" not in sample.labels
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    for model, version in VERSIONS.items():
        body = _get(worker, f"/api/v1/models/{model}?version={version}")["versions"][0]
        windows = _get(worker, f"/api/v1/models/{model}/windows?version={version}&limit=10000")["windows"]
        labels = (("model", model), ("model_version", version))
        predictions = sum(w["traffic"]["predictions"] for w in windows)
        assert samples["modelmon_predictions_total"][labels] == predictions
        assert samples["modelmon_prediction_errors_total"][labels] == sum(
            w["traffic"]["errors"] for w in windows
        )
        assert samples["modelmon_labels_total"][labels] == sum(w["labels"]["labelled"] for w in windows)
        assert samples["modelmon_prediction_latency_seconds_count"][labels] == predictions - sum(
            w["counters"]["rejected_by_reason"].get("latency", 0) for w in windows
        )
        inf = (*labels, ("le", "+Inf"))
        assert samples["modelmon_prediction_latency_seconds_bucket"][tuple(sorted(inf))] == predictions
        for view in ("5m", "1h"):
            event = body["views"][view]
            key = tuple(sorted((*labels, ("view", view))))
            assert samples["modelmon_prediction_rate_per_second"][key] == event["traffic"]["rate_per_s"]
            if event["classification"] is not None:
                assert samples["modelmon_accuracy"][key] == event["classification"]["accuracy"]
    ready = samples["modelmon_worker_ready"][()]
    assert ready == 1.0
    firing = _get(worker, "/api/v1/alerts?state=firing")["alerts"]
    assert len(samples.get("modelmon_alerts_firing", {})) == len(firing) > 0


def test_health_reports_the_worker(live) -> None:
    import psutil

    _, worker = live
    health = _get(worker, "/api/v1/health")
    assert health["worker_id"] == "api1" and health["ready"] is True
    assert health["partitions"]["output"] == [0, 1, 2, 3]
    assert health["workers"] == [{"url": worker.url, "output_partitions": [0, 1, 2, 3]}]
    rss = psutil.Process(worker.proc.pid).memory_info().rss
    assert abs(health["process"]["rss_bytes"] - rss) < 0.2 * rss
    assert abs(health["process"]["threads"] - psutil.Process(worker.proc.pid).num_threads()) <= 5
    assert health["tables"]["windows"] > 300
    assert health["counters"]["joined"] > 10_000
    assert time.time() - 60 < _epoch(health["time"]) <= time.time() + 1


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_grafana_dashboard_reads_metrics_this_worker_exposes(live) -> None:
    """deploy/grafana's dashboard against a live /metrics: every metric its queries read is there, but the
    firing-alert gauge when no alert fires (tests/unit/test_deploy.py checks every name statically)."""
    _, worker = live
    status, text, _ = worker.get("/metrics", token=TOKEN)
    assert status == 200
    exposed = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    used = set().union(*(metric_names(target["expr"]) for _, target in dashboard_targets()))
    conditional = {"modelmon_alerts_firing"} if "modelmon_alerts_firing{" not in text else set()
    missing = used - exposed - PROMETHEUS_SERIES - conditional
    assert not missing, f"the dashboard reads metrics this worker does not expose: {sorted(missing)}"
