"""The Faust worker: agents that only move data between Kafka and the pure core.

Stage 1 (partitioned like the inputs, by request_id) consumes predictions, ground-truth and an internal
tick topic; the join table holds one entry per request (see join.py) and is the only durable stage-1
state. Per-partition window accumulators live in memory (partition.py) and are rebuilt from the table
after every rebalance. Each tick expires pending joins, sends changed windows to the internal partials
topic (key = model) and a watermark heartbeat to every partials partition. Joined pairs go to
model-feedback (feedback.py); records the consumer skipped are read back (see _read_skipped).

Stage 2 (partitioned by model) keeps the latest snapshot per source partition in the windows table
(rollup.py), publishes changed windows to model-metrics on a timer, and the final revision once every
input partition's watermark has passed the window's end plus the join horizon. It also keeps each model
version's data-quality reference. Health reports go to monitor-health (worker_health.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from typing import Any, ClassVar

import faust
import orjson
import uvloop
from faust.types import EventT
from faust.web.drivers import aiohttp as faust_aiohttp

from . import join, log_throttle, rollup
from .aggregate import WindowAccumulator
from .alerts.rules import RulesError, RuleSet, load_rules
from .changelog import ChangelogError, ChangelogWriter
from .feedback import FeedbackPolicy, feedback_record
from .kafka_clients import faust_credentials
from .outage import OutageClock
from .partition import META_KEY_PREFIX, PartitionState, meta_record_key
from .schemas import InvalidEvent, decode_ground_truth, decode_prediction
from .settings import Settings
from .topics import model_partition, topic_name
from .web.api import Api
from .web.prometheus import SeriesCounters
from .worker_health import WorkerHealth

log = logging.getLogger("modelmon.worker")

MAX_DEAD_LETTER_PAYLOAD = 8192

# RocksDB per table partition (ignored by the memory store). Faust's defaults (64 MiB write buffers, up to
# three of them, and a 2 GiB block cache, per partition) let memtables hold the whole join table in RAM:
# a worker with 1 M pending joins peaked at 660 MiB. Small buffers flush to disk instead.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 2 * 2**20,
    "max_write_buffer_number": 2,
    "block_cache_size": 4 * 2**20,
}


def ticks_topic_name(settings: Settings) -> str:
    return f"{settings.group_id}-ticks"


def partials_topic_name(settings: Settings) -> str:
    return f"{settings.group_id}-partials"


def dead_letter_record(
    reason: str,
    field: str | None,
    message: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    payload: bytes | None,
) -> dict[str, Any]:
    """A dead-letter event (schemas/dead-letter.schema.json): reason, where it came from, the bytes."""
    raw = payload or b""
    clipped = raw[:MAX_DEAD_LETTER_PAYLOAD]
    try:
        text, encoding = clipped.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(clipped).decode("ascii"), "base64"
    return {
        "reason": reason,
        "field": field,
        "message": message,
        "source": {"topic": topic, "partition": partition, "offset": offset, "timestamp_ms": timestamp_ms},
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "payload": text,
        "payload_encoding": encoding,
        "payload_truncated": len(raw) > len(clipped),
        "payload_size": len(raw),
        "ts": rollup.rfc3339(time.time()),
    }


class Worker:
    """Builds the Faust app and its agents for one Settings."""

    def __init__(self, settings: Settings, input_partitions: int) -> None:
        self.s = settings
        self.n_inputs = input_partitions
        self.app = _App(
            settings.group_id,
            broker=f"kafka://{settings.bootstrap}",
            # The MODELMON_KAFKA_* security settings for Faust's aiokafka clients (librdkafka clients get
            # them from kafka_clients): SASL, TLS or both, like the SDK and the CLI.
            broker_credentials=faust_credentials(settings),
            store="rocksdb://" if settings.store == "rocksdb" else "memory://",
            datadir=str(settings.worker_dir),
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_bind=settings.web_host,
            canonical_url=settings.web_url,
            web_application_options={"client_max_size": 64 * 1024},
            topic_partitions=input_partitions,
            topic_replication_factor=settings.replication_factor,
            # Standby copies of other workers' table partitions (rocksdb store only, settings.py): kept up
            # to date from the changelogs after this worker's own (active) recovery, so a failover restores
            # only the tail. Faust's in_recovery covers active partitions only (watch_recovery).
            table_standby_replicas=settings.standby_replicas,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
            producer_acks=-1,
            # Commit on the interval only: a count-triggered commit stalls Faust's fetch loop.
            broker_commit_every=1_000_000,
            broker_commit_interval=1.0,
            stream_wait_empty=False,
            # Above what one fetch brings in, so Faust's per-partition back-pressure (pausing a partition
            # whose buffer fills) stays out of the way: it is a suspect in stalls seen after rebalances.
            # Not higher: with a backlog the buffer fills, and 65536 buffered events cost about 50 MiB.
            stream_buffer_maxsize=8192,
        )
        app = self.app
        self.pred_name = topic_name(settings, "predictions")
        self.gt_name = topic_name(settings, "ground-truth")
        self.ticks_name = ticks_topic_name(settings)
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.inputs = app.topic(self.pred_name, self.gt_name, self.ticks_name, **raw)
        self.ticks = app.topic(self.ticks_name, partitions=input_partitions, internal=True, **raw)
        self.partials = app.topic(
            partials_topic_name(settings), partitions=settings.output_partitions, internal=True, **raw
        )
        self.metrics_topic = app.topic(topic_name(settings, "model-metrics"), **raw)
        self.dead_letter = app.topic(topic_name(settings, "dead-letter"), **raw)
        self.alerts_topic = app.topic(topic_name(settings, "alerts"), **raw)
        self.feedback_name = topic_name(settings, "model-feedback")
        self.feedback = FeedbackPolicy(
            settings.feedback, settings.feedback_sample, settings.feedback_min_abs_error
        )
        self.joins = app.Table(
            "join", partitions=input_partitions, key_type=bytes, value_type=bytes, options=ROCKSDB_OPTIONS
        )
        self.windows = app.Table(
            "windows",
            partitions=settings.output_partitions,
            key_type=bytes,
            value_type=bytes,
            options=ROCKSDB_OPTIONS,
        )

        # Alert state per (rule, model, version), written from stage 2 (partition q of the model).
        self.alerts = app.Table(
            "alerts",
            partitions=settings.output_partitions,
            key_type=bytes,
            value_type=bytes,
            options=ROCKSDB_OPTIONS,
        )
        self.rules, self._rules_stamp = self._load_rules()
        self.series_q: dict[tuple[str, str | None], int] = {}  # stage-2 partition of each series
        self.alert_index: dict[int, dict[bytes, tuple[str, str, str | None]]] = defaultdict(dict)
        self._alert_low: dict[int, float] = {}  # low watermark of the last alert evaluation per q

        self.parts: dict[int, PartitionState] = {}
        self.stale = True  # set on rebalance: stage-1 memory is rebuilt from the join table
        self._rebalances = 0  # a rebuild that saw this change under it starts again
        self.watermarks: dict[int, dict[int, float]] = defaultdict(dict)  # stage-2 partition -> input p -> wm
        # stage-2 partition -> {window key: (window start, finalized)}: finalization scans this, not the table
        self.window_index: dict[int, dict[bytes, tuple[float, bool]]] = defaultdict(dict)
        self.window_rev: dict[bytes, int] = {}  # window key -> revision held (the API's cache key)
        self.stage2_stale = True
        self.dirty_windows: set[bytes] = set()
        # (model, version) -> {window key: window start}: which windows a rolling view merges
        self.series: dict[tuple[str, str | None], dict[bytes, float]] = defaultdict(dict)
        self.counts: dict[str, int] = defaultdict(int)
        self.series_updated: dict[tuple[str, str | None], float] = {}  # wall time a series last changed
        # (model, version) -> the rolling-view events last published (what the API serves as "views")
        self.latest_views: dict[tuple[str, str | None], dict[str, dict[str, Any] | None]] = {}
        self.series_counters = SeriesCounters()  # cumulative counters and histograms for /metrics
        # (model, version) -> data-quality reference record (rollup.new_reference), and decoded frozen ones
        self.references: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._reference_accs: dict[tuple[str, str | None], WindowAccumulator] = {}
        self.api = Api(self)
        self.api.install(self.app.web.web_app)

        app.agent(self.inputs, name="modelmon.stage1")(self.stage1)
        app.agent(self.partials, name="modelmon.stage2")(self.stage2)
        app.timer(settings.tick_interval_s)(self.send_ticks)
        app.timer(settings.emit_interval_s)(self.emit_metrics)
        app.timer(5.0)(self.watch_recovery)
        app.timer(10.0)(self.log_progress)
        app.timer(5.0)(self.reload_rules)
        self.health = WorkerHealth(self)  # monitor-health reports (worker_health.py); the API serves the last
        app.timer(settings.health_interval_s)(self.health.publish)
        app.task(self.health.loop_lag.run)
        self._recovery_progress: tuple[float, int] | None = None
        self.changelog: ChangelogWriter | None = None
        app.task(self._install_commit_barrier)
        self._last_stage1: float | None = None
        # (topic, partition) -> (last offset processed, when it last moved): the stuck-partition check
        self._tp_progress: dict[tuple[str, int], tuple[int, float]] = {}
        # (topic, partition) -> (processed offset seen uncommitted, since when)
        self._commit_wait: dict[tuple[str, int], tuple[int, float]] = {}
        self._admin: Any = None
        self._offsets_reader: Any = None  # committed offsets (see committed_offsets)
        self._offsets_lock = threading.Lock()
        self.outage = OutageClock()  # broker reachability as the watchdog sees it (outage.py)
        self._resend_on_replay = True  # until a rebuild has read the committed input offsets
        app.on_partitions_assigned.connect(self._on_rebalance)
        app.on_partitions_revoked.connect(self._on_rebalance)

    # -- durable table writes -------------------------------------------------------------------------

    def _put(self, table: Any, key: bytes, value: bytes | None, partition: int) -> None:
        """Write (or delete, value None) a table key; its changelog record goes out through librdkafka.

        The commit barrier (:meth:`_install_commit_barrier`) waits for those records before any input
        offset is committed, so a committed offset always means its table writes are acknowledged.
        """
        self._changelog().put(table, key, value, partition)

    def _changelog(self) -> ChangelogWriter:
        """The changelog producer, created on first use (constructing a Worker stays free of clients)."""
        if self.changelog is None:
            self.changelog = ChangelogWriter(self.s)
        return self.changelog

    async def _install_commit_barrier(self) -> None:
        """Make every producer flush (Faust runs one before each commit and on revoke) flush the changelog."""
        producer = self.app.producer
        flush = producer.flush
        changelog = self._changelog()
        loop = asyncio.get_running_loop()

        async def flush_including_changelog() -> None:
            barrier = changelog.barrier()  # every table write of the records being committed
            await flush()
            try:
                acked = await loop.run_in_executor(None, changelog.wait, barrier)
            except ChangelogError as exc:
                log.error("%s: restarting without committing", exc)
                restart_process()
            changelog.persist_offsets(
                [self.joins, self.windows, self.alerts], acked, self.app.assignor.assigned_actives()
            )

        producer.flush = flush_including_changelog

    async def _on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        self.stale = True
        self.stage2_stale = True
        self._rebalances += 1
        self._tp_progress = {}  # progress is measured from the new assignment
        self._commit_wait = {}

    async def log_progress(self) -> None:
        """One info line of verdict counts every 10 s: what this worker has been doing."""
        log.info("progress: %s", ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())))

    async def watch_recovery(self) -> None:
        """Restart this process when recovery or stage-1 processing stops making progress.

        faust-streaming can stall while restoring partitions taken over from a killed worker ("No event
        received for active tp ... since recovery start"), and has been seen to stop delivering events
        after such a rebalance. Ticks reach every owned partition each MODELMON_TICK_INTERVAL_S, so a
        healthy worker always has stage-1 events. A fresh process recovers normally, and restarts are
        exact by design (see docs/architecture.md), so the watchdog restarts; it first logs every
        asyncio task's stack for diagnosis.

        Not while the broker does not answer: then every stall is the outage, and a restarted process
        could not start either. Stalls are measured from the broker's return (outage.py), which gives
        Faust's clients the stall time to reconnect and resume on their own.
        """
        recovery = self.app.tables.recovery
        now = time.monotonic()
        if not await self._broker_answers(now):
            return
        # Active recovery only. With standby replicas Faust keeps consuming the standby changelog
        # partitions for as long as the worker runs, but in faust-streaming 0.15.3 in_recovery ends when
        # the active partitions are restored (need_recovery() and active_remaining_total() count actives
        # only; standbys are resumed after that), and stage 1 runs meanwhile: a standby that is still
        # catching up is neither a stall nor a reason to hold stage 1 back.
        if recovery.in_recovery:
            remaining = recovery.active_remaining_total()
            if self._recovery_progress is None or self._recovery_progress[1] != remaining:
                self._recovery_progress = (now, remaining)
                return
            stalled = now - self.outage.since(self._recovery_progress[0])
            if stalled >= self.s.recovery_stall_s:
                log.error(
                    "table recovery made no progress for %.0f s (%d changes left): restarting",
                    stalled,
                    remaining,
                )
                restart_process()
            return
        self._recovery_progress = None
        owns_inputs = any(tp.topic == self.ticks_name for tp in self.app.consumer.assignment())
        if self._last_stage1 is None or not owns_inputs:
            self._last_stage1 = now
            return
        idle = now - self.outage.since(self._last_stage1)
        if idle >= self.s.recovery_stall_s + 10 * self.s.tick_interval_s:
            log.error("stage 1 processed no event (not even a tick) for %.0f s: restarting", idle)
            for task in asyncio.all_tasks():
                log.error("task %r:\n%s", task.get_name(), "".join(_format_stack(task)))
            restart_process()
        stuck = await self._stuck_input_partitions(now)
        log.debug("watchdog: stage-1 idle %.1f s, stuck input partitions %s", idle, stuck)
        if stuck:
            log.error(
                "input partitions %s have unread or uncommitted records, no progress for %.0f s: restarting",
                sorted(stuck),
                self.s.recovery_stall_s,
            )
            restart_process()

    async def _broker_answers(self, now: float) -> bool:
        """Ask the broker for one topic's metadata (in a thread); log when an outage begins and ends."""
        loop = asyncio.get_running_loop()
        try:
            reachable = await loop.run_in_executor(None, self._broker_reachable)
        except Exception:  # the check itself failed: do not hold the watchdog back on that
            reachable = True
        was_down = self.outage.down
        lasted = self.outage.observe(reachable, now)
        if not reachable and not was_down:
            log.warning(
                "Kafka at %s does not answer: waiting for it, no watchdog restart until it does",
                self.s.bootstrap,
            )
        elif lasted is not None:
            log.warning(
                "Kafka answers again after about %.0f s: resuming; stalls are measured from now", lasted
            )
        return reachable

    def _broker_reachable(self, timeout_s: float = 4.0) -> bool:
        """True when a metadata request for the predictions topic is answered within ``timeout_s``."""
        from confluent_kafka import KafkaException

        try:
            meta = self.admin().list_topics(topic=self.pred_name, timeout=timeout_s)
        except KafkaException:
            return False
        return bool(meta.brokers)

    async def _stuck_input_partitions(self, now: float) -> list[str]:
        """Owned input partitions with records past what we processed and no progress for the stall time.

        faust-streaming has been seen to stop delivering an input partition after a rebalance while
        ticks keep flowing; the end offsets come from an admin call, independent of Faust's consumer.
        """
        owned = [tp for tp in self.app.consumer.assignment() if tp.topic in (self.pred_name, self.gt_name)]
        if not owned:
            return []
        loop = asyncio.get_running_loop()
        try:
            ends = await loop.run_in_executor(
                None, self._end_offsets, [(tp.topic, tp.partition) for tp in owned]
            )
        except Exception as exc:
            log.warning("end-offset look-up failed: %s", exc)
            if "LEADER_EPOCH" in str(exc):
                # After a broker restart librdkafka's admin ListOffsets keeps sending the leader epoch it
                # had cached, and fails until its metadata is refreshed (minutes): start a fresh client.
                self._admin = None
            return []
        stuck = []
        for key, (end, committed) in ends.items():
            # Until an event arrives, progress is measured from where the group's committed offset starts.
            offset, since = self._tp_progress.setdefault(key, (committed - 1, now))
            if end - 1 > offset and now - self.outage.since(since) >= self.s.recovery_stall_s:
                stuck.append(f"{key[0]}-{key[1]}")
            elif end - 1 <= offset:
                self._tp_progress[key] = (offset, now)  # caught up: nothing to wait for
            # Processed but never committed: Faust's offset bookkeeping has been seen to stop committing a
            # partition that came back to a worker after a rebalance.
            if committed > offset:
                self._commit_wait.pop(key, None)
                continue
            waited_offset, waiting_since = self._commit_wait.setdefault(key, (offset, now))
            if committed > waited_offset:
                self._commit_wait[key] = (offset, now)
            elif now - self.outage.since(waiting_since) >= self.s.recovery_stall_s:
                stuck.append(f"{key[0]}-{key[1]} (processed to {offset}, committed {committed})")
                self._log_consumer_bookkeeping(key)
        return stuck

    def _log_consumer_bookkeeping(self, key: tuple[str, int]) -> None:
        """Faust's private per-partition offset state, for diagnosing a partition that stopped committing."""
        consumer = self.app.consumer
        tp = next((tp for tp in consumer.assignment() if (tp.topic, tp.partition) == key), None)
        if tp is None:
            return
        acked = list(getattr(consumer, "_acked", {}).get(tp, []))
        log.error(
            "faust bookkeeping for %s-%s: committed=%s read=%s acked=%s...(%d) gaps=%s",
            key[0],
            key[1],
            getattr(consumer, "_committed_offset", {}).get(tp),
            getattr(consumer, "_read_offset", {}).get(tp),
            acked[:5],
            len(acked),
            getattr(consumer, "_gap", {}).get(tp),
        )

    def admin(self) -> Any:
        """The worker's AdminClient (watchdog and health report), created on first use; thread-safe."""
        if self._admin is None:
            from .kafka_clients import admin_client

            self._admin = admin_client(self.s)
        return self._admin

    def committed_offsets(
        self, tps: list[tuple[str, int]], timeout_s: float = 10.0
    ) -> dict[tuple[str, int], int]:
        """{(topic, partition): the group's committed offset} (negative: none yet; a partition whose
        look-up failed is left out), read by a consumer of the group that never joins it; thread-safe.

        Not AdminClient.list_consumer_group_offsets: librdkafka's coordinator requests of the admin API
        can abort the whole process (assertion `eonce->refcnt > 0`, librdkafka issues 4605 and 3663) when
        the connection to the coordinator drops, which every broker outage does; it killed a worker in
        tests/faults/test_broker_outage.py. The consumer's offset fetch does not take that path.
        """
        from confluent_kafka import TopicPartition

        from .kafka_clients import consumer

        with self._offsets_lock:
            if self._offsets_reader is None:
                self._offsets_reader = consumer(self.s, group_id=self.s.group_id)
            reader = self._offsets_reader
        listed = reader.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout_s)
        return {(tp.topic, tp.partition): tp.offset for tp in listed if tp.error is None}

    def _end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """{(topic, partition): (log end offset, the group's committed offset or 0)} via the admin API."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in tps}
        ends = {
            (tp.topic, tp.partition): fut.result().offset
            for tp, fut in self.admin().list_offsets(request, request_timeout=10).items()
        }
        committed = {key: max(offset, 0) for key, offset in self.committed_offsets(tps, 10.0).items()}
        return {key: (end, committed.get(key, 0)) for key, end in ends.items()}

    # -- stage 1 -------------------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """Fold the join table into fresh per-partition state for the partitions we own now.

        A million entries take seconds: the loop yields every few thousand so stage 2, timers and the
        consumer's heartbeats keep running, and marks progress for the watchdog.
        """
        while True:
            generation = self._rebalances
            await self._rebuild_once()
            if generation == self._rebalances:
                self.stale = False
                return
            log.info("rebalanced during the stage-1 rebuild: rebuilding again")

    def _committed_inputs(self, partitions: set[int]) -> dict[tuple[str, int], int] | None:
        """{(topic tag, partition): the group's committed offset} of the owned input partitions; None
        when the admin API does not answer (then replays re-send feedback instead, see on_record)."""
        names = {self.pred_name: join.PRED_TOPIC, self.gt_name: join.GT_TOPIC}
        try:
            listed = self.committed_offsets([(t, p) for t in names for p in sorted(partitions)], 15.0)
        except Exception as exc:  # any failure: fall back to re-sending on replay
            log.warning("committed input offsets unavailable (%s): feedback re-sent on replay", exc)
            return None
        return {(names[t], p): max(offset, 0) for (t, p), offset in listed.items()}

    async def _rebuild_once(self) -> None:
        owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.pred_name}
        committed = None
        if owned:
            loop = asyncio.get_running_loop()
            committed = await loop.run_in_executor(None, self._committed_inputs, owned)
        self._resend_on_replay = committed is None
        resent = 0
        unconfirmed: list[tuple[bytes, bytes, int]] = []  # entries written by uncommitted inputs
        epoch = time.time_ns() // 1_000_000
        self.parts = {
            p: PartitionState(p, self.s.window_s, self.s.join_horizon_s, epoch, self.s.idle_advance_s)
            for p in owned
        }
        now = time.time()
        for state in self.parts.values():
            state.expect((self.pred_name, self.gt_name), now)
        # One pass over the table, each entry folded into its partition as it is read: holding the
        # decoded entries (a million pending joins) would cost gigabytes. The rocksdb store iterates the
        # active partitions only; entries of other partitions (standby copies) are skipped by "p" anyway.
        counts = dict.fromkeys(self.parts, 0)
        metas: dict[int, dict] = {}
        read = 0
        for key, raw in self.joins.items():
            value = orjson.loads(raw)
            if key.startswith(META_KEY_PREFIX):
                metas[int(key[len(META_KEY_PREFIX) :])] = value
                continue
            state = self.parts.get(value["p"])
            if state is not None:
                state.restore(key, value)
                counts[value["p"]] += 1
                joined_at = value.get("j")
                if (
                    committed is not None
                    and joined_at is not None
                    and joined_at[1] >= committed.get((joined_at[0], value["p"]), 0)
                    and self.feedback.sampled(key)
                ):
                    # Joined by an input not committed yet: its feedback record may have died with the
                    # previous owner (the commit barrier only covers committed inputs). Re-send now
                    # rather than on the replay, which Faust's consumer has been seen to skip.
                    self.send_feedback(key.decode(), value)
                    resent += 1
                if committed is not None and any(
                    offset >= committed.get((tag, value["p"]), 0) for tag, offset in value["o"].items()
                ):
                    unconfirmed.append((key, raw, value["p"]))
            read += 1
            if read % 5000 == 0:
                self._last_stage1 = time.monotonic()
                await asyncio.sleep(0)
        for p, state in self.parts.items():
            state.finish_restore(metas.get(p))
            log.info("stage 1 partition %d rebuilt from %d join entries", p, counts[p])
        # The local store of a restarted process can hold writes whose changelog records died with the
        # old process (a kill -9 or a watchdog restart between the write and its delivery). Their inputs
        # are replays now, which write nothing, so the changelog would never get them and a later owner
        # restoring from it would miss them: send them again (the same values) to the changelog. Only the
        # changelog: a store write here would land in the partition of the event that triggered the
        # rebuild (Faust's RocksDB store picks the partition from the current event), not the entry's.
        changelog = self.joins.changelog_topic.get_topic_name()
        for key, raw, partition in unconfirmed:
            self._changelog().send(changelog, key, raw, partition)
        if resent or unconfirmed:
            log.info(
                "feedback re-sent for %d joins, changelog re-written for %d entries of uncommitted inputs",
                resent,
                len(unconfirmed),
            )

    async def _state(self, partition: int) -> PartitionState:
        if self.stale:
            await self._rebuild()
        state = self.parts.get(partition)
        if state is None:  # assigned after the last rebuild without a rebalance signal
            await self._rebuild()
            state = self.parts[partition]
        return state

    async def stage1(self, stream: Any) -> None:
        async for event in stream.events():
            await self.on_input(event)

    async def on_input(self, event: EventT) -> None:
        self._last_stage1 = now = time.monotonic()
        msg = event.message
        state = await self._state(msg.partition)
        if msg.topic == self.ticks_name:
            await self.on_tick(state, orjson.loads(msg.value)["wall"])
            return
        is_pred = msg.topic == self.pred_name
        first = state.skipped_before(join.PRED_TOPIC if is_pred else join.GT_TOPIC, msg.offset)
        if first is not None:
            for record in await self._read_skipped(msg.topic, msg.partition, first, msg.offset):
                await self.on_record(state, record, is_pred)
        self._tp_progress[(msg.topic, msg.partition)] = (msg.offset, now)
        await self.on_record(state, msg, is_pred)

    async def on_record(self, state: PartitionState, msg: Any, is_pred: bool) -> None:
        """One input record (a Faust message, or a record read back by :meth:`_read_skipped`)."""
        tag = join.PRED_TOPIC if is_pred else join.GT_TOPIC
        state.note_offset(tag, msg.offset)
        try:
            if msg.key is None:
                raise InvalidEvent("null_key", None, "record key is null: the key must be the request_id")
            if is_pred:
                parsed = decode_prediction(msg.value, self.s.max_payload_bytes)
            else:
                parsed = decode_ground_truth(msg.value, self.s.max_payload_bytes)
            if parsed.request_id.encode() != msg.key:
                raise InvalidEvent("key_mismatch", "request_id", "request_id differs from the record key")
        except InvalidEvent as exc:
            await self.reject(state, msg, exc.reason, exc.field, exc.message, _model_hint(msg.value))
            return
        ts = parsed.ts if parsed.ts is not None else msg.timestamp
        state.observe(ts, time.time(), msg.topic)
        before = self._get(msg.key)
        if is_pred:
            outcome = join.apply_prediction(
                before,
                parsed,
                ts,
                msg.offset,
                msg.partition,
                self.s.window_s,
                self.s.join_horizon_s,
                payload_bytes=len(msg.value),
                keep_features=self.feedback.sampled(msg.key),
            )
        else:
            outcome = join.apply_label(before, parsed, ts, msg.offset, msg.partition, self.s.join_horizon_s)
        self.counts[outcome.verdict] += 1
        if outcome.entry is None:
            if (
                self._resend_on_replay
                and before is not None
                and before.get("j") == [tag, msg.offset]
                and self.feedback.sampled(msg.key)
            ):
                # The rebuild could not read the committed offsets, so the replay of the event that
                # made the join re-sends its feedback record (it may have died with the process).
                self.send_feedback(parsed.request_id, before)
            return
        if state.is_final(join.owner(outcome.entry, self.s.window_s)[2]):
            # Its window was already published as final: the event is kept in dead-letter, not counted.
            await self.reject(
                state,
                msg,
                "too_late",
                "ts",
                f"event time {ts} belongs to a window that closed after the join horizon",
                None,
                count=False,
            )
            return
        state.apply_change(msg.key, before, outcome.entry)
        self._put(self.joins, msg.key, orjson.dumps(outcome.entry), msg.partition)
        if outcome.verdict == "joined" and self.feedback.sampled(msg.key):
            self.send_feedback(parsed.request_id, outcome.entry)

    def send_feedback(self, request_id: str, entry: dict) -> None:
        """Publish a joined record to model-feedback (key = model) when the feedback policy keeps it."""
        record = feedback_record(request_id, entry, time.time())
        if self.feedback.keeps(record):
            model = entry["m"]
            partition = model_partition(model, self.s.output_partitions)  # as the key would place it
            self._changelog().send(self.feedback_name, model.encode(), orjson.dumps(record), partition)
            self.counts["feedback:published"] += 1

    async def _read_skipped(self, topic: str, partition: int, first: int, end: int) -> list[Any]:
        """The records at offsets ``first`` .. ``end - 1`` of an input partition, read with a consumer of
        our own, for records Faust's consumer skipped.

        Input offsets are contiguous (no compaction; the SDK does not use transactions), so a record more
        than one past the highest processed offset means records were skipped: faust-streaming's fetch
        loop can drop records after a rebalance and still commit past them (docs/architecture.md §9).
        Stage 1 reads them itself and processes them first, in order; Faust is not asked to seek (that
        leaves it with doubled acknowledgements and a stalled commit). Offsets with no record (retention,
        transaction markers) are simply absent. A range that cannot be read restarts the process.
        """
        loop = asyncio.get_running_loop()
        try:
            records = await loop.run_in_executor(None, self._fetch_range, topic, partition, first, end)
        except Exception as exc:
            log.error("%s-%d: records %d..%d were skipped and could not be read (%s): restarting",
                      topic, partition, first, end - 1, exc)  # fmt: skip
            restart_process()
            raise
        log.warning(
            "%s-%d: records %d..%d were not delivered by the consumer: %d read back and processed",
            topic, partition, first, end - 1, len(records),
        )  # fmt: skip
        self.counts["offsets:read_back"] += len(records)
        return records

    def _fetch_range(
        self, topic: str, partition: int, first: int, end: int, timeout_s: float = 30.0
    ) -> list[Any]:
        """Records ``first`` <= offset < ``end`` of one partition (blocking; raises when incomplete)."""
        from types import SimpleNamespace

        from confluent_kafka import TopicPartition

        from .kafka_clients import consumer

        probe = consumer(self.s, group_id=f"{self.s.group_id}-read-back")
        out: list[Any] = []
        try:
            probe.assign([TopicPartition(topic, partition, first)])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for m in probe.consume(500, timeout=1.0):
                    if m.error() is not None:
                        continue
                    if m.offset() >= end:
                        return out
                    out.append(
                        SimpleNamespace(
                            topic=topic,
                            partition=partition,
                            offset=m.offset(),
                            key=m.key(),
                            value=m.value() or b"",
                            timestamp=m.timestamp()[1] / 1000.0,
                        )
                    )
            raise TimeoutError(f"read {len(out)} records in {timeout_s:g} s without reaching offset {end}")
        finally:
            probe.close()

    def _get(self, key: bytes) -> dict | None:
        raw = self.joins.data.get(key)
        return orjson.loads(raw) if raw is not None else None

    async def reject(
        self,
        state: PartitionState,
        msg: Any,
        reason: str,
        field: str | None,
        message: str,
        model: str | None,
        *,
        count: bool = True,
    ) -> None:
        """Dead-letter an input and count it in the window of its arrival (the partition's invalid tally)."""
        key = meta_record_key(msg.partition)
        topic_tag = join.PRED_TOPIC if msg.topic == self.pred_name else join.GT_TOPIC
        after = state.record_invalid(
            self._get(key),
            topic_tag,
            msg.offset,
            msg.timestamp,
            model or join.UNKNOWN_MODEL,
            reason,
            count=count,
        )
        if after is None:
            return  # a replay of an input already counted and dead-lettered
        self._put(self.joins, key, orjson.dumps(after), msg.partition)
        self.counts[f"invalid:{reason}"] += 1
        record = dead_letter_record(
            reason,
            field,
            message,
            msg.topic,
            msg.partition,
            msg.offset,
            int(msg.timestamp * 1000) if msg.timestamp else None,
            msg.key,
            msg.value,
        )
        await self.dead_letter.send(key=msg.key, value=orjson.dumps(record))

    async def on_tick(self, state: PartitionState, wall: float) -> None:
        state.tick(wall)
        for request_id in state.due_expiries():
            entry = self._get(request_id)
            if entry is None:
                continue
            expiry = join.expires_at(entry, self.s.join_horizon_s)
            if expiry is not None and expiry <= state.watermark:
                expired = join.expire(entry)
                state.apply_change(request_id, entry, expired)
                self._put(self.joins, request_id, orjson.dumps(expired), state.partition)
        settled = state.due_settlements()
        sends = [
            await self.partials.send(key=snap.model.encode(), value=orjson.dumps(snap.to_dict()))
            for snap in state.flush()
        ]
        wm = state.watermark if state.watermark > float("-inf") else None
        heartbeat = orjson.dumps({"hb": state.partition, "wm": wm, "n": self.n_inputs})
        for q in range(self.s.output_partitions):
            sends.append(await self.partials.send(key=None, value=heartbeat, partition=q))
        meta_key = meta_record_key(state.partition)
        meta_before = self._get(meta_key)
        meta = state.meta_update(meta_before)
        prunes = meta is not None and meta_before is not None and len(meta["c"]) < len(meta_before["c"])
        if settled or prunes:
            # Delete settled entries and closed windows' tallies only once the final snapshots are
            # acknowledged: until then a crash must still be able to rebuild those windows from the table.
            await asyncio.gather(*sends)
            for request_id in settled:
                entry = self._get(request_id)
                if (
                    entry is not None
                    and join.settles_at(entry, self.s.window_s, self.s.join_horizon_s) <= state.watermark
                ):
                    self._put(self.joins, request_id, None, state.partition)
        if meta is not None:
            self._put(self.joins, meta_key, orjson.dumps(meta), state.partition)

    async def send_ticks(self) -> None:
        wall = orjson.dumps({"wall": time.time()})
        for tp in self.app.consumer.assignment():
            if tp.topic == self.ticks_name:
                await self.ticks.send(value=wall, partition=tp.partition)

    # -- stage 2 -------------------------------------------------------------------------------------

    def _rebuild_stage2(self) -> None:
        owned = {
            tp.partition
            for tp in self.app.consumer.assignment()
            if tp.topic == self.partials.get_topic_name()
        }
        self.window_index = defaultdict(dict)
        self.window_rev = {}
        # Only owned windows may be emitted: a revoked partition's keys can still be read from the local
        # store (outside an event, rocksdb looks a key up in every open partition, standby copies too).
        self.dirty_windows = set()
        self.series = defaultdict(dict)
        self.latest_views = {}
        self.references = {}
        self._reference_accs = {}
        for key, raw in self.windows.items():
            value = orjson.loads(raw)
            q = value.get("q")
            if key.startswith(rollup.REF_PREFIX):
                if q in owned:
                    self.references[(value["m"], value["v"])] = value
                continue
            if q in owned:
                self.window_index[q][key] = (value["w"], value["fin"])
                self.window_rev[key] = value["rev"]
                self.series[(value["m"], value["v"])][key] = value["w"]
                self.series_q[(value["m"], value["v"])] = q
                if not value["fin"]:
                    self.dirty_windows.add(key)
        for model, version in self.series_counters.series():
            if (model, version or None) not in self.series:
                self.series_counters.forget(model, version)
        self.alert_index = defaultdict(dict)
        self._alert_low = {}
        for key, raw in self.alerts.items():
            value = orjson.loads(raw)
            if value.get("q") in owned:
                self.alert_index[value["q"]][key] = (value["rule"], value["m"], value["v"])
        self.stage2_stale = False

    async def stage2(self, stream: Any) -> None:
        async for event in stream.events():
            await self.on_partial(event)

    async def on_partial(self, event: EventT) -> None:
        if self.stage2_stale:
            self._rebuild_stage2()
        msg = event.message
        q = msg.partition
        body = orjson.loads(msg.value)
        if "hb" in body:
            # A partition that has seen no event yet reports null: it holds every window open.
            self.watermarks[q][body["hb"]] = body["wm"] if body["wm"] is not None else float("-inf")
            await self.finalize_due(q, body["n"])
            await self.evaluate_alerts(q, body["n"])
            return
        key = rollup.window_key(body["m"], body["v"], body["w"])
        raw = self.windows.data.get(key)
        current = orjson.loads(raw) if raw is not None else None
        updated = rollup.apply_snapshot(current, body)
        if updated is None:
            self.counts["stage2:ignored_snapshots"] += 1
            return
        before = current["parts"].get(str(body["p"])) if current is not None else None
        self.series_counters.observe(body["m"], body["v"], before["acc"] if before else None, body["acc"])
        updated["q"] = q
        self._put(self.windows, key, orjson.dumps(updated), q)
        self.window_index[q][key] = (updated["w"], False)
        self.window_rev[key] = updated["rev"]
        self.series[(updated["m"], updated["v"])][key] = updated["w"]
        self.series_q[(updated["m"], updated["v"])] = q
        self.series_updated[(updated["m"], updated["v"])] = time.time()
        self.dirty_windows.add(key)
        ref = self.references.get((updated["m"], updated["v"]))
        if ref is None:
            ref = rollup.new_reference(updated["m"], updated["v"], updated["w"], self.s.reference_s)
            self._put_reference(ref, q)
        elif rollup.extend_reference(ref, updated["w"]):
            self._put_reference(ref, q)

    # -- data-quality reference -----------------------------------------------------------------------

    def _put_reference(self, ref: dict[str, Any], q: int) -> None:
        ref["q"] = q
        self.references[(ref["m"], ref["v"])] = ref
        self._reference_accs.pop((ref["m"], ref["v"]), None)
        self._put(self.windows, rollup.reference_key(ref["m"], ref["v"]), orjson.dumps(ref), q)

    def reference_acc(
        self, model: str, version: str | None, window: float | None
    ) -> WindowAccumulator | None:
        """The frozen reference a window (None: a rolling view) of the series is compared with, if any."""
        ref = self.references.get((model, version))
        if not rollup.reference_applies(ref, window):
            return None
        acc = self._reference_accs.get((model, version))
        if acc is None:
            assert ref is not None
            acc = WindowAccumulator.from_dict(ref["acc"]) if ref["acc"] else WindowAccumulator()
            self._reference_accs[(model, version)] = acc
        return acc

    def _freeze_references(self, q: int, low: float) -> None:
        """Freeze every open reference of partition q that every input partition's event time has passed.

        It holds the features of its finalized windows already; those still open are added as they are
        now (see :func:`rollup.reference_due` for when that is). The series' later windows get a new
        revision, since their data-quality section now compares with the reference.
        """
        for series, ref in list(self.references.items()):
            if ref.get("q") != q or not rollup.reference_due(ref, low, self.s.join_horizon_s):
                continue
            windows = self.series.get(series, {})
            for key, w in sorted(windows.items(), key=lambda kv: kv[1]):
                raw = self.windows.data.get(key)
                if raw is None or not ref["from"] <= w < ref["to"]:
                    continue
                value = orjson.loads(raw)
                if not value["fin"]:
                    rollup.fold_reference(ref, w, rollup.merged(value))
            ref["frozen"] = True
            self._put_reference(ref, q)
            for key, w in windows.items():
                raw = self.windows.data.get(key) if w >= ref["to"] else None
                if raw is None:
                    continue
                value = orjson.loads(raw)
                if value["fin"]:
                    continue
                value["rev"] += 1
                self._put(self.windows, key, orjson.dumps(value), q)
                self.window_rev[key] = value["rev"]
                self.dirty_windows.add(key)

    async def finalize_due(self, q: int, partitions: int) -> None:
        wms = self.watermarks[q]
        if len(wms) < partitions:
            return  # not every input partition has reported yet
        low = min(wms.values())
        self._freeze_references(q, low)
        span = self.s.window_s + self.s.join_horizon_s
        index = self.window_index[q]
        for key, (window, fin) in sorted(index.items(), key=lambda kv: kv[1][0]):
            if window + span > low:
                break
            if fin:
                if window + span + self.s.join_horizon_s <= low:
                    self._put(self.windows, key, None, q)  # the tombstone outlived any replay
                    del index[key]
                    self.window_rev.pop(key, None)
                    for series in self.series.values():
                        series.pop(key, None)
                continue
            raw = self.windows.data.get(key)
            if raw is None:
                del index[key]
                self.window_rev.pop(key, None)
                continue
            value = orjson.loads(raw)
            ref = self.references.get((value["m"], value["v"]))
            if ref is not None and rollup.fold_reference(ref, window, rollup.merged(value)):
                self._put_reference(ref, q)
            metric = rollup.metric_event(
                value,
                self.s.window_s,
                time.time(),
                final=True,
                reference=self.reference_acc(value["m"], value["v"], window),
            )
            if metric is not None:
                await self.metrics_topic.send(key=value["m"].encode(), value=orjson.dumps(metric))
            tomb = rollup.finalize(value)
            tomb["q"] = q
            self._put(self.windows, key, orjson.dumps(tomb), q)
            index[key] = (window, True)
            self.window_rev[key] = tomb["rev"]
            self.dirty_windows.discard(key)
            self.counts["stage2:final_windows"] += 1

    # -- alerts ---------------------------------------------------------------------------------------

    def _load_rules(self) -> tuple[RuleSet, tuple[float, int] | None]:
        """The rules (none when unset); an invalid file raises RulesError, so the worker refuses it."""
        path = self.s.alert_rules
        if not path:
            return RuleSet(()), None
        rules = load_rules(path, self.s.window_s)
        stat = os.stat(path)
        log.info("alert rules: %d loaded from %s", len(rules.rules), path)
        self._warn_about_views(rules)
        return rules, (stat.st_mtime, stat.st_size)

    def _warn_about_views(self, rules: RuleSet) -> None:
        """Stage 2 keeps a window about two join horizons: a longer rolling view sees only part of itself."""
        keep = 2 * self.s.join_horizon_s
        for rule in rules.rules:
            if rule.view_s is not None and rule.view_s > keep:
                log.warning(
                    "alert rules: %s has a %g s view, but windows are kept about %g s "
                    "(2 x MODELMON_JOIN_HORIZON_S): its views cover only the windows still kept",
                    rule.name,
                    rule.view_s,
                    keep,
                )

    async def reload_rules(self) -> None:
        """Reload the rules file when it changed; an invalid file is reported and the old rules stay."""
        path = self.s.alert_rules
        if not path:
            return
        try:
            stat = os.stat(path)
        except OSError as exc:
            log.error(
                "alert rules: cannot read %s (%s); keeping the %d loaded rules",
                path,
                exc,
                len(self.rules.rules),
            )
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._rules_stamp:
            return
        self._rules_stamp = stamp
        try:
            rules = load_rules(path, self.s.window_s)
        except RulesError as exc:
            for problem in exc.problems:
                log.error("alert rules: %s", problem)
            log.error("alert rules: %s is invalid; keeping the %d loaded rules", path, len(self.rules.rules))
            return
        self.rules = rules
        self._warn_about_views(rules)
        self._alert_low = {}  # evaluate again at the next heartbeat, under the new rules
        log.info("alert rules: reloaded %d rules from %s", len(rules.rules), path)

    def _window_source(self, model: str, version: str | None) -> Any:
        """source(a, b): the merged accumulator of the series' windows starting in [a, b), decoded once."""
        windows = sorted((w, key) for key, w in self.series.get((model, version), {}).items())
        starts = [w for w, _ in windows]
        cache: dict[bytes, WindowAccumulator] = {}

        def source(a: float, b: float) -> WindowAccumulator:
            out = WindowAccumulator()
            for i in range(bisect_left(starts, a), bisect_left(starts, b)):
                key = windows[i][1]
                acc = cache.get(key)
                if acc is None:
                    raw = self.windows.data.get(key)
                    acc = cache[key] = (
                        rollup.merged(orjson.loads(raw)) if raw is not None else WindowAccumulator()
                    )
                out.merge(acc)
            return out

        return source

    async def evaluate_alerts(self, q: int, partitions: int) -> None:
        """Evaluate every rule for the series of stage-2 partition q up to the low watermark.

        Runs while processing a partials record of partition q, so the alert-state writes land in
        changelog partition q, and the commit barrier makes them durable before the record is committed.
        """
        if not self.rules.rules and not self.alert_index[q]:
            return
        # Imported on first use: the engine's statistics pull in scipy (about 70 MiB of RSS).
        from .alerts import engine as alert_engine

        wms = self.watermarks[q]
        if len(wms) < partitions:
            return
        low = min(wms.values())
        if low <= self._alert_low.get(q, float("-inf")):
            return
        self._alert_low[q] = low
        now = time.time()
        events: list[dict[str, Any]] = []
        by_name = self.rules.by_name()
        index = self.alert_index[q]
        # States of rules that were removed, changed or no longer select the series: close and forget.
        for key, (rule_name, model, version) in list(index.items()):
            rule = by_name.get(rule_name)
            raw = self.alerts.data.get(key)
            state = orjson.loads(raw) if raw is not None else None
            if (
                state is not None
                and rule is not None
                and rule.digest == state["d"]
                and rule.matches(model, version)
            ):
                continue
            if state is not None:
                reason = "rule removed" if rule is None else "rule changed"
                event = alert_engine.retire(rule_name, state, model, version, reason, low, now)
                if event is not None:
                    events.append(event)
            self._put(self.alerts, key, None, q)
            del index[key]
        series = {s for s, sq in self.series_q.items() if sq == q}
        series.update((m, v) for _, m, v in index.values())
        for model, version in sorted(series, key=lambda s: (s[0], s[1] or "")):
            rules = self.rules.for_series(model, version)
            if not rules:
                continue
            source = self._window_source(model, version)
            windows = self.series.get((model, version), {})
            for rule in rules:
                key = f"{rule.name}|{model}|{version or ''}".encode()
                raw = self.alerts.data.get(key)
                if raw is not None:
                    state = orjson.loads(raw)
                elif windows:
                    state = alert_engine.new_state(rule, min(windows.values()))
                else:
                    continue
                due = alert_engine.due_windows(rule, state, low, self.s.window_s, limit=2000)
                if not due:
                    continue
                emitted = []
                for w in due:
                    emitted += alert_engine.evaluate(
                        rule, state, model, version, w, self.s.window_s, source, now
                    )
                if emitted:
                    state["ev"] = emitted[-1]  # the API's view of this alert
                events += emitted
                state.update(q=q, rule=rule.name, m=model, v=version)
                self._put(self.alerts, key, orjson.dumps(state), q)
                index[key] = (rule.name, model, version)
                self.counts["alerts:evaluations"] += len(due)
        for event in events:
            self.counts[f"alerts:{event['state']}"] += 1
            log.info(
                "alert %s %s %s@%s: %s",
                event["state"],
                event["rule"],
                event["model"],
                event["version"],
                event["message"],
            )
            await self.alerts_topic.send(key=event["model"].encode(), value=orjson.dumps(event))

    async def emit_metrics(self) -> None:
        """Publish every changed window, then the rolling views of the model versions they belong to.

        Not between a rebalance and the stage-2 rebuild (the next partials event), which keeps only the
        windows this worker still owns.
        """
        if not self.dirty_windows or self.stage2_stale:
            return
        keys, self.dirty_windows = self.dirty_windows, set()
        now = time.time()
        changed_series = set()
        for key in sorted(keys):
            raw = self.windows.data.get(key)
            if raw is None:
                continue
            value = orjson.loads(raw)
            changed_series.add((value["m"], value["v"]))
            if value["fin"]:
                continue
            reference = self.reference_acc(value["m"], value["v"], value["w"])
            metric = rollup.metric_event(value, self.s.window_s, now, reference=reference)
            if metric is not None:
                await self.metrics_topic.send(key=value["m"].encode(), value=orjson.dumps(metric))
        for series_key in sorted(changed_series, key=lambda k: (k[0], k[1] or "")):
            views = self.latest_views[series_key] = self._rolling_events(series_key, now)
            for event in views.values():
                if event is not None:
                    await self.metrics_topic.send(key=series_key[0].encode(), value=orjson.dumps(event))

    def _rolling_events(self, series_key: tuple[str, str | None], now: float) -> dict[str, dict | None]:
        """The rolling-view events of a series from its windows in the longest view."""
        series = self.series.get(series_key, {})
        if not series:
            return {}
        longest = max(view_s for _, view_s in rollup.ROLLING_VIEWS)
        newest = max(series.values())
        values = []
        for key, window in series.items():
            raw = self.windows.data.get(key) if window + longest > newest else None
            if raw is not None:
                values.append(orjson.loads(raw))
        reference = self.reference_acc(*series_key, None)
        return {
            view: rollup.rolling_event(values, view, view_s, self.s.window_s, now, reference)
            for view, view_s in rollup.ROLLING_VIEWS
        }

    def rolling_views(self, series_key: tuple[str, str | None]) -> dict[str, dict | None]:
        """The rolling views last published for a series (computed once when none were yet)."""
        views = self.latest_views.get(series_key)
        if views is None:
            views = self.latest_views[series_key] = self._rolling_events(series_key, time.time())
        return {view: views.get(view) for view, _ in rollup.ROLLING_VIEWS}


def _model_hint(raw: bytes | None) -> str | None:
    """The model named by an invalid event, when it can be read, so its count lands on that model."""
    if not raw:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    model = obj.get("model") if isinstance(obj, dict) else None
    if isinstance(model, str) and 0 < len(model) <= 128 and all(c.isalnum() or c in "._-" for c in model):
        return model
    return None


def _format_stack(task: asyncio.Task) -> list[str]:
    import io

    out = io.StringIO()
    task.print_stack(file=out)
    return [out.getvalue()]


RESTARTS_ENV = "MODELMON_WORKER_RESTARTS"
"""Set by :func:`restart_process` (how many times this process replaced itself); not a setting."""


def restart_process() -> None:
    """Replace this process with a fresh copy of itself (same command line and environment).

    The count of restarts goes along in the environment, so the new copy knows it is one and waits for
    the broker as long as it takes (see :func:`run_worker`)."""
    import os
    import sys

    os.environ[RESTARTS_ENV] = str(int(os.environ.get(RESTARTS_ENV) or 0) + 1)
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


class _Web(faust_aiohttp.Web):
    """Faust's aiohttp server without its own pages (/router, /table, /graph, /stats, its index at /)."""

    default_blueprints: ClassVar[list] = []
    production_blueprints: ClassVar[list] = []
    debug_blueprints: ClassVar[list] = []
    optional_blueprints: ClassVar[list] = []


class _App(faust.App):
    def _new_web(self) -> _Web:
        return _Web(self)


class _FaustWorker(faust.Worker):
    """Faust's worker with the root logger held at the requested level, and repeated errors throttled.

    Faust leaves the root logger at DEBUG (only its handler filters), so every debug call in aiokafka and
    Faust built a log record per event: about 7% of a busy worker's time.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if level:
            logger.setLevel(level)
        log_throttle.install(logger)  # a broker outage must not bury the log in retry errors


def _wait_for_cluster_after_restart(settings: Settings, restarts: int) -> None:
    """A watchdog restart waits for Kafka without a deadline, saying so every 30 s.

    A first start gives up after 30 s (a wrong address should fail loudly), but a restarted worker ran
    before: its configuration is right and the broker is away (an outage, a rolling restart), so it
    resumes when the broker returns instead of exiting and needing a person or a supervisor.
    """
    import sys

    from .kafka_clients import KafkaUnavailable, wait_for_cluster

    started = time.monotonic()
    while True:
        try:
            wait_for_cluster(settings, timeout_s=30)
            return
        except KafkaUnavailable as exc:
            print(
                f"modelmon: worker restart {restarts}: still waiting for Kafka after "
                f"{time.monotonic() - started:.0f} s ({exc})",
                file=sys.stderr,
                flush=True,
            )


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Check the topics, then run the Faust worker until it is stopped (Ctrl-C / SIGTERM)."""
    from .kafka_clients import check_aiokafka_login, wait_for_cluster
    from .topics import check_copartitioned, ensure_internal_topics

    if settings.alert_rules:
        load_rules(settings.alert_rules, settings.window_s)  # refuse an invalid file before starting anything
    # Refused credentials end the worker here with one clear line (KafkaAuthError, exit 1): Faust's
    # clients would retry them forever. Checked with librdkafka, then with aiokafka as Faust connects.
    if os.environ.get(RESTARTS_ENV):
        _wait_for_cluster_after_restart(settings, int(os.environ[RESTARTS_ENV]))
    wait_for_cluster(settings, timeout_s=30)
    asyncio.run(check_aiokafka_login(settings))
    partitions = check_copartitioned(settings)
    ensure_internal_topics(
        settings,
        {ticks_topic_name(settings): partitions, partials_topic_name(settings): settings.output_partitions},
    )
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    # uvloop: Faust creates futures and tasks per event; measured 13% less CPU per event than asyncio's loop.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    worker = Worker(settings, partitions)
    faust_worker = _FaustWorker(worker.app, loglevel=loglevel, quiet=True)
    faust_worker.execute_from_commandline()
    return 0
