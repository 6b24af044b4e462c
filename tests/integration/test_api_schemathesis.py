"""Schemathesis against live workers: every response of the API conforms to schemas/openapi.json.

Two workers on the real broker read the same simulated traffic (webcheck: three models, two hours of event
time, firing alerts), each in its own consumer group: one with MODELMON_API_TOKEN set, one without. The
spec is loaded from each worker's own /api/v1/openapi.json and `st run` (Schemathesis 4, phases examples,
coverage and fuzzing, a bounded budget) runs against both at once. A run passes when Schemathesis finds no
server error and no response that violates the spec: status code, content type, headers (WWW-Authenticate
on 401), body schema, 4xx for invalid parameters, 405 for undocumented methods, and, with the token, a 401
whenever the token is left out or wrong.

A few hand-picked requests that random generation rarely reaches (very long or missing static files, bounds
of every parameter) go through the same checks with the Python API.

Budget: SCHEMATHESIS_MAX_TIME (default 35 s per run, both runs in parallel), SCHEMATHESIS_MAX_EXAMPLES
(default 30 per operation and phase), SCHEMATHESIS_SEED (default fixed, so a failure reproduces).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelmon.simulate import Incident

from .webcheck import (
    INCIDENT_MODEL,
    WebWorker,
    caught_up,
    expected_predictions,
    load_traffic,
    traffic_config,
    web_settings,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "schemas" / "openapi.json"
TOKEN = "st-" + uuid.uuid4().hex
MAX_TIME_S = int(os.environ.get("SCHEMATHESIS_MAX_TIME", "35"))
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261128"))
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
]
# Invalid data must be refused with one of these (Schemathesis' default list, plus 414 and 431: the request
# bounds of web/api.py refuse an over-long path or query string, or oversized headers, before any parameter
# is looked at; generated invalid strings, percent-encoded, often exceed 512 characters of path).
REJECTION_STATUSES = [400, 401, 403, 404, 405, 406, 409, 414, 415, 422, 428, 429, 431, "5xx"]
# Operations whose examples hit the simulated models: some of their cases must be answered with a 2xx,
# else the run only ever saw 404s and proves little about the 200 bodies.
DATA_OPERATIONS = ("GET /api/v1/models/{model}", "GET /api/v1/models/{model}/windows")


@pytest.fixture(scope="module")
def workers(kafka, tmp_path_factory):
    """{"token": worker with MODELMON_API_TOKEN, "open": worker without}, both caught up with the traffic."""
    shared = kafka.with_(topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    log_dir = tmp_path_factory.mktemp("st-workers")
    settings = {
        "token": web_settings(shared.with_(app_id=f"mm{uuid.uuid4().hex[:8]}"), api_token=TOKEN),
        "open": web_settings(shared.with_(app_id=f"mm{uuid.uuid4().hex[:8]}")),
    }
    # 40 minutes of event time (a third of webcheck's default), the accuracy drop in the second half.
    traffic = dataclasses.replace(
        traffic_config(),
        duration_s=2400.0,
        incidents=(Incident("accuracy_drop", 1200.0, 1200.0, model=INCIDENT_MODEL, magnitude=0.25),),
    )
    load_traffic(settings["token"], traffic)  # the input topics are shared; each worker has its own group
    started: dict[str, WebWorker] = {}
    try:
        for name, s in settings.items():
            started[name] = WebWorker(s, f"st-{name}", log_dir).start()
        expected = expected_predictions(traffic)
        for name, s in settings.items():
            caught_up(s, [started[name]], expected)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def _open_spec(worker: WebWorker, path: Path) -> str:
    """The worker's served document without security requirements: what a worker without a token serves."""
    status, doc, _ = worker.get("/api/v1/openapi.json")
    assert status == 200, (status, doc)
    for item in doc["paths"].values():
        for op in item.values():
            op.pop("security", None)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return str(path)


def _st_config(out_dir: Path) -> Path:
    path = out_dir / "schemathesis.toml"
    statuses = ", ".join(json.dumps(str(s)) for s in REJECTION_STATUSES)
    path.write_text(f"[checks.negative_data_rejection]\nexpected-statuses = [{statuses}]\n", encoding="utf-8")
    return path


