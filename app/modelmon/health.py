"""Worker health, the pure part: resource samples, event-loop lag, consumer lag arithmetic (design rule 8).

Three small pieces feed the ``monitor-health`` report (schemas/monitor-health.schema.json) that
:mod:`modelmon.worker_health` assembles and publishes every ``MODELMON_HEALTH_INTERVAL_S``:

* :class:`ResourceSampler` — the worker process (CPU since the previous sample, RSS, threads, open file
  descriptors), the host (CPU and memory use, load) and the host's network counters, all from psutil.
  Percentages and per-second rates cover the time since the previous :meth:`~ResourceSampler.sample`;
  they are computed here from cumulative counters (``cpu_times``, ``net_io_counters``), so other psutil
  users in the process (psutil's module-level ``cpu_percent`` state) cannot disturb them.
* :class:`LoopLagMonitor` — an asyncio task that sleeps a fixed interval and records how late it wakes
  up: the time any callback on the loop (a slow event, a blocking call) held it.
* :func:`lag_rows`, :func:`lag_totals` and :class:`LagTracker` — per-partition consumer lag and rates
  from offset readings (log end offset, the group's committed offset, the worker's position).

Conventions: units in field names (``_bytes``, ``_s``, ``_per_s``, ``_percent``); a figure that cannot
be measured (platform, first sample, failed read) is None, never a guess. No Kafka or Faust import.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

__all__ = [
    "LagTracker",
    "LoopLagMonitor",
    "OffsetReading",
    "ResourceSampler",
    "lag_rows",
    "lag_totals",
    "per_second",
]

Clock = Callable[[], float]


def per_second(before: float | None, after: float | None, elapsed_s: float | None) -> float | None:
    """``(after - before) / elapsed_s``; None when a value is unknown, no time passed, or the counter went
    back (a reset or a rebalance: there is no honest rate across it)."""
    if before is None or after is None or elapsed_s is None or not elapsed_s > 0:
        return None
    delta = after - before
    if delta < 0:
        return None
    return delta / elapsed_s


# ------------------------------------------------------------------------------------------ resources
def _cpu_total(t: Any) -> float:
    """All CPU time of a ``psutil.cpu_times()`` reading (guest time is already in user/nice on Linux)."""
    total = sum(t)
    return total - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _cpu_busy(t: Any) -> float:
    """The busy part: everything but idle and I/O wait (psutil's own definition for cpu_percent)."""
    return _cpu_total(t) - t.idle - getattr(t, "iowait", 0.0)


class ResourceSampler:
    """Samples one process (this one by default), its host and the host's network counters.

    Each :meth:`sample` returns ``{"process": ..., "host": ..., "network": ...}``. The percentages and
    rates cover the interval since the previous sample (for the first, since construction). Network
    counters are host-wide, over every interface including loopback (psutil cannot attribute traffic to
    a process); ``received_bytes`` / ``sent_bytes`` are cumulative since boot.
    """

    def __init__(self, pid: int | None = None, clock: Clock = time.monotonic) -> None:
        self._proc = psutil.Process(pid)
        self._clock = clock
        self._hostname = socket.gethostname()
        self._cpu_count = psutil.cpu_count(logical=True)
        self._at = clock()
        self._proc_cpu = self._proc_cpu_seconds()
        self._host_cpu = psutil.cpu_times()
        self._net = self._net_counters()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _proc_cpu_seconds(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    @staticmethod
    def _net_counters() -> tuple[int, int] | None:
        try:
            c = psutil.net_io_counters()
        except (OSError, RuntimeError):
            return None
        return None if c is None else (c.bytes_recv, c.bytes_sent)

    def sample(self) -> dict[str, Any]:
        """The figures now; see the class docstring and schemas/monitor-health.schema.json."""
        now = self._clock()
        elapsed = now - self._at
        proc = self._proc
        with proc.oneshot():
            cpu_s = self._proc_cpu_seconds()
            rss = proc.memory_info().rss
            threads = proc.num_threads()
            try:
                fds: int | None = proc.num_fds()
            except (AttributeError, psutil.Error):  # no file descriptors on Windows
                fds = None
        cpu_rate = per_second(self._proc_cpu, cpu_s, elapsed)
        host_cpu = psutil.cpu_times()
        busy = _cpu_busy(host_cpu) - _cpu_busy(self._host_cpu)
        total = _cpu_total(host_cpu) - _cpu_total(self._host_cpu)
        host_percent = min(100.0, max(0.0, 100.0 * busy / total)) if total > 0 else None
        mem = psutil.virtual_memory()
        try:
            load: float | None = float(psutil.getloadavg()[0])
        except (AttributeError, OSError):
            load = None
        net = self._net_counters()
        prev_net = self._net
        self._at, self._proc_cpu, self._host_cpu, self._net = now, cpu_s, host_cpu, net
        return {
            "process": {
                "pid": proc.pid,
                "cpu_percent": None if cpu_rate is None else 100.0 * cpu_rate,
                "cpu_seconds": cpu_s,
                "rss_bytes": rss,
                "threads": threads,
                "open_fds": fds,
            },
            "host": {
                "hostname": self._hostname,
                "cpu_count": self._cpu_count,
                "cpu_percent": host_percent,
                "memory_percent": float(mem.percent),
                "memory_total_bytes": int(mem.total),
                "memory_available_bytes": int(mem.available),
                "load_1m": load,
            },
            "network": {
                "received_bytes": net[0] if net else None,
                "sent_bytes": net[1] if net else None,
                "received_bytes_per_s": per_second(
                    prev_net[0] if prev_net else None, net[0] if net else None, elapsed
                ),
                "sent_bytes_per_s": per_second(
                    prev_net[1] if prev_net else None, net[1] if net else None, elapsed
                ),
            },
        }


# ------------------------------------------------------------------------------------- event-loop lag
class LoopLagMonitor:
    """How late the event loop wakes a task that sleeps ``interval_s``: the loop's responsiveness.

    :meth:`run` (an asyncio task for the life of the worker) sleeps ``interval_s`` again and again and
    records each wake-up's lateness ``max(0, slept - interval_s)``: the time other callbacks held the
    loop (a slow event, a blocking call, a long GC pause). :meth:`report` gives the last lateness and the
    maximum and mean since the previous report, then starts a new period. A stall that is still going on
    cannot be seen until it ends (the monitor runs on the loop it measures).
    """

    def __init__(self, interval_s: float = 0.1, clock: Clock = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._max = 0.0
        self._sum = 0.0
        self._n = 0

    def record(self, lag_s: float) -> None:
        """Count one wake-up that came ``lag_s`` seconds late (negative values count as 0)."""
        lag_s = max(0.0, lag_s)
        self._last = lag_s
        self._max = max(self._max, lag_s)
        self._sum += lag_s
        self._n += 1

    async def run(self) -> None:
        """Probe forever (cancel the task to stop)."""
        clock, interval = self._clock, self.interval_s
        while True:
            start = clock()
            await asyncio.sleep(interval)
            self.record(clock() - start - interval)

    def report(self, reset: bool = True) -> dict[str, Any]:
        """``{lag_s, lag_max_s, lag_mean_s, samples, probe_interval_s}`` of the period since the previous
        report (``lag_s`` is the most recent probe); None values when no probe completed yet."""
        out = {
            "lag_s": self._last,
            "lag_max_s": self._max if self._n else None,
            "lag_mean_s": self._sum / self._n if self._n else None,
            "samples": self._n,
            "probe_interval_s": self.interval_s,
        }
        if reset:
            self._max, self._sum, self._n = 0.0, 0.0, 0
        return out


# ------------------------------------------------------------------------------------- consumer lag
@dataclass(frozen=True, slots=True)
class OffsetReading:
    """One partition's offsets at one moment; any of them may be unknown (None).

    ``end_offset``: the log end offset (high watermark, the offset the next record written will get).
    ``committed``: the consumer group's committed offset (the next offset to read after a restart).
    ``position``: the worker's own position, the next offset it will process (last processed + 1); more
    current than ``committed``, which trails it by up to a commit interval.
    ``start_offset``: the log start offset (the oldest record kept), where a consumer without a usable
    committed offset starts (``auto.offset.reset=earliest``).
    """

    topic: str
    partition: int
    end_offset: int | None
    committed: int | None
    position: int | None
    start_offset: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    @property
    def consumed(self) -> int | None:
        """Where the worker stands: its position; when it has processed nothing since the partition was
        assigned, where it will start: the committed offset, or the log start offset when nothing is
        committed (or the committed offset fell out of retention)."""
        if self.position is not None:
            return self.position
        known = [o for o in (self.committed, self.start_offset) if o is not None]
        return max(known) if known else None

    @property
    def lag(self) -> int | None:
        """Records written but not processed: ``end_offset - consumed`` (at least 0); None when unknown."""
        consumed = self.consumed
        if self.end_offset is None or consumed is None:
            return None
        return max(0, self.end_offset - consumed)


def lag_rows(
    readings: Iterable[OffsetReading],
    previous: Mapping[tuple[str, int], OffsetReading] | None = None,
    elapsed_s: float | None = None,
) -> list[dict[str, Any]]:
    """One row per reading, sorted by (topic, partition)::

        {topic, partition, start_offset, committed, position, end_offset, lag, input_rate_per_s,
         processing_rate_per_s}

    ``lag = end_offset - position``; when the worker has no position yet (nothing processed since the
    partition was assigned) ``end_offset`` minus where it will start (see :attr:`OffsetReading.consumed`).
    The rates compare with ``previous`` (the readings of the
    last report, ``elapsed_s`` seconds before): ``input_rate_per_s`` is the growth of the end offset
    (records written per second), ``processing_rate_per_s`` the growth of the position (or committed
    offset). A partition without a previous reading, or whose offset went back, has None rates.
    """
    prev = previous or {}
    rows = []
    for r in sorted(readings, key=lambda r: r.key):
        p = prev.get(r.key)
        rows.append(
            {
                "topic": r.topic,
                "partition": r.partition,
                "start_offset": r.start_offset,
                "committed": r.committed,
                "position": r.position,
                "end_offset": r.end_offset,
                "lag": r.lag,
                "input_rate_per_s": per_second(p.end_offset if p else None, r.end_offset, elapsed_s),
                "processing_rate_per_s": per_second(p.consumed if p else None, r.consumed, elapsed_s),
            }
        )
    return rows


def _sum(values: list[Any]) -> Any:
    """Sum, or None when any value is unknown (a partial sum would understate)."""
    if any(v is None for v in values):
        return None
    return sum(values)


def lag_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"total": lag, "topics": [{topic, partitions, lag, input_rate_per_s, processing_rate_per_s}]}``
    summed over the rows (per topic, sorted by name); a sum with an unknown part is None."""
    by_topic: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_topic.setdefault(row["topic"], []).append(row)
    topics = [
        {
            "topic": topic,
            "partitions": len(part),
            "lag": _sum([r["lag"] for r in part]),
            "input_rate_per_s": _sum([r["input_rate_per_s"] for r in part]),
            "processing_rate_per_s": _sum([r["processing_rate_per_s"] for r in part]),
        }
        for topic, part in sorted(by_topic.items())
    ]
    return {"total": _sum([t["lag"] for t in topics]), "topics": topics}


class LagTracker:
    """Keeps the previous readings, so each :meth:`update` can give rates as well as lag."""

    def __init__(self) -> None:
        self._previous: dict[tuple[str, int], OffsetReading] = {}
        self._at: float | None = None

    def update(
        self, readings: Iterable[OffsetReading], at: float, error: str | None = None
    ) -> dict[str, Any]:
        """The ``consumer_lag`` section of a report from readings taken at monotonic time ``at``:
        ``{total, topics, partitions, error}`` (``error``: why the offsets could not be read, else None)."""
        readings = list(readings)
        elapsed = at - self._at if self._at is not None else None
        rows = lag_rows(readings, self._previous, elapsed)
        self._previous = {r.key: r for r in readings}
        self._at = at
        return {**lag_totals(rows), "partitions": rows, "error": error}
