"""Security against a real broker with a SASL/PLAIN listener and a mutual-TLS listener (a second local
broker of this module's own).

With the right credentials the CLI creates the topics, the SDK sends predictions and labels, and a worker
(Faust/aiokafka plus its librdkafka clients) joins them and publishes exact final metrics. With a wrong
password the SDK, the CLI and the worker each fail at once with one clear line naming the refusal. The
worker's web server requires the token on every data route (all routes enumerated); no secret appears in
its log, /metrics, the health endpoint or topic, the broker log or CLI output; oversized requests get a
4xx, never a 500 or a hang.

Over TLS (an SSL listener that requires client certificates; throwaway certificates from tests/certs.py)
the CLI, the SDK and a worker work with the right CA and client certificate, the final metrics exact;
with a CA that did not sign the broker's certificate, or without a client certificate, each fails with
one clear line naming the settings to check.

Ports 19710-19713 (PLAINTEXT, controller, SASL_PLAINTEXT, SSL); the session broker is not used.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web

from modelmon.broker import LocalBroker
from modelmon.client import AuthenticationError, MonitorClient
from modelmon.kafka_clients import KafkaAuthError, check_aiokafka_login
from modelmon.settings import Settings
from modelmon.web.api import STATIC_DIR, Api
from tests.certs import Certs, make_certs

from .streamcheck import (
    CLOSER_MODEL,
    WINDOW,
    closer_events,
    collect_finals,
    produce,
    read_topic,
    stream_settings,
)
from .webcheck import WebWorker

pytestmark = pytest.mark.integration

PLAIN_PORT, CONTROLLER_PORT, SASL_PORT, SSL_PORT = 19710, 19711, 19712, 19713
USER = "alice"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # the secrets: none may show up anywhere
OTHER_PASSWORD = f"pw-{uuid.uuid4().hex}"
TOKEN = f"tok-{uuid.uuid4().hex}"
SECRETS = (PASSWORD, OTHER_PASSWORD, TOKEN)
MODEL, VERSION = "sec-clf", "v1"
N_PRED, N_LABELLED, N_CORRECT = 40, 30, 20

# Routes open without the token, and why. Every other route must need it.
PUBLIC_ROUTES = {
    "/health": "liveness probe: orchestrators cannot send a token; answers worker id and time only",
    "/ready": "readiness probe: same; answers ready/not and a reason, no data",
    "/": "the dashboard's HTML shell: static, no data; it asks for the token and sends it to /api/",
    "/static/{file}": "the dashboard's own JS/CSS files (a fixed list), no data",
}


def _broker_env(home: Path, certs: Certs) -> dict[str, str]:
    return {
        "MODELMON_HOME": str(home),
        "MODELMON_BROKER_PORT": str(PLAIN_PORT),
        "MODELMON_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "MODELMON_BROKER_SASL_PORT": str(SASL_PORT),
        "MODELMON_BROKER_SASL_USERS": f"{USER}:{PASSWORD},bob:{OTHER_PASSWORD}",
        "MODELMON_BROKER_SSL_PORT": str(SSL_PORT),
        "MODELMON_BROKER_SSL_CERT": str(certs.server_cert),
        "MODELMON_BROKER_SSL_KEY": str(certs.server_key),
        "MODELMON_BROKER_SSL_CLIENT_CA": str(certs.ca),  # mutual TLS: client certificates required
    }


def _client_env(password: str, **extra: str) -> dict[str, str]:
    return {
        "MODELMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "MODELMON_KAFKA_SASL_MECHANISM": "PLAIN",
        "MODELMON_KAFKA_SASL_USERNAME": USER,
        "MODELMON_KAFKA_SASL_PASSWORD": password,
        **extra,
    }


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "modelmon.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("h-sec")
    certs = make_certs(home / "certs")
    other = make_certs(home / "other-ca")  # a CA that signed neither the broker's nor our certificate
    env = _broker_env(home, certs)
    broker = LocalBroker(Settings.from_env(env), log=lambda msg: None)
    try:
        broker.start()
    except Exception as exc:
        pytest.fail(f"the SASL/TLS test broker could not start: {exc}", pytrace=False)
    yield SimpleNamespace(home=home, env=env, broker=broker, certs=certs, other=other)
    broker.stop()


def _settings(sasl_broker: Any, password: str, prefix: str) -> Settings:
    """Client settings as a deployment has them: the SASL listener's address and one user's password."""
    return Settings.from_env(
        _client_env(
            password,
            MODELMON_HOME=str(sasl_broker.home),
            MODELMON_KAFKA_BOOTSTRAP=f"127.0.0.1:{SASL_PORT}",
            MODELMON_TOPIC_PREFIX=prefix,
            MODELMON_APP_ID=f"mm{uuid.uuid4().hex[:8]}",
        )
    )


def _send_known_stream(settings: Settings) -> tuple[float, int]:
    """The SDK sends N_PRED predictions and N_LABELLED labels (N_CORRECT right) in one future window,
    then the closers; returns (window start, events the broker acknowledged to the SDK)."""
    base = (int(time.time() / WINDOW) + 2) * WINDOW
    with MonitorClient(settings) as mon:
        for i in range(N_PRED):
            pred = "a" if i % 2 else "b"
            mon.log_prediction(f"q{i}", MODEL, pred, model_version=VERSION, ts=base + 0.04 * i)
            if i < N_LABELLED:
                label = pred if i < N_CORRECT else ("b" if pred == "a" else "a")
                mon.log_ground_truth(f"q{i}", label, ts=base + 0.04 * i + 0.5)
    produce(settings, closer_events(base + 1000.0))
    return base, mon.delivered  # after the flush on leaving the block


def _assert_exact(event: dict) -> None:
    """The final metrics of the window _send_known_stream filled."""
    assert event["final"] is True
    assert event["traffic"]["predictions"] == N_PRED
    assert event["labels"]["labelled"] == N_LABELLED
    assert event["counters"]["unmatched_predictions"] == N_PRED - N_LABELLED
    assert event["classification"]["accuracy"] == pytest.approx(N_CORRECT / N_LABELLED)


@pytest.fixture(scope="module")
def secure_run(sasl_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """CLI creates the topics, the SDK sends a known stream, a worker (API token set) publishes finals."""
    prefix = f"sec{uuid.uuid4().hex[:8]}."
    # The local-broker form of the settings: MODELMON_BROKER_SASL_PORT routes SASL clients to that listener.
    cli_env = {**sasl_broker.env, **_client_env(PASSWORD), "MODELMON_TOPIC_PREFIX": prefix}
    created = _cli(cli_env, "topics", "create")
    settings = stream_settings(_settings(sasl_broker, PASSWORD, prefix), api_token=TOKEN)
    base, sdk_delivered = _send_known_stream(settings)
    worker = WebWorker(settings, "sec-w1", tmp_path_factory.mktemp("sec-logs")).start()
    try:
        finals, _ = collect_finals(settings, {(MODEL, VERSION, base)}, timeout_s=240)
        worker.wait_ready()
        yield SimpleNamespace(
            settings=settings,
            cli_env=cli_env,
            created=created,
            sdk_delivered=sdk_delivered,
            base=base,
            finals=finals,
            worker=worker,
        )
    finally:
        worker.stop()


# -- right credentials ---------------------------------------------------------------------------------


def test_cli_works_with_the_right_credentials(secure_run: Any) -> None:
    created = secure_run.created
    assert created.returncode == 0, created.stderr
    prefix = secure_run.settings.topic_prefix
    assert f"created  {prefix}predictions  (8 partitions)" in created.stdout
    check = _cli(secure_run.cli_env, "topics", "check")
    assert check.returncode == 0 and "are co-partitioned (8 partitions each)" in check.stdout, check.stderr
    sim = _cli(
        {**secure_run.cli_env, "MODELMON_TOPIC_PREFIX": f"{prefix}sim."},
        "topics",
        "create",
    )
    assert sim.returncode == 0, sim.stderr
    sim = _cli(
        {**secure_run.cli_env, "MODELMON_TOPIC_PREFIX": f"{prefix}sim."},
        "simulate", "--count", "25", "--no-realtime", "--quiet", "--invalid-fraction", "0",
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    sent = re.search(r"done: (\d+) events", sim.stdout)
    assert sent, sim.stdout
    sim_settings = secure_run.settings.with_(topic_prefix=f"{prefix}sim.")
    stored = len(read_topic(sim_settings, "predictions")) + len(read_topic(sim_settings, "ground-truth"))
    assert stored == int(sent.group(1))  # everything the CLI sent over SASL is on the topics
    alerts = _cli(secure_run.cli_env, "alerts", "--json")
    assert alerts.returncode == 0 and alerts.stderr == "", alerts.stderr


def test_sdk_and_worker_over_sasl_give_exact_metrics(secure_run: Any) -> None:
    assert secure_run.sdk_delivered == N_PRED + N_LABELLED  # every SDK event acknowledged by the broker
    _assert_exact(secure_run.finals[(MODEL, VERSION, secure_run.base)])
    log = secure_run.worker.log_path.read_text(errors="replace")
    assert "Authenticated as alice via PLAIN" in log  # aiokafka's own login line: Faust used SASL


# -- wrong credentials -----------------------------------------------------------------------------------


def test_sdk_raises_an_authentication_error(sasl_broker: Any) -> None:
    bad = _settings(sasl_broker, "wrong-password", f"bad{uuid.uuid4().hex[:6]}.")
    mon = MonitorClient(bad)
    mon.log_prediction("r1", MODEL, "a")
    with pytest.raises(AuthenticationError) as info:
        mon.flush(timeout_s=60)
    text = str(info.value)
    assert "refused to authenticate" in text and "Authentication failed" in text
    assert "user 'alice'" in text and "wrong-password" not in text
    with pytest.raises(AuthenticationError):  # and the next send says so at once
        mon.log_prediction("r2", MODEL, "a")


@pytest.mark.parametrize(
    "args",
    [
        ("topics", "list"),
        ("topics", "create"),
        ("simulate", "--count", "5", "--no-realtime", "--quiet"),
        ("alerts",),
    ],
)
def test_cli_prints_one_line_and_exits_1(sasl_broker: Any, args: tuple[str, ...]) -> None:
    env = {**sasl_broker.env, **_client_env("wrong-password")}
    out = _cli(env, *args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("modelmon: error: Kafka")
    assert "refused to authenticate" in out.stderr and "Authentication failed" in out.stderr
    assert "wrong-password" not in out.stderr + out.stdout


def test_worker_exits_with_a_clear_error(sasl_broker: Any, tmp_path: Path) -> None:
    bad = stream_settings(_settings(sasl_broker, "wrong-password", f"bad{uuid.uuid4().hex[:6]}."))
    worker = WebWorker(bad, "sec-bad", tmp_path).start()
    try:
        code = worker.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        worker.kill9()
        pytest.fail(f"the worker kept running with a wrong password:\n{worker.log_tail()}")
    log = worker.log_path.read_text(errors="replace")
    assert code == 1, log
    assert log.strip().startswith("modelmon: error: Kafka") and log.count("\n") == 1, log
    assert "refused to authenticate" in log and "wrong-password" not in log


def test_aiokafka_login_as_faust_makes_it(sasl_broker: Any) -> None:
    """The worker's aiokafka path alone: the credentials Faust is given log in, wrong ones are refused."""
    good = _settings(sasl_broker, PASSWORD, "x.")
    asyncio.run(check_aiokafka_login(good))
    with pytest.raises(KafkaAuthError, match="refused the worker's aiokafka login") as info:
        asyncio.run(check_aiokafka_login(_settings(sasl_broker, "wrong-password", "x.")))
    assert "wrong-password" not in str(info.value)


