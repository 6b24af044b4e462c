"""Failover after kill -9 with and without standby replicas (MODELMON_STANDBY_REPLICAS).

    .venv/bin/python bench/standby_failover.py [--pending 200000] [--standby 0 1] [--repeat 1]

For each standby setting, fresh topics: N predictions without labels (4 models, ten minutes of event
time, a 30-day join horizon, so all N stay pending joins) are preloaded; two workers (rocksdb store,
own data folders) start from empty state and run until the group has committed every input offset and
every window was published with the right count; then they run 20 s more (the standby copies catch up).
Worker 2 is killed (-9), and one prediction per input partition ("probe" model, event time now) is sent
at once. Measured from the kill: when the survivor was assigned the partitions (the session timeout
decides that), finished restoring tables, rebuilt stage 1, and published the probe window with all P
predictions, i.e. processes the taken-over partitions with their state, the failover time. The join
changelog records the survivor restored after the kill are read from Faust's log.

Runs against its own local broker (BENCH_BROKER_PORT, BENCH_HOME as in bench/common.py) and writes the
figures to /tmp/standby-figures.md (not docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import HOME, bench_settings, end_offsets, input_partitions, machine
from bench.memory_recovery import (
    KeysByPartition,
    MetricsWatch,
    WorkerProcess,
    pending_rows,
    say,
    write_predictions,
)

from modelmon.broker import LocalBroker
from modelmon.kafka_clients import admin_client, producer
from modelmon.settings import Settings
from modelmon.topics import create_topics, topic_name

OUT = Path("/tmp/standby-figures.md")
WEB_PORTS = (19768, 19769)
SESSION_TIMEOUT_S = 10.0
SETTLE_S = 20.0
_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|")
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _table(text: str, title: str, topic: str) -> dict[int, int]:
    """The first ``title`` table of Faust's log in ``text``, {partition: offset} of ``topic``."""
    rows: dict[int, int] = {}
    inside, name = False, None
    for line in text.splitlines():
        if title in line:
            inside = True
            continue
        if not inside:
            continue
        row = _ROW.match(line)
        if row is None:
            if line.startswith("+") or line.startswith("| topic"):
                continue
            break
        name = row.group(1) if row.group(1) != "〃" else name
        if name == topic:
            rows[int(row.group(2))] = int(row.group(3))
    return rows


def _stamps(text: str, needle: str) -> list[float]:
    out = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m and needle in line:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def _owned(text: str) -> list[int]:
    owned: list[int] = []
    for m in re.finditer(r"stage 1 partition (\d+) rebuilt from", text):
        p = int(m.group(1))
        if owned and p <= owned[-1]:
            owned = []
        owned.append(p)
    return owned


def wait_committed(settings: Settings, workers: list[WorkerProcess], timeout_s: float) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException

    tps = input_partitions(settings)
    ends = end_offsets(settings, tps)
    admin = admin_client(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive()
        try:
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.group_id, tps)])
            got = {
                (tp.topic, tp.partition): tp.offset
                for tp in res[settings.group_id].result(10).topic_partitions
            }
        except KafkaException:
            got = {}
        if got and all(got.get(k, -1) >= v for k, v in ends.items() if v > 0):
            return
        time.sleep(0.5)
    raise SystemExit("the workers did not commit every input offset in time")


def probe(settings: Settings, model: str) -> int:
    """One prediction per input partition at the current time; returns how many."""
    keys = KeysByPartition(settings.input_partitions, seed=int(time.time()))
    prod = producer(settings)
    ts = time.time()
    for p in range(settings.input_partitions):
        rid = keys.take(p)
        body = {"request_id": rid, "model": model, "prediction": "legit", "ts": ts, "latency_ms": 1.0}
        prod.produce(topic_name(settings, "predictions"), orjson.dumps(body), rid.encode())
    prod.flush(30)
    return settings.input_partitions


def wait_probe(settings: Settings, start: dict, model: str, want: int, t0: float, timeout_s: float) -> float:
    from confluent_kafka import TopicPartition

    from modelmon.kafka_clients import consumer

    cons = consumer(settings, group_id=f"bench-probe-{time.time_ns()}")
    cons.assign([TopicPartition(topic_name(settings, "model-metrics"), p, off) for p, off in start.items()])
    try:
        while time.time() - t0 < timeout_s:
            for msg in cons.consume(1000, timeout=0.2):
                if msg.error() is not None:
                    continue
                event = orjson.loads(msg.value())
                if event.get("model") == model and event.get("view") == "window":
                    if event["traffic"]["predictions"] == want:
                        return time.time() - t0
    finally:
        cons.close()
    raise SystemExit(f"the probe window was not published with {want} predictions within {timeout_s:.0f} s")


