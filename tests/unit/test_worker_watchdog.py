"""The recovery watchdog restarts the worker only when table recovery stops making progress."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from modelmon import worker as worker_module
from modelmon.settings import Settings


def test_restarts_only_after_a_stall(monkeypatch, tmp_path):
    w = worker_module.Worker(Settings(home=str(tmp_path), recovery_stall_s=10.0), input_partitions=8)
    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    restarts = []
    monkeypatch.setattr(worker_module, "restart_process", lambda: restarts.append(clock[0]))
    monkeypatch.setattr(
        type(w.app), "consumer", property(lambda self: SimpleNamespace(assignment=lambda: []))
    )
    state = SimpleNamespace(in_recovery=True, remaining=500)
    fake = SimpleNamespace(active_remaining_total=lambda: state.remaining)
    monkeypatch.setattr(
        type(w.app.tables),
        "recovery",
        property(
            lambda self: SimpleNamespace(
                in_recovery=state.in_recovery, active_remaining_total=fake.active_remaining_total
            )
        ),
    )

    def step(seconds: float, remaining: int, in_recovery: bool = True) -> None:
        clock[0] += seconds
        state.remaining, state.in_recovery = remaining, in_recovery
        asyncio.run(w.watch_recovery())

    step(0, 500)
    step(5, 400)  # progress
    step(5, 300)
    step(9, 300)  # 9 s without progress: wait
    assert restarts == []
    step(2, 300)  # 11 s: stalled
    assert len(restarts) == 1
    step(5, 0, in_recovery=False)  # recovery over: the clock resets
    step(5, 50, in_recovery=True)
    step(9, 50)
    assert len(restarts) == 1


def test_restarts_when_stage1_stops(monkeypatch, tmp_path):
    w = worker_module.Worker(
        Settings(home=str(tmp_path), recovery_stall_s=10.0, tick_interval_s=1.0), input_partitions=8
    )
    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    restarts = []
    monkeypatch.setattr(worker_module, "restart_process", lambda: restarts.append(clock[0]))
    monkeypatch.setattr(
        type(w.app.tables),
        "recovery",
        property(lambda self: SimpleNamespace(in_recovery=False, active_remaining_total=lambda: 0)),
    )
    owned = [SimpleNamespace(topic=w.ticks_name, partition=0)]
    monkeypatch.setattr(
        type(w.app), "consumer", property(lambda self: SimpleNamespace(assignment=lambda: owned))
    )

    def at(seconds: float) -> None:
        clock[0] += seconds
        asyncio.run(w.watch_recovery())

    at(0)  # starts the clock
    at(15)
    assert restarts == []  # 15 s < 10 s stall + 10 ticks
    w._last_stage1 = clock[0]  # an event arrived
    at(19)
    assert restarts == []
    at(2)
    assert len(restarts) == 1


def test_duplicate_acks_no_longer_stall_faust_commits(monkeypatch, tmp_path):
    """Faust's own `_new_offset`, fed the duplicated acked list seen in a stalled worker: with the wrapper
    installed the whole run of processed offsets becomes committable, without it only one more offset."""
    from collections import defaultdict

    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    def faust_consumer() -> SimpleNamespace:
        fake = SimpleNamespace(
            _acked={"tp": [468, 469, 469, 470, 470, 471, 471, 472, 472]},
            _acked_index=defaultdict(set),
            _gap=defaultdict(IntervalTree),
            _committed_offset={"tp": 469},
        )
        fake._new_offset = lambda tp: Consumer._new_offset(fake, tp)
        return fake

    assert faust_consumer()._new_offset("tp") == 470  # the stall: one offset per commit

    w = worker_module.Worker(Settings(home=str(tmp_path)), input_partitions=8)
    consumer = faust_consumer()
    monkeypatch.setattr(type(w.app), "consumer", property(lambda self: consumer))
    asyncio.run(w._install_ack_dedupe())
    assert consumer._new_offset("tp") == 473  # everything processed is committable
    assert consumer._acked["tp"] == []