# -- TLS: an SSL listener that requires client certificates --------------------------------------------


def _tls_env(sasl_broker: Any, case: str = "right") -> dict[str, str]:
    """Client TLS settings: the right CA and client certificate, a CA that did not sign the broker's
    certificate ("wrong CA"), or the right CA and no client certificate ("no client cert")."""
    certs = sasl_broker.certs
    env = {
        "MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL",
        "MODELMON_KAFKA_SSL_CA": str(sasl_broker.other.ca if case == "wrong CA" else certs.ca),
    }
    if case != "no client cert":
        env["MODELMON_KAFKA_SSL_CERT"] = str(certs.client_cert)
        env["MODELMON_KAFKA_SSL_KEY"] = str(certs.client_key)
    return env


def _tls_settings(sasl_broker: Any, case: str, prefix: str) -> Settings:
    return Settings.from_env(
        {
            **_tls_env(sasl_broker, case),
            "MODELMON_HOME": str(sasl_broker.home),
            "MODELMON_KAFKA_BOOTSTRAP": f"127.0.0.1:{SSL_PORT}",
            "MODELMON_TOPIC_PREFIX": prefix,
            "MODELMON_APP_ID": f"mm{uuid.uuid4().hex[:8]}",
        }
    )


# What each refusal says: (phrase, the settings it names).
TLS_REFUSALS = {
    "wrong CA": ("has a TLS certificate this client does not trust", "check MODELMON_KAFKA_SSL_CA"),
    "no client cert": (
        "refused this client's TLS handshake",
        "MODELMON_KAFKA_SSL_CERT and MODELMON_KAFKA_SSL_KEY",
    ),
}


