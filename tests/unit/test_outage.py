"""The watchdog's view of broker outages: stalls are measured from the broker's return."""

from __future__ import annotations

from modelmon.outage import OutageClock


def test_no_outage_leaves_progress_times_alone() -> None:
    clock = OutageClock()
    assert clock.observe(True, 10.0) is None
    assert not clock.down
    assert clock.since(3.0) == 3.0
    assert clock.outages == 0


def test_an_outage_is_counted_once_and_its_length_returned_when_it_ends() -> None:
    clock = OutageClock()
    clock.observe(True, 0.0)
    assert clock.observe(False, 5.0) is None
    assert clock.observe(False, 10.0) is None  # still the same outage
    assert clock.down and clock.down_since == 5.0
    assert clock.observe(True, 70.0) == 65.0
    assert not clock.down
    assert clock.outages == 1
    assert clock.observe(True, 75.0) is None  # answered again: nothing ended


def test_stalls_start_at_the_return_not_before_the_outage() -> None:
    clock = OutageClock()
    clock.observe(False, 100.0)
    clock.observe(True, 170.0)
    assert clock.since(95.0) == 170.0  # progress before the outage does not count against the worker
    assert clock.since(180.0) == 180.0  # progress after the return does
    clock.observe(False, 200.0)
    assert clock.down  # the watchdog does not measure stalls now (it waits for the broker)
    clock.observe(True, 260.0)
    assert clock.since(190.0) == 260.0
    assert clock.outages == 2
