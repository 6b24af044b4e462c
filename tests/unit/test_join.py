"""The stage-1 join state machine and the partition fold, against an independent oracle.

The oracle below computes what each request must contribute straight from the list of events
(first prediction, first label by ground-truth offset, counts of duplicates and relabels), without
entries, effects or deltas. The crash tests replay a suffix of the inputs in another cross-topic order
over a table that kept, per key, any version at least as new as the last commit: the accumulators
must come out identical — nothing lost, nothing counted twice.
"""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from modelmon import join
from modelmon.aggregate import WindowAccumulator
from modelmon.partition import PartitionState
from modelmon.schemas import GroundTruth, Prediction

WINDOW = 60.0
HORIZON = 600.0


def pred(
    rid: str,
    y,
    ts: float,
    model: str = "m1",
    version: str | None = "v1",
    latency: float = 10.0,
    features: dict | None = None,
    scores: dict | None = None,
) -> Prediction:
    return Prediction(
        request_id=rid,
        model=model,
        model_version=version,
        ts=ts,
        task="classification",
        prediction=y,
        scores=scores,
        latency_ms=latency,
        features=features,
        segment=None,
        error=None,
    )


def random_features(rng: random.Random) -> dict | None:
    """Numbers of any sign and size, strings (some beyond 64 characters), booleans, nulls, absent names."""
    if rng.random() < 0.1:
        return None
    out: dict = {}
    if rng.random() < 0.9:
        out["amount"] = round(rng.lognormvariate(3, 2), 4) * rng.choice([1, 1, 1, -1])
    if rng.random() < 0.8:
        out["count"] = rng.choice([0, 1, 2, 3, 7, 10**6, -5])
    out["tiny"] = rng.choice([0.0, 1e-12, -1e-10, 3e-9, None])
    out["city"] = rng.choice(["berlin", "paris", "x" * 80, "x" * 70, None])
    if rng.random() < 0.7:
        out["flag"] = rng.random() < 0.3
    return out


def random_scores(rng: random.Random) -> dict | None:
    if rng.random() < 0.2:
        return None
    raw = [rng.random() for _ in range(3)]
    return {c: v / sum(raw) for c, v in zip("abc", raw, strict=True)}


def label(rid: str, y, ts: float) -> GroundTruth:
    return GroundTruth(request_id=rid, label=y, ts=ts, model=None)


def random_stream(rng: random.Random, n_requests: int = 60):
    """Events as (topic, offset, request_id, payload) in one arrival order; offsets grow per topic."""
    events = []
    for i in range(n_requests):
        rid = f"r{i}"
        ts = 1000.0 + rng.uniform(0, 300)
        y = rng.choice(["a", "b", "c"])
        n_pred = rng.choice([0, 1, 1, 1, 2])
        n_lab = rng.choice([0, 1, 1, 2, 3])
        feats, scores = random_features(rng), random_scores(rng)
        for _ in range(n_pred):
            events.append(("p", rid, pred(rid, y, ts, features=feats, scores=scores)))
        for _ in range(n_lab):
            events.append(("g", rid, label(rid, rng.choice([y, y, "a", "b"]), ts + rng.uniform(0, 50))))
    rng.shuffle(events)
    offsets = {"p": 0, "g": 0}
    out = []
    for topic, rid, payload in events:
        out.append((topic, offsets[topic], rid, payload))
        offsets[topic] += 1
    return out


def apply(table: dict, state: PartitionState | None, event) -> None:
    topic, offset, rid, payload = event
    before = table.get(rid)
    if topic == "p":
        outcome = join.apply_prediction(before, payload, payload.ts, offset, 0, WINDOW, HORIZON)
    else:
        outcome = join.apply_label(before, payload, payload.ts, offset, 0, HORIZON)
    if outcome.entry is not None:
        if state is not None:
            state.apply_change(rid, before, outcome.entry)
        table[rid] = orjson.loads(orjson.dumps(outcome.entry))  # what the changelog would restore