def test_cli_sdk_and_worker_over_mutual_tls_give_exact_metrics(sasl_broker: Any, tmp_path: Path) -> None:
    prefix = f"tls{uuid.uuid4().hex[:8]}."
    # The CLI in the local-broker form: MODELMON_BROKER_SSL_PORT routes SSL clients to that listener.
    cli_env = {**sasl_broker.env, **_tls_env(sasl_broker), "MODELMON_TOPIC_PREFIX": prefix}
    created = _cli(cli_env, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert f"created  {prefix}predictions  (8 partitions)" in created.stdout
    check = _cli(cli_env, "topics", "check")
    assert check.returncode == 0 and "are co-partitioned (8 partitions each)" in check.stdout, check.stderr
    settings = stream_settings(_tls_settings(sasl_broker, "right", prefix))
    assert settings.kafka_client_config()["ssl.certificate.location"] == str(sasl_broker.certs.client_cert)
    base, delivered = _send_known_stream(settings)
    assert delivered == N_PRED + N_LABELLED  # every SDK event acknowledged over TLS
    # The worker's Faust (aiokafka) clients reach the inputs only through the SSL listener, which
    # refuses connections without a trusted client certificate: final metrics prove both libraries.
    worker = WebWorker(settings, "tls-w1", tmp_path).start()
    try:
        finals, _ = collect_finals(settings, {(MODEL, VERSION, base)}, timeout_s=240)
        _assert_exact(finals[(MODEL, VERSION, base)])
    finally:
        worker.stop()


@pytest.mark.parametrize("case", sorted(TLS_REFUSALS))
def test_sdk_fails_clearly_over_bad_tls(sasl_broker: Any, case: str) -> None:
    phrase, names = TLS_REFUSALS[case]
    mon = MonitorClient(_tls_settings(sasl_broker, case, f"bad{uuid.uuid4().hex[:6]}."))
    mon.log_prediction("r1", MODEL, "a")
    with pytest.raises(AuthenticationError) as info:
        mon.flush(timeout_s=60)
    text = str(info.value)
    assert phrase in text and names in text and "\n" not in text, text
    with pytest.raises(AuthenticationError):  # and the next send says so at once
        mon.log_prediction("r2", MODEL, "a")


@pytest.mark.parametrize("case", sorted(TLS_REFUSALS))
@pytest.mark.parametrize(
    "args", [("topics", "list"), ("simulate", "--count", "5", "--no-realtime", "--quiet")]
)
def test_cli_fails_in_one_line_over_bad_tls(sasl_broker: Any, case: str, args: tuple[str, ...]) -> None:
    phrase, names = TLS_REFUSALS[case]
    out = _cli({**sasl_broker.env, **_tls_env(sasl_broker, case)}, *args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("modelmon: error: Kafka"), out.stderr
    assert phrase in out.stderr and names in out.stderr, out.stderr


@pytest.mark.parametrize("case", sorted(TLS_REFUSALS))
def test_worker_exits_in_one_line_over_bad_tls(sasl_broker: Any, case: str, tmp_path: Path) -> None:
    phrase, names = TLS_REFUSALS[case]
    bad = stream_settings(_tls_settings(sasl_broker, case, f"bad{uuid.uuid4().hex[:6]}."))
    worker = WebWorker(bad, "tls-bad", tmp_path).start()
    try:
        code = worker.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        worker.kill9()
        pytest.fail(f"the worker kept running over bad TLS ({case}):\n{worker.log_tail()}")
    log = worker.log_path.read_text(errors="replace")
    assert code == 1, log
    assert log.strip().startswith("modelmon: error: Kafka") and log.count("\n") == 1, log
    assert phrase in log and names in log, log


@pytest.mark.parametrize("case", sorted(TLS_REFUSALS))
def test_aiokafka_over_tls_as_faust_makes_it(sasl_broker: Any, case: str) -> None:
    """The worker's aiokafka path alone (the worker checks librdkafka first, so this is its only test)."""
    asyncio.run(check_aiokafka_login(_tls_settings(sasl_broker, "right", "x.")))
    phrase, names = TLS_REFUSALS[case]
    with pytest.raises(KafkaAuthError) as info:
        asyncio.run(check_aiokafka_login(_tls_settings(sasl_broker, case, "x."), timeout_s=30))
    assert phrase in str(info.value) and names in str(info.value), str(info.value)


# -- the web token, secrets, bounds ----------------------------------------------------------------------


def _routes() -> set[tuple[str, str]]:
    """Every (method, path) the worker's Api installs on its aiohttp app."""
    app = web.Application()
    Api(SimpleNamespace(s=Settings.from_env({}))).install(app)  # type: ignore[arg-type]
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}


def _concrete(path: str) -> str:
    static = sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file())[0]
    # the closers' model: its window is still open (a final window's state is dropped)
    return path.replace("{model}", CLOSER_MODEL).replace("{file}", static)


