"""Stage-1 state of one input partition, in memory and pure (no Kafka, no Faust).

It holds the partition's window accumulators (a fold of the join entries' effects), the event-time
watermark, the expiry and settlement indexes, and which windows changed since the last flush. The
Faust agent owns the durable part (the join table); after a restart or rebalance this object is rebuilt
from the restored entries with :meth:`PartitionState.rebuild`, so nothing here needs its own changelog.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .aggregate import WindowAccumulator
from .join import Effects, Entry, effect_delta, effects, expires_at, moved_from, settles_at, window_start

WindowKey = tuple[str, str | None, float]  # (model, model_version, window start)

META_KEY_PREFIX = b"__partition__|"


def meta_record_key(partition: int) -> bytes:
    """Table key of a partition's own record: invalid-event tally, absorbed offsets, watermark."""
    return META_KEY_PREFIX + str(partition).encode()


def invalid_effects(record: dict[str, Any]) -> Effects:
    """The counters an invalid-event tally contributes: {(cnt, model, None, window, invalid:reason): n}."""
    out: Effects = {}
    for key, n in record.get("c", {}).items():
        model, window, reason = _parse_tally_key(key)
        out[("cnt", model, None, window, f"invalid:{reason}")] = n
    return out


def tally_key(model: str, window: float, reason: str) -> str:
    return f"{model}|{window!r}|{reason}"


def _parse_tally_key(key: str) -> tuple[str, float, str]:
    model, window, reason = key.rsplit("|", 2)
    return model, float(window), reason


class TimeIndex:
    """Keys due at an event time: ``pop_due(t)`` returns (and forgets) every key added with a time <= t.

    One entry per pending join, so it is kept small: keys sit in one-second buckets, each a list of keys
    and a parallel array of exact times (16 bytes per entry besides the shared key object, where a heap
    of (time, key) tuples costs about 90).
    """

    __slots__ = ("_buckets", "_heap", "_size")

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[list[Any], array]] = {}
        self._heap: list[int] = []  # bucket ids that hold keys
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, at: float, key: Any) -> None:
        bucket = math.floor(at)
        slot = self._buckets.get(bucket)
        if slot is None:
            slot = self._buckets[bucket] = ([], array("d"))
            heapq.heappush(self._heap, bucket)
        slot[0].append(key)
        slot[1].append(at)
        self._size += 1

    def pop_due(self, now: float) -> list[Any]:
        """Keys with a time <= ``now``, in (time, key) order."""
        due: list[tuple[float, Any]] = []
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] <= now:
            bucket = heap[0]
            keys, times = buckets[bucket]
            if bucket + 1 <= now:  # the whole second has passed
                due.extend(zip(times, keys, strict=True))
                heapq.heappop(heap)
                del buckets[bucket]
                continue
            keep_keys, keep_times = [], array("d")
            for at, key in zip(times, keys, strict=True):
                if at <= now:
                    due.append((at, key))
                else:
                    keep_keys.append(key)
                    keep_times.append(at)
            if keep_keys:
                buckets[bucket] = (keep_keys, keep_times)
            else:
                heapq.heappop(heap)
                del buckets[bucket]
            break  # later buckets start after now
        self._size -= len(due)
        due.sort()
        return [key for _, key in due]


@dataclass
class Snapshot:
    """One partition's current accumulator for one window: what stage 2 merges (latest wins)."""

    partition: int
    epoch: int
    seq: int
    model: str
    version: str | None
    window: float
    final: bool
    acc: WindowAccumulator

    def to_dict(self) -> dict[str, Any]:
        return {
            "p": self.partition,
            "epoch": self.epoch,
            "seq": self.seq,
            "m": self.model,
            "v": self.version,
            "w": self.window,
            "final": self.final,
            "acc": self.acc.to_dict(),
        }