def oracle(events) -> dict:
    """Per request: (first prediction, first label, duplicates, relabels) from the raw event list."""
    by_rid: dict[str, dict] = {}
    for topic, _offset, rid, payload in sorted(events, key=lambda e: (e[0], e[1])):
        r = by_rid.setdefault(rid, {"pred": None, "label": None, "dups": 0, "relabels": 0})
        if topic == "p":
            if r["pred"] is None:
                r["pred"] = payload
            else:
                r["dups"] += 1
        elif r["label"] is None:
            r["label"] = payload
        elif payload.label == r["label"].label:
            r["dups"] += 1
        else:
            r["relabels"] += 1
    return by_rid


def np_bucket(x: float) -> int:
    """The signed-log bucket straight from its formula, with numpy."""
    ax = abs(float(x))
    if ax < 1e-9:
        return 0
    b = min(1 + int(np.floor(np.log2(ax / 1e-9) * 8)), 641)
    return b if x > 0 else -b


def oracle_features(features: dict | None) -> dict | None:
    """A prediction's features as the accumulators must count them (nulls are missing)."""
    out = {}
    for name, v in (features or {}).items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[name] = "true" if v else "false"
        elif isinstance(v, str):
            out[name] = v[:64]
        else:
            out[name] = np_bucket(v)
    return out or None


def oracle_accumulators(events) -> dict:
    accs: dict = {}

    def acc(key):
        return accs.setdefault(key, WindowAccumulator())

    for r in oracle(events).values():
        p, lab = r["pred"], r["label"]
        if p is not None:
            key = (p.model, p.model_version, join.window_start(p.ts, WINDOW))
            acc(key).add_prediction(
                p.latency_ms,
                False,
                features=oracle_features(p.features),
                task=p.task,
                prediction=p.prediction,
                scores=p.scores,
            )
            if lab is not None:
                acc(key).add_outcome(
                    "classification", p.prediction, lab.label, p.scores, max(0.0, lab.ts - p.ts)
                )
        else:
            key = (join.UNKNOWN_MODEL, None, join.window_start(lab.ts, WINDOW))
        if r["dups"]:
            acc(key).add_counter("duplicates", r["dups"])
        if r["relabels"]:
            acc(key).add_counter("relabels", r["relabels"])
    return {k: v.to_dict() for k, v in accs.items()}


def fold(state: PartitionState) -> dict:
    return {k: v.to_dict() for k, v in state.accs.items() if not v.is_empty()}


def new_state() -> PartitionState:
    return PartitionState(0, WINDOW, HORIZON, epoch=1)


@pytest.mark.parametrize("seed", range(20))
def test_any_arrival_order_matches_the_oracle(seed):
    rng = random.Random(seed)
    events = random_stream(rng)
    table: dict = {}
    state = new_state()
    for event in events:
        apply(table, state, event)
    assert fold(state) == oracle_accumulators(events)
    rebuilt = new_state()
    rebuilt.rebuild(sorted(table.items()), None)
    assert fold(rebuilt) == fold(state)
    # pending joins: entries holding one side only (neither joined nor expired), counted from the table
    one_sided = sum(1 for e in table.values() if "x" not in e and (("pt" in e) != ("l" in e)))
    assert state.pending == rebuilt.pending == one_sided


@pytest.mark.parametrize("seed", range(20))
def test_replayed_events_change_nothing(seed):
    rng = random.Random(seed)
    events = random_stream(rng)
    table: dict = {}
    state = new_state()
    for event in events:
        apply(table, state, event)
    expected = fold(state)
    for event in events[rng.randrange(len(events)) :]:
        apply(table, state, event)
    assert fold(state) == expected


@pytest.mark.parametrize("seed", range(40))
def test_crash_and_replay_in_another_order_is_exact(seed):
    """kill -9 model: the table keeps, per key, any version from the commit point on; replay re-reads
    everything after the committed offsets of each topic, interleaved differently."""
    rng = random.Random(1000 + seed)
    events = random_stream(rng)
    commit = rng.randrange(len(events) + 1)
    table: dict = {}
    for event in events[:commit]:
        apply(table, None, event)
    committed_table = dict(table)  # Faust flushes the changelog before it commits offsets
    later_versions: dict[str, list] = {}
    for event in events[commit:]:
        apply(table, None, event)
        later_versions.setdefault(event[2], []).append(table[event[2]])
    # Durable after kill -9: per key, the committed version or any later one (writes race to the log).
    durable = dict(committed_table)
    for rid, versions in later_versions.items():
        choice = rng.choice([committed_table.get(rid), *versions])
        if choice is None:
            durable.pop(rid, None)
        else:
            durable[rid] = choice
    # Committed offsets per topic: everything before `commit` in arrival order.
    done = events[:commit]
    replay = events[commit:]
    rng.shuffle(replay)
    replay.sort(key=lambda e: (e[0], e[1]))  # per-topic order holds; topics interleave anew
    p_part = [e for e in replay if e[0] == "p"]
    g_part = [e for e in replay if e[0] == "g"]
    interleaved = []
    while p_part or g_part:
        side = p_part if (p_part and (not g_part or rng.random() < 0.5)) else g_part
        interleaved.append(side.pop(0))
    state = new_state()
    state.rebuild(sorted(durable.items()), None)
    for event in interleaved:
        apply(durable, state, event)
    assert fold(state) == oracle_accumulators(done + replay)


