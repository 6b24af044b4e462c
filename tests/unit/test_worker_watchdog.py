"""The recovery watchdog restarts the worker only when table recovery stops making progress."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from modelmon import worker as worker_module
from modelmon.settings import Settings


def test_restarts_only_after_a_stall(monkeypatch, tmp_path):
    w = worker_module.Worker(Settings(home=str(tmp_path), recovery_stall_s=10.0), input_partitions=8)
    monkeypatch.setattr(w, "_broker_reachable", lambda: True)
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
    monkeypatch.setattr(w, "_broker_reachable", lambda: True)
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


def test_no_restart_while_the_broker_is_away_and_stalls_count_from_its_return(monkeypatch, tmp_path):
    """A broker outage stops stage 1; restarting cannot help, so the watchdog waits for the broker and
    gives Faust the stall time after its return (issue 8, broker faults)."""
    w = worker_module.Worker(
        Settings(home=str(tmp_path), recovery_stall_s=10.0, tick_interval_s=1.0), input_partitions=8
    )
    up = [True]
    monkeypatch.setattr(w, "_broker_reachable", lambda: up[0])
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

    at(0)  # starts the clock: the last stage-1 event
    up[0] = False
    for _ in range(12):  # 60 s of outage, far past the 20 s idle limit
        at(5)
    assert restarts == [] and w.outage.down and w.outage.outages == 1
    up[0] = True
    at(5)  # back: idle is measured from here, not from the last event before the outage
    assert restarts == [] and not w.outage.down
    at(19)
    assert restarts == []
    at(2)  # 21 s after the return without a stage-1 event: a real stall
    assert len(restarts) == 1


def test_standby_replicas_reach_faust_and_standby_recovery_is_no_stall(monkeypatch, tmp_path):
    """MODELMON_STANDBY_REPLICAS is passed to Faust. Standby partitions keep restoring for as long as the
    worker runs, after Faust's in_recovery (active partitions only) has ended: the watchdog judges only
    active recovery and stage-1 progress, so a standby still catching up never restarts the worker."""
    assert worker_module.Worker(Settings(home=str(tmp_path)), 8).app.conf.table_standby_replicas == 0
    w = worker_module.Worker(
        Settings(home=str(tmp_path), recovery_stall_s=10.0, tick_interval_s=1.0, standby_replicas=1), 8
    )
    assert w.app.conf.table_standby_replicas == 1
    monkeypatch.setattr(w, "_broker_reachable", lambda: True)
    monkeypatch.setattr(w, "_stuck_input_partitions", lambda now: asyncio.sleep(0, result=[]))
    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    restarts = []
    monkeypatch.setattr(worker_module, "restart_process", lambda: restarts.append(clock[0]))
    standby_left = [400_000]  # never moves: a standby far behind, or one that stopped
    monkeypatch.setattr(
        type(w.app.tables),
        "recovery",
        property(
            lambda self: SimpleNamespace(
                in_recovery=False,
                active_remaining_total=lambda: 0,
                standby_remaining_total=lambda: standby_left[0],
            )
        ),
    )
    owned = [SimpleNamespace(topic=w.ticks_name, partition=0)]
    monkeypatch.setattr(
        type(w.app), "consumer", property(lambda self: SimpleNamespace(assignment=lambda: owned))
    )
    for _ in range(20):  # 100 s, stage 1 busy all along
        clock[0] += 5
        w._last_stage1 = clock[0]
        asyncio.run(w.watch_recovery())
    assert restarts == []
