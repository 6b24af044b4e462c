"""deploy/prometheus/ checked by Debian's promtool: the scrape config, the alerting rules, and the rules'
own unit tests (alerts.test.yml, evaluated by promtool's PromQL engine); plus a check that the rules only
use metric names modelmon exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelmon.aggregate import WindowAccumulator
from modelmon.web.prometheus import (
    SeriesCounters,
    alert_families,
    health_families,
    view_families,
    worker_families,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not os.path.exists(PROMTOOL):
        pytest.fail(
            "promtool is missing: `make system-deps` installs Debian's prometheus package, which provides it",
            pytrace=False,
        )
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)


def test_promtool_check_config():
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 1 rule files found" in res.stdout


def test_promtool_check_rules():
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules():
    res = promtool("test", "rules", "alerts.test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())
    fired = {
        t["alertname"]
        for case in tests["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert names == fired


# A health report with every figure set (schemas/examples/monitor-health/valid/full.json).
_HEALTH_REPORT = json.loads((ROOT / "schemas/examples/monitor-health/valid/full.json").read_text())


def _exposed_names() -> set[str]:
    w = WindowAccumulator()
    w.add_prediction(1.0, False, task="classification", prediction="a")
    w.add_outcome("classification", "a", "a", None, 2.0)
    w.add_counter("invalid:schema")
    sc = SeriesCounters()
    sc.observe("m", None, None, w.to_dict())
    full = {
        "traffic": {"predictions": 1, "rate_per_s": 1.0, "errors": 0, "error_rate": 0.0},
        "labels": {"labelled": 1, "coverage": 1.0, "delay_p95_s": 1.0},
        "latency": {"p95_ms": 1.0},
        "classification": {"accuracy": 1.0, "accuracy_ci_low": 0.5, "accuracy_ci_high": 1.0, "log_loss": 0.1},
    }
    fams = (
        sc.families()
        + view_families({("m", None): {"5m": full}})
        + alert_families([{"rule": "r", "model": "m", "severity": "info", "state": "firing"}])
        + worker_families(
            "w", True, {"joined": 1}, {"rss_bytes": 1, "cpu_seconds": 1, "open_fds": 1, "threads": 1}
        )
        + health_families(
            _HEALTH_REPORT, {"interval_s": 10.0, "published": 1, "failed": 0, "published_at": 1.0}
        )
    )
    return {s[0] for f in fams for s in f.samples}


@pytest.mark.parametrize("path", ["alerts.yml", "alerts.test.yml"])
def test_rules_use_only_exposed_metric_names(path):
    used = set(re.findall(r"\bmodelmon_[a-z0-9_]+", (DEPLOY / path).read_text()))
    assert used, "no modelmon metric in the file"
    unknown = used - _exposed_names()
    assert not unknown, f"{path} uses metrics modelmon does not expose: {sorted(unknown)}"
