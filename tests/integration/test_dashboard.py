"""The dashboard at / in headless Chromium (Debian's chromium driven by Playwright) against a live worker.

One worker with an API token, loaded with webcheck's two hours of simulated traffic (an accuracy drop on
fraud-detector with firing alerts), here with two versions per model and two segment incidents (churn
worse in country=de, price-regressor worse on device=web), and a 10-minute data-quality reference. The
page must ask for the token, then render: the models in the selector, one chart point per API window
with the API's exact value (read from the points' data-* attributes), the headline numbers of the
rolling views, the error analysis of the selected version's 1h view (worst slices, confused pairs,
segment tables), the version comparison (every version's 1h view, with the marks the documented rule
gives), the newest window's data quality, and the firing alerts; it keeps its data and shows an error
when the API goes away. A screenshot is kept in .test-artifacts/dashboard.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from modelmon.simulate import Incident

from .webcheck import (
    ARTIFACTS,
    DURATION_S,
    INCIDENT_MODEL,
    WebWorker,
    caught_up,
    expected_predictions,
    load_traffic,
    traffic_config,
    wait_for,
    web_settings,
)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
TOKEN = "dash-" + uuid.uuid4().hex[:12]

SCREENSHOT = ARTIFACTS / "dashboard.png"
# Slices made worse than the rest for the whole run (the worst-slice table must list them first).
BAD_SLICES = {"churn": ("country", "de"), "price-regressor": ("device", "web")}
# webcheck's traffic with two versions per model (the comparison table) and the segment incidents.
TRAFFIC = dataclasses.replace(
    traffic_config(),
    versions=2,
    incidents=(
        *traffic_config().incidents,
        *(
            Incident("accuracy_drop", 0.0, DURATION_S, model=m, magnitude=0.3, segment=f"{k}/{v}")
            for m, (k, v) in BAD_SLICES.items()
        ),
    ),
)
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
    s = web_settings(base, api_token=TOKEN, reference_s=600.0)
    load_traffic(s, TRAFFIC)
    w = WebWorker(s, "w1", tmp_path_factory.mktemp("dash")).start()
    try:
        caught_up(s, [w], expected_predictions(TRAFFIC))
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
        // table rows: the row's data-* attributes, its cells' raw values by field, the marked fields
        const rows = (trs) => [...trs].map((tr) => {
          const f = {};
          for (const el of tr.querySelectorAll('[data-field]')) f[el.dataset.field] = el.dataset.value;
          return {attrs: {...tr.dataset}, fields: f,
            worse: [...tr.querySelectorAll('[data-worse]')].map((el) => el.dataset.field)};
        });
        const one = (id) => { const el = document.getElementById(id); return el ? {...el.dataset} : null; };
        const panels = {
          errors: one('errors'), quality: one('quality'),
          worst: rows(document.querySelectorAll('#worst-slices tbody tr')),
          worstNone: one('worst-none'),
          confused: rows(document.querySelectorAll('#confused tbody tr')),
          segments: Object.fromEntries([...document.querySelectorAll('#errors table.seg')]
            .map((t) => [t.dataset.key, rows(t.tBodies[0].rows)])),
          versions: rows(document.querySelectorAll('#versions-table tbody tr')),
          dq: rows(document.querySelectorAll('#quality-table tbody tr')),
        };
        return {renders: +document.body.dataset.renders, sel: {...box.dataset}, charts, fields, panels,
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
    every = _api(w, f"/api/v1/models/{model}")["versions"]  # what the page reads: every version
    summary = next(v for v in every if v["model_version"] == version)
    if not shown["fields"]:
        problems.append("no headline numbers")
    for name, value in shown["fields"].items():
        if json.loads(value) != _field(summary, name):
            problems.append(f"headline {name} shows {value}, API {_field(summary, name)!r}")
    problems += _panel_mismatches(shown, models, every, summary)
    firing = {(a["rule"], a["model"], a["version"] or "", a["severity"]) for a in _firing(w)}
    listed = {(a["rule"], a["model"], a["version"], a["severity"]) for a in shown["alerts"]}
    if firing != listed or any(a["state"] != "firing" for a in shown["alerts"]):
        problems.append(f"firing alerts shown {sorted(listed)} != API {sorted(firing)}")
    return problems


def _rows_differ(what: str, shown: list[dict], expected: list[dict], ids: list[Any]) -> list[str]:
    """Each shown row's cells (raw values by field) against the API object of the same row."""
    if len(shown) != len(expected):
        return [f"{what}: {len(shown)} rows shown, API {len(expected)}"]
    problems = []
    for row, obj, ident in zip(shown, expected, ids, strict=True):
        if not row["fields"]:
            problems.append(f"{what} {ident}: no values")
        for name, value in row["fields"].items():
            if json.loads(value) != _field(obj, name):
                problems.append(f"{what} {ident}: {name} shows {value}, API {_field(obj, name)!r}")
    return problems


