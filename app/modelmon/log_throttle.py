"""A logging filter that keeps repeated warnings and errors from flooding a worker's log.

While the broker is away, aiokafka and librdkafka retry every 100 ms and log each failure: about 70
ERROR lines a second in the broker-outage test, which buries the lines an operator needs. The filter
lets the first few records of each kind through per interval, drops the rest, and tells on the next
record of that kind how many were dropped. A record's kind is its logger, level and message template
(librdkafka's lines also by their facility, e.g. FAIL), so distinct problems are never merged.
INFO and DEBUG records always pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatThrottle(logging.Filter):
    """Pass at most ``burst`` WARNING-or-worse records of one kind per ``interval_s``."""

    def __init__(
        self, interval_s: float = 30.0, burst: int = 3, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.burst = burst
        self.clock = clock
        self._kinds: dict[tuple, list] = {}  # kind -> [interval start, passed, dropped]

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple:
        args = record.args if isinstance(record.args, tuple) else ()
        facility = str(args[0]) if record.name.endswith("rdkafka") and args else ""
        return record.name, record.levelno, str(record.msg), facility

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self.clock()
        key = self.kind(record)
        state = self._kinds.get(key)
        if state is None or now - state[0] >= self.interval_s:
            dropped = state[2] if state is not None else 0
            self._kinds[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} [{dropped} more like this in the last {self.interval_s:g} s]"
            if len(self._kinds) > 10_000:  # a bound on kinds: forget those of finished intervals
                self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.interval_s}
            return True
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        return False


def install(logger: logging.Logger, interval_s: float = 30.0, burst: int = 3) -> None:
    """Give every handler of ``logger`` a throttle of its own (on the root logger: every library's
    records). One per handler, so a record seen by two handlers is counted once by each."""
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatThrottle) for f in handler.filters):
            handler.addFilter(RepeatThrottle(interval_s, burst))
