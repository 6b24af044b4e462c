"""The OpenAPI 3.1 description of the worker's HTTP API (schemas/openapi.json).

Checks that the document is valid OpenAPI 3.1 (schemathesis' loader and the 2020-12 meta-schema for every
component), that its MetricEvent and AlertEvent components are exactly the event schemas in schemas/
(bundled: no $schema/$id, internal $refs pointing into the component), that the event examples validate
against the bundled components, and that hand-written responses of every endpoint validate against the
documented response schemas (and a few wrong ones do not).

When an event schema changes, re-bundle with: ``.venv/bin/python -m tests.unit.test_openapi --write``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.core.result import Ok

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
OPENAPI = SCHEMAS / "openapi.json"
EXAMPLES = SCHEMAS / "examples"
BUNDLED = {"MetricEvent": "model-metrics", "AlertEvent": "alert", "HealthEvent": "monitor-health"}
DOC_URI = "urn:modelmon:openapi"
ERROR_CODES = {
    "bad_parameter",
    "bad_request",
    "not_found",
    "method_not_allowed",
    "unauthorized",
    "not_ready",
    "unavailable",
    "internal",
    "uri_too_long",
    "headers_too_large",
    "payload_too_large",
}
SECURED = ("/api/", "/metrics")


def _rewrite_refs(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                value = f"#/components/schemas/{name}/{value[2:]}"
            out[key] = _rewrite_refs(value, name)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, name) for item in node]
    return node


def bundle_event_schema(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """An event schema as the component `name`: without $schema/$id, its $refs pointing into the component."""
    body = {k: v for k, v in copy.deepcopy(schema).items() if k not in ("$schema", "$id")}
    return _rewrite_refs(body, name)


def bundle_event_schemas() -> dict[str, dict[str, Any]]:
    return {
        name: bundle_event_schema(json.loads((SCHEMAS / f"{kind}.schema.json").read_text("utf-8")), name)
        for name, kind in BUNDLED.items()
    }


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def load_doc() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text(encoding="utf-8"))


DOC = load_doc()
REGISTRY = Registry().with_resource(DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT202012))


def validator(pointer: str) -> jsonschema.Draft202012Validator:
    """A validator for the schema at `pointer` (e.g. /components/schemas/MetricEvent) of the document."""
    return jsonschema.Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=REGISTRY)


def component(name: str) -> jsonschema.Draft202012Validator:
    return validator(f"/components/schemas/{name}")


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in DOC["paths"].items() for method, op in item.items()]


def deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def response_schema_pointer(path: str, status: str, media: str) -> str:
    response = DOC["paths"][path]["get"]["responses"][status]
    if "$ref" in response:
        return response["$ref"].removeprefix("#") + f"/content/{escape(media)}/schema"
    return f"/paths/{escape(path)}/get/responses/{status}/content/{escape(media)}/schema"


def escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


# --- the document -------------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1():
    assert DOC["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOC))
    schema.validate()  # the OpenAPI 3.1 meta-schema
    loaded = list(schema.get_all_operations())
    assert not [op.err() for op in loaded if not isinstance(op, Ok)]
    labels = sorted(op.ok().label for op in loaded)
    assert labels == sorted(f"GET {path}" for path, _, _ in operations())


def test_every_schema_is_valid_json_schema_2020_12():
    jsonschema.Draft202012Validator.check_schema({"$defs": DOC["components"]["schemas"]})
    for path, _, op in operations():
        for param in op.get("parameters", []):
            jsonschema.Draft202012Validator.check_schema(param["schema"])
        for status, response in op["responses"].items():
            for media, content in deref(response).get("content", {}).items():
                assert "schema" in content, (path, status, media)
                jsonschema.Draft202012Validator.check_schema(content["schema"])


def test_every_ref_resolves():
    resolver = REGISTRY.resolver(DOC_URI)

    def walk(node: Any) -> int:
        if isinstance(node, dict):
            found = 0
            if isinstance(node.get("$ref"), str):
                resolver.lookup(f"{DOC_URI}{node['$ref']}")
                found = 1
            return found + sum(walk(v) for v in node.values())
        if isinstance(node, list):
            return sum(walk(v) for v in node)
        return 0

    assert walk(DOC) > 20


def test_file_is_formatted_canonically():
    # So that re-bundling (--write) only ever changes what changed in the event schemas.
    assert OPENAPI.read_text(encoding="utf-8") == dump(DOC)


# --- the bundled event schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_event_schema_equals_the_schema_file(name):
    expected = bundle_event_schemas()[name]
    assert DOC["components"]["schemas"][name] == expected, (
        f"components.schemas.{name} differs from schemas/{BUNDLED[name]}.schema.json; "
        "re-bundle with: .venv/bin/python -m tests.unit.test_openapi --write"
    )
    assert "$id" not in json.dumps(expected) and "$schema" not in expected


@pytest.mark.parametrize(
    "name, path",
    [(name, p) for name, kind in sorted(BUNDLED.items()) for p in sorted((EXAMPLES / kind).glob("*/*.json"))],
    ids=lambda v: v if isinstance(v, str) else f"{v.parent.name}/{v.name}",
)
def test_event_examples_against_the_bundled_component(name, path):
    example = json.loads(path.read_text(encoding="utf-8"))
    errors = list(component(name).iter_errors(example))
    if path.parent.name == "valid":
        assert not errors, [e.message for e in errors]
    else:
        assert errors, f"{path} should be invalid"


def test_examples_exist():
    for kind in BUNDLED.values():
        assert len(list((EXAMPLES / kind / "valid").glob("*.json"))) >= 3
        assert len(list((EXAMPLES / kind / "invalid").glob("*.json"))) >= 3


# --- what the document says about the API ---------------------------------------------------------------


def test_paths_are_the_endpoints_of_the_api():
    assert sorted(DOC["paths"]) == sorted(
        [
            "/health",
            "/ready",
            "/api/v1/models",
            "/api/v1/models/{model}",
            "/api/v1/models/{model}/windows",
            "/api/v1/alerts",
            "/api/v1/health",
            "/api/v1/openapi.json",
            "/metrics",
            "/",
            "/static/{file}",
        ]
    )
    assert all(list(item) == ["get"] for item in DOC["paths"].values())
    assert len({op["operationId"] for _, _, op in operations()}) == len(DOC["paths"])


def test_security_applies_to_the_api_and_metrics_only():
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        **DOC["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    assert "security" not in DOC
    for path, _, op in operations():
        if path.startswith(SECURED):
            assert op["security"] == [{"bearerAuth": []}], path
            unauthorized = deref(op["responses"]["401"])
            assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
            assert unauthorized["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
        else:
            assert op["security"] == [], path
            assert "401" not in op["responses"], path


def test_parameters_and_their_bounds():
    def params(path):
        return {p["name"]: p for p in DOC["paths"][path]["get"].get("parameters", [])}

    for path in ("/api/v1/models/{model}", "/api/v1/models/{model}/windows"):
        model = params(path)["model"]
        assert model["in"] == "path" and model["required"] is True
        assert model["schema"] == {"type": "string", "minLength": 1, "maxLength": 128}
        assert params(path)["version"]["schema"] == {"type": "string", "maxLength": 256}
        assert params(path)["version"]["required"] is False
    windows = params("/api/v1/models/{model}/windows")
    assert windows["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1440}
    assert windows["from"]["schema"] == windows["to"]["schema"] == {"type": "string", "maxLength": 256}
    alerts = params("/api/v1/alerts")
    assert alerts["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert alerts["severity"]["schema"]["enum"] == ["info", "warning", "critical"]
    assert alerts["state"]["schema"]["enum"] == ["firing", "pending", "resolved"]
    assert alerts["model"]["schema"] == {"type": "string", "maxLength": 256}
    assert not any(p["required"] for p in alerts.values())


def test_error_codes():
    error = DOC["components"]["schemas"]["Error"]["properties"]["error"]
    assert set(error["properties"]["code"]["enum"]) == ERROR_CODES
    assert error["required"] == ["status", "code", "message"]


def test_every_operation_documents_the_request_bounds():
    from modelmon.web import api

    for path, _, op in operations():
        assert {"400", "413", "414", "431"} <= set(op["responses"]), path
    text = json.dumps(DOC)
    for bound in (api.MAX_PATH_CHARS, api.MAX_QUERY_PARAMS):
        assert str(bound) in text, bound
    assert f"{api.MAX_QUERY_CHARS:,}" in text and f"{api.MAX_HEADER_BYTES // 1024} KiB" in text


# --- example responses of every endpoint ------------------------------------------------------------------


def _example(kind: str, name: str, **changes: Any) -> dict[str, Any]:
    event = json.loads((EXAMPLES / kind / "valid" / name).read_text(encoding="utf-8"))
    event.update(changes)
    return event


WINDOW = _example("model-metrics", "classification-revision.json", view="window")
FINAL = _example("model-metrics", "regression-final.json", view="window")
VIEW_1H = _example(
    "model-metrics",
    "classification-revision.json",
    view="1h",
    window={"start": "2024-05-01T11:05:00Z", "end": "2024-05-01T12:05:00Z", "size_s": 3600},
)
VERSION = {
    "model": "churn-classifier",
    "model_version": "2024.05.1",
    "task": "classification",
    "first_window_start": "2024-05-01T10:00:00Z",
    "last_window_end": "2024-05-01T12:05:00Z",
    "windows": 25,
    "updated_at": "2024-05-01T12:41:07.512Z",
}
NULL_VERSION = {**VERSION, "model_version": None, "task": None, "updated_at": None, "windows": 1}
ALERT_FILES = ("firing-accuracy.json", "pending-latency.json", "resolved-drift.json")
ALERTS = [_example("alert", name) for name in ALERT_FILES]


def error(status: int, code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    return {"error": body}


UNAUTHORIZED = error(401, "unauthorized", "missing or wrong bearer token")
INTERNAL = error(500, "internal", "internal error: KeyError('x')")
NOT_READY = error(503, "not_ready", "worker w2 is recovering its tables")
APP_JSON = "application/json"

# (path, status, media type) -> example bodies that must validate
GOOD: dict[tuple[str, str, str], list[Any]] = {
    ("/health", "200", APP_JSON): [{"status": "ok", "worker_id": "w1", "time": "2026-11-28T03:00:00Z"}],
    ("/ready", "200", APP_JSON): [{"ready": True, "worker_id": "w1", "time": "2026-11-28T03:00:00.512Z"}],
    ("/ready", "503", APP_JSON): [
        {"ready": False, "reason": "recovering tables", "worker_id": "w1", "time": "2026-11-28T03:00:00Z"}
    ],
    ("/api/v1/models", "200", APP_JSON): [{"models": []}, {"models": [NULL_VERSION, VERSION]}],
    ("/api/v1/models", "401", APP_JSON): [UNAUTHORIZED],
    ("/api/v1/models", "500", APP_JSON): [INTERNAL],
    ("/api/v1/models", "503", APP_JSON): [NOT_READY, error(503, "unavailable", "worker w2 did not answer")],
    ("/api/v1/models/{model}", "200", APP_JSON): [
        {
            "model": "churn-classifier",
            "versions": [
                {**VERSION, "current": WINDOW, "views": {"5m": None, "1h": VIEW_1H, "24h": None}},
                {**NULL_VERSION, "current": None, "views": {"5m": None, "1h": None, "24h": None}},
            ],
        }
    ],
    ("/api/v1/models/{model}", "400", APP_JSON): [
        error(400, "bad_parameter", "model: must be 1 to 128 characters", "model")
    ],
    ("/api/v1/models/{model}", "401", APP_JSON): [UNAUTHORIZED],
    ("/api/v1/models/{model}", "404", APP_JSON): [error(404, "not_found", "unknown model: 'nope'")],
    ("/api/v1/models/{model}", "500", APP_JSON): [INTERNAL],
    ("/api/v1/models/{model}", "503", APP_JSON): [NOT_READY],
    ("/api/v1/models/{model}/windows", "200", APP_JSON): [
        {
            "model": "churn-classifier",
            "version": None,
            "from": None,
            "to": None,
            "limit": 1440,
            "truncated": False,
            "windows": [WINDOW, FINAL],
        },
        {
            "model": "churn-classifier",
            "version": "",
            "from": "2024-05-01T12:00:00Z",
            "to": "2024-05-01T13:00:00.5Z",
            "limit": 1,
            "truncated": True,
            "windows": [WINDOW],
        },
    ],
    ("/api/v1/models/{model}/windows", "400", APP_JSON): [
        error(400, "bad_parameter", "from: not an RFC 3339 time or unix seconds: 'x'", "from"),
        error(400, "bad_parameter", "limit: must be between 1 and 10000: 0", "limit"),
    ],
    ("/api/v1/models/{model}/windows", "401", APP_JSON): [UNAUTHORIZED],
    ("/api/v1/models/{model}/windows", "404", APP_JSON): [error(404, "not_found", "unknown version: '9'")],
    ("/api/v1/models/{model}/windows", "500", APP_JSON): [INTERNAL],
    ("/api/v1/models/{model}/windows", "503", APP_JSON): [NOT_READY],
    ("/api/v1/alerts", "200", APP_JSON): [{"alerts": []}, {"alerts": ALERTS}],
    ("/api/v1/alerts", "400", APP_JSON): [
        error(400, "bad_parameter", "severity: must be one of info, warning, critical, got 'x'", "severity")
    ],
    ("/api/v1/alerts", "401", APP_JSON): [UNAUTHORIZED],
    ("/api/v1/alerts", "500", APP_JSON): [INTERNAL],
    ("/api/v1/alerts", "503", APP_JSON): [NOT_READY],
    ("/api/v1/health", "200", APP_JSON): [
        {
            "worker_id": "w1",
            "time": "2026-11-28T03:00:00Z",
            "ready": True,
            "url": "http://127.0.0.1:6066",
            "process": {"cpu_percent": 12.5, "rss_bytes": 123456789, "threads": 9, "open_fds": 41},
            "partitions": {"input": [0, 1, 2, 3], "output": [0, 1]},
            "tables": {"pending_joins": 5021, "windows": 120, "alert_states": 3},
            "counters": {"predictions": 100, "labels": 90, "invalid": 0},
            "workers": [
                {"url": "http://127.0.0.1:6066", "output_partitions": [0, 1]},
                {"url": "http://127.0.0.1:6067", "output_partitions": [2, 3]},
            ],
        },
        {
            "worker_id": "w2",
            "time": "2026-11-28T03:00:00Z",
            "ready": False,
            "url": "http://127.0.0.1:6067",
            "process": {"cpu_percent": None, "rss_bytes": None, "threads": None, "open_fds": None},
            "partitions": {"input": [], "output": []},
            "tables": {"pending_joins": None, "windows": 0, "alert_states": 0},
            "counters": {},
            "workers": [],
        },
    ],
    ("/api/v1/health", "401", APP_JSON): [UNAUTHORIZED],
    ("/api/v1/health", "500", APP_JSON): [INTERNAL],
    ("/api/v1/openapi.json", "200", APP_JSON): [DOC],
    ("/api/v1/openapi.json", "401", APP_JSON): [UNAUTHORIZED],
    ("/api/v1/openapi.json", "500", APP_JSON): [INTERNAL],
    ("/metrics", "200", "text/plain; version=0.0.4; charset=utf-8"): [
        "# HELP modelmon_worker_ready 1 when the worker is ready\n# TYPE modelmon_worker_ready gauge\n"
        "modelmon_worker_ready 1.0\n"
    ],
    ("/metrics", "401", APP_JSON): [UNAUTHORIZED],
    ("/metrics", "500", APP_JSON): [INTERNAL],
    ("/", "200", "text/html"): ["<!doctype html><title>modelmon</title>"],
    ("/static/{file}", "200", "text/javascript"): ["export {};\n"],
    ("/static/{file}", "200", "text/css"): ["body { margin: 0 }\n"],
    ("/static/{file}", "200", "text/html"): ["<!doctype html><title>modelmon</title>"],
    ("/static/{file}", "404", APP_JSON): [error(404, "not_found", "no such file: 'x.js'")],
}
# The request bounds apply to every endpoint, before routing and authentication (web/api.py).
LIMITS = {
    "400": [error(400, "bad_request", "more than 16 query parameters")],
    "413": [error(413, "payload_too_large", "no endpoint takes a request body")],
    "414": [
        error(414, "uri_too_long", "the path is longer than 512 characters"),
        error(414, "uri_too_long", "the query string is longer than 2048 characters"),
    ],
    "431": [error(431, "headers_too_large", "the request headers are larger than 16384 bytes")],
}
for _path in DOC["paths"]:
    for _status, _bodies in LIMITS.items():
        GOOD.setdefault((_path, _status, APP_JSON), []).extend(_bodies)


NO_VIEWS = {"5m": None, "1h": None, "24h": None}


def _bad_window(**changes: Any) -> dict[str, Any]:
    return {**GOOD[("/api/v1/models/{model}/windows", "200", APP_JSON)][0], **changes}


# (path, status, media type) -> example bodies that must NOT validate: the schemas are strict
BAD: dict[tuple[str, str, str], list[Any]] = {
    ("/health", "200", APP_JSON): [
        {"status": "ok", "worker_id": "w1"},
        {"status": "ok", "worker_id": "w1", "time": "2026-11-28T03:00:00+01:00"},
        {"status": "ok", "worker_id": "w1", "time": "2026-11-28 03:00:00Z"},
        {"status": "ok", "worker_id": "w1", "time": "2026-11-28T03:00:00Z", "extra": 1},
    ],
    ("/ready", "200", APP_JSON): [{"ready": False, "worker_id": "w1", "time": "2026-11-28T03:00:00Z"}],
    ("/ready", "503", APP_JSON): [{"ready": False, "worker_id": "w1", "time": "2026-11-28T03:00:00Z"}],
    ("/api/v1/models", "200", APP_JSON): [
        [],
        {"models": [{k: v for k, v in VERSION.items() if k != "windows"}]},
        {"models": [{**VERSION, "task": "ranking"}]},
        {"models": [{**VERSION, "model_version": ""}]},
        {"models": [{**VERSION, "windows": -1}]},
        {"models": [{**VERSION, "first_window_start": 1714564800}]},
    ],
    ("/api/v1/models/{model}", "200", APP_JSON): [
        {"model": "m", "versions": [{**VERSION, "current": None, "views": {"5m": None, "1h": None}}]},
        {"model": "m", "versions": [{**VERSION, "current": VIEW_1H, "views": NO_VIEWS}]},
        {"model": "m", "versions": [{**VERSION, "current": None, "views": {**NO_VIEWS, "5m": WINDOW}}]},
        {"model": "m", "versions": [VERSION]},
    ],
    ("/api/v1/models/{model}/windows", "200", APP_JSON): [
        _bad_window(windows=[VIEW_1H]),
        _bad_window(windows=[{k: v for k, v in WINDOW.items() if k != "view"}]),
        _bad_window(windows=[{**WINDOW, "revision": 0}]),
        _bad_window(limit=0),
        _bad_window(truncated=None),
        _bad_window(**{"from": "yesterday"}),
    ],
    ("/api/v1/models/{model}/windows", "400", APP_JSON): [
        {"error": "bad from"},
        error(400, "bad_input", "from: ..."),
        {"error": {"status": 400, "code": "bad_parameter"}},
        {"error": {**error(400, "bad_parameter", "x")["error"], "detail": "y"}},
        error(200, "bad_parameter", "x"),
    ],
    ("/api/v1/alerts", "200", APP_JSON): [
        {"alerts": [{**ALERTS[0], "state": "open"}]},
        {"alerts": [{k: v for k, v in ALERTS[0].items() if k != "id"}]},
    ],
    ("/api/v1/health", "200", APP_JSON): [
        {**GOOD[("/api/v1/health", "200", APP_JSON)][0], "counters": {"predictions": 1.5}},
        {**GOOD[("/api/v1/health", "200", APP_JSON)][0], "partitions": {"input": [-1], "output": []}},
        {**GOOD[("/api/v1/health", "200", APP_JSON)][0], "tables": {"windows": 0, "alert_states": 0}},
        {k: v for k, v in GOOD[("/api/v1/health", "200", APP_JSON)][0].items() if k != "workers"},
    ],
}


def test_every_documented_response_has_an_example():
    documented = {
        (path, status, media)
        for path, _, op in operations()
        for status, response in op["responses"].items()
        for media in deref(response)["content"]
    }
    assert documented == set(GOOD)


@pytest.mark.parametrize("key", sorted(GOOD), ids=lambda k: " ".join(k))
def test_example_responses_validate(key):
    check = validator(response_schema_pointer(*key))
    for body in GOOD[key]:
        errors = list(check.iter_errors(body))
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


@pytest.mark.parametrize("key", sorted(BAD), ids=lambda k: " ".join(k))
def test_wrong_responses_do_not_validate(key):
    check = validator(response_schema_pointer(*key))
    for i, body in enumerate(BAD[key]):
        assert not check.is_valid(body), f"bad example {i} of {key} validates"


def write() -> None:
    """Re-bundle the event schemas into schemas/openapi.json (everything else is left as it is)."""
    doc = load_doc()
    doc["components"]["schemas"].update(bundle_event_schemas())
    OPENAPI.write_text(dump(doc), encoding="utf-8")
    print(f"wrote {OPENAPI}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.unit.test_openapi --write")
    write()
