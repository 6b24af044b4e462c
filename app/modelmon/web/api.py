"""The worker's HTTP side on Faust's aiohttp web server: /api/v1, /metrics, /health, /ready and the dashboard.

Plumbing only: bodies come from :mod:`.views` (pure) and :mod:`.prometheus` (pure) over the worker's stage-2
state. A model's data lives on the worker that owns its stage-2 partition (the partials partition of the
model key); a request reaching another worker is forwarded there, and list endpoints gather from every
owner, so any worker answers for any model. Faust's own pages (/router, /table, /graph, /stats) are off.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from .. import rollup
from . import views
from .reads import StageReads
from .views import ParamError, error_body

if TYPE_CHECKING:
    from ..worker import Worker

log = logging.getLogger("modelmon.web")

STATIC_DIR = Path(__file__).parent / "static"
SCOPE_HEADER = "X-Modelmon-Scope"  # "local": answer from this worker's partitions only (a gather request)
FORWARDED_HEADER = "X-Modelmon-Forwarded"  # set on forwarded requests: never forward twice
FORWARD_TIMEOUT_S = 10.0
PUBLIC_PATHS = ("/health", "/ready", "/", "/static/")
JSON = "application/json"
# Request bounds, checked before routing and authentication (JSON errors). aiohttp's HTTP parser refuses
# a request line or one header above 8190 bytes, or more than 128 headers, itself (plain-text 400).
MAX_PATH_CHARS = 512  # the longest real path: /api/v1/models/<128-character model>/windows
MAX_QUERY_CHARS = 2048  # every parameter is at most views.MAX_PARAM_CHARS (256)
MAX_QUERY_PARAMS = 16
MAX_HEADER_BYTES = 16384  # all header names and values together

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _openapi_path() -> Path:
    """schemas/openapi.json of the source tree, or the copy packaged in the wheel."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[3] / "schemas" / "openapi.json",
        here.parents[1] / "_schemas" / "openapi.json",
    ):
        if candidate.exists():
            return candidate
    return here.parents[3] / "schemas" / "openapi.json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def error_response(
    status: int, code: str, message: str, parameter: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(error_body(status, code, message, parameter), status, headers)


class NotReady(Exception):
    """This worker (or one it needs) is rebalancing or recovering its tables: 503, never partial numbers."""


class Unavailable(Exception):
    """The worker owning the data did not answer a forwarded request: 503 (retry; it may be restarting)."""