def test_expiry_counts_unmatched_predictions_and_orphan_labels():
    state = new_state()
    table: dict = {}
    apply(table, state, ("p", 0, "lonely", pred("lonely", "a", 1000.0)))
    apply(table, state, ("g", 0, "orphan", label("orphan", "b", 1010.0)))
    apply(table, state, ("p", 1, "pair", pred("pair", "a", 1020.0)))
    apply(table, state, ("g", 1, "pair", label("pair", "a", 1030.0)))
    state.observe(1000.0 + HORIZON + 15, wall=0.0)
    for rid in state.due_expiries():
        entry = table[rid]
        if (at := join.expires_at(entry, HORIZON)) is not None and at <= state.watermark:
            expired = join.expire(entry)
            state.apply_change(rid, entry, expired)
            table[rid] = expired
    m1 = state.accs[("m1", "v1", 960.0)].to_dict()
    assert m1["counters"] == {"unmatched_predictions": 1}
    orphan = state.accs[(join.UNKNOWN_MODEL, None, 960.0)].to_dict()
    assert orphan["counters"] == {"orphan_labels": 1}
    # A label after its prediction expired does not join; it is counted as late.
    apply(table, state, ("g", 2, "lonely", label("lonely", "a", 1700.0)))
    assert table["lonely"]["ll"] == 1
    assert state.accs[("m1", "v1", 960.0)].counters["late_labels"] == 1
    assert state.accs[("m1", "v1", 960.0)].labelled == 0
    assert state.accs[("m1", "v1", 1020.0)].labelled == 1  # "pair"


def test_relabel_keeps_the_first_label():
    table: dict = {}
    state = new_state()
    apply(table, state, ("p", 0, "r", pred("r", "a", 1000.0)))
    apply(table, state, ("g", 0, "r", label("r", "a", 1001.0)))
    apply(table, state, ("g", 1, "r", label("r", "b", 1002.0)))
    acc = state.accs[("m1", "v1", 960.0)]
    assert acc.counters == {"relabels": 1}
    assert acc.labelled == 1
    assert acc.classification.n_correct == 1


def test_windows_close_once_after_the_horizon():
    state = new_state()
    table: dict = {}
    apply(table, state, ("p", 0, "r", pred("r", "a", 1000.0)))
    state.observe(1000.0, wall=0.0)
    first = state.flush()
    assert [(s.window, s.final) for s in first] == [(960.0, False)]
    assert state.flush() == []  # nothing changed
    state.observe(960.0 + WINDOW + HORIZON, wall=1.0)
    final = state.flush()
    assert [(s.window, s.final) for s in final] == [(960.0, True)]
    assert state.accs == {} and state.flush() == []


@pytest.mark.parametrize("gap", [HORIZON + 1, -(HORIZON + 1)])
def test_pairs_beyond_the_horizon_do_not_join_in_either_order(gap):
    events = [
        ("p", 0, "r", pred("r", "a", 1000.0)),
        ("g", 0, "r", label("r", "a", 1000.0 + gap)),
        ("g", 1, "r", label("r", "a", 1000.0 + gap)),  # its duplicate
    ]
    results = []
    for order in (events, [events[1], events[2], events[0]]):
        table: dict = {}
        state = new_state()
        for event in order:
            apply(table, state, event)
        results.append(join.effects(table["r"], WINDOW))
    assert results[0] == results[1]
    assert ("out", "m1", "v1", 960.0) not in results[0]
    assert results[0][("cnt", "m1", "v1", 960.0, "late_labels")] == 2
    assert results[0][("cnt", "m1", "v1", 960.0, "unmatched_predictions")] == 1