@dataclass
class PartitionState:
    partition: int
    window_s: float
    horizon_s: float
    epoch: int
    idle_advance_s: float = 30.0
    watermark: float = float("-inf")
    accs: dict[WindowKey, WindowAccumulator] = field(default_factory=dict)
    dirty: set[WindowKey] = field(default_factory=set)
    _expiries: TimeIndex = field(default_factory=TimeIndex)
    _settle: TimeIndex = field(default_factory=TimeIndex)
    _seq: int = 0
    _last_input_wall: float | None = None
    # input topic -> (largest event time seen, wall time of its last event): the watermark's inputs
    _topic_max: dict[str, tuple[float, float]] = field(default_factory=dict)
    _last_tick_wall: float | None = None
    _pending: int = 0
    _restored_max: dict[str, float] = field(default_factory=dict)  # newest prediction / label ts restored
    # input topic tag -> highest source offset processed (durably: join entries, the partition record)
    processed: dict[str, int] = field(default_factory=dict)

    # -- rebuild -----------------------------------------------------------------------------------

    def rebuild(self, entries: Iterable[tuple[str, Entry]], meta: dict[str, Any] | None) -> int:
        """Fold the restored entries (and the partition record) into fresh accumulators; return how many."""
        n = 0
        for request_id, entry in entries:
            self.restore(request_id, entry)
            n += 1
        self.finish_restore(meta)
        return n

    def restore(self, request_id: Any, entry: Entry) -> None:
        """Fold one restored join entry in (entries stream in one by one: nothing is held but the fold).

        The watermark follows the input furthest behind (see :meth:`observe`), so the newest entry can
        be ahead of it: raising it to the newest entry's time would expire pending joins after a restart
        that the running worker still held open. :meth:`finish_restore` takes the larger of two lower
        bounds of the watermark before the restart: the partition record's, and the smaller of the
        newest prediction and the newest label time among the entries.
        """
        self.apply_change(request_id, None, entry)
        moved = moved_from(entry, self.window_s)
        if moved is not None and moved not in self.accs:
            # Sent (empty) with the rest, so it replaces the previous owner's snapshot of that window.
            self.accs[moved] = WindowAccumulator()
        self.note_offsets(entry["o"])
        restored = self._restored_max
        if "pt" in entry and entry["pt"] > restored.get("p", float("-inf")):
            restored["p"] = entry["pt"]
        if "lt" in entry and entry["lt"] > restored.get("g", float("-inf")):
            restored["g"] = entry["lt"]

    def finish_restore(self, meta: dict[str, Any] | None) -> None:
        """Apply the partition record after the last entry; every window is then due to be sent."""
        restored, self._restored_max = self._restored_max, {}
        if len(restored) == 2:
            self.watermark = max(self.watermark, min(restored.values()))
        if meta:
            self.note_offsets(meta["o"])
            self.note_offsets(meta.get("po", {}))
            if meta.get("wm") is not None:
                self.watermark = max(self.watermark, meta["wm"])
            self._apply_effects({}, invalid_effects(meta))
        self.dirty = set(self.accs)

    # -- source offsets --------------------------------------------------------------------------------

    def note_offsets(self, offsets: dict[str, int]) -> None:
        """Raise the highest processed offset per input topic tag (``{"p": 41, "g": 17}``)."""
        for tag, offset in offsets.items():
            self.note_offset(tag, offset)

    def note_offset(self, tag: str, offset: int) -> None:
        """One processed record of input ``tag``: stage 1 calls this for every record."""
        if offset > self.processed.get(tag, -1):
            self.processed[tag] = offset

    def skipped_before(self, tag: str, offset: int) -> int | None:
        """The first offset the consumer skipped, when it delivers ``offset`` next.

        Every record of the partition up to ``processed[tag]`` is durably reflected (its join entry, or
        the partition record for rejected ones and for entries since deleted), and input offsets are
        contiguous, so the next record should be at most one past it. A record further on means the
        consumer did not deliver the ones in between: faust-streaming's fetch loop drops records after
        a rebalance (docs/architecture.md §9). None when nothing was skipped or nothing is known about
        the partition yet.
        """
        done = self.processed.get(tag)
        if done is None or offset <= done + 1:
            return None
        return done + 1

    # -- per event -----------------------------------------------------------------------------------

    def expect(self, topics: Iterable[str], wall: float) -> None:
        """Inputs that will deliver events: until one does (or stays quiet for ``idle_advance_s``), it
        holds the watermark where it is, so after a restart the first topic read cannot run it ahead."""
        for topic in topics:
            self._topic_max.setdefault(topic, (float("-inf"), wall))

    def observe(self, ts: float, wall: float, topic: str = "") -> None:
        """An input event with event time ``ts`` arrived on input ``topic`` at wall time ``wall``.

        The watermark follows the input that is furthest behind: the smallest of the per-topic maxima,
        leaving out a topic with no event for ``idle_advance_s`` (it is quiet, not behind). With a
        backlog on both topics the consumer can read one far ahead of the other (ground truth hours ahead
        of predictions has been seen); a watermark driven by the faster one would close windows whose
        predictions are still unread, dead-letter them as too late, and evaluate alert rules on half
        the data.
        """
        self._last_input_wall = wall
        seen = self._topic_max.get(topic)
        if seen is None or ts > seen[0]:
            self._topic_max[topic] = (ts, wall)
        else:
            self._topic_max[topic] = (seen[0], wall)
        low = min(
            (t for t, w in self._topic_max.values() if wall - w < self.idle_advance_s),
            default=ts,
        )
        if low > self.watermark:
            self.watermark = low

    def is_final(self, window: float) -> bool:
        """Whether a window has passed the horizon (late data for it can no longer be counted)."""
        return window + self.window_s + self.horizon_s <= self.watermark

    def apply_change(self, request_id: str, before: Entry | None, after: Entry) -> None:
        """Move the accumulators from ``effects(before)`` to ``effects(after)`` and index the entry."""
        self._apply_effects(effects(before, self.window_s) if before else {}, effects(after, self.window_s))
        expiry = expires_at(after, self.horizon_s)
        previous = expires_at(before, self.horizon_s) if before is not None else None
        if expiry is not None and (before is None or previous != expiry):
            self._expiries.add(expiry, request_id)
        self._pending += (expiry is not None) - (previous is not None)
        if before is None:
            self._settle.add(settles_at(after, self.window_s, self.horizon_s), request_id)
        else:
            settle = settles_at(after, self.window_s, self.horizon_s)
            if settle != settles_at(before, self.window_s, self.horizon_s):
                self._settle.add(settle, request_id)

    def apply_invalid(self, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        self._apply_effects(invalid_effects(before) if before else {}, invalid_effects(after))

    def record_invalid(
        self,
        meta: dict[str, Any] | None,
        topic: str,
        offset: int,
        arrival_ts: float,
        model: str,
        reason: str,
        *,
        count: bool = True,
    ) -> dict[str, Any] | None:
        """The partition record after a rejected input, applied to the accumulators; None for a replay.

        The input is counted in the window of its arrival (Kafka timestamp) unless ``count`` is false or
        that window is already final; its offset is recorded either way, so a replay is recognised.
        """
        if meta is not None and meta["o"].get(topic, -1) >= offset:
            return None
        after = {
            "o": {**(meta["o"] if meta else {}), topic: offset},
            "c": dict(meta["c"]) if meta else {},
            "wm": meta.get("wm") if meta else None,
        }
        if meta and "po" in meta:
            after["po"] = meta["po"]
        window = self.window_of(arrival_ts)
        if count and not self.is_final(window):
            key = tally_key(model, window, reason)
            after["c"][key] = after["c"].get(key, 0) + 1
        self.apply_invalid(meta, after)
        return after

    def meta_update(self, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        """The partition record to store now: current watermark and processed offsets (``po``, kept so
        they survive the deletion of settled entries), tallies of closed windows dropped.

        None when nothing changed. Dropping closed windows' tallies does not touch the accumulators
        (those windows were already flushed as final), it only keeps the record from growing.
        """
        meta = meta or {"o": {}, "c": {}}
        wm = self.watermark if self.watermark > float("-inf") else None
        kept = {k: n for k, n in meta["c"].items() if not self.is_final(_parse_tally_key(k)[1])}
        po = dict(sorted(self.processed.items()))
        if wm == meta.get("wm") and len(kept) == len(meta["c"]) and po == meta.get("po", {}):
            return None
        out = {"o": meta["o"], "c": kept, "wm": wm}
        if po:
            out["po"] = po
        return out

    def _apply_effects(self, before: Effects, after: Effects) -> None:
        added, counters = effect_delta(before, after)
        for key, value in added:
            kind, model, version, window = key[:4]
            acc = self._acc((model, version, window))
            if kind == "pred":
                lat, err, feats, task, prediction, scores, segment, size = value
                acc.add_prediction(
                    lat,
                    err,
                    features=feats,
                    task=task,
                    prediction=prediction,
                    scores=scores,
                    segment=segment,
                    payload_bytes=size,
                )
            else:
                task, prediction, label, scores, delay, segment = value
                acc.add_outcome(task, prediction, label, scores, delay, segment)
        for key, n in counters:
            model, version, window, name = key[1:]
            self._acc((model, version, window)).add_counter(name, n)

    def _acc(self, key: WindowKey) -> WindowAccumulator:
        acc = self.accs.get(key)
        if acc is None:
            acc = self.accs[key] = WindowAccumulator()
        self.dirty.add(key)
        return acc

    # -- timers (driven by tick events) -------------------------------------------------------------

    def tick(self, wall: float) -> None:
        """Advance event time with the clock while the partition is idle, so quiet windows close."""
        last_tick, self._last_tick_wall = self._last_tick_wall, wall
        if self._last_input_wall is None:
            self._last_input_wall = wall
        if last_tick is None or wall - self._last_input_wall < self.idle_advance_s:
            return
        if self.watermark == float("-inf"):
            self.watermark = wall  # a partition that never saw an event holds nothing: it is at "now"
        else:
            self.watermark += max(0.0, wall - last_tick)

    @property
    def pending(self) -> int:
        """Join entries waiting for their other side (until it comes or the entry expires)."""
        return self._pending

    def due_expiries(self) -> list[str]:
        """Request ids whose pending entry may have expired (the caller re-checks the stored entry)."""
        return self._expiries.pop_due(self.watermark)

    def due_settlements(self) -> list[str]:
        """Request ids whose every window is final: the caller deletes them once the finals are sent."""
        return self._settle.pop_due(self.watermark)

    def flush(self) -> list[Snapshot]:
        """Snapshots of every changed window; windows past the horizon go out once, final, and are dropped."""
        keys = self.dirty | {key for key in self.accs if self.is_final(key[2])}
        self.dirty = set()
        out = []
        for key in sorted(keys, key=_sort_key):
            acc = self.accs.get(key)
            if acc is None:
                continue
            final = self.is_final(key[2])
            self._seq += 1
            out.append(Snapshot(self.partition, self.epoch, self._seq, key[0], key[1], key[2], final, acc))
            if final:
                del self.accs[key]
        return out

    def window_of(self, ts: float) -> float:
        return window_start(ts, self.window_s)


def _sort_key(key: WindowKey) -> tuple:
    return (key[2], key[0], key[1] or "")
