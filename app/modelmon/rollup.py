"""Stage-2 merge of per-partition window snapshots into per-model metric events (pure).

Stage 1 sends, for each (model, version, window) it touched, the *whole* accumulator of its partition.
Stage 2 keeps the latest one per source partition and merges them at read time, so applying the same
snapshot twice, or an older one after a newer one, changes nothing: replays after a crash of either
stage cannot double count (design rule 6). A window becomes final once every input partition has
reported an event-time watermark past the window's end plus the join horizon; it is then emitted once
with ``final: true`` and only a small tombstone is kept, so late or replayed snapshots are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from .aggregate import WindowAccumulator
from .stats import summarize

WindowValue = dict[str, Any]


def window_key(model: str, version: str | None, window: float) -> bytes:
    return f"{model}|{version or ''}|{window!r}".encode()


def new_value(model: str, version: str | None, window: float) -> WindowValue:
    return {"m": model, "v": version, "w": window, "parts": {}, "rev": 0, "fin": False}


def apply_snapshot(value: WindowValue | None, snap: Mapping[str, Any]) -> WindowValue | None:
    """The window value after a snapshot, or None when the snapshot changes nothing."""
    if value is None:
        value = new_value(snap["m"], snap["v"], snap["w"])
    if value["fin"]:
        return None
    part = str(snap["p"])
    current = value["parts"].get(part)
    if current is not None:
        if current["final"]:
            return None
        if (snap["epoch"], snap["seq"]) <= (current["epoch"], current["seq"]):
            return None
    parts = dict(value["parts"])
    parts[part] = {"epoch": snap["epoch"], "seq": snap["seq"], "final": snap["final"], "acc": snap["acc"]}
    return {**value, "parts": parts, "rev": value["rev"] + 1}


def finalize(value: WindowValue) -> WindowValue:
    """The tombstone kept after the final revision: the merged totals (for rolling views), no parts."""
    return {
        "m": value["m"],
        "v": value["v"],
        "w": value["w"],
        "parts": {},
        "rev": value["rev"] + 1,
        "fin": True,
        "acc": merged(value).to_dict(),
    }


def merged(value: WindowValue) -> WindowAccumulator:
    """The window's totals: the merge of the latest snapshot of every source partition."""
    if value["fin"]:
        return WindowAccumulator.from_dict(value["acc"]) if "acc" in value else WindowAccumulator()
    acc = WindowAccumulator()
    for part in value["parts"].values():
        acc.merge(WindowAccumulator.from_dict(part["acc"]))
    return acc


ROLLING_VIEWS: tuple[tuple[str, float], ...] = (("5m", 300.0), ("1h", 3600.0), ("24h", 86400.0))


def rolling_event(
    values: list[WindowValue], view: str, view_s: float, window_s: float, emitted_at: float
) -> dict[str, Any] | None:
    """A rolling view: the merge of a model version's windows in the last ``view_s`` of event time.

    The view ends at the end of the newest window; its revision is the sum of the covered windows'
    revisions, so it grows whenever any of them changes. None when the view holds nothing.
    """
    if not values:
        return None
    end = max(v["w"] for v in values) + window_s
    start = end - view_s
    covered = [v for v in values if v["w"] >= start]
    acc = WindowAccumulator()
    for value in covered:
        acc.merge(merged(value))
    if acc.is_empty():
        return None
    return {
        "model": covered[0]["m"],
        "model_version": covered[0]["v"],
        "view": view,
        "window": {"start": rfc3339(start), "end": rfc3339(end), "size_s": view_s},
        "revision": sum(v["rev"] for v in covered),
        "final": False,
        "emitted_at": rfc3339(emitted_at),
        **summarize(acc, view_s),
    }


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def metric_event(
    value: WindowValue, window_s: float, emitted_at: float, *, final: bool = False
) -> dict[str, Any] | None:
    """The model-metrics event for a window value (schemas/model-metrics.schema.json).

    None when the window holds nothing (e.g. a duplicate label's count moved to its prediction's window).
    """
    acc = merged(value)
    if acc.is_empty():
        return None
    body = summarize(acc, window_s)
    start = value["w"]
    return {
        "model": value["m"],
        "model_version": value["v"],
        "view": "window",
        "window": {"start": rfc3339(start), "end": rfc3339(start + window_s), "size_s": window_s},
        "revision": value["rev"] + (1 if final else 0),
        "final": final,
        "emitted_at": rfc3339(emitted_at),
        **body,
    }
