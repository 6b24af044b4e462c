"""Backtest alert rules on a recorded or simulated event stream, offline (pure: no Kafka, no Faust).

The stream goes through the same pure core as the worker (``join`` entries folded by a
``PartitionState`` into window accumulators), as one input partition whose watermark is the largest
event time seen; each rule is evaluated for each window once the watermark has passed the window's end
plus the rule's delay, exactly as stage 2 does. What it returns is what the worker would publish on the
alerts topic for that stream (``emitted_at`` aside), which makes it the tool for tuning rules
(``modelmon rules backtest``), for the detection benchmark and for the false-alarm calibration tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import join
from ..aggregate import WindowAccumulator
from ..partition import PartitionState
from ..schemas import InvalidEvent, validate_ground_truth, validate_prediction
from . import engine
from .rules import Rule, RuleSet

__all__ = ["Backtest", "BacktestEvent"]

EVAL_STEP_S = 10.0


@dataclass(frozen=True, slots=True)
class BacktestEvent:
    """One input: ``kind`` "prediction" or "ground_truth", the event body, and its Kafka timestamp."""

    kind: str
    payload: dict[str, Any]
    kafka_ts: float | None = None


@dataclass
class Backtest:
    """Feed events with :meth:`add`, call :meth:`finish`; ``alerts`` holds the alert events in order."""

    rules: RuleSet
    window_s: float = 60.0
    horizon_s: float = 86400.0
    expire_every: int = 1000
    alerts: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0

    def __post_init__(self) -> None:
        self._state = PartitionState(0, self.window_s, self.horizon_s, 0, idle_advance_s=300.0)
        self._entries: dict[str, join.Entry] = {}
        self._offsets = {join.PRED_TOPIC: 0, join.GT_TOPIC: 0}
        self._alert_states: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        self._series_first: dict[tuple[str, str | None], float] = {}
        self._seen = 0
        self._evaluated_to = float("-inf")
        self.invalid = 0
        self._keep_s = self.window_s + max(
            [r.view_s or self.window_s for r in self.rules.rules] + [self.window_s]
        )

    def add(self, event: BacktestEvent) -> None:
        """Absorb one input event, then evaluate every window the watermark has made due."""
        state = self._state
        is_pred = event.kind == "prediction"
        try:
            parsed = validate_prediction(event.payload) if is_pred else validate_ground_truth(event.payload)
        except InvalidEvent:
            self.invalid += 1
            return
        ts = parsed.ts if parsed.ts is not None else event.kafka_ts
        if ts is None:
            self.invalid += 1
            return
        tag = join.PRED_TOPIC if is_pred else join.GT_TOPIC
        self._offsets[tag] += 1
        state.observe(ts, ts, tag)  # event time stands in for the clock: a topic quiet for 5 minutes is idle
        rid = parsed.request_id
        before = self._entries.get(rid)
        if is_pred:
            out = join.apply_prediction(
                before, parsed, ts, self._offsets[tag], 0, self.window_s, self.horizon_s
            )
        else:
            out = join.apply_label(before, parsed, ts, self._offsets[tag], 0, self.horizon_s)
        if out.entry is not None:
            model, version, window = join.owner(out.entry, self.window_s)
            if not state.is_final(window):
                state.apply_change(rid, before, out.entry)
                self._entries[rid] = out.entry
                first = self._series_first.get((model, version))
                if first is None or window < first:
                    self._series_first[(model, version)] = window
        self._seen += 1
        if self._seen % self.expire_every == 0:
            self._expire()
        self._evaluate(state.watermark)

    def add_all(self, events: Iterable[BacktestEvent]) -> Backtest:
        for event in events:
            self.add(event)
        return self

    def finish(self, until: float | None = None) -> list[dict[str, Any]]:
        """Evaluate what is left up to ``until`` (event time; default: the last event time seen)."""
        self._expire()
        self._evaluated_to = float("-inf")
        self._evaluate(self._state.watermark if until is None else until)
        return self.alerts

    # -- internals --------------------------------------------------------------------------------
    def _expire(self) -> None:
        state = self._state
        for rid in state.due_expiries():
            entry = self._entries.get(rid)
            if entry is None:
                continue
            at = join.expires_at(entry, self.horizon_s)
            if at is not None and at <= state.watermark:
                expired = join.expire(entry)
                state.apply_change(rid, entry, expired)
                self._entries[rid] = expired
        for rid in state.due_settlements():
            self._entries.pop(rid, None)

    def _source(self, model: str, version: str | None) -> engine.WindowSource:
        accs = self._state.accs

        def source(a: float, b: float) -> WindowAccumulator:
            out = WindowAccumulator()
            w = join.window_start(a, self.window_s)
            if w < a:
                w += self.window_s
            while w < b:
                acc = accs.get((model, version, w))
                if acc is not None:
                    out.merge(acc)
                w += self.window_s
            return out

        return source

    def _evaluate(self, watermark: float) -> None:
        # Checked at steps of EVAL_STEP_S of event time (the worker checks on every heartbeat).
        step = join.window_start(watermark, EVAL_STEP_S)
        if step <= self._evaluated_to:
            return
        self._evaluated_to = step
        for (model, version), first in sorted(
            self._series_first.items(), key=lambda s: (s[0][0], s[0][1] or "")
        ):
            source = self._source(model, version)
            for rule in self.rules.for_series(model, version):
                self._evaluate_rule(rule, model, version, first, watermark, source)
        self._prune(watermark)

    def _evaluate_rule(self, rule: Rule, model: str, version: str | None, first: float, watermark: float,
                       source: engine.WindowSource) -> None:  # fmt: skip
        key = (rule.name, model, version)
        st = self._alert_states.get(key)
        if st is None:
            st = self._alert_states[key] = engine.new_state(rule, first)
        for w in engine.due_windows(rule, st, watermark, self.window_s, limit=1_000_000):
            self.alerts += engine.evaluate(rule, st, model, version, w, self.window_s, source, 0.0)
            self.evaluations += 1

    def _prune(self, watermark: float) -> None:
        """Forget windows no evaluation will read again (the rules keep their references themselves)."""
        delays = [r.delay_s for r in self.rules.rules] or [0.0]
        horizon = watermark - max(delays) - self._keep_s - self.window_s
        accs = self._state.accs
        for key in [k for k in accs if k[2] + self.window_s < horizon]:
            del accs[key]

    def states(self) -> dict[tuple[str, str, str | None], dict[str, Any]]:
        """The durable alert state per (rule, model, version), as the worker stores it."""
        return self._alert_states
