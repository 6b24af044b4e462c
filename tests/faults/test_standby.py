"""Standby replicas (MODELMON_STANDBY_REPLICAS=1): a kill -9 failover from a standby copy stays exact.

Two workers on the rocksdb store, each keeping a standby copy of the other's table partitions (join,
windows, alerts). The stream is the stream-core test's (duplicates, relabels, early and late labels,
orphans, invalid events). A first part is processed and the standbys have caught up; the rest is sent
in paced chunks, and one worker is killed (-9) while they arrive. The survivor takes the partitions over
from its standby copies (restoring only the changelog's tail) and finishes the stream. The final metric
events, rolling views, dead letters and feedback records must equal the offline oracle, as in the kill
test without standbys (tests/integration/test_stream_core.py).

The test also checks from the survivor's log that the standby copy was used: after the kill, its
recovery of the taken-over join-changelog partitions starts near their end, not at their beginning.
The seconds from the kill to the survivor's readiness are printed, never asserted (bench/standby_failover.py
measures failover with and without standbys on a larger state).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from modelmon.topics import create_topics
from tests.integration.streamcheck import (
    WorkerProcess,
    closers,
    make_stream,
    produce,
    stream_settings,
    wait_for_lag_zero,
)
from tests.integration.test_stream_core import _verify

pytestmark = pytest.mark.integration

WEB_PORTS = range(19766, 19770)  # web servers: the two free ones of these (the broker is below)
CHUNKS = 16
CHUNK_INTERVAL_S = 0.4
CHURN_CHUNK_INTERVAL_S = 2.5  # the join-leave variant: load for 40 s
KILL_AFTER_CHUNK = 6

_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|")
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def changelog_tables(text: str, title: str, topic: str) -> list[dict[int, int]]:
    """Every ``title`` table Faust logged (e.g. "Reading Starts At - Active"), as {partition: offset} of
    ``topic``; Faust writes a repeated topic name as a ditto mark."""
    tables: list[dict[int, int]] = []
    current: dict[int, int] | None = None
    name = None
    for line in text.splitlines():
        if title in line:
            current, name = {}, None
            tables.append(current)
            continue
        if current is None:
            continue
        row = _ROW.match(line)
        if row is None:
            if line.startswith("+") or line.startswith("| topic"):
                continue
            current = None
            continue
        if row.group(1) != "〃":
            name = row.group(1)
        if name == topic:
            current[int(row.group(2))] = int(row.group(3))
    return tables


def owned_partitions(text: str) -> set[int]:
    """The input partitions of the last stage-1 rebuild in a worker's log (logged in increasing order)."""
    owned: list[int] = []
    for m in re.finditer(r"stage 1 partition (\d+) rebuilt from", text):
        p = int(m.group(1))
        if owned and p <= owned[-1]:
            owned = []  # a new rebuild
        owned.append(p)
    return set(owned)


def first_stamp_after(text: str, needle: str) -> float | None:
    """Wall time of the first log line holding ``needle``."""
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m and needle in line:
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def store_differences(settings, worker: WorkerProcess, table: str, partitions: int) -> list[str]:
    """Keys whose value in the worker's local RocksDB partition differs from the newest record of that key
    in the table's changelog (the worker stopped gracefully, so both must hold the same: a standby copy
    that skipped changelog records would show here)."""
    from confluent_kafka import TopicPartition
    from rocksdict import AccessType, Options, Rdict

    from modelmon.kafka_clients import consumer

    topic = f"{settings.group_id}-{table}-changelog"
    tables = Path(settings.home) / "workers" / settings.group_id / worker.worker_id / "v1" / "tables"
    cons = consumer(settings, group_id=f"store-check-{time.time_ns()}")
    out: list[str] = []
    try:
        for p in range(partitions):
            tp = TopicPartition(topic, p, 0)
            end = cons.get_watermark_offsets(tp, timeout=10)[1]
            latest: dict[bytes, bytes | None] = {}
            if end > 0:
                cons.assign([tp])
                done = False
                deadline = time.monotonic() + 60
                while not done and time.monotonic() < deadline:
                    for msg in cons.consume(1000, timeout=1.0):
                        if msg.error() is not None:
                            continue
                        latest[msg.key()] = msg.value()
                        done = msg.offset() >= end - 1
                assert done, f"{topic}[{p}]: changelog not read to {end}"
            path = tables / f"{table}-{p}.db"
            local: dict[bytes, bytes] = {}
            if path.exists():
                db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
                try:
                    local = {k: v for k, v in db.items() if k != b"__faust\0offset__"}
                finally:
                    db.close()
            want = {k: v for k, v in latest.items() if v is not None}
            for key in sorted(set(want) | set(local)):
                if want.get(key) != local.get(key):
                    state = "missing" if key not in local else "extra" if key not in want else "differs"
                    out.append(f"{table}[{p}] {key[:60]!r}: {state} in the local store")
    finally:
        cons.close()
    return out


def _free_ports(candidates: range, n: int) -> list[int]:
    free = []
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        free.append(port)
        if len(free) == n:
            return free
    raise AssertionError(f"fewer than {n} free ports in {candidates}")