def _request(
    worker: WebWorker,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def test_every_data_route_needs_the_token(secure_run: Any) -> None:
    routes = _routes()
    paths = {path for _, path in routes}
    assert set(PUBLIC_ROUTES) <= paths, "a public route was removed: update PUBLIC_ROUTES"
    protected = sorted(paths - set(PUBLIC_ROUTES))
    assert all(p.startswith("/api/") or p == "/metrics" for p in protected), protected
    assert len(protected) >= 7, protected
    worker = secure_run.worker
    for method, path in sorted(routes):
        url = _concrete(path)
        if path in PUBLIC_ROUTES:
            status, _, _ = _request(worker, method, url)
            assert status == 200, (method, url)
            continue
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"}):
            status, ctype, body = _request(worker, method, url, headers)
            assert status == 401, (method, url, headers, status)
            if method == "GET":
                assert ctype.startswith("application/json")
                assert orjson.loads(body)["error"]["code"] == "unauthorized"
        status, _, body = _request(worker, method, url, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, (method, url, status, body[:300])
        if method == "GET" and path.startswith("/api/v1/models"):
            assert orjson.loads(body)  # a JSON answer (final windows are dropped, so lists may be empty)
    # Faust's own pages stay off
    for url in ("/router/", "/table/windows/", "/stats/", "/graph/"):
        assert _request(worker, "GET", url, {"Authorization": f"Bearer {TOKEN}"})[0] == 404, url


def test_oversized_requests_get_a_4xx_not_a_500_or_a_hang(secure_run: Any) -> None:
    worker = secure_run.worker
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ("GET", "/api/v1/alerts?model=" + "x" * 4000, auth, None, 414),
        ("GET", "/api/v1/models/" + "m" * 1000, auth, None, 414),
        ("GET", "/api/v1/alerts?" + "&".join(f"p{i}=1" for i in range(40)), auth, None, 400),
        ("GET", "/api/v1/models", {**auth, **{f"X-Pad-{i}": "v" * 2000 for i in range(12)}}, None, 431),
        ("POST", "/api/v1/models", auth, b"x" * 200_000, 413),
        ("GET", "/metrics", auth, b"{}", 413),
        ("GET", f"/api/v1/models/{MODEL}?version=" + "v" * 300, auth, None, 400),
    ]
    for method, url, headers, body, want in cases:
        status, ctype, raw = _request(worker, method, url, headers, body)
        assert status == want, (method, url[:60], status, raw[:200])
        assert ctype.startswith("application/json"), (url[:60], ctype)
        assert orjson.loads(raw)["error"]["status"] == want
    # Beyond aiohttp's parser limits (request line or one header over 8190 bytes): its own plain 400.
    for url, headers in (("/api/v1/models?x=" + "y" * 9000, auth), ("/api/v1/models", {"X-Big": "z" * 9000})):
        status, _, _ = _request(worker, "GET", url, headers)
        assert status == 400
    assert _request(worker, "GET", "/health")[0] == 200  # and the worker is fine


def test_no_secret_in_logs_metrics_health_or_outputs(secure_run: Any, sasl_broker: Any) -> None:
    """Last in the module, so the worker log scanned includes every request the tests above made."""
    worker = secure_run.worker
    auth = {"Authorization": f"Bearer {TOKEN}"}
    texts: dict[str, str] = {}
    for url in ("/metrics", "/api/v1/health", "/health", "/ready", "/api/v1/models", "/api/v1/alerts"):
        status, _, body = _request(worker, "GET", url, auth)
        assert status == 200, url
        texts[url] = body.decode()
    texts["401 body"] = _request(worker, "GET", "/metrics")[2].decode()
    health = read_topic(secure_run.settings, "monitor-health")
    assert health, "no health report on monitor-health"
    texts["monitor-health"] = orjson.dumps(health).decode()
    texts["worker log"] = worker.log_path.read_text(errors="replace")
    texts["broker log"] = sasl_broker.broker.log_file.read_text(errors="replace")
    status = _cli(secure_run.cli_env, "broker", "status")
    texts["broker status"] = status.stdout + status.stderr
    texts["topics create"] = secure_run.created.stdout + secure_run.created.stderr
    texts["settings repr"] = repr(secure_run.settings)
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret appears in {where}"
    assert "modelmon_" in texts["/metrics"] and "alice" not in texts["/metrics"]
    # the broker hides its JAAS configuration in its own log
    assert "sasl.jaas.config" not in texts["broker log"] or "[hidden]" in texts["broker log"]
    for name in ("server.properties", "keystore.pem"):  # SASL passwords; the TLS listener's private key
        assert oct((sasl_broker.home / "broker" / name).stat().st_mode & 0o777) == "0o600", name
