"""Stage-1 join state machine: one entry per request_id, pure (no Kafka, no Faust).

An entry is the *only* durable record of what its request contributed to the window statistics: the
window accumulators of a partition are a fold of ``effects(entry)`` over its entries (plus the invalid-event
tallies), so after a crash or a rebalance they are rebuilt exactly from the restored table. Each entry
also remembers the highest source offset it has absorbed per input topic; an event at or below it is a
replay (at-least-once delivery after a crash) and changes nothing. Both together give design rule 6:
a replay neither loses nor double counts, whatever order the two topics are re-read in, because the
effect set of an entry does not depend on the order its events arrived in.

Entries are plain dicts (compact keys, orjson-encodable) because they are written to the Faust table
once per event:

    p   source partition            m, v   model, model_version
    pt  prediction event time       w      prediction window start
    k   task                        y      prediction        s  scores      lat  latency_ms   e  error flag
    f   bucketed features {name: signed-log bucket (int) | category (str)} (see bucket_features; absent
        when the prediction had none; older entries never have it)
    rf  the raw features, kept only for the feedback topic (see apply_prediction's ``keep_features``)
    sg  segment tags {key: value}       b  size of the prediction event in bytes (absent: unknown)
    l   label                       lt     label event time  lm label's own model field
    ll  labels that came after the prediction expired
    dp, dl, rl   duplicate predictions, duplicate labels, relabels
    j   [topic tag, offset] of the event that completed the join (its replay re-sends the feedback record)
    mw  [model, window] of the label that came first and whose counts the prediction turned into late
        labels (the label fields are dropped then); see moved_from
    x   expiry state: "u" unmatched prediction, "o" orphan label
    o   {"p": max prediction offset absorbed, "g": max ground-truth offset absorbed}
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .aggregate import OTHER, SIGNED_LOG_EDGES, signed_log_bucket
from .schemas import GroundTruth, Prediction

UNKNOWN_MODEL = "__unknown__"

FEATURE_NAME_CAP = 64
"""At most this many feature names (the smallest, in string order) are kept per prediction."""
CATEGORY_CHARS = 64
"""String feature values are cut to this many characters before they are counted as categories."""

PRED_TOPIC = "p"
GT_TOPIC = "g"

Entry = dict[str, Any]
# An effect key: ("pred"|"out", model, version, window) or ("cnt", model, version, window, counter name).
EffectKey = tuple
Effects = dict[EffectKey, Any]


def window_start(ts: float, size_s: float) -> float:
    """Start of the tumbling window that contains ``ts`` (event time)."""
    return math.floor(ts / size_s) * size_s


def canonical_label(value: Any) -> Any:
    """Labels compare equal across JSON types the way users expect: 1 == 1.0, but "1" != 1."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def bucket_features(features: dict[str, Any]) -> dict[str, int | str]:
    """A prediction's features as the window accumulators count them, computed once per request.

    Numbers become :func:`~modelmon.aggregate.signed_log_bucket` ints, strings their first 64 characters,
    booleans ``"true"``/``"false"``; nulls (and anything else) are left out, i.e. missing. Beyond 64
    names only the 64 smallest are kept and ``"__other__"`` holds how many were dropped (the window then
    reports its feature names as capped). Stored in the join entry, so a rebuild recounts the same.
    """
    out: dict[str, int | str] = {}
    edges, bisect = SIGNED_LOG_EDGES, bisect_right
    for name, v in features.items():
        t = type(v)
        if t is float:  # signed_log_bucket inlined: this runs for every numeric feature of every request
            if v > 0.0:
                out[name] = bisect(edges, v)
            elif v < 0.0:
                out[name] = -bisect(edges, -v)
            elif v == 0.0:
                out[name] = 0
            # NaN (JSON cannot carry it; a Python caller might) counts as missing
        elif t is str:
            out[name] = v if len(v) <= CATEGORY_CHARS else v[:CATEGORY_CHARS]
        elif t is bool:
            out[name] = "true" if v else "false"
        elif t is int:
            out[name] = signed_log_bucket(v)
    if len(out) > FEATURE_NAME_CAP or OTHER in out:
        names = sorted(k for k in out if k != OTHER)
        kept = {k: out[k] for k in names[:FEATURE_NAME_CAP]}
        if len(names) > FEATURE_NAME_CAP:
            kept[OTHER] = len(names) - FEATURE_NAME_CAP
        out = kept
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event did to its entry: the new entry (None = unchanged) and a short verdict."""

    entry: Entry | None
    verdict: str  # new_prediction | joined | pending_label | duplicate | relabel | replay | late_...


def apply_prediction(
    entry: Entry | None,
    pred: Prediction,
    ts: float,
    offset: int,
    partition: int,
    window_size_s: float,
    horizon_s: float,
    *,
    payload_bytes: int | None = None,
    keep_features: bool = False,
) -> Outcome:
    """Absorb a prediction event (``ts`` already resolved: event time or Kafka timestamp).

    A prediction and a label join only when their event times are at most the horizon apart, whichever
    arrives first; a pending side that already expired (the watermark passed it) does not join.
    ``keep_features`` stores the raw features too (``rf``), for the joined record of the feedback topic:
    bucketed features are all the statistics need, raw ones cost memory until the entry settles.
    """
    if entry is not None and entry["o"].get(PRED_TOPIC, -1) >= offset:
        return Outcome(None, "replay")
    new: Entry = dict(entry) if entry is not None else {"p": partition, "o": {}}
    new["o"] = {**new["o"], PRED_TOPIC: offset}
    if "pt" in new:
        new["dp"] = new.get("dp", 0) + 1
        return Outcome(new, "duplicate")
    new.update(
        m=pred.model,
        v=pred.model_version,
        pt=ts,
        w=window_start(ts, window_size_s),
        k=pred.task,
        y=pred.prediction,
        lat=pred.latency_ms,
        e=pred.error is not None,
    )
    if pred.scores is not None:
        new["s"] = pred.scores
    if pred.features:
        f = bucket_features(pred.features)
        if f:
            new["f"] = f
        if keep_features:
            new["rf"] = pred.features
    if pred.segment:
        new["sg"] = pred.segment
    if payload_bytes is not None:
        new["b"] = payload_bytes
    if new.get("x") == "o":  # its label already expired as an orphan: no join, the prediction is unmatched
        return Outcome(new, "late_prediction")
    if "l" in new and abs(new["lt"] - ts) > horizon_s:
        # Too far apart to join. End in the state the other arrival order gives: the prediction is
        # unmatched and every label seen for it counts as a late label.
        if new.get("dl") or new.get("rl"):
            new["mw"] = [new.get("lm", UNKNOWN_MODEL), window_start(new["lt"], window_size_s)]
        new["ll"] = new.get("ll", 0) + 1 + new.pop("dl", 0) + new.pop("rl", 0)
        for field in ("l", "lt", "lm"):
            new.pop(field, None)
        new["x"] = "u"
        return Outcome(new, "late_label")
    if "l" in new:
        new["j"] = [PRED_TOPIC, offset]
        return Outcome(new, "joined")
    return Outcome(new, "new_prediction")


def apply_label(
    entry: Entry | None, gt: GroundTruth, ts: float, offset: int, partition: int, horizon_s: float
) -> Outcome:
    """Absorb a ground-truth event."""
    if entry is not None and entry["o"].get(GT_TOPIC, -1) >= offset:
        return Outcome(None, "replay")
    new: Entry = dict(entry) if entry is not None else {"p": partition, "o": {}}
    new["o"] = {**new["o"], GT_TOPIC: offset}
    label = canonical_label(gt.label)
    if "pt" in new and "l" not in new and abs(ts - new["pt"]) > horizon_s:
        new["x"] = "u"  # beyond the horizon: the prediction is unmatched, whatever the processing order
    if new.get("x") == "u":  # the prediction already expired unmatched: too late to join
        new["ll"] = new.get("ll", 0) + 1
        return Outcome(new, "late_label")
    if "l" in new:
        if new["l"] == label:
            new["dl"] = new.get("dl", 0) + 1
            return Outcome(new, "duplicate")
        new["rl"] = new.get("rl", 0) + 1
        return Outcome(new, "relabel")
    new["l"] = label
    new["lt"] = ts
    if gt.model is not None:
        new["lm"] = gt.model
    if "pt" in new:
        new["j"] = [GT_TOPIC, offset]
        return Outcome(new, "joined")
    return Outcome(new, "pending_label")


def expires_at(entry: Entry, horizon_s: float) -> float | None:
    """Event time at which a pending entry expires; None when it is joined or already expired."""
    if "x" in entry:
        return None
    if "pt" in entry and "l" not in entry:
        return entry["pt"] + horizon_s
    if "l" in entry and "pt" not in entry:
        return entry["lt"] + horizon_s
    return None


def expire(entry: Entry) -> Entry:
    """Mark a pending entry as expired: an unmatched prediction or an orphan label."""
    new = dict(entry)
    new["x"] = "u" if "pt" in entry else "o"
    return new


def settles_at(entry: Entry, window_size_s: float, horizon_s: float) -> float:
    """Event time after which every window this entry contributes to is final and it may be deleted."""
    return max(window_start(t, window_size_s) for t in _times(entry)) + window_size_s + horizon_s


def _times(entry: Entry) -> Iterable[float]:
    if "pt" in entry:
        yield entry["pt"]
    if "lt" in entry:
        yield entry["lt"]


def owner(entry: Entry, window_size_s: float) -> tuple[str, str | None, float]:
    """The (model, version, window) an entry's counters are booked to: its prediction's, else its label's."""
    if "pt" in entry:
        return entry["m"], entry["v"], entry["w"]
    return entry.get("lm", UNKNOWN_MODEL), None, window_start(entry["lt"], window_size_s)