def _st_command(worker: WebWorker, out_dir: Path, name: str, token: str | None) -> list[str]:
    report = out_dir / f"{name}.json"
    if token:  # the spec as served, and every check that a missing or wrong token gets a 401
        location, checks = [f"{worker.url}/api/v1/openapi.json"], [*CHECKS, "ignored_auth"]
    else:
        location, checks = [_open_spec(worker, out_dir / f"{name}-spec.json"), "--url", worker.url], CHECKS
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(_st_config(out_dir)),
        "run",
        *location,
        "--checks",
        ",".join(checks),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(MAX_TIME_S),
        "--seed",
        str(SEED),
        # One worker thread: with two, CPython 3.11's ast module (hypothesis parses lambda sources while
        # building strategies) was seen to fail with "AST constructor recursion depth mismatch"
        # (CPython gh-106905), a crash of the tool, not a finding about the API.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--warnings",
        "off",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if token:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    return cmd


@pytest.fixture(scope="module")
def runs(workers, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Both Schemathesis runs, in parallel: {name: {"report": JSON report, "output": console output}}."""
    out_dir = tmp_path_factory.mktemp("st-runs")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    procs = {}
    for name, worker in workers.items():
        log = (out_dir / f"{name}.log").open("wb")
        cmd = _st_command(worker, out_dir, name, TOKEN if name == "token" else None)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out_dir, env=env)
        procs[name] = (proc, out_dir / f"{name}.json")
    results = {}
    for name, (proc, report) in procs.items():
        try:
            proc.wait(MAX_TIME_S * 2 + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output = (out_dir / f"{name}.log").read_text(errors="replace")
        body = json.loads(report.read_text()) if report.exists() else None
        results[name] = {"report": body, "output": output, "returncode": proc.returncode}
    return results


def _assert_clean(result: dict[str, Any]) -> None:
    report, output = result["report"], result["output"]
    assert report is not None, (
        f"schemathesis wrote no report (exit {result['returncode']}):\n{output[-6000:]}"
    )
    summary = output[output.find("=== FAILURES") :] if "=== FAILURES" in output else output[-4000:]
    assert report["failures"] == [] and report["errors"] == [], summary[:20000]
    assert report["exit_code"] == 0 == result["returncode"], output[-4000:]
    operations = report["operations"]
    # Loaded from the worker's URL, Schemathesis leaves the document's own operation out: 10 of 11.
    assert operations["errored"] == 0 and operations["tested"] == operations["total"] >= 10, operations
    assert report["test_cases"]["generated"] >= 100, report["test_cases"]
    for label in DATA_OPERATIONS:
        rates = report["valid_rates"][label]
        assert sum(phase["accepted"] for phase in rates.values()) > 0, (label, rates)


def test_served_document_is_schemas_openapi_json(workers) -> None:
    for name, worker in workers.items():
        status, body, headers = worker.get("/api/v1/openapi.json", token=TOKEN if name == "token" else None)
        assert status == 200 and headers["Content-Type"].startswith("application/json"), (status, headers)
        assert body == json.loads(SPEC.read_text(encoding="utf-8"))


def test_schemathesis_with_a_token(runs) -> None:
    _assert_clean(runs["token"])


def test_schemathesis_without_a_token(runs) -> None:
    _assert_clean(runs["open"])


# Requests that random generation rarely makes, through the same checks: (path, path params, query, status);
# status None: any documented one.
EDGE_CASES = [
    ("/api/v1/models/{model}", {"model": "fraud-detector"}, {}, 200),
    ("/api/v1/models/{model}", {"model": "fraud-detector"}, {"version": "1.0.0"}, 200),
    ("/api/v1/models/{model}", {"model": "fraud-detector"}, {"version": ""}, None),
    ("/api/v1/models/{model}", {"model": "fraud-detector"}, {"version": "v" * 257}, 400),
    ("/api/v1/models/{model}", {"model": "m" * 128}, {}, 404),
    ("/api/v1/models/{model}", {"model": "m" * 129}, {}, 400),
    ("/api/v1/models/{model}", {"model": "a/b"}, {}, 404),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"limit": "1"}, 200),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"limit": "10000", "unknown": "x"}, 200),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"from": "1767571200", "to": "1767574800.5"}, 200),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"from": "2026-01-05T01:00:00.25Z"}, 200),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"limit": "0"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"limit": "10001"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"limit": "1.5"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"from": "x"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"from": "2026-02-30T00:00:00Z"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"from": "5", "to": "5"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "churn"}, {"to": "1e400"}, 400),
    ("/api/v1/models/{model}/windows", {"model": "nope"}, {}, 404),
    ("/api/v1/alerts", {}, {"model": "fraud*", "state": "firing", "limit": "1000"}, 200),
    ("/api/v1/alerts", {}, {"model": "["}, 200),
    ("/api/v1/alerts", {}, {"severity": "fatal"}, 400),
    ("/api/v1/alerts", {}, {"limit": "1001"}, 400),
    ("/static/{file}", {"file": "index.html"}, {}, 200),
    ("/static/{file}", {"file": "missing.js"}, {}, 404),
    ("/static/{file}", {"file": "x" * 300}, {}, 404),
    ("/static/{file}", {"file": "../api.py"}, {}, 404),
]
EDGE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def token_schema(workers):
    url = workers["token"].url
    return schemathesis.openapi.from_url(
        f"{url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
    )


@pytest.mark.parametrize(
    "path, path_parameters, query, status",
    EDGE_CASES,
    ids=[f"{p} {json.dumps(pp)[:40]} {json.dumps(q)[:60]}" for p, pp, q, _ in EDGE_CASES],
)
def test_edge_requests_conform(workers, token_schema, path, path_parameters, query, status) -> None:
    worker = workers["token"]
    case = token_schema[path]["GET"].Case(path_parameters=path_parameters, query=query)
    with requests.Session() as session:
        response = case.call_and_validate(
            base_url=worker.url,
            session=session,
            headers={"Authorization": f"Bearer {TOKEN}"},
            checks=EDGE_CHECKS,
        )
    assert status is None or response.status_code == status, (response.status_code, response.text[:500])


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/models/churn/windows?limit=1", "/metrics"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"])
def test_401_conforms(workers, token_schema, path, authorization) -> None:
    worker = workers["token"]
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.get(worker.url + path, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    operation = token_schema[path.split("?")[0].replace("churn", "{model}")]["GET"]
    operation.validate_response(response)


# The request bounds answer before routing and authentication; their answers are documented for every
# operation. (path as sent, its operation, extra headers, body, status)
LIMIT_CASES = [
    ("/api/v1/alerts?" + "&".join(f"p{i}=1" for i in range(17)), "/api/v1/alerts", {}, None, 400),
    ("/api/v1/alerts?model=" + "x" * 2100, "/api/v1/alerts", {}, None, 414),
    ("/api/v1/models/" + "m" * 600, "/api/v1/models/{model}", {}, None, 414),
    ("/health", "/health", {f"X-Pad-{i}": "v" * 1000 for i in range(20)}, None, 431),
    ("/metrics", "/metrics", {}, b"{}", 413),
]


@pytest.mark.parametrize(
    "url, operation, headers, body, status",
    LIMIT_CASES,
    ids=[f"{status} {url[:40]}" for url, _, _, _, status in LIMIT_CASES],
)
def test_limit_answers_conform(workers, token_schema, url, operation, headers, body, status) -> None:
    worker = workers["token"]
    response = requests.get(worker.url + url, headers=headers, data=body, timeout=30)  # no token
    assert response.status_code == status, (response.status_code, response.text[:300])
    documented = json.loads(SPEC.read_text(encoding="utf-8"))["paths"][operation]["get"]["responses"]
    assert str(status) in documented, (operation, status)  # validate_response skips undocumented ones
    token_schema[operation]["GET"].validate_response(response)
    assert response.json()["error"]["status"] == status
