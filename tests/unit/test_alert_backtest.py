"""The offline backtest (the worker's pure core + engine without Kafka) and `modelmon rules backtest`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from modelmon.alerts.backtest import Backtest, BacktestEvent
from modelmon.alerts.rules import load_rules, parse_rules
from modelmon.schemas import validate_output
from modelmon.simulate import Incident, LabelDelay, SimConfig, generate

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600.0


def _events(cfg: SimConfig):
    return [BacktestEvent(e.kind, e.payload) for e in generate(cfg) if e.kind != "invalid"]


def test_an_incident_in_simulated_traffic_fires_and_resolves_in_its_span() -> None:
    rules = parse_rules(
        "rules:\n"
        "  - {name: lat, kind: baseline, metric: latency_p95, direction: rise, baseline: 30m, ratio: 2,"
        " view: 5m, min_samples: 200}\n",
        60.0,
    )
    cfg = SimConfig(
        models=1, versions=1, rate=4.0, duration_s=3 * 3600.0, invalid_fraction=0.0, seed=3, start_ts=T0,
        label_delay=LabelDelay(median_s=5.0, sigma=0.5, max_s=60.0),
        incidents=(Incident("latency_spike", 5400.0, 1200.0, magnitude=3.0),),
    )  # fmt: skip
    alerts = Backtest(rules, window_s=60.0, horizon_s=3600.0).add_all(_events(cfg)).finish()
    for a in alerts:
        validate_output("alert", a)
    states = [(a["state"], a["started_at"]) for a in alerts]
    assert [s for s, _ in states] == ["firing", "resolved"], states
    start = T0 + 5400.0
    fired_at = alerts[0]["ts"]
    from datetime import datetime

    ts = datetime.fromisoformat(fired_at.replace("Z", "+00:00")).timestamp()
    assert start < ts <= start + 600  # within ten windows of the spike's start
    resolved = datetime.fromisoformat(alerts[1]["ts"].replace("Z", "+00:00")).timestamp()
    assert start + 1200 < resolved <= start + 1200 + 600


def test_example_rules_stay_quiet_on_clean_simulated_traffic() -> None:
    rules = load_rules(ROOT / "deploy" / "alert-rules.yaml", 60.0)
    cfg = SimConfig(
        models=2, versions=2, rate=3.0, duration_s=6 * 3600.0, invalid_fraction=0.0, seed=11, start_ts=T0,
        label_delay=LabelDelay(median_s=5.0, sigma=0.5, max_s=60.0),
    )  # fmt: skip
    bt = Backtest(rules, window_s=60.0, horizon_s=3600.0).add_all(_events(cfg))
    alerts = bt.finish()
    assert alerts == []
    assert bt.evaluations > 4 * 360 * len(rules.rules) * 0.9  # every series and rule was evaluated


def test_rules_backtest_command_prints_the_alerts(tmp_path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "rules:\n  - {name: drop, kind: baseline, metric: rate, direction: drop, baseline: 30m, ratio: 0.7,"
        " confidence: 0.99, view: 5m, min_samples: 100}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "modelmon", "rules", "backtest", str(rules), "--rate", "4",
         "--duration", "7200", "--incident", "traffic_drop@4200+900:0.6", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    alerts = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [a["state"] for a in alerts] == ["firing", "resolved"]  # for: 1, so no pending
    assert all(a["rule"] == "drop" for a in alerts)
    assert "backtest: 7200 s of event time, 2 alert events (1 firing)" in out.stderr
