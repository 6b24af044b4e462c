"""The dashboard at / in headless Chromium (Debian's chromium driven by Playwright) against a live worker.

One worker with an API token, loaded with webcheck's two hours of simulated traffic (an accuracy drop on
fraud-detector with firing alerts). The page must ask for the token, then render: the models in the
selector, one chart point per API window with the API's exact value (read from the points' data-*
attributes), the headline numbers of the rolling views, and the firing alerts; it keeps its data and
shows an error when the API goes away. A screenshot is kept in .test-artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from .webcheck import (
    ARTIFACTS,
    INCIDENT_MODEL,
    WebWorker,
    caught_up,
    expected_predictions,
    load_traffic,
    wait_for,
    web_settings,
)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
TOKEN = "dash-" + uuid.uuid4().hex[:12]

SCREENSHOT = ARTIFACTS / "dashboard.png"
HEADLINE = [  # some of the headline fields the page must show (all shown ones are compared with the API)
    "views.5m.classification.accuracy",
    "views.5m.classification.accuracy_ci_low",
    "views.5m.classification.accuracy_ci_high",
    "views.1h.classification.accuracy",
    "views.5m.traffic.rate_per_s",
    "views.5m.latency.p95_ms",
    "views.1h.labels.coverage",
    "views.1h.labels.delay_p95_s",
]

# chart series -> the metric event field it draws
SERIES = {
    "accuracy": "classification.accuracy",
    "mae": "regression.mae",
    "rate": "traffic.rate_per_s",
    "latency_p95": "latency.p95_ms",
    "coverage": "labels.coverage",
    "delay_p95": "labels.delay_p95_s",
}


def _field(event: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(event, dict):
            return None
        event = event.get(key)
    return event


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _browser_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.fail(
            "Debian's chromium is missing (no `chromium` on PATH, no /usr/bin/chromium): "
            "`make system-deps` installs it (apt-get install chromium)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _browser_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the Python package playwright is missing: `make venv` installs the dev extras", pytrace=False
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def worker(kafka, tmp_path_factory) -> Iterator[WebWorker]:
    """One worker with a token, caught up on the simulated traffic, with the accuracy alert firing."""
    base = kafka.with_(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", app_id=f"mm{uuid.uuid4().hex[:8]}")
    s = web_settings(base, api_token=TOKEN)
    load_traffic(s)
    w = WebWorker(s, "w1", tmp_path_factory.mktemp("dash")).start()
    try:
        caught_up(s, [w], expected_predictions())
        wait_for(lambda: _firing(w, INCIDENT_MODEL), 120, "a firing alert on the incident model", w)
        yield w
    finally:
        w.stop()


def _api(w: WebWorker, path: str) -> Any:
    status, body, _ = w.get(path, token=TOKEN)
    assert status == 200, (path, status, body)
    return body


def _firing(w: WebWorker, model: str | None = None) -> list[dict]:
    alerts = _api(w, "/api/v1/alerts?state=firing&limit=1000")["alerts"]
    return [a for a in alerts if model is None or a["model"] == model]


def _renders(page) -> int:
    return int(page.evaluate("document.body.dataset.renders || 0"))


def _next_render(page, after: int, timeout_s: float = 20) -> None:
    page.wait_for_function(f"(+document.body.dataset.renders || 0) > {after}", timeout=timeout_s * 1000)


def _option_label(page, model: str) -> str:
    return page.locator(f'#model option[data-model="{model}"]').first.inner_text()


def _page_state(page) -> dict[str, Any]:
    """What the page shows: the selection, the chart points and the headline fields, read in one go."""
    return page.evaluate(
        """() => {
        const box = document.getElementById('charts');
        const charts = {};
        for (const svg of box.querySelectorAll('svg.chart')) {
          charts[svg.dataset.series] = {
            declared: +svg.dataset.points,
            points: [...svg.querySelectorAll('circle.pt')].map((c) => [c.dataset.start, c.dataset.value,
              c.dataset.ciLow ?? null, c.dataset.ciHigh ?? null]),
          };
        }
        const fields = {};
        for (const el of document.querySelectorAll('#headline [data-field]')) {
          fields[el.dataset.field] = el.dataset.value;
        }
        return {renders: +document.body.dataset.renders, sel: {...box.dataset}, charts, fields,
          options: [...document.querySelectorAll('#model option')]
            .map((o) => [o.dataset.model, o.dataset.version]),
          selected: document.getElementById('model').selectedOptions[0]?.dataset.model,
          alerts: [...document.querySelectorAll('#alerts li.alert')].map((li) => ({...li.dataset}))};
    }"""
    )


def _mismatches(w: WebWorker, shown: dict[str, Any]) -> list[str]:
    """Differences between what the page shows and what the API answers for the same selection."""
    sel = shown["sel"]
    model, version = sel["model"], sel["version"] or None
    vq = urlencode({"version": version or ""})
    problems: list[str] = []
    models = _api(w, "/api/v1/models")["models"]
    if shown["options"] != [[m["model"], m["model_version"] or ""] for m in models]:
        problems.append(f"selector {shown['options']} != API models {models}")
    mv = next((m for m in models if m["model"] == model and m["model_version"] == version), None)
    if mv is None:
        return [*problems, f"selected {model}@{version} is not in the API's models"]
    rng = int(sel["range"])
    if _time(sel["to"]) != _time(mv["last_window_end"]) or _time(sel["from"]) != _time(sel["to"]) - timedelta(
        seconds=rng
    ):
        problems.append(
            f"range {sel['from']}..{sel['to']} is not the last {rng} s up to {mv['last_window_end']}"
        )
    query = urlencode({"version": version or "", "from": sel["from"], "to": sel["to"], "limit": 10000})
    windows = _api(w, f"/api/v1/models/{model}/windows?{query}")["windows"]
    if int(sel["windows"]) != len(windows):
        problems.append(f"page has {sel['windows']} windows, API {len(windows)}")
    for series, chart in shown["charts"].items():
        path = SERIES[series]
        expected = [(e["window"]["start"], _field(e, path)) for e in windows if _field(e, path) is not None]
        got = [(start, json.loads(value)) for start, value, _, _ in chart["points"]]
        if len(got) != len(expected) or chart["declared"] != len(expected):
            problems.append(
                f"{series}: {len(got)} points (declared {chart['declared']}), API {len(expected)}"
            )
        elif got != expected:
            bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
            problems.append(f"{series}: point {bad} shows {got[bad]}, API {expected[bad]}")
        if series == "accuracy":
            ci = [(_field(e, "classification.accuracy_ci_low"), _field(e, "classification.accuracy_ci_high"))
                  for e in windows if _field(e, path) is not None]  # fmt: skip
            shown_ci = [(json.loads(lo), json.loads(hi)) for _, _, lo, hi in chart["points"]]
            if shown_ci != ci:
                problems.append("accuracy: the points' confidence bounds differ from the API's")
    summary = _api(w, f"/api/v1/models/{model}?{vq}")["versions"]
    summary = next(v for v in summary if v["model_version"] == version)
    if not shown["fields"]:
        problems.append("no headline numbers")
    for name, value in shown["fields"].items():
        if json.loads(value) != _field(summary, name):
            problems.append(f"headline {name} shows {value}, API {_field(summary, name)!r}")
    firing = {(a["rule"], a["model"], a["version"] or "", a["severity"]) for a in _firing(w)}
    listed = {(a["rule"], a["model"], a["version"], a["severity"]) for a in shown["alerts"]}
    if firing != listed or any(a["state"] != "firing" for a in shown["alerts"]):
        problems.append(f"firing alerts shown {sorted(listed)} != API {sorted(firing)}")
    return problems


def _check_against_api(page, w: WebWorker, patience_s: float = 80.0) -> dict[str, Any]:
    """Compare the page with the API. A difference may be a change between the two reads, so the
    comparison is repeated after the page's next refreshes (it reads the newest 15 min every 5 s and the
    whole range every 60 s) before it fails."""
    deadline = time.monotonic() + patience_s
    while True:
        shown = _page_state(page)
        problems = _mismatches(w, shown)
        if not problems:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError("the dashboard differs from the API:\n" + "\n".join(problems))
        _next_render(page, shown["renders"])


def test_dashboard_shows_the_api_numbers_and_the_incident(browser, worker: WebWorker) -> None:
    started = time.monotonic()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        # Without a token: the page asks for one and shows no data.
        page.goto(worker.url + "/")
        page.wait_for_function("document.body.dataset.state === 'token'", timeout=15000)
        assert page.is_visible("#token-form") and page.is_hidden("#model-section")
        assert page.locator("#model option").count() == 0
        page.fill("#token", TOKEN)
        page.click("#token-form button[type=submit]")
        _next_render(page, 0)
        assert page.evaluate("document.body.dataset.state") == "ok"
        assert page.is_hidden("#token-form")
        assert page.evaluate("sessionStorage.getItem('modelmon.token')") == TOKEN

        # The default selection is a model with a firing alert, range 1 h, one point per window.
        shown = _check_against_api(page, worker)
        assert any(a["model"] == shown["sel"]["model"] for a in shown["alerts"]), shown["alerts"]
        if shown["sel"]["model"] != INCIDENT_MODEL:
            before = _renders(page)
            page.select_option("#model", label=_option_label(page, INCIDENT_MODEL))
            _next_render(page, before)
            shown = _check_against_api(page, worker)
        assert shown["selected"] == INCIDENT_MODEL and shown["sel"]["model"] == INCIDENT_MODEL
        assert shown["sel"]["range"] == "3600" and shown["sel"]["task"] == "classification"
        assert shown["charts"]["rate"]["declared"] == int(shown["sel"]["windows"]) == 60
        assert shown["charts"]["accuracy"]["declared"] > 30
        for name in HEADLINE:
            assert name in shown["fields"], name
        incident = [a for a in shown["alerts"] if a["model"] == INCIDENT_MODEL]
        assert incident, shown["alerts"]
        assert "firing" in page.inner_text("#model-title")
        assert page.locator(f"#alerts li.alert.sev-{incident[0]['severity']}").count() >= 1
        # The incident is visible: the accuracy drop in the chart (the last points are far below the first).
        acc = [json.loads(v) for _, v, _, _ in shown["charts"]["accuracy"]["points"]]
        assert min(acc[-10:]) < max(acc[:10]) - 0.1, acc

        # Hovering a window shows its exact values.
        page.hover("svg.chart[data-series=accuracy]", position={"x": 700, "y": 50})
        tip = page.inner_text("#tip")
        start = page.evaluate("window.modelmon.state.hover")
        point = f'svg.chart[data-series=accuracy] circle.pt[data-start="{start}"]'
        value = page.get_attribute(point, "data-value")
        assert page.is_visible("#tip") and "Accuracy" in tip and value in tip, (start, value, tip)

        page.mouse.move(0, 0)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        print(f"\ndashboard screenshot: {SCREENSHOT}")

        # Other ranges; each checked after its first render (the whole range read) and after a refresh
        # (older windows kept, the newest 15 min read again).
        for rng in ("900", "21600"):
            before = _renders(page)
            page.select_option("#range", rng)
            _next_render(page, before)
            shown = _check_against_api(page, worker)
            assert shown["sel"]["range"] == rng
            expected = 15 if rng == "900" else 120
            assert shown["charts"]["rate"]["declared"] == expected, (rng, shown["charts"]["rate"]["declared"])
            _next_render(page, shown["renders"])
            assert _check_against_api(page, worker)["charts"]["rate"]["declared"] == expected
        tail_from = (_time(shown["sel"]["to"]) - timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        tail = "/windows?" + urlencode({"version": shown["sel"]["version"], "from": tail_from}) + "&"
        assert any(tail in url for url in requested), (tail, requested[-5:])
        # Every other model and version (a regression model draws MAE instead of accuracy; the series
        # without a version hold only the dead-lettered events counted at the wall clock).
        for model, version in [o for o in shown["options"] if o[0] != INCIDENT_MODEL]:
            before = _renders(page)
            page.select_option("#model", value=json.dumps([model, version or None], separators=(",", ":")))
            _next_render(page, before)
            shown = _check_against_api(page, worker)
            assert (shown["sel"]["model"], shown["sel"]["version"]) == (model, version)
            assert f"model={model}" in page.url
            if version:
                first = "mae" if shown["sel"]["task"] == "regression" else "accuracy"
                assert shown["charts"][first]["declared"] > 0, (model, shown["charts"].keys())
        assert not errors, errors
    finally:
        page.close()
    print(f"dashboard test: {time.monotonic() - started:.1f} s in the browser")


def test_token_in_the_url_fragment(browser, worker: WebWorker) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{worker.url}/?range=900#token={TOKEN}")
        _next_render(page, 0)
        assert page.evaluate("document.body.dataset.state") == "ok"
        assert "#token" not in page.url  # the fragment is removed from the address
        assert page.evaluate("sessionStorage.getItem('modelmon.token')") == TOKEN
        shown = _check_against_api(page, worker)
        assert shown["sel"]["range"] == "900"

        # The API goes away: the page says so and keeps the last data.
        worker.stop()
        page.wait_for_function("document.body.dataset.state === 'error'", timeout=20000)
        assert page.is_visible("#error") and "API" in page.inner_text("#error")
        assert page.is_visible("#model-section")
        assert (
            page.locator("svg.chart[data-series=rate] circle.pt").count()
            == shown["charts"]["rate"]["declared"]
        )
    finally:
        page.close()