# The version comparison's marking rule (dashboard.js compareCols/worseOf): a value is marked when it is
# markedly worse than the best version's; only versions with enough data take part.
RATIO, Z, TAIL, MAE_N = 1.25, 3.0, 50, 200
_TAIL_N = {"p50": round(TAIL / 0.5), "p95": round(TAIL / 0.05)}


def _compare_rules(clf: bool) -> dict[str, tuple]:
    """field -> (rule, higher is worse, count field, minimum count, numerator field of a proportion)"""
    rules: dict[str, tuple] = {
        "traffic.error_rate": ("prop", True, "traffic.predictions", 30, "traffic.errors"),
        "labels.coverage": ("prop", False, "traffic.predictions", 30, "labels.labelled"),
    }
    for q in ("p50", "p95"):
        rules[f"latency.{q}_ms"] = ("ratio", True, "traffic.predictions", _TAIL_N[q], None)
        rules[f"payload.{q}_bytes"] = ("ratio", True, "payload.n", _TAIL_N[q], None)
    if clf:
        rules["classification.accuracy"] = ("ci", False, None, 0, None)
    else:
        rules["regression.mae"] = ("ratio", True, "labels.labelled", MAE_N, None)
    return rules


def _expected_marks(views: list[dict | None], clf: bool) -> set[tuple[int, str]]:
    marks = set()
    lo, hi = "classification.accuracy_ci_low", "classification.accuracy_ci_high"
    for path, (rule, up, n, minimum, k) in _compare_rules(clf).items():
        rows = [
            (i, e, _field(e, path))
            for i, e in enumerate(views)
            if isinstance(_field(e, path), int | float)
            and (n is None or (_field(e, n) or 0) >= minimum)
            and (rule != "ci" or (_field(e, lo) is not None and _field(e, hi) is not None))
        ]
        if len(rows) < 2:
            continue
        best = rows[0]
        for r in rows[1:]:
            if (r[2] < best[2]) if up else (r[2] > best[2]):
                best = r
        for i, e, v in rows:
            if i == best[0]:
                continue
            if rule == "ci":
                bad = _field(e, hi) < _field(best[1], lo)
            elif rule == "ratio":
                bad = v > best[2] and v >= RATIO * best[2]
            else:
                k1, n1, k2, n2 = _field(e, k), _field(e, n), _field(best[1], k), _field(best[1], n)
                pooled = (k1 + k2) / (n1 + n2)
                se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
                bad = se > 0 and (1 if up else -1) * (k1 / n1 - k2 / n2) / se >= Z
            if bad:
                marks.add((i, path))
    return marks


def _panel_mismatches(shown: dict, models: list[dict], every: list[dict], summary: dict) -> list[str]:
    """The error analysis, version comparison and data-quality panels against the API's events."""
    panels, problems = shown["panels"], []
    view = (summary.get("views") or {}).get("1h")
    if panels["errors"]["end"] != (view["window"]["end"] if view else ""):
        problems.append(
            f"error analysis of the 1h view to {panels['errors']['end']}, API {view and view['window']}"
        )
    ea = (view or {}).get("error_analysis") or {}
    ws = ea.get("worst_slices")
    slices = (ws or {}).get("slices") or []
    got = [(r["attrs"]["key"], r["attrs"]["value"]) for r in panels["worst"]]
    if got != [(s["key"], s["value"]) for s in slices]:
        problems.append(f"worst slices {got} != API {[(s['key'], s['value']) for s in slices]}")
    else:
        problems += _rows_differ("worst slice", panels["worst"], slices, got)
        for row in panels["worst"]:
            want = {"labelled", "slice", "rest", "difference", "excess", "p_value", "p_adjusted"}
            if row["attrs"].get("key") and not want <= set(row["fields"]):
                problems.append(f"worst slice {row['attrs']}: shows {sorted(row['fields'])}")
    if ws is not None and not slices:
        none = panels["worstNone"]
        if not none or (int(none["tested"]), json.loads(none["alpha"])) != (ws["tested"], ws["alpha"]):
            problems.append(f"no-worse-slice line {none} != API tested {ws['tested']}, alpha {ws['alpha']}")
    pairs = ea.get("confused_pairs") or []
    got = [(r["attrs"]["true"], r["attrs"]["predicted"]) for r in panels["confused"]]
    if got != [(p["true"], p["predicted"]) for p in pairs]:
        problems.append(f"confused pairs {got} != API {pairs}")
    else:
        problems += _rows_differ("confused pair", panels["confused"], pairs, got)
    keys = _field(view, "segments.keys") or {}
    if list(panels["segments"]) != list(keys):
        problems.append(f"segment tables {list(panels['segments'])} != API keys {list(keys)}")
    else:
        for key, rows in panels["segments"].items():
            values = keys[key]["values"]
            got = [r["attrs"]["value"] for r in rows]
            if got != [v["value"] for v in values]:
                problems.append(f"segment {key}: values {got} != API {[v['value'] for v in values]}")
            else:
                problems += _rows_differ(f"segment {key}", rows, values, got)
    # version comparison: one row per version of the model, each from that version's 1h view
    mine = [m["model_version"] for m in models if m["model"] == summary["model"]]
    got = [r["attrs"]["version"] or None for r in panels["versions"]]
    if got != mine:
        problems.append(f"version rows {got} != API versions {mine}")
    else:
        by_version = {v["model_version"]: (v.get("views") or {}).get("1h") for v in every}
        views = [by_version.get(v) for v in mine]
        problems += _rows_differ("version", panels["versions"], views, mine)
        marked = {(i, f) for i, r in enumerate(panels["versions"]) for f in r["worse"]}
        expected = _expected_marks(views, shown["sel"]["task"] == "classification")
        if marked != expected:
            problems.append(f"version marks {sorted(marked)} != the rule's {sorted(expected)}")
    # data quality of the newest window
    current = summary.get("current") or {}
    features = _field(current, "data_quality.features") or {}
    if panels["quality"]["start"] != (_field(current, "window.start") or ""):
        problems.append(
            f"data quality of {panels['quality']['start']}, newest window {current.get('window')}"
        )
    got = [r["attrs"]["feature"] for r in panels["dq"]]
    if got != list(features):
        problems.append(f"data-quality features {got} != API {list(features)}")
    else:
        problems += _rows_differ("feature", panels["dq"], list(features.values()), got)
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