def test_partition_record_keeps_the_watermark_and_drops_closed_tallies():
    state = new_state()
    state.observe(1000.0, wall=0.0)
    meta = {"o": {"p": 7}, "c": {"m1|960.0|not_json": 2, "m1|1020.0|schema": 1}}
    state.apply_invalid(None, meta)
    assert state.meta_update(meta) == {"o": {"p": 7}, "c": meta["c"], "wm": 1000.0}
    state.observe(960.0 + WINDOW + HORIZON, wall=1.0)  # window 960 closes, 1020 stays open
    updated = state.meta_update(meta)
    assert updated["c"] == {"m1|1020.0|schema": 1} and updated["wm"] == 960.0 + WINDOW + HORIZON
    rebuilt = new_state()
    rebuilt.rebuild([], updated)
    assert rebuilt.watermark == updated["wm"]
    assert rebuilt.accs[("m1", None, 1020.0)].counters == {"invalid:schema": 1}


def test_a_rebuild_keeps_the_watermark_of_the_input_furthest_behind():
    """Predictions read up to 2,000 s, labels up to 1,900 s: the watermark is 1,900 before and after a
    restart; the newest entry (2,000 s) must not move it, or pending joins would expire early."""
    state = PartitionState(0, WINDOW, HORIZON, 0)
    state.expect(("p", "g"), wall=0.0)
    table: dict = {}
    for i, ts in enumerate((1000.0, 1500.0, 2000.0)):
        apply(table, state, ("p", i, f"r{i}", pred(f"r{i}", "a", ts)))
        state.observe(ts, wall=1.0 + i, topic="p")
    state.observe(1900.0, wall=5.0, topic="g")
    assert state.watermark == 1900.0
    meta = state.meta_update(None)
    rebuilt = PartitionState(0, WINDOW, HORIZON, 1)
    rebuilt.expect(("p", "g"), wall=10.0)
    rebuilt.rebuild(sorted(table.items()), meta)
    assert rebuilt.watermark == 1900.0 == meta["wm"]
    assert rebuilt.pending == state.pending == 3
    assert rebuilt.due_expiries() == state.due_expiries()
    # Without a partition record: the smaller of the newest prediction and the newest label restored.
    apply(table, state, ("g", 0, "r1", label("r1", "a", 1600.0)))
    without_meta = PartitionState(0, WINDOW, HORIZON, 2)
    without_meta.rebuild(sorted(table.items()), None)
    assert without_meta.watermark == 1600.0 <= state.watermark


def test_an_idle_partition_that_never_saw_an_event_starts_at_the_clock():
    state = PartitionState(0, WINDOW, HORIZON, epoch=1, idle_advance_s=5.0)
    state.tick(100.0)
    state.tick(104.0)
    assert state.watermark == float("-inf")
    state.tick(106.0)
    assert state.watermark == 106.0
    state.tick(108.0)
    assert state.watermark == 108.0


def test_rejected_inputs_are_counted_once_in_their_arrival_window():
    state = new_state()
    state.observe(1000.0, wall=0.0)
    first = state.record_invalid(None, "p", 5, 1001.0, "m1", "not_json")
    assert first == {"o": {"p": 5}, "c": {"m1|960.0|not_json": 1}, "wm": None}
    assert state.record_invalid(first, "p", 5, 1001.0, "m1", "not_json") is None  # a replay
    second = state.record_invalid(first, "g", 2, 1001.0, "m1", "too_late", count=False)
    assert second["o"] == {"p": 5, "g": 2} and second["c"] == first["c"]
    assert state.accs[("m1", None, 960.0)].counters == {"invalid:not_json": 1}