def _wait_for(what: str, check, timeout_s: float, workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}\n" + "\n".join(w.log_tail(30) for w in workers)
        time.sleep(0.3)


def _log(worker: WorkerProcess) -> str:
    return worker.log_path.read_text(errors="replace")


@pytest.mark.parametrize("churn", [False, True], ids=["kill", "join-leave-kill"])
def test_standby_failover_after_kill9_matches_the_oracle(settings, tmp_path: Path, churn: bool):
    """``churn``: before the kill, a third worker joins and leaves (gracefully) under load, so the standby
    copies are reassigned, and resume reading with a backlog, twice. The stream is then sent over 40 s, so
    its predictions all carry a ``ts``: one timed by its Kafka timestamp would lie more than the join
    horizon after its label's time, a boundary case the oracle does not model (docs/architecture.md §3)."""
    s = stream_settings(settings, home=str(tmp_path), store="rocksdb", standby_replicas=1)
    create_topics(s)
    workers = []
    ports = _free_ports(WEB_PORTS, 3)
    for worker_id, port in zip(("w1", "w2"), ports, strict=False):
        w = WorkerProcess(s, worker_id, tmp_path)
        w.port = port
        workers.append(w.start())
    survivor, victim = workers
    extra = WorkerProcess(s, "w3", tmp_path)
    extra.port = ports[2]
    try:
        stream = make_stream(seed=7)
        if churn:
            for kind, payload in stream.events:
                if kind == "p" and "ts" not in payload:
                    payload["ts"] = stream.base + 5.0  # where its label's time was drawn from
        third = len(stream.events) // 3
        produce(s, stream.events[:third])
        wait_for_lag_zero(s)
        # Both workers own input partitions and have started their standby copies of the other's.
        _wait_for(
            "both workers processing, with standby partitions",
            lambda: all(
                owned_partitions(_log(w)) and "Starting standby partitions" in _log(w) for w in workers
            ),
            90,
            workers,
        )
        time.sleep(3.0)  # the standbys read the changelog tail written meanwhile

        rest = stream.events[third:]
        size = -(-len(rest) // CHUNKS)
        chunks = [rest[i : i + size] for i in range(0, len(rest), size)]
        sent = threading.Event()
        failure: list[BaseException] = []

        def send() -> None:
            try:
                for i, chunk in enumerate(chunks):
                    if i == KILL_AFTER_CHUNK and not churn:
                        sent.set()
                    produce(s, chunk)
                    time.sleep(CHURN_CHUNK_INTERVAL_S if churn else CHUNK_INTERVAL_S)
            except BaseException as exc:  # reported by the test thread
                failure.append(exc)
            finally:
                sent.set()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        if churn:
            extra.start()
            _wait_for("the third worker processing", lambda: owned_partitions(_log(extra)), 90, workers)
            time.sleep(2.0)
            extra.stop()
            _wait_for(
                "the two workers processing again",
                lambda: all(len(owned_partitions(_log(w))) == s.input_partitions // 2 for w in workers),
                90,
                workers,
            )
            time.sleep(2.0)
        else:
            sent.wait(60)
        taken_over = owned_partitions(_log(victim))
        log_at_kill = len(_log(survivor))
        killed_at = time.time()
        victim.kill9()
        sender.join(120)
        assert not failure, failure
        assert taken_over, victim.log_tail(40)

        wait_for_lag_zero(s, timeout_s=180)
        produce(s, [("g", lab) for lab in stream.late_labels])
        wait_for_lag_zero(s)
        produce(s, closers(stream))
        _verify(s, stream, workers, crashed=True)

        after = _log(survivor)[log_at_kill:]
        topic = f"{s.group_id}-join-changelog"
        starts = changelog_tables(after, "Reading Starts At - Active", topic)
        highs = changelog_tables(after, "Highwater - Active", topic)
        assert starts and highs, f"no recovery after the kill in the survivor's log\n{survivor.log_tail(60)}"
        start, high = starts[0], highs[0]
        restored = sum(max(0, high[p] - start.get(p, -1)) for p in taken_over if p in high)
        total = sum(high[p] + 1 for p in taken_over if p in high)
        ready = first_stamp_after(after, "Worker ready")
        rebuilt = first_stamp_after(after, "rebuilt from")
        print(
            f"\nstandby failover: partitions {sorted(taken_over)} taken over; join changelog "
            f"{total} records, {restored} restored after the kill (the rest from the standby copy); "
            f"survivor ready {ready - killed_at if ready else float('nan'):.1f} s and stage 1 rebuilt "
            f"{rebuilt - killed_at if rebuilt else float('nan'):.1f} s after the kill "
            f"(session timeout {s.session_timeout_s:g} s)"
        )
        # Without a standby copy the survivor would restore (nearly) the whole changelog of those partitions.
        assert total > 0 and restored <= total // 2, (start, high, sorted(taken_over))
        # The survivor's store (standby copies + restored tails + its own writes) equals the changelogs.
        survivor.stop()
        diffs = store_differences(s, survivor, "join", s.input_partitions)
        diffs += store_differences(s, survivor, "windows", s.output_partitions)
        assert not diffs, f"{len(diffs)} keys differ, e.g. {diffs[:10]}"
    finally:
        for w in [*workers, extra]:
            w.stop()