def _assert_panels(shown: dict[str, Any]) -> None:
    """What a versioned series of this traffic must show in the panels (their values are compared with
    the API by _check_against_api): segment tables for both tags, confused pairs for a classifier, a
    worst-slice table or the no-slice line, a row per version, and the newest window's features compared
    with the frozen reference."""
    panels, clf = shown["panels"], shown["sel"]["task"] == "classification"
    assert set(panels["segments"]) == {"country", "device"}, panels["segments"].keys()
    assert all(len(rows) > 1 for rows in panels["segments"].values()), panels["segments"]
    assert bool(panels["confused"]) == clf, panels["confused"]
    assert panels["worst"] or panels["worstNone"], panels
    assert len([r for r in panels["versions"] if r["attrs"]["version"]]) == 2, panels["versions"]
    assert panels["dq"], panels
    assert all(
        json.loads(r["fields"]["reference_kind"]) in ("numeric", "categorical") for r in panels["dq"]
    ), [r["fields"] for r in panels["dq"]]


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
        _assert_panels(shown)

        # The version comparison marks a markedly worse value, and only that (synthetic 1h views).
        marks = page.evaluate(
            """() => {
            const ev = (p95, acc, lo, hi, errors) => ({
              traffic: {predictions: 5000, errors, error_rate: errors / 5000},
              latency: {p50_ms: 20, p95_ms: p95, p99_ms: p95 * 3},
              payload: {n: 5000, p50_bytes: 400, p95_bytes: 420},
              classification: {accuracy: acc, accuracy_ci_low: lo, accuracy_ci_high: hi},
              labels: {labelled: 4000, coverage: 0.8}});
            const evs = [ev(40, 0.9, 0.89, 0.91, 20), ev(80, 0.8, 0.78, 0.82, 22), null];
            const m = window.modelmon;
            return Object.fromEntries(m.compareCols(true).map((c) => [c.p, [...m.worseOf(c, evs)]]));
        }"""
        )
        assert {path: pairs for path, pairs in marks.items() if pairs} == {
            "latency.p95_ms": [[1, 0]],
            "classification.accuracy": [[1, 0]],
        }, marks

        # A version row of the comparison selects that version.
        other = next(
            r["attrs"]["version"] for r in shown["panels"]["versions"]
            if r["attrs"]["version"] and r["attrs"]["version"] != shown["sel"]["version"]
        )  # fmt: skip
        before = _renders(page)
        page.click(f'#versions-table tbody tr[data-version="{other}"] th')
        _next_render(page, before)
        shown = _check_against_api(page, worker)
        assert (shown["sel"]["model"], shown["sel"]["version"]) == (INCIDENT_MODEL, other)
        _assert_panels(shown)

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
        checked_slices: set[str] = set()
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
                _assert_panels(shown)
                if model in BAD_SLICES:
                    worst = [(r["attrs"]["key"], r["attrs"]["value"]) for r in shown["panels"]["worst"]]
                    assert worst[:1] == [BAD_SLICES[model]], (model, version, worst)
                    checked_slices.add(model)
        assert checked_slices == set(BAD_SLICES), checked_slices
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
