"""The read side of a worker's stage-2 state for the HTTP API: ownership, readiness and the bodies.

Reads only what this worker's tables hold (the stage-2 partitions it owns); :mod:`.api` forwards and
gathers across workers. Window metric events are cached by (window, revision), so a dashboard refreshing
every few seconds recomputes only the windows that changed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson
import psutil
from faust.exceptions import ConsumerNotStarted

from .. import rollup
from ..topics import model_partition
from . import prometheus, views

if TYPE_CHECKING:
    from ..worker import Worker

EVENT_CACHE_SIZE = 4096


class StageReads:
    """Answers of one worker from its own partitions; see the module docstring."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.s = worker.s
        self._events: OrderedDict[tuple[bytes, int], dict[str, Any] | None] = OrderedDict()
        self._tasks: dict[tuple[str, str | None], str] = {}
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the measurement

    # -- ownership and readiness ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self.w.app.conf.canonical_url).rstrip("/")

    def model_partition(self, model: str) -> int:
        return model_partition(model, self.s.output_partitions)

    def _assignment(self) -> set[Any]:
        """The consumer's assigned partitions; none before Faust has started its consumer thread (the web
        server answers first: /api/v1/health of a starting worker was a 500, seen in the rebalance test)."""
        try:
            return self.w.app.consumer.assignment()
        except ConsumerNotStarted:
            return set()

    def owned_outputs(self) -> set[int]:
        topic = self.w.partials.get_topic_name()
        return {tp.partition for tp in self._assignment() if tp.topic == topic}

    def owned_inputs(self) -> set[int]:
        return {tp.partition for tp in self._assignment() if tp.topic == self.w.pred_name}

    def partition_owners(self) -> dict[int, str]:
        """Stage-2 partition -> web URL of the worker owning it, from the group's last assignment."""
        topic = self.w.windows.changelog_topic.get_topic_name()
        owners: dict[int, str] = {}
        for url, topics in self.w.app.assignor.table_metadata(topic).items():
            for partition in topics.get(topic, ()):
                owners[partition] = str(url).rstrip("/")
        return owners

    def not_ready_reason(self) -> str | None:
        """Why this worker cannot serve exact numbers now, or None when it can."""
        app = self.w.app
        if getattr(app, "rebalancing", False):
            return "rebalancing"
        recovery = app.tables.recovery
        if recovery.in_recovery:
            return f"recovering tables ({recovery.active_remaining_total()} changelog records left)"
        if len(self.partition_owners()) < self.s.output_partitions:
            return "starting: not every stage-2 partition has an owner yet"
        return None

    # -- series -----------------------------------------------------------------------------------------

    def _series(self) -> dict[tuple[str, str | None], dict[bytes, float]]:
        """This worker's series (owned partitions only) -> {window key: window start}."""
        w = self.w
        if w.stage2_stale:
            w._rebuild_stage2()
        owned = self.owned_outputs()
        return {k: v for k, v in w.series.items() if v and w.series_q.get(k) in owned}

    def _value(self, key: bytes) -> dict[str, Any] | None:
        raw = self.w.windows.data.get(key)
        return orjson.loads(raw) if raw is not None else None

    def _task(self, series: tuple[str, str | None], windows: dict[bytes, float]) -> str | None:
        task = self._tasks.get(series)
        if task is None:
            for key, _ in sorted(windows.items(), key=lambda kv: -kv[1]):
                value = self._value(key)
                if value is not None:
                    task = views.task_of(rollup.merged(value))
                    if task is not None:
                        self._tasks[series] = task
                        break
        return task

    def _entry(self, series: tuple[str, str | None], windows: dict[bytes, float]) -> dict[str, Any]:
        return views.model_version_entry(
            series[0],
            series[1],
            windows.values(),
            self.s.window_s,
            self._task(series, windows),
            self.w.series_updated.get(series),
        )

    def _event(self, key: bytes, now: float) -> dict[str, Any] | None:
        """The window's metric event, cached by revision (known without reading the table)."""
        rev = self.w.window_rev.get(key)
        if rev is not None and (key, rev) in self._events:
            self._events.move_to_end((key, rev))
            return self._events[(key, rev)]
        value = self._value(key)
        if value is None:
            return None
        cache_key = (key, value["rev"])
        if cache_key in self._events:
            self._events.move_to_end(cache_key)
            return self._events[cache_key]
        reference = self.w.reference_acc(value["m"], value["v"], value["w"])
        event = views.window_event(value, self.s.window_s, now, reference)
        self._events[cache_key] = event
        if len(self._events) > EVENT_CACHE_SIZE:
            self._events.popitem(last=False)
        return event

    def _select(
        self, model: str, filtered: bool, version: str | None
    ) -> list[tuple[tuple[str, str | None], dict[bytes, float]]] | None:
        chosen = [
            (series, windows)
            for series, windows in self._series().items()
            if series[0] == model and (not filtered or series[1] == version)
        ]
        chosen.sort(key=lambda sw: views.version_key(sw[0][1]))
        return chosen or None

    # -- bodies -------------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return [self._entry(series, windows) for series, windows in self._series().items()]

    def model(self, model: str, filtered: bool, version: str | None) -> dict[str, Any] | None:
        chosen = self._select(model, filtered, version)
        if chosen is None:
            return None
        now = time.time()
        out = []
        for series, windows in chosen:
            newest = max(windows, key=lambda k: windows[k])
            entry = self._entry(series, windows)
            entry["current"] = self._event(newest, now)
            entry["views"] = self.w.rolling_views(series)
            out.append(entry)
        return {"model": model, "versions": out}

    def windows(
        self,
        model: str,
        filtered: bool,
        version: str | None,
        start: float | None,
        end: float | None,
        limit: int,
    ) -> dict[str, Any] | None:
        chosen = self._select(model, filtered, version)
        if chosen is None:
            return None
        starts = {(series[1], key): w for series, windows in chosen for key, w in windows.items()}
        keys, truncated = views.select_windows(starts, start, end, limit)
        now = time.time()
        events = [e for e in (self._event(key, now) for _, key in keys) if e is not None]
        events.sort(key=lambda e: (e["window"]["start"], views.version_key(e["model_version"])))
        return {
            "model": model,
            "version": version if filtered else None,
            "from": rollup.rfc3339(start) if start is not None else None,
            "to": rollup.rfc3339(end) if end is not None else None,
            "limit": limit,
            "truncated": truncated,
            "windows": events,
        }

    def alerts(self) -> list[dict[str, Any]]:
        """The last alert event of every (rule, model, version) state of the owned partitions."""
        w = self.w
        if w.stage2_stale:
            w._rebuild_stage2()
        owned = self.owned_outputs()
        out = []
        for q, index in w.alert_index.items():
            if q not in owned:
                continue
            for key in index:
                raw = w.alerts.data.get(key)
                if raw is None:
                    continue
                event = orjson.loads(raw).get("ev")
                if event is not None:
                    out.append(event)
        return out

    def _process_stats(self) -> dict[str, Any]:
        """This process's resident memory, CPU seconds, threads and open descriptors (psutil)."""
        proc = self._process
        with proc.oneshot():
            cpu = proc.cpu_times()
            try:
                fds: int | None = proc.num_fds()
            except (AttributeError, psutil.Error):
                fds = None
            return {
                "rss_bytes": proc.memory_info().rss,
                "cpu_seconds": cpu.user + cpu.system,
                "open_fds": fds,
                "threads": proc.num_threads(),
            }

    def prometheus_text(self) -> str:
        """/metrics: this worker's series (counters, histograms, rolling-view gauges), alerts and itself."""
        process = self._process_stats()
        w = self.w
        ready = self.not_ready_reason() is None
        families = w.series_counters.families()
        if ready:  # while recovering, rolling views and alert states may be partial: left out
            families += prometheus.view_families({s: w.rolling_views(s) for s in self._series()})
            families += prometheus.alert_families(self.alerts())
        families += prometheus.worker_families(self.s.worker_id, ready, dict(w.counts), process)
        families += prometheus.health_families(w.health.latest, w.health.publisher_state())
        return prometheus.exposition(families)

    def health(self) -> dict[str, Any]:
        """This worker: process resources, partitions, table sizes, verdict counters, the group's workers,
        and its latest health report."""
        stats = self._process_stats()
        process = {
            "cpu_percent": self._process.cpu_percent(None),  # since the previous health request
            "rss_bytes": stats["rss_bytes"],
            "threads": stats["threads"],
            "open_fds": stats["open_fds"],
        }
        owners = self.partition_owners()
        workers: dict[str, list[int]] = {}
        for q, url in sorted(owners.items()):
            workers.setdefault(url, []).append(q)
        w = self.w
        return {
            "worker_id": self.s.worker_id,
            "time": rollup.rfc3339(time.time()),
            "ready": self.not_ready_reason() is None,
            "url": self.url,
            "process": process,
            "partitions": {"input": sorted(self.owned_inputs()), "output": sorted(self.owned_outputs())},
            "tables": {
                "pending_joins": sum(state.pending for state in w.parts.values()) if not w.stale else None,
                "windows": sum(len(index) for index in w.window_index.values()),
                "alert_states": sum(len(index) for index in w.alert_index.values()),
            },
            "counters": dict(sorted(w.counts.items())),
            "workers": [{"url": url, "output_partitions": qs} for url, qs in sorted(workers.items())],
            "report": w.health.latest,  # the last monitor-health report (None before the first)
        }