def moved_from(entry: Entry, window_size_s: float) -> tuple[str, str | None, float] | None:
    """The label's window this entry's counters were booked to before its prediction came, if any.

    Duplicate labels and relabels of a label that came first count in the label's window (see
    :func:`owner`) and move to the prediction's when it arrives. A new owner of the partition (rebalance,
    restart) folds the entry with its counts already moved, so it holds nothing for the label's window
    and would never send it; stage 2 would keep the previous owner's last snapshot of it, counts
    included, if that owner lost the partition before its next tick sent the move. The new owner sends
    this window again to replace it.
    """
    if "pt" not in entry:
        return None
    if "mw" in entry:
        return entry["mw"][0], None, entry["mw"][1]
    if "lt" in entry and (entry.get("dl") or entry.get("rl")) and entry.get("j", ("",))[0] == PRED_TOPIC:
        return entry.get("lm", UNKNOWN_MODEL), None, window_start(entry["lt"], window_size_s)
    return None


def effects(entry: Entry, window_size_s: float) -> Effects:
    """Everything this entry contributes to the window statistics (a pure function of the entry)."""
    out: Effects = {}
    expired = entry.get("x")
    if expired == "o":
        label_key = (entry.get("lm", UNKNOWN_MODEL), None, window_start(entry["lt"], window_size_s))
        out[("cnt", *label_key, "orphan_labels")] = 1
    booked_to = owner(entry, window_size_s)
    if "pt" in entry:
        m, v, w = booked_to
        # What add_prediction needs: latency, error, bucketed features, task, prediction, scores,
        # segment tags, payload size.
        segment = entry.get("sg")
        out[("pred", m, v, w)] = (
            entry["lat"],
            entry["e"],
            entry.get("f"),
            entry["k"],
            entry["y"],
            entry.get("s"),
            segment,
            entry.get("b"),
        )
        if expired is None and "l" in entry and entry["y"] is not None:
            delay = max(0.0, entry["lt"] - entry["pt"])
            out[("out", m, v, w)] = (entry["k"], entry["y"], entry["l"], entry.get("s"), delay, segment)
        if expired is not None:
            out[("cnt", m, v, w, "unmatched_predictions")] = 1
    for field, name in (
        ("dp", "duplicates"),
        ("dl", "duplicates"),
        ("rl", "relabels"),
        ("ll", "late_labels"),
    ):
        n = entry.get(field, 0)
        if n:
            key = ("cnt", *booked_to, name)
            out[key] = out.get(key, 0) + n
    return out


def effect_delta(
    before: Effects, after: Effects
) -> tuple[list[tuple[EffectKey, Any]], list[tuple[EffectKey, int]]]:
    """What changed between two effect sets: (added pred/out effects, counter changes (key, +/-n)).

    Prediction and outcome effects are only ever added (a request's first prediction and first label
    fix them for good); counters may move between windows (a duplicate label counted against its own
    window until the prediction arrives), so they come back as signed changes.
    """
    added: list[tuple[EffectKey, Any]] = []
    counters: list[tuple[EffectKey, int]] = []
    for key, value in after.items():
        if key[0] == "cnt":
            diff = value - before.get(key, 0)
            if diff:
                counters.append((key, diff))
        elif key not in before:
            added.append((key, value))
        elif before[key] != value:
            raise AssertionError(f"effect {key} changed from {before[key]!r} to {value!r}")
    for key, value in before.items():
        if key not in after:
            if key[0] != "cnt":
                raise AssertionError(f"effect {key} disappeared")
            counters.append((key, -value))
    return added, counters