class Api:
    """Routes, middlewares and the request handlers of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.r = StageReads(worker)
        self.s = worker.s
        self._session: ClientSession | None = None
        self._openapi: bytes | None = None
        self._static: frozenset[str] | None = None
        self._started = time.time()

    # -- installation ---------------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._errors)
        app.middlewares.append(self._limits)
        app.middlewares.append(self._cors)
        app.middlewares.append(self._auth)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/ready", self.ready)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/v1/openapi.json", self.openapi)
        r.add_get("/api/v1/models", self.models)
        r.add_get("/api/v1/models/{model}", self.model)
        r.add_get("/api/v1/models/{model}/windows", self.windows)
        r.add_get("/api/v1/alerts", self.alerts)
        r.add_get("/api/v1/health", self.worker_health)
        r.add_get("/", self.dashboard)
        r.add_get("/static/{file}", self.static)
        app.on_cleanup.append(self._close_session)

    async def _close_session(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    # -- middlewares ----------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every error is JSON with a code: parameters 400, readiness 503, HTTP errors as they are."""
        try:
            return await handler(request)
        except ParamError as exc:
            return error_response(400, "bad_parameter", str(exc), exc.parameter)
        except NotReady as exc:
            return error_response(503, "not_ready", str(exc), headers={"Retry-After": "5"})
        except Unavailable as exc:
            return error_response(503, "unavailable", str(exc), headers={"Retry-After": "5"})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
                exc.status, "bad_request" if exc.status < 500 else "internal"
            )
            return error_response(exc.status, code, exc.reason, headers=_allow(exc))
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            return error_response(500, "internal", "internal error (logged by the worker)")

    @web.middleware
    async def _limits(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bounded requests: path, query string, headers; no endpoint takes a body."""
        refused = request_limit_error(request)
        if refused is not None:
            return refused
        return await handler(request)

    @web.middleware
    async def _cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """CORS only for the configured origins (MODELMON_CORS_ORIGINS); off by default."""
        origin = request.headers.get("Origin")
        allowed = origin is not None and (origin in self.s.cors_origins or "*" in self.s.cors_origins)
        if request.method == "OPTIONS" and allowed and request.headers.get("Access-Control-Request-Method"):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin or "",
                    "Access-Control-Allow-Methods": "GET, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization",
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin or ""
            response.headers["Vary"] = "Origin"
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With MODELMON_API_TOKEN set, /api/ and /metrics need ``Authorization: Bearer <token>``."""
        token = self.s.api_token
        path = request.path
        if token and (path.startswith("/api/") or path == "/metrics"):
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                return error_response(
                    401,
                    "unauthorized",
                    "a bearer token is required (Authorization: Bearer <MODELMON_API_TOKEN>)",
                    headers={"WWW-Authenticate": 'Bearer realm="modelmon"'},
                )
        return await handler(request)

    # -- liveness and readiness -----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return json_response(
            {"status": "ok", "worker_id": self.s.worker_id, "time": rollup.rfc3339(time.time())}
        )

    async def ready(self, request: web.Request) -> web.Response:
        reason = self.r.not_ready_reason()
        body: dict[str, Any] = {"ready": reason is None, "worker_id": self.s.worker_id}
        if reason is not None:
            body["reason"] = reason
        body["time"] = rollup.rfc3339(time.time())
        return json_response(body, 200 if reason is None else 503)

    def _require_ready(self) -> None:
        reason = self.r.not_ready_reason()
        if reason is not None:
            raise NotReady(f"worker {self.s.worker_id} is not ready: {reason}")

    # -- routing ----------------------------------------------------------------------------------------

    def _local_only(self, request: web.Request) -> bool:
        return request.headers.get(SCOPE_HEADER) == "local"

    async def _forward(self, request: web.Request, url: str, *, local: bool = False) -> tuple[int, Any]:
        """GET the same path and query from another worker: (status, decoded JSON body)."""
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=FORWARD_TIMEOUT_S))
        headers = {FORWARDED_HEADER: self.s.worker_id}
        if local:
            headers[SCOPE_HEADER] = "local"
        auth = request.headers.get("Authorization")
        if auth:
            headers["Authorization"] = auth
        target = url.rstrip("/") + request.rel_url.path_qs
        try:
            async with self._session.get(target, headers=headers) as resp:
                return resp.status, orjson.loads(await resp.read())
        except (ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            reason = str(exc) or type(exc).__name__
            raise Unavailable(f"worker {url} owning the data did not answer: {reason}") from None

    async def _for_model(self, request: web.Request, local: Callable[[], Any]) -> web.Response:
        """Answer from this worker when it owns the model's partition, else from the worker that does."""
        self._require_ready()
        model = request.match_info["model"]
        if not 0 < len(model) <= views.MAX_MODEL_NAME:
            raise ParamError("model", f"must be 1 to {views.MAX_MODEL_NAME} characters")
        q = self.r.model_partition(model)
        if q in self.r.owned_outputs():
            return json_response(local())
        owner = self.r.partition_owners().get(q)
        if owner is None or request.headers.get(FORWARDED_HEADER):
            raise NotReady(f"the owner of partition {q} of model {model!r} is not known yet (rebalancing)")
        status, body = await self._forward(request, owner)
        # The owner's 503 (rebalancing, recovering) carries Retry-After; the relayed answer must too.
        return json_response(body, status, {"Retry-After": "5"} if status == 503 else None)

    async def _gather(self, request: web.Request, local: Callable[[], list[Any]], field: str) -> list[Any]:
        """This worker's items plus every other owner's (list endpoints)."""
        self._require_ready()
        items = list(local())
        if self._local_only(request):
            return items
        owners = self.r.partition_owners()
        if len(owners) < self.s.output_partitions:
            raise NotReady("not every stage-2 partition has an owner yet (rebalancing)")
        others = sorted(set(owners.values()) - {self.r.url})
        results = await asyncio.gather(*(self._forward(request, url, local=True) for url in others))
        for url, (status, body) in zip(others, results, strict=True):
            if status != 200:
                message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
                raise NotReady(f"worker {url} answered {status}: {message}")
            items.extend(body[field])
        return items

    # -- data endpoints --------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        items = await self._gather(request, self.r.models, "models")
        items.sort(key=lambda m: (m["model"], views.version_key(m["model_version"])))
        return json_response({"models": items})

    async def model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        filtered, version = views.parse_version(request.query.get("version"))
        return await self._for_model(request, lambda: self._found(self.r.model(model, filtered, version)))

    async def windows(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        q = request.query
        filtered, version = views.parse_version(q.get("version"))
        start, end = views.parse_range(q.get("from"), q.get("to"))
        limit = views.parse_limit("limit", q.get("limit"), views.WINDOW_LIMIT_DEFAULT, views.WINDOW_LIMIT_MAX)
        return await self._for_model(
            request, lambda: self._found(self.r.windows(model, filtered, version, start, end, limit))
        )

    @staticmethod
    def _found(body: dict[str, Any] | None) -> dict[str, Any]:
        if body is None:
            raise web.HTTPNotFound(reason="unknown model or model version")
        return body

    async def alerts(self, request: web.Request) -> web.Response:
        model, severity, state, limit = views.parse_alert_query(request.query)

        def local() -> list[Any]:
            return [e for e in self.r.alerts() if views.alert_matches(e, model, severity, state)]

        items = await self._gather(request, local, "alerts")
        return json_response({"alerts": views.sort_alerts(items, limit)})

    async def worker_health(self, request: web.Request) -> web.Response:
        return json_response(self.r.health())

    async def metrics(self, request: web.Request) -> web.Response:
        from . import prometheus

        text = self.r.prometheus_text()
        return web.Response(body=text.encode(), headers={"Content-Type": prometheus.CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = _openapi_path().read_bytes()
        return web.Response(body=self._openapi, content_type=JSON)

    async def static(self, request: web.Request) -> web.FileResponse:
        """A file of the dashboard's folder: plain names only, so nothing outside it is reachable."""
        name = request.match_info["file"]
        if name not in self._static_files():
            raise web.HTTPNotFound(reason=f"no such file: {name[:64]!r}")
        return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})

    def _static_files(self) -> frozenset[str]:
        if self._static is None:
            self._static = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file())
        return self._static

    async def dashboard(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def request_limit_error(request: web.BaseRequest) -> web.Response | None:
    """The JSON error for a request over the bounds above, or None when it is within them."""
    if len(request.raw_path.partition("?")[0]) > MAX_PATH_CHARS:
        return error_response(414, "uri_too_long", f"the path is longer than {MAX_PATH_CHARS} characters")
    if len(request.query_string) > MAX_QUERY_CHARS:
        return error_response(
            414, "uri_too_long", f"the query string is longer than {MAX_QUERY_CHARS} characters"
        )
    if len(request.query) > MAX_QUERY_PARAMS:
        return error_response(400, "bad_request", f"more than {MAX_QUERY_PARAMS} query parameters")
    if sum(len(k) + len(v) for k, v in request.raw_headers) > MAX_HEADER_BYTES:
        return error_response(
            431, "headers_too_large", f"the request headers are larger than {MAX_HEADER_BYTES} bytes"
        )
    if request.body_exists or (request.content_length or 0) > 0:
        return error_response(
            413, "payload_too_large", "no endpoint takes a request body", headers={"Connection": "close"}
        )
    return None


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow") if exc.headers else None
    return {"Allow": allow} if allow else None
