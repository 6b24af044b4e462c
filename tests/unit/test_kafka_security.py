"""Kafka security settings without a broker: validation (one line naming the variable), the exact
librdkafka and aiokafka configuration every client gets, the local broker's SASL listener properties,
and the HTTP request bounds. The live counterpart is tests/integration/test_kafka_security.py."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from modelmon.broker import _server_properties, _write_keystore
from modelmon.kafka_clients import aiokafka_auth, auth_error, faust_credentials
from modelmon.settings import Settings, SettingsError
from modelmon.web import api
from tests.certs import Certs, make_certs

SASL = {
    "MODELMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "MODELMON_KAFKA_SASL_MECHANISM": "PLAIN",
    "MODELMON_KAFKA_SASL_USERNAME": "alice",
    "MODELMON_KAFKA_SASL_PASSWORD": "pw-Never-Shown-7",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MODELMON_KAFKA_SASL_MECHANISM": "PLAIN"}, "MODELMON_KAFKA_SASL_MECHANISM: only used with SASL_"),
        ({"MODELMON_KAFKA_SASL_PASSWORD": "x"}, "MODELMON_KAFKA_SASL_PASSWORD: only used with SASL_"),
        ({**SASL, "MODELMON_KAFKA_SASL_MECHANISM": ""}, "MODELMON_KAFKA_SASL_MECHANISM: required with"),
        ({**SASL, "MODELMON_KAFKA_SASL_MECHANISM": "OAUTHBEARER"}, "MODELMON_KAFKA_SASL_MECHANISM: must be"),
        ({**SASL, "MODELMON_KAFKA_SASL_PASSWORD": ""}, "MODELMON_KAFKA_SASL_PASSWORD: required with"),
        ({**SASL, "MODELMON_KAFKA_SASL_USERNAME": ""}, "MODELMON_KAFKA_SASL_USERNAME: required with"),
        ({**SASL, "MODELMON_KAFKA_SASL_MECHANISM": "GSSAPI"}, "MODELMON_KAFKA_SASL_USERNAME: not used with"),
        ({**SASL, "MODELMON_KAFKA_SSL_CA": "/etc/hosts"}, "MODELMON_KAFKA_SSL_CA: only used with SSL"),
        (
            {"MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL", "MODELMON_KAFKA_SSL_KEY": "/etc/hosts"},
            "MODELMON_KAFKA_SSL_KEY: needs MODELMON_KAFKA_SSL_CERT",
        ),
        (
            {"MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL", "MODELMON_KAFKA_SSL_CA": "/nonexistent/ca.pem"},
            "MODELMON_KAFKA_SSL_CA: no such file: '/nonexistent/ca.pem'",
        ),
        (
            {"MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL", "MODELMON_KAFKA_SSL_CA": "/etc/hostname"},
            "MODELMON_KAFKA_SSL_CA: not a PEM CA certificate file",
        ),
        ({"MODELMON_BROKER_SASL_PORT": "19999"}, "MODELMON_BROKER_SASL_USERS: required when"),
        ({"MODELMON_BROKER_SASL_USERS": "a:b"}, "MODELMON_BROKER_SASL_USERS: only used with"),
        (
            {"MODELMON_BROKER_SASL_PORT": "19999", "MODELMON_BROKER_SASL_USERS": "alice"},
            "MODELMON_BROKER_SASL_USERS: entry 1 must be 'user:password'",
        ),
        (
            {"MODELMON_BROKER_SASL_PORT": "9092", "MODELMON_BROKER_SASL_USERS": "a:b"},
            "MODELMON_BROKER_SASL_PORT: must differ",
        ),
    ],
)
def test_unsupported_combinations_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_combination_in_one_line_and_exits_2() -> None:
    env = {"PATH": "/usr/bin:/bin", "MODELMON_KAFKA_SASL_MECHANISM": "PLAIN", "MODELMON_HOME": "/tmp/h-sec"}
    out = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "topics", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("modelmon: configuration error: MODELMON_KAFKA_SASL_MECHANISM")


def test_a_broker_user_password_is_never_echoed_in_errors() -> None:
    bad = "s3cret with space"
    env = {"MODELMON_BROKER_SASL_PORT": "19999", "MODELMON_BROKER_SASL_USERS": f"alice:{bad}"}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert "alice" in str(info.value) and bad not in str(info.value) and "s3cret" not in str(info.value)


def test_sasl_plain_reaches_librdkafka_and_aiokafka_alike() -> None:
    s = Settings.from_env({**SASL, "MODELMON_KAFKA_BOOTSTRAP": "k1:9094,k2:9094"})
    assert s.kafka_client_config() == {
        "bootstrap.servers": "k1:9094,k2:9094",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "pw-Never-Shown-7",
    }
    assert aiokafka_auth(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw-Never-Shown-7",
        "ssl_context": None,
    }
    assert "pw-Never-Shown-7" not in repr(s) and "pw-Never-Shown-7" not in repr(faust_credentials(s))
    assert "pw-Never-Shown-7" not in s.security_summary()


def test_sasl_ssl_scram_with_a_ca(certs: Certs) -> None:
    env = {
        **SASL,
        "MODELMON_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "MODELMON_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "MODELMON_KAFKA_SSL_CA": str(certs.ca),
    }
    s = Settings.from_env(env)
    conf = s.kafka_client_config()
    assert (conf["security.protocol"], conf["sasl.mechanism"], conf["ssl.ca.location"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        str(certs.ca),
    )
    auth = aiokafka_auth(s)
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "alice",
    )
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "modelmon test CA"),),)]


def test_mutual_tls_presents_the_client_certificate(certs: Certs) -> None:
    s = Settings.from_env(
        {
            "MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL",
            "MODELMON_KAFKA_SSL_CA": str(certs.ca),
            "MODELMON_KAFKA_SSL_CERT": str(certs.client_cert),
            "MODELMON_KAFKA_SSL_KEY": str(certs.client_key),
        }
    )
    conf = s.kafka_client_config()
    assert conf["security.protocol"] == "SSL"
    assert conf["ssl.certificate.location"] == str(certs.client_cert)
    assert conf["ssl.key.location"] == str(certs.client_key)
    auth = aiokafka_auth(s)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in auth


def test_a_key_that_does_not_match_its_certificate_is_refused(certs: Certs) -> None:
    with pytest.raises(SettingsError, match="MODELMON_KAFKA_SSL_CERT: the certificate or its key"):
        Settings.from_env(
            {
                "MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL",
                "MODELMON_KAFKA_SSL_CERT": str(certs.client_cert),
                "MODELMON_KAFKA_SSL_KEY": str(certs.server_key),
            }
        )


def test_plaintext_gives_faust_no_credentials() -> None:
    s = Settings.from_env({})
    assert faust_credentials(s) is None
    assert aiokafka_auth(s) == {"security_protocol": "PLAINTEXT"}
    assert s.kafka_client_config() == {"bootstrap.servers": "127.0.0.1:9092"}


def test_local_broker_sasl_listener(tmp_path: Path) -> None:
    env = {
        **SASL,
        "MODELMON_BROKER_PORT": "19100",
        "MODELMON_CONTROLLER_PORT": "19101",
        "MODELMON_BROKER_SASL_PORT": "19102",
        "MODELMON_BROKER_SASL_USERS": "alice:pw-Never-Shown-7,bob:b=1;2",
    }
    s = Settings.from_env(env)
    assert s.bootstrap == "127.0.0.1:19102"  # SASL clients of the local broker use its SASL listener
    props = dict(line.split("=", 1) for line in _server_properties(s, tmp_path).splitlines() if "=" in line)
    assert props["listeners"].endswith(",SASL_PLAINTEXT://127.0.0.1:19102")
    assert props["advertised.listeners"] == ("PLAINTEXT://127.0.0.1:19100,SASL_PLAINTEXT://127.0.0.1:19102")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in props["listener.security.protocol.map"]
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'user_alice="pw-Never-Shown-7" user_bob="b=1;2";'
    )
    assert "pw-Never-Shown-7" not in repr(s)
    plain = Settings.from_env({"MODELMON_BROKER_PORT": "19100", "MODELMON_CONTROLLER_PORT": "19101"})
    text = _server_properties(plain, tmp_path)
    assert "SASL_PLAINTEXT" not in text and "jaas" not in text and "SSL" not in text


def _broker_tls(certs: Certs, **changes: str) -> dict[str, str]:
    env = {
        "MODELMON_BROKER_PORT": "19100",
        "MODELMON_CONTROLLER_PORT": "19101",
        "MODELMON_BROKER_SSL_PORT": "19103",
        "MODELMON_BROKER_SSL_CERT": str(certs.server_cert),
        "MODELMON_BROKER_SSL_KEY": str(certs.server_key),
        "MODELMON_BROKER_SSL_CLIENT_CA": str(certs.ca),
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v != "-"}


def test_local_broker_ssl_listener(certs: Certs, tmp_path: Path) -> None:
    client = {
        "MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL",
        "MODELMON_KAFKA_SSL_CA": str(certs.ca),
        "MODELMON_KAFKA_SSL_CERT": str(certs.client_cert),
        "MODELMON_KAFKA_SSL_KEY": str(certs.client_key),
    }
    s = Settings.from_env({**_broker_tls(certs), **client})
    assert s.bootstrap == "127.0.0.1:19103"  # SSL clients of the local broker use its SSL listener
    assert Settings.from_env(_broker_tls(certs)).bootstrap == "127.0.0.1:19100"  # PLAINTEXT ones do not
    keystore = tmp_path / "keystore.pem"
    props = dict(
        line.split("=", 1) for line in _server_properties(s, tmp_path, keystore).splitlines() if "=" in line
    )
    assert props["listeners"].endswith(",SSL://127.0.0.1:19103")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19100,SSL://127.0.0.1:19103"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"].endswith(",SSL:SSL")
    assert {k: v for k, v in props.items() if k.startswith("listener.name.ssl.")} == {
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": str(keystore),
        "listener.name.ssl.ssl.truststore.type": "PEM",
        "listener.name.ssl.ssl.truststore.location": str(certs.ca.resolve()),
        "listener.name.ssl.ssl.client.auth": "required",
    }
    _write_keystore(s, keystore)
    text = keystore.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----") and text.count("-----BEGIN CERTIFICATE-----") == 1
    assert oct(keystore.stat().st_mode & 0o777) == "0o600"
    # Without a client CA the listener takes clients without certificates.
    one_way = Settings.from_env(_broker_tls(certs, MODELMON_BROKER_SSL_CLIENT_CA="-"))
    text = _server_properties(one_way, tmp_path, keystore)
    assert "listener.name.ssl.ssl.client.auth=none" in text and "truststore" not in text


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (
            {"MODELMON_BROKER_SSL_PORT": "-"},
            "MODELMON_BROKER_SSL_CERT: only used with MODELMON_BROKER_SSL_PORT",
        ),
        (
            {"MODELMON_BROKER_SSL_CERT": "-"},
            "MODELMON_BROKER_SSL_CERT: required when MODELMON_BROKER_SSL_PORT",
        ),
        ({"MODELMON_BROKER_SSL_KEY": "-"}, "MODELMON_BROKER_SSL_KEY: required when MODELMON_BROKER_SSL_PORT"),
        ({"MODELMON_BROKER_SSL_PORT": "19100"}, "MODELMON_BROKER_SSL_PORT: must differ"),
        ({"MODELMON_BROKER_SSL_PORT": "70000"}, "MODELMON_BROKER_SSL_PORT: port must be between"),
        ({"MODELMON_BROKER_SSL_KEY": "/nonexistent/k.pem"}, "MODELMON_BROKER_SSL_KEY: no such file"),
        ({"MODELMON_BROKER_SSL_CLIENT_CA": "/tmp"}, "MODELMON_BROKER_SSL_CLIENT_CA: is a folder"),
        ({"MODELMON_BROKER_SSL_CLIENT_CA": "/etc/hostname"}, "MODELMON_BROKER_SSL_CLIENT_CA: not a PEM CA"),
        ({"MODELMON_BROKER_SSL_KEY": "client_key"}, "MODELMON_BROKER_SSL_CERT: the certificate and its key"),
        ({"MODELMON_BROKER_SSL_KEY": "pkcs1"}, "MODELMON_BROKER_SSL_KEY: expected an unencrypted PKCS#8"),
    ],
)
def test_broker_tls_settings_name_the_variable(
    certs: Certs, tmp_path: Path, changes: dict[str, str], needle: str
) -> None:
    if changes.get("MODELMON_BROKER_SSL_KEY") == "client_key":
        changes = {"MODELMON_BROKER_SSL_KEY": str(certs.client_key)}
    elif changes.get("MODELMON_BROKER_SSL_KEY") == "pkcs1":  # "BEGIN RSA PRIVATE KEY": Kafka cannot read it
        pkcs1 = tmp_path / "pkcs1.key"
        subprocess.run(
            ["openssl", "rsa", "-in", str(certs.server_key), "-traditional", "-out", str(pkcs1)],
            check=True,
            capture_output=True,
        )
        changes = {"MODELMON_BROKER_SSL_KEY": str(pkcs1)}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(_broker_tls(certs, **changes))
    assert needle in str(info.value) and "\n" not in str(info.value)


class _Watched:
    def __init__(self, text: str) -> None:
        self._watch = type("W", (), {"auth_error": text})()


@pytest.mark.parametrize(
    ("librdkafka_text", "says", "names"),
    [
        (
            "ssl://k:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify "
            "failed: broker certificate could not be verified",
            "has a TLS certificate this client does not trust",
            "check MODELMON_KAFKA_SSL_CA",
        ),
        (
            "ssl://k:9093/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls alert bad "
            "certificate: SSL alert number 42",
            "refused this client's TLS handshake",
            "check MODELMON_KAFKA_SSL_CERT and MODELMON_KAFKA_SSL_KEY",
        ),
        (
            "ssl://k:9093/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate "
            "required: SSL alert number 116",
            "refused this client's TLS handshake",
            "check MODELMON_KAFKA_SSL_CERT and MODELMON_KAFKA_SSL_KEY",
        ),
        (
            "sasl_ssl://k:9093/bootstrap: SASL authentication error: Authentication failed",
            "refused to authenticate this client",
            "check MODELMON_KAFKA_SECURITY_PROTOCOL",
        ),
    ],
)
def test_tls_refusals_say_which_side_and_which_setting(librdkafka_text: str, says: str, names: str) -> None:
    s = Settings.from_env({"MODELMON_KAFKA_SECURITY_PROTOCOL": "SSL", "MODELMON_KAFKA_BOOTSTRAP": "k:9093"})
    error = auth_error(s, _Watched(librdkafka_text))
    assert error is not None
    text = str(error)
    assert text.startswith(f"Kafka at k:9093 {says}") and f"(SSL): {librdkafka_text}; {names}" in text, text


# -- HTTP request bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/api/v1/models/" + "m" * 600, {}, 414, "uri_too_long"),
        ("/api/v1/alerts?model=" + "x" * 3000, {}, 414, "uri_too_long"),
        ("/api/v1/alerts?" + "&".join(f"p{i}=1" for i in range(20)), {}, 400, "bad_request"),
        ("/metrics", {f"X-H{i}": "v" * 1000 for i in range(20)}, 431, "headers_too_large"),
        ("/api/v1/models", {"Content-Length": "10"}, 413, "payload_too_large"),
    ],
)
def test_oversized_requests_get_a_json_4xx(path: str, headers: dict, status: int, code: str) -> None:
    import orjson

    request = make_mocked_request("GET", path, headers=headers)
    response = api.request_limit_error(request)
    assert response is not None and response.status == status
    assert response.content_type == "application/json"
    assert orjson.loads(response.body)["error"]["code"] == code


def test_requests_within_bounds_pass() -> None:
    longest_model = "m" * 128
    for path in (f"/api/v1/models/{longest_model}/windows?from=1&to=2&limit=10&version=v1", "/metrics"):
        assert api.request_limit_error(make_mocked_request("GET", path)) is None


def test_gssapi_uses_the_kerberos_ticket_not_a_password() -> None:
    s = Settings.from_env(
        {"MODELMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MODELMON_KAFKA_SASL_MECHANISM": "gssapi"}
    )
    assert (
        s.kafka_client_config()["sasl.mechanism"] == "GSSAPI"
        and "sasl.username" not in s.kafka_client_config()
    )
    auth = aiokafka_auth(s)
    assert (auth["sasl_mechanism"], auth["sasl_kerberos_service_name"]) == ("GSSAPI", "kafka")
