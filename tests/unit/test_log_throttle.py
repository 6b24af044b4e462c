"""The repeat throttle against a count by hand: bursts pass, the rest is dropped and reported once."""

from __future__ import annotations

import logging

from modelmon.log_throttle import RepeatThrottle, install


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _record(
    msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka.conn"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_storm_passes_a_burst_per_interval_and_reports_what_it_dropped() -> None:
    clock = Clock()
    throttle = RepeatThrottle(interval_s=30, burst=3, clock=clock)
    passed = []
    for i in range(700):  # 70 a second for 10 s, as in the broker-outage test
        clock.t = i / 70
        record = _record("Unable connect to node with id %s: %s", 1, "Connection refused")
        if throttle.filter(record):
            passed.append(record.getMessage())
    assert len(passed) == 3
    clock.t = 31.0
    record = _record("Unable connect to node with id %s: %s", 1, "Connection refused")
    assert throttle.filter(record)
    assert record.getMessage().endswith("[697 more like this in the last 30 s]")
    record = _record("Unable connect to node with id %s: %s", 1, "Connection refused")
    assert throttle.filter(record)
    assert "more like this" not in record.getMessage()


def test_kinds_are_kept_apart_and_info_always_passes() -> None:
    throttle = RepeatThrottle(interval_s=30, burst=1, clock=Clock())
    assert throttle.filter(_record("A %s", 1))
    assert not throttle.filter(_record("A %s", 2))
    assert throttle.filter(_record("B %s", 1))  # another template
    assert throttle.filter(_record("A %s", 1, level=logging.WARNING))  # another level
    assert throttle.filter(_record("A %s", 1, name="faust"))  # another logger
    # librdkafka's lines share one template; their facility tells them apart
    assert throttle.filter(_record("%s [%s] %s", "FAIL", "rdkafka#producer-1", "x", name="modelmon.rdkafka"))
    assert throttle.filter(_record("%s [%s] %s", "SASL", "rdkafka#producer-1", "y", name="modelmon.rdkafka"))
    assert not throttle.filter(
        _record("%s [%s] %s", "FAIL", "rdkafka#producer-1", "z", name="modelmon.rdkafka")
    )
    for _ in range(100):
        assert throttle.filter(_record("progress: %s", "x", level=logging.INFO))


def test_install_filters_every_handler_of_the_logger() -> None:
    logger = logging.getLogger("modelmon.test-throttle")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.handlers = [Keep(), Keep()]
    install(logger, interval_s=60, burst=2)
    for i in range(50):
        logger.error("retry %d failed", i)
    assert seen == ["retry 0 failed", "retry 0 failed", "retry 1 failed", "retry 1 failed"]
