"""A partition changing owner (rebalance, restart): what the new owner sends must replace everything the
previous owner sent, window by window, or stage 2 keeps a stale part.

Found by tests/faults/test_rebalance.py: a duplicate label that arrives before its prediction is counted
in the label's window; the prediction moves the count to its own window. When the owner changed after
that move but before the next tick sent it, the new owner's fold held nothing for the label's window,
so it never sent it, and stage 2 kept the old owner's snapshot with the duplicate: a window the oracle
does not have (or a count too high), also in its final revision.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelmon import join, rollup
from modelmon.partition import PartitionState
from modelmon.schemas import GroundTruth, Prediction

WINDOW = 60.0
HORIZON = 600.0


def _pred(rid: str, ts: float) -> Prediction:
    return Prediction(
        request_id=rid,
        model="m1",
        model_version="v1",
        ts=ts,
        task="classification",
        prediction="a",
        scores=None,
        latency_ms=10.0,
        features=None,
        segment=None,
        error=None,
    )


def _apply(table: dict, state: PartitionState, topic: str, offset: int, payload: Any) -> None:
    rid = payload.request_id
    before = table.get(rid)
    if topic == "p":
        outcome = join.apply_prediction(before, payload, payload.ts, offset, 0, WINDOW, HORIZON)
    else:
        outcome = join.apply_label(before, payload, payload.ts, offset, 0, HORIZON)
    assert outcome.entry is not None
    state.apply_change(rid, before, outcome.entry)
    table[rid] = orjson.loads(orjson.dumps(outcome.entry))  # what the changelog restores


def _send(stage2: dict[bytes, dict], state: PartitionState) -> None:
    for snap in state.flush():
        body = snap.to_dict()
        key = rollup.window_key(body["m"], body["v"], body["w"])
        updated = rollup.apply_snapshot(stage2.get(key), body)
        if updated is not None:
            stage2[key] = updated


def _counters(stage2: dict[bytes, dict], model: str, version: str | None, window: float) -> dict[str, int]:
    value = stage2.get(rollup.window_key(model, version, window))
    return rollup.merged(value).counters if value is not None else {}


def _run(relabel: bool) -> dict[bytes, dict]:
    table: dict[str, dict] = {}
    stage2: dict[bytes, dict] = {}
    old = PartitionState(0, WINDOW, HORIZON, epoch=1)
    label_ts, pred_ts = 1150.0, 1010.0  # label window 1140, prediction window 960
    _apply(table, old, "g", 0, GroundTruth(request_id="r1", label="a", ts=label_ts, model=None))
    second = "b" if relabel else "a"
    _apply(table, old, "g", 1, GroundTruth(request_id="r1", label=second, ts=label_ts, model=None))
    _send(stage2, old)  # a tick: the label window goes out with the duplicate (or relabel) in it
    _apply(table, old, "p", 0, _pred("r1", pred_ts))  # moves the count; the owner changes before a tick
    new = PartitionState(0, WINDOW, HORIZON, epoch=2)
    new.rebuild(((rid, entry) for rid, entry in table.items()), None)
    _send(stage2, new)
    return stage2


def test_a_new_owner_replaces_the_label_window_the_old_owner_sent() -> None:
    stage2 = _run(relabel=False)
    assert _counters(stage2, join.UNKNOWN_MODEL, None, 1140.0) == {}
    assert _counters(stage2, "m1", "v1", 960.0) == {"duplicates": 1}


def test_the_same_for_a_relabel() -> None:
    stage2 = _run(relabel=True)
    assert _counters(stage2, join.UNKNOWN_MODEL, None, 1140.0) == {}
    assert _counters(stage2, "m1", "v1", 960.0) == {"relabels": 1}


def test_no_window_is_sent_for_a_prediction_that_came_first() -> None:
    """Counts of labels after their prediction were never in the label's window: nothing extra to send."""
    table: dict[str, dict] = {}
    old = PartitionState(0, WINDOW, HORIZON, epoch=1)
    _apply(table, old, "p", 0, _pred("r1", 1010.0))
    _apply(table, old, "g", 0, GroundTruth(request_id="r1", label="a", ts=1150.0, model=None))
    _apply(table, old, "g", 1, GroundTruth(request_id="r1", label="a", ts=1150.0, model=None))
    new = PartitionState(0, WINDOW, HORIZON, epoch=2)
    new.rebuild(((rid, entry) for rid, entry in table.items()), None)
    assert {(s.model, s.window) for s in new.flush()} == {("m1", 960.0)}


def test_the_same_when_the_prediction_turns_the_labels_late() -> None:
    """A label first, its duplicate, then a prediction more than the horizon earlier: the counts become
    late labels in the prediction's window and the label fields are dropped; the entry keeps the window."""
    table: dict[str, dict] = {}
    stage2: dict[bytes, dict] = {}
    old = PartitionState(0, WINDOW, HORIZON, epoch=1)
    label = GroundTruth(request_id="r1", label="a", ts=1010.0 + HORIZON + 30, model="m1")
    _apply(table, old, "g", 0, label)
    _apply(table, old, "g", 1, label)
    _send(stage2, old)
    assert _counters(stage2, "m1", None, 1620.0) == {"duplicates": 1}
    _apply(table, old, "p", 0, _pred("r1", 1010.0))
    new = PartitionState(0, WINDOW, HORIZON, epoch=2)
    new.rebuild(((rid, entry) for rid, entry in table.items()), None)
    _send(stage2, new)
    assert _counters(stage2, "m1", None, 1620.0) == {}
    assert _counters(stage2, "m1", "v1", 960.0) == {"late_labels": 2, "unmatched_predictions": 1}