def test_time_index_pops_exactly_what_a_heap_would():
    """The bucketed index against the obvious oracle: a heap of (time, key), on random adds and pops."""
    import heapq

    from modelmon.partition import TimeIndex

    rng = random.Random(5)
    index, heap = TimeIndex(), []
    now = 1000.0
    for step in range(4000):
        if rng.random() < 0.7:
            at = now + rng.choice([rng.uniform(-3, 3), rng.uniform(0, 50), float(rng.randint(0, 40))])
            key = f"k{step}"
            index.add(at, key)
            heapq.heappush(heap, (at, key))
        else:
            now += rng.choice([0.0, 0.3, 1.0, rng.uniform(0, 5)])
            expected = []
            while heap and heap[0][0] <= now:
                expected.append(heapq.heappop(heap)[1])
            assert index.pop_due(now) == expected
        assert len(index) == len(heap)


def test_watermark_follows_the_input_topic_furthest_behind() -> None:
    """Ground truth read hours ahead of predictions must not close the predictions' windows."""
    state = PartitionState(0, WINDOW, HORIZON, 0, idle_advance_s=30.0)
    state.observe(1000.0, wall=0.0, topic="p")
    state.observe(9000.0, wall=0.1, topic="g")  # labels far ahead (a backlog read unevenly)
    assert state.watermark == 1000.0
    assert not state.is_final(960.0)
    state.observe(1100.0, wall=0.2, topic="p")
    assert state.watermark == 1100.0
    # Ground truth falls quiet for idle_advance_s (wall): it no longer holds the watermark back.
    state.observe(500.0, wall=40.0, topic="p")  # an old prediction: the maximum stays
    assert state.watermark == 1100.0
    state.observe(1200.0, wall=41.0, topic="p")
    assert state.watermark == 1200.0
    # Active again (its maximum is still 9000): the smaller maximum, now the predictions', leads.
    state.observe(1150.0, wall=42.0, topic="g")
    assert state.watermark == 1200.0
    state.observe(5000.0, wall=42.5, topic="p")
    assert state.watermark == 5000.0
    # An expected topic that has not delivered yet holds the watermark, until it has been quiet long enough.
    fresh = PartitionState(0, WINDOW, HORIZON, 0, idle_advance_s=30.0)
    fresh.expect(("p", "g"), wall=0.0)
    fresh.observe(9000.0, wall=1.0, topic="g")
    assert fresh.watermark == float("-inf")
    fresh.observe(1000.0, wall=2.0, topic="p")
    assert fresh.watermark == 1000.0
    lonely = PartitionState(0, WINDOW, HORIZON, 0, idle_advance_s=30.0)
    lonely.expect(("p", "g"), wall=0.0)
    lonely.observe(1000.0, wall=31.0, topic="p")  # no label for 30 s: ground truth is quiet
    assert lonely.watermark == 1000.0
    # Without topics (one input), the maximum event time, as before.
    single = PartitionState(0, WINDOW, HORIZON, 0)
    for ts in (10.0, 30.0, 20.0):
        single.observe(ts, wall=0.0)
    assert single.watermark == 30.0


def test_processed_offsets_survive_a_rebuild_and_reveal_skipped_records():
    """The highest processed offset per input comes back from the entries and the partition record (its
    ``po`` outlives settled entries), so a consumer that skips records after a rebalance is caught."""
    state = PartitionState(0, WINDOW, HORIZON, epoch=1)
    assert state.skipped_before("p", 500) is None  # nothing known: nothing to compare with
    entries = [
        ("a", {"p": 0, "o": {"p": 40}, "m": "m", "v": None, "pt": 10.0, "w": 0.0, "k": "classification",
               "y": "x", "lat": None, "e": False}),
        ("b", {"p": 0, "o": {"g": 17}, "l": "x", "lt": 12.0}),
    ]  # fmt: skip
    meta = {"o": {"g": 21}, "c": {}, "wm": None, "po": {"p": 38, "g": 19}}
    state.rebuild(entries, meta)
    assert state.processed == {"p": 40, "g": 21}
    assert state.skipped_before("p", 41) is None and state.skipped_before("p", 12) is None
    assert state.skipped_before("p", 47) == 41
    assert state.skipped_before("g", 23) == 22
    state.note_offsets({"p": 46})
    assert state.skipped_before("p", 47) is None
    assert state.meta_update(meta)["po"] == {"g": 21, "p": 46}
    # a rejected input keeps the processed offsets in the record it rewrites
    after = state.record_invalid(meta, "p", 47, 10.0, "m", "schema")
    assert after is not None and after["po"] == meta["po"] and after["o"]["p"] == 47
