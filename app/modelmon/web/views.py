"""What the HTTP API answers, computed from stage-2 table values (pure: no Kafka, no Faust, no aiohttp).

Request parameters are parsed here into bounded values or a :class:`ParamError` that names the parameter;
window values and alert states become the JSON bodies documented in schemas/openapi.json.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from .. import rollup
from ..aggregate import WindowAccumulator
from ..alerts.rules import SEVERITIES

ALERT_STATES = ("firing", "pending", "resolved")
WINDOW_LIMIT_DEFAULT, WINDOW_LIMIT_MAX = 1440, 10_000
ALERT_LIMIT_DEFAULT, ALERT_LIMIT_MAX = 100, 1000
MAX_MODEL_NAME = 128
MAX_PARAM_CHARS = 256
# Unix seconds accepted for from/to: 1970 .. 9999 (datetime's range), so every bound prints as RFC 3339.
_MIN_TS, _MAX_TS = 0.0, 253402300799.0


class ParamError(ValueError):
    """A request parameter is malformed or out of range: 400, naming the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def error_body(status: int, code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    """The error object every non-2xx JSON response carries."""
    err: dict[str, Any] = {"status": status, "code": code, "message": message}
    if parameter is not None:
        err["parameter"] = parameter
    return {"error": err}


def _bounded(name: str, raw: str) -> str:
    if len(raw) > MAX_PARAM_CHARS:
        raise ParamError(name, f"longer than {MAX_PARAM_CHARS} characters")
    return raw


def parse_time(name: str, raw: str | None) -> float | None:
    """An RFC 3339 time or unix seconds -> unix seconds; None when absent."""
    if raw is None:
        return None
    raw = _bounded(name, raw).strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ParamError(name, f"not an RFC 3339 time or unix seconds: {raw!r}") from None
        if parsed.tzinfo is None:
            raise ParamError(name, f"RFC 3339 time needs a UTC offset (e.g. 'Z'): {raw!r}") from None
        value = parsed.timestamp()
    if not math.isfinite(value) or not _MIN_TS <= value <= _MAX_TS:
        raise ParamError(name, f"out of range (1970-01-01 .. 9999-12-31): {raw!r}")
    return value


def parse_limit(name: str, raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    raw = _bounded(name, raw).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(name, f"expected an integer, got {raw!r}") from None
    if not 1 <= value <= maximum:
        raise ParamError(name, f"must be between 1 and {maximum}, got {value}")
    return value


def parse_choice(name: str, raw: str | None, choices: Iterable[str]) -> str | None:
    if raw is None:
        return None
    options = tuple(choices)
    if raw not in options:
        raise ParamError(name, f"must be one of {', '.join(options)}, got {_bounded(name, raw)!r}")
    return raw


def parse_range(raw_from: str | None, raw_to: str | None) -> tuple[float | None, float | None]:
    start, end = parse_time("from", raw_from), parse_time("to", raw_to)
    if start is not None and end is not None and start >= end:
        raise ParamError("from", f"must be before to ({rollup.rfc3339(start)} >= {rollup.rfc3339(end)})")
    return start, end


def version_key(version: str | None) -> str:
    return version or ""


def parse_version(raw: str | None) -> tuple[bool, str | None]:
    """(filtered, version): ``version=`` (empty) selects the series without a model_version."""
    if raw is None:
        return False, None
    return True, (_bounded("version", raw) or None)


# -- window values -> bodies ------------------------------------------------------------------------


def window_event(
    value: Mapping[str, Any], window_s: float, now: float, reference: WindowAccumulator | None = None
) -> dict[str, Any] | None:
    """The metric event of a stored window value, with the revision it was (or will be) published with.

    A tombstone's revision is already the final event's (``finalize`` adds the 1 that ``metric_event``
    adds for ``final=True``), so it is answered with its revision less that 1 put back.
    """
    if value["fin"]:
        return rollup.metric_event(
            {**value, "rev": value["rev"] - 1}, window_s, now, final=True, reference=reference
        )
    return rollup.metric_event(dict(value), window_s, now, reference=reference)


def task_of(acc: WindowAccumulator) -> str | None:
    """classification / regression from what the window holds; None before either is known."""
    if acc.classification is not None or acc.predicted is not None or acc.confidence is not None:
        return "classification"
    if acc.regression is not None or acc.predicted_values is not None:
        return "regression"
    return None


def model_version_entry(
    model: str,
    version: str | None,
    starts: Iterable[float],
    window_s: float,
    task: str | None,
    updated_at: float | None,
) -> dict[str, Any]:
    """The ModelVersion object of the models list."""
    ordered = sorted(starts)
    return {
        "model": model,
        "model_version": version,
        "task": task,
        "first_window_start": rollup.rfc3339(ordered[0]),
        "last_window_end": rollup.rfc3339(ordered[-1] + window_s),
        "windows": len(ordered),
        "updated_at": rollup.rfc3339(updated_at) if updated_at is not None else None,
    }


def select_windows(
    starts: Mapping[Any, float], start: float | None, end: float | None, limit: int
) -> tuple[list[Any], bool]:
    """Keys of the windows starting in [start, end), oldest first; the newest ``limit`` and whether cut."""
    keys = [
        k
        for k, w in sorted(starts.items(), key=lambda kv: kv[1])
        if (start is None or w >= start) and (end is None or w < end)
    ]
    if len(keys) > limit:
        return keys[-limit:], True
    return keys, False


# -- alerts -------------------------------------------------------------------------------------------

_STATE_ORDER = {"firing": 0, "pending": 1, "resolved": 2}


def alert_matches(
    event: Mapping[str, Any], model: str | None, severity: str | None, state: str | None
) -> bool:
    if model is not None and not fnmatchcase(str(event.get("model", "")), model):
        return False
    if severity is not None and event.get("severity") != severity:
        return False
    return state is None or event.get("state") == state


def sort_alerts(events: Iterable[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """Open alerts (firing, then pending) first, then resolved; newest ``ts`` first within each."""
    ordered = sorted(events, key=lambda e: str(e.get("ts") or ""), reverse=True)
    ordered.sort(key=lambda e: _STATE_ORDER.get(str(e.get("state")), 3))
    return ordered[:limit]


def parse_alert_query(query: Mapping[str, str]) -> tuple[str | None, str | None, str | None, int]:
    model = query.get("model")
    if model is not None:
        _bounded("model", model)
    severity = parse_choice("severity", query.get("severity"), SEVERITIES)
    state = parse_choice("state", query.get("state"), ALERT_STATES)
    limit = parse_limit("limit", query.get("limit"), ALERT_LIMIT_DEFAULT, ALERT_LIMIT_MAX)
    return model, severity, state, limit
