"""Design rule 8: the pure core imports neither Kafka nor Faust, even indirectly (docs/architecture.md §2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "modelmon.aggregate",
    "modelmon.stats",
    "modelmon.join",
    "modelmon.partition",
    "modelmon.rollup",
    "modelmon.segments",
    "modelmon.error_analysis",
    "modelmon.feedback",
    "modelmon.health",
    "modelmon.outage",
    "modelmon.log_throttle",
    "modelmon.schemas",
    "modelmon.settings",
    "modelmon.errors",
    "modelmon.simulate",
    "modelmon.web.views",
    "modelmon.web.prometheus",
    "modelmon.alerts.rules",
    "modelmon.alerts.engine",
    "modelmon.alerts.detectors",
    "modelmon.alerts.drift",
    "modelmon.alerts.backtest",
]
KAFKA_OR_FAUST = ("faust", "mode", "aiokafka", "confluent_kafka", "kafka")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_kafka_or_faust(module: str) -> None:
    code = (
        f"import sys, {module}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({KAFKA_OR_FAUST!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"
