"""Per-segment slices of a window: the mergeable state behind error analysis (pure, no Kafka or Faust).

A prediction may carry ``segment`` tags such as ``{"country": "de", "device": "ios"}``. For every tag key
:class:`SegmentStats` keeps, per value, the slice's predictions, inference errors, labelled predictions and
correct ones (classification) or absolute and squared error sums (regression), so read time can rank the
slices where the model does worse (:mod:`modelmon.error_analysis`).

Bounded and exact under merge
    Tag values are unbounded (a user id as a tag has millions), so each key keeps at most ``cap`` values:
    the ``cap`` values of *smallest rank*, rank = (CRC-32 of the value, value). Every other value is
    folded into the key's ``other`` row. That choice depends only on the set of values seen, never on
    arrival order: a value dropped by one part has ``cap`` values of smaller rank there, hence in any union,
    so merging parts in any order and grouping equals counting everything in one accumulator, exactly
    (design rule 5), and a stage-1 rebuild from the join table reproduces the state it replaces. Ranking
    by a hash rather than by name keeps the sample unbiased when a key is over its cap. Read time picks
    the top values by volume among those kept and folds the rest into "other" too; whenever a key has at
    most ``cap`` distinct values in a window (countries, devices, tiers, ...) every slice is exact.
    Keys are bounded the same way, by name (the ``key_cap`` smallest), like feature names.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_SEGMENT_KEY_CAP", "DEFAULT_SEGMENT_VALUE_CAP", "SegmentStats"]

DEFAULT_SEGMENT_VALUE_CAP = 128
"""Values kept per segment key and window (the rest are folded into the key's ``other`` row)."""
DEFAULT_SEGMENT_KEY_CAP = 32
"""Segment keys kept per window (the prediction schema allows 32 per event)."""

# Row layout: predictions, inference errors, labelled, correct, exact sum |error|, exact sum error**2
# (the sums in units of 2**-1074, see aggregate's exact sums; zero for classification).
N, ERR, LAB, COR, SAE, SSE = range(6)
_ROW = 6


def _rank(value: str) -> tuple[int, str]:
    return zlib.crc32(value.encode("utf-8", "surrogatepass")), value


def _add_row(into: list[int], row: list[int]) -> None:
    for i in range(_ROW):
        into[i] += row[i]


class _KeySlices:
    """The kept values of one segment key and the fold of the others."""

    __slots__ = ("_max", "other", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}
        self.other = [0] * _ROW
        self._max: tuple[int, str] | None = None  # largest kept rank (cached; None = recompute)

    def row(self, value: str, cap: int) -> list[int]:
        """The row counting ``value``: its own (admitted, evicting the largest rank if full) or other."""
        rows = self.rows
        r = rows.get(value)
        if r is not None:
            return r
        if len(rows) < cap:
            r = rows[value] = [0] * _ROW
            mx = self._max
            if mx is not None and _rank(value) > mx:
                self._max = _rank(value)
            return r
        mx = self._max
        if mx is None:
            mx = self._max = max(_rank(v) for v in rows)
        rank = _rank(value)
        if rank < mx:
            _add_row(self.other, rows.pop(mx[1]))
            self._max = None
            r = rows[value] = [0] * _ROW
            return r
        return self.other

    def merge(self, other: _KeySlices, cap: int) -> None:
        rows = self.rows
        for value, row in other.rows.items():
            mine = rows.get(value)
            if mine is None:
                rows[value] = list(row)
            else:
                _add_row(mine, row)
        _add_row(self.other, other.other)
        if len(rows) > cap:
            for value in sorted(rows, key=_rank)[cap:]:
                _add_row(self.other, rows.pop(value))
        self._max = None

    def copy(self) -> _KeySlices:
        ks = _KeySlices()
        ks.rows = {v: list(r) for v, r in self.rows.items()}
        ks.other = list(self.other)
        ks._max = self._max
        return ks


class SegmentStats:
    """Slices of one window by segment tag: ``update`` per prediction, ``outcome`` per joined label."""

    __slots__ = ("cap", "folded_keys", "key_cap", "keys")

    def __init__(self, cap: int = DEFAULT_SEGMENT_VALUE_CAP, key_cap: int = DEFAULT_SEGMENT_KEY_CAP) -> None:
        if cap < 1 or key_cap < 1:
            raise ValueError("segment caps must be >= 1")
        self.cap = int(cap)
        self.key_cap = int(key_cap)
        self.keys: dict[str, _KeySlices] = {}
        self.folded_keys = False  # some key beyond the key cap was seen (its slices are not kept)

    def _rows(self, segment: Mapping[str, Any]) -> list[list[int]]:
        """The row of every kept (key, value) of one prediction's tags; non-string values are ignored."""
        out = []
        keys = self.keys
        for key, value in segment.items():
            if type(value) is not str or type(key) is not str:
                continue
            ks = keys.get(key)
            if ks is None:
                if not self._admit_key(key):
                    continue
                ks = keys[key] = _KeySlices()
            out.append(ks.row(value, self.cap))
        return out

    def _admit_key(self, key: str) -> bool:
        keys = self.keys
        if len(keys) < self.key_cap:
            return True
        self.folded_keys = True
        largest = max(keys)
        if key < largest:
            del keys[largest]
            return True
        return False

    def update(self, segment: Mapping[str, Any], error: bool) -> SegmentStats:
        """One prediction with these tags (``error``: the inference failed)."""
        for row in self._rows(segment):
            row[N] += 1
            if error:
                row[ERR] += 1
        return self

    def outcome(
        self,
        segment: Mapping[str, Any],
        correct: bool | None,
        abs_error_exact: int = 0,
        sq_error_exact: int = 0,
    ) -> SegmentStats:
        """One labelled prediction: ``correct`` for classification (None for regression), and for
        regression the exact |error| and error**2 (ints in 2**-1074 units)."""
        for row in self._rows(segment):
            row[LAB] += 1
            if correct:
                row[COR] += 1
            row[SAE] += abs_error_exact
            row[SSE] += sq_error_exact
        return self

    def merge(self, other: SegmentStats) -> SegmentStats:
        if (other.cap, other.key_cap) != (self.cap, self.key_cap):
            raise ValueError("cannot merge segment stats with different caps")
        keys = self.keys
        for key, ks in other.keys.items():
            mine = keys.get(key)
            if mine is None:
                keys[key] = ks.copy()
            else:
                mine.merge(ks, self.cap)
        if other.folded_keys:
            self.folded_keys = True
        if len(keys) > self.key_cap:
            for key in sorted(keys)[self.key_cap :]:
                del keys[key]
            self.folded_keys = True
        return self

    def is_empty(self) -> bool:
        return not self.keys and not self.folded_keys

    def slices(self) -> dict[str, tuple[dict[str, list[int]], list[int]]]:
        """{key: ({value: row}, other row)} by key; a row is [n, errors, labelled, correct, sae, sse]."""
        return {k: (self.keys[k].rows, self.keys[k].other) for k in sorted(self.keys)}

    def to_dict(self) -> dict[str, Any]:
        from .aggregate import exact_sum_to_json

        def enc(row: list[int]) -> list[Any]:
            out: list[Any] = row[:4]
            if row[SAE] or row[SSE]:
                out += [exact_sum_to_json(row[SAE]), exact_sum_to_json(row[SSE])]
            return out

        d: dict[str, Any] = {
            "keys": {
                k: {
                    "rows": {v: enc(ks.rows[v]) for v in sorted(ks.rows)},
                    "other": enc(ks.other),
                }
                for k, ks in sorted(self.keys.items())
            },
            "folded_keys": self.folded_keys,
        }
        if self.cap != DEFAULT_SEGMENT_VALUE_CAP:
            d["cap"] = self.cap
        if self.key_cap != DEFAULT_SEGMENT_KEY_CAP:
            d["key_cap"] = self.key_cap
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmentStats:
        from .aggregate import exact_sum_from_json

        def dec(raw: list[Any]) -> list[int]:
            if not isinstance(raw, list) or len(raw) not in (4, _ROW):
                raise ValueError(f"malformed segment row {raw!r}")
            row = [int(x) for x in raw[:4]]
            row += [exact_sum_from_json(raw[4]), exact_sum_from_json(raw[5])] if len(raw) == _ROW else [0, 0]
            if min(row[:4]) < 0 or row[ERR] > row[N] or row[COR] > row[LAB]:
                raise ValueError(f"inconsistent segment row {raw!r}")
            return row

        st = cls(int(d.get("cap", DEFAULT_SEGMENT_VALUE_CAP)), int(d.get("key_cap", DEFAULT_SEGMENT_KEY_CAP)))
        for key, kd in d["keys"].items():
            ks = st.keys[str(key)] = _KeySlices()
            ks.rows = {str(v): dec(r) for v, r in kd["rows"].items()}
            ks.other = dec(kd["other"])
            if len(ks.rows) > st.cap:
                raise ValueError(f"segment key {key!r} keeps more values than its cap")
        if len(st.keys) > st.key_cap:
            raise ValueError("segment stats keep more keys than their cap")
        st.folded_keys = bool(d.get("folded_keys", False))
        return st

    def copy(self) -> SegmentStats:
        st = SegmentStats(self.cap, self.key_cap)
        st.keys = {k: ks.copy() for k, ks in self.keys.items()}
        st.folded_keys = self.folded_keys
        return st

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SegmentStats) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SegmentStats(keys={len(self.keys)}, folded_keys={self.folded_keys})"