def run(base: Settings, standby: int, pending: int, rep: int, timeout_s: float) -> dict:
    tag = f"sb{standby}r{rep}x{time.time_ns() % 10**7}"
    settings = base.with_(
        topic_prefix=f"{tag}.",
        store="rocksdb",
        window_s=60,
        join_horizon_s=30 * 86400,
        idle_advance_s=86400,
        emit_interval_s=1.0,
        tick_interval_s=1.0,
        session_timeout_s=SESSION_TIMEOUT_S,
        standby_replicas=standby,
    )
    create_topics(settings)
    now_ms = int(time.time() * 1000)
    data = write_predictions(settings, pending_rows(pending, 4, 600, now_ms - 3_600_000, seed=17), 17)
    say(f"standby {standby}: preloaded {data.records:,} predictions, {len(data.expected)} windows")
    logs = [HOME / f"{tag}-w{i + 1}.log" for i in range(2)]
    workers = [
        WorkerProcess(settings.with_(worker_id=f"{tag}-w{i + 1}", web_port=WEB_PORTS[i]), logs[i])
        for i in range(2)
    ]
    survivor, victim = workers
    try:
        t_start = time.time()
        wait_committed(settings, workers, timeout_s)
        watch = MetricsWatch(settings)
        try:
            watch.wait_correct(survivor, data.expected, timeout_s)
        finally:
            watch.close()
        warm_s = time.time() - t_start
        say(f"standby {standby}: both workers up to date after {warm_s:.0f} s; settling {SETTLE_S:.0f} s")
        time.sleep(SETTLE_S)
        before = logs[0].read_text(errors="replace")
        taken = _owned(logs[1].read_text(errors="replace"))
        start = MetricsWatch.ends(settings)
        t_kill = time.time()
        victim.stop(signal.SIGKILL)
        want = probe(settings, "probe")
        probe_s = wait_probe(settings, start, "probe", want, t_kill, timeout_s)
        time.sleep(1.0)
        after = logs[0].read_text(errors="replace")[len(before) :]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()
    topic = f"{settings.group_id}-join-changelog"
    high = _table(after, "Highwater - Active", topic)
    first = _table(after, "Reading Starts At - Active", topic)
    restored = sum(max(0, high[p] - first.get(p, -1)) for p in taken if p in high)
    total = sum(high[p] + 1 for p in taken if p in high)

    def since(needle: str) -> float | None:
        stamps = _stamps(after, needle)
        return stamps[0] - t_kill if stamps else None

    rebuilt = _stamps(after, "rebuilt from")
    rebuilt_s = rebuilt[min(len(rebuilt), settings.input_partitions) - 1] - t_kill if rebuilt else None
    result = {
        "standby": standby,
        "pending": data.records,
        "taken_over": taken,
        "join_changelog_records": total,
        "restored_after_kill": restored,
        "assigned_s": since("Executing _on_partitions_assigned"),
        "recovered_s": since("Worker ready"),
        "rebuilt_s": rebuilt_s,
        "probe_s": probe_s,
        "warm_s": warm_s,
        "restarts": after.count("restarting"),
    }
    say(f"standby {standby}: {result}")
    return result


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, default=200_000)
    parser.add_argument("--standby", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    HOME.mkdir(parents=True, exist_ok=True)
    base = bench_settings()
    LocalBroker(base, log=lambda m: None).start()
    results = [
        run(base, standby, args.pending, rep, args.timeout)
        for rep in range(args.repeat)
        for standby in args.standby
    ]
    lines = [
        "# Standby replicas: failover after kill -9",
        "",
        f"{machine()}; two workers (rocksdb), {args.pending:,} pending joins preloaded (about half per "
        f"worker), session timeout {SESSION_TIMEOUT_S:g} s; seconds after the kill of worker 2.",
        "",
        "| standby replicas | join changelog of the taken-over partitions | restored after the kill | "
        "partitions assigned | tables restored (ready) | stage 1 rebuilt | probe published right |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['standby']} | {r['join_changelog_records']:,} | {r['restored_after_kill']:,} | "
            f"{fmt(r['assigned_s'])} | {fmt(r['recovered_s'])} | {fmt(r['rebuilt_s'])} | "
            f"{fmt(r['probe_s'])} |"
        )
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
