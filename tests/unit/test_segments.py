"""Segment slices: exact under any split and merge order, bounded with any number of distinct values."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from modelmon.aggregate import WindowAccumulator
from modelmon.segments import SegmentStats
from modelmon.stats import summarize


def _stream(seed: int, n: int, distinct: int) -> list[tuple[dict[str, str], bool, bool | None]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tags = {"user": f"u{int(rng.paretovariate(1.2)) % distinct}", "tier": rng.choice(["free", "pro"])}
        if rng.random() < 0.1:
            tags.pop("tier")
        out.append((tags, rng.random() < 0.05, rng.random() < 0.7 if rng.random() < 0.6 else None))
    return out


def _fold(events, cap: int = 8, key_cap: int = 32) -> SegmentStats:
    st = SegmentStats(cap, key_cap)
    for tags, err, correct in events:
        st.update(tags, err)
        if correct is not None:
            st.outcome(tags, correct)
    return st


@pytest.mark.parametrize("seed", range(6))
def test_any_split_and_merge_order_equals_one_pass(seed: int) -> None:
    events = _stream(seed, 3000, distinct=200)
    whole = _fold(events)
    rng = random.Random(seed + 1)
    parts = [[] for _ in range(5)]
    for ev in events:
        parts[rng.randrange(5)].append(ev)
    folded = [_fold(p) for p in parts]
    rng.shuffle(folded)
    # pairwise in a random tree
    while len(folded) > 1:
        a = folded.pop(rng.randrange(len(folded)))
        b = folded.pop(rng.randrange(len(folded)))
        folded.append(a.merge(b))
    assert folded[0] == whole
    # arrival order does not matter either (a rebuild folds the join table in another order)
    shuffled = list(events)
    rng.shuffle(shuffled)
    assert _fold(shuffled) == whole
    assert SegmentStats.from_dict(whole.to_dict()) == whole


def test_kept_values_are_exact_and_totals_always_are() -> None:
    events = _stream(7, 5000, distinct=10_000)
    st = _fold(events, cap=16)
    rows, other = st.slices()["user"]
    assert len(rows) == 16
    truth_n = Counter(tags["user"] for tags, _, _ in events)
    truth_lab = Counter(tags["user"] for tags, _, c in events if c is not None)
    truth_cor = Counter(tags["user"] for tags, _, c in events if c)
    for value, row in rows.items():
        assert row[:4] == [truth_n[value], sum(1 for t, e, _ in events if e and t["user"] == value),
                           truth_lab[value], truth_cor[value]]  # fmt: skip
    assert sum(r[0] for r in rows.values()) + other[0] == len(events)
    assert sum(r[2] for r in rows.values()) + other[2] == sum(truth_lab.values())


def test_ten_thousand_distinct_values_stay_bounded_in_state_and_in_the_event() -> None:
    w = WindowAccumulator()
    rng = random.Random(3)
    for i in range(10_000):
        seg = {"user": f"user-{i}", "country": rng.choice(["de", "us", "fr"])}
        w.add_prediction(5.0, False, task="classification", prediction="a", segment=seg)
        w.add_outcome("classification", "a", rng.choice(["a", "b"]), segment=seg)
    assert w.segments is not None
    rows, other = w.segments.slices()["user"]
    assert len(rows) == 128 and other[0] == 10_000 - 128
    body = summarize(w, 60.0)
    users = body["segments"]["keys"]["user"]
    assert len(users["values"]) == 11 and users["values"][-1]["value"] == "__other__"
    assert sum(v["predictions"] for v in users["values"]) == 10_000
    assert users["folded_by_cap"] is True and users["distinct"] == 128
    assert len(w.to_dict()["segments"]["keys"]["user"]["rows"]) == 128
    countries = body["segments"]["keys"]["country"]
    assert sum(v["predictions"] for v in countries["values"]) == 10_000 and not countries["folded_by_cap"]


def test_key_cap_keeps_the_smallest_names_and_says_so() -> None:
    st = SegmentStats(cap=4, key_cap=2)
    st.update({"c": "1", "b": "1"}, False)
    st.update({"a": "1"}, False)
    assert sorted(st.keys) == ["a", "b"] and st.folded_keys
    other = SegmentStats(cap=4, key_cap=2).update({"z": "1"}, False)
    assert sorted(other.merge(st).keys) == ["a", "b"]


def test_regression_sums_are_exact() -> None:
    w = WindowAccumulator()
    rng = np.random.default_rng(4)
    y = rng.normal(100, 20, 500)
    yhat = y + rng.normal(0, 5, 500)
    seg = ["x" if i % 3 else "y" for i in range(500)]
    for t, p, s in zip(y.tolist(), yhat.tolist(), seg, strict=True):
        w.add_prediction(1.0, False, task="regression", prediction=p, segment={"k": s})
        w.add_outcome("regression", p, t, segment={"k": s})
    values = {v["value"]: v for v in summarize(w, 60.0)["segments"]["keys"]["k"]["values"]}
    for s in ("x", "y"):
        mask = np.array(seg) == s
        assert values[s]["mae"] == pytest.approx(float(np.mean(np.abs(yhat[mask] - y[mask]))), rel=1e-12)
        assert values[s]["labelled"] == int(mask.sum())


def test_malformed_rows_are_refused() -> None:
    good = _fold(_stream(1, 100, 10)).to_dict()
    bad = {**good, "keys": {"user": {"rows": {"u1": [1, 2, 0, 0]}, "other": [0, 0, 0, 0]}}}
    with pytest.raises(ValueError):
        SegmentStats.from_dict(bad)
    with pytest.raises(ValueError):
        SegmentStats(cap=0)
