"""The Grafana dashboard's PromQL, for the deployment tests: its expressions, the metric names they read,
and a rendering with Grafana's variables replaced so that promtool can parse them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "modelmon.json"

# Series that Prometheus itself provides (not modelmon's /metrics).
PROMETHEUS_SERIES = {"up", "ALERTS"}

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "Inf",
    "NaN",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])[A-Za-z_:][A-Za-z0-9_:]*")
_GRAFANA_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def dashboard_targets(path: Path = DASHBOARD) -> Iterator[tuple[dict, dict]]:
    """(panel, target) for every query of the dashboard, rows' nested panels included."""
    dashboard = json.loads(path.read_text())

    def walk(panels: list[dict]) -> Iterator[tuple[dict, dict]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel, target
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = _GROUPING.sub(" ", text)
    text = _GRAFANA_VAR.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        token = match.group(0)
        if token in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation called with "("
        names.add(token)
    return names


def render(expr: str, values: dict[str, str] | None = None) -> str:
    """The expression with Grafana's variables replaced: intervals by 5m, others by ``values`` or ".*"."""
    text = expr
    for interval in ("$__rate_interval", "$__interval", "$__range"):
        text = text.replace(interval, "5m")
    values = values or {}
    return _GRAFANA_VAR.sub(lambda m: values.get(m.group(1) or m.group(2), ".*"), text)
