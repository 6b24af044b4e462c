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


# -- data-quality reference ---------------------------------------------------------------------------
# Each model version's features over its first MODELMON_REFERENCE_S of event time are the reference its
# later windows' data quality is compared with (type changes, out-of-range values). The record lives in
# the windows table next to the windows (key REF_PREFIX + model|version), so it has a changelog and
# moves with the series' stage-2 partition.

REF_PREFIX = b"\x00ref|"


def reference_key(model: str, version: str | None) -> bytes:
    return REF_PREFIX + f"{model}|{version or ''}".encode()


def new_reference(model: str, version: str | None, first_window: float, reference_s: float) -> dict[str, Any]:
    """The reference record of a series first seen with a window starting at ``first_window``."""
    return {
        "m": model,
        "v": version,
        "from": first_window,
        "to": first_window + reference_s,
        "acc": None,
        "frozen": False,
    }


def extend_reference(ref: dict[str, Any], window: float) -> bool:
    """Start an open, still empty reference at an earlier window that arrived late; True if it moved.

    Windows reach stage 2 out of order, so the first one seen is not always the series' first.
    """
    if ref["frozen"] or ref["acc"] is not None or window >= ref["from"]:
        return False
    size = ref["to"] - ref["from"]
    ref["from"], ref["to"] = window, window + size
    return True


def reference_due(ref: dict[str, Any], low_watermark: float, horizon_s: float) -> bool:
    """Whether an open reference is frozen now: event time everywhere is past its end by the smaller of
    the join horizon and its own length, so its predictions (which may arrive out of order) are in."""
    grace = min(horizon_s, ref["to"] - ref["from"])
    return not ref["frozen"] and low_watermark >= ref["to"] + grace


def fold_reference(ref: dict[str, Any], window: float, acc: WindowAccumulator) -> bool:
    """Add a window's features to an open reference if the window lies in its period; True if it did."""
    if ref["frozen"] or not ref["from"] <= window < ref["to"] or acc.features is None:
        return False
    mine = WindowAccumulator.from_dict(ref["acc"]) if ref["acc"] is not None else WindowAccumulator()
    if mine.features is None:
        mine.features = acc.features.copy()
    else:
        mine.features.merge(acc.features)
    ref["acc"] = mine.to_dict()
    return True


def reference_applies(ref: dict[str, Any] | None, window: float | None) -> bool:
    """Whether a window (None: a rolling view) is compared with the reference: frozen, and after it."""
    return ref is not None and ref["frozen"] and (window is None or window >= ref["to"])


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
    values: list[WindowValue],
    view: str,
    view_s: float,
    window_s: float,
    emitted_at: float,
    reference: WindowAccumulator | None = None,
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
        **summarize(acc, view_s, reference=reference),
    }


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def metric_event(
    value: WindowValue,
    window_s: float,
    emitted_at: float,
    *,
    final: bool = False,
    reference: WindowAccumulator | None = None,
) -> dict[str, Any] | None:
    """The model-metrics event for a window value (schemas/model-metrics.schema.json).

    None when the window holds nothing (e.g. a duplicate label's count moved to its prediction's window).
    """
    acc = merged(value)
    if acc.is_empty():
        return None
    body = summarize(acc, window_s, reference=reference)
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
