"""Input throughput of one worker, side by side with the limit, Faust's floor and a Quix Streams peer.

    .venv/bin/python bench/throughput.py [--events 1000000]     (make bench)

Preloads simulated traffic once (predictions + ~80% labels, duplicates, a few invalid; ~300-byte mean
payloads; 8 partitions per input topic), then times, each from an empty consumer group on the same topics,
until the group has committed every input offset *and* every record its own internal topics held at that
moment (stage 2's partials for modelmon, the repartition topic for the peer: the metrics are complete):
  * the limit: a plain confluent-kafka consumer that consumes in batches and decodes with orjson;
  * Faust's floor: bench/faust_noop.py, an agent that does nothing, on uvloop like the worker (the higher
    floor; `--noop-loops uvloop,aio` adds Faust's default asyncio loop);
  * the peer: bench/peers/quix_peer.py, the same job (join by request id, tumbling per-model accuracy
    and rate) written with Quix Streams, in its own virtualenv (.venv-peer, `make peer-venv`);
  * modelmon: `modelmon worker` from empty state (rocksdict store);
  * scale-out: two modelmon workers in one group.
Prints the rates and ratios and rewrites the "throughput" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    ROOT,
    bench_settings,
    end_offsets,
    input_partitions,
    machine,
    modelmon_worker_cmd,
    preload,
    worker_env,
    write_section,
)

from modelmon.broker import LocalBroker
from modelmon.kafka_clients import admin_client, consumer
from modelmon.settings import Settings
from modelmon.topics import create_topics, topic_name

PEER_PY = ROOT / ".venv-peer" / "bin" / "python"
EVENTS_PER_PREDICTION = 1.83  # predictions + labels + duplicates + invalid, as simulate.py generates them


@dataclass
class Run:
    name: str
    events: int
    elapsed_s: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.elapsed_s


def committed(admin, group: str) -> dict[tuple[str, int], int]:
    """Every offset the group has committed, on any topic."""
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    return {(tp.topic, tp.partition): tp.offset for tp in res[group].result(10).topic_partitions}


def _done(got: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> bool:
    """Committed up to the end on every partition that holds records (empty ones are never committed)."""
    return all(got.get(k, 0) >= v for k, v in ends.items() if v > 0)


def run_group(
    name: str,
    procs: list[tuple[list[str], dict[str, str]]],
    settings: Settings,
    group: str,
    events: int,
    timeout_s: float = 1500,
) -> Run:
    """Start the processes of one consumer group; time them until its inputs and internal topics are done."""
    tps = input_partitions(settings)
    ends = end_offsets(settings, tps)
    inputs = {tp.topic for tp in tps}
    admin = admin_client(settings)
    started = []
    t0 = time.perf_counter()
    for i, (cmd, env) in enumerate(procs):
        log = (HOME / f"throughput-{name}-{i}.log").open("wb")
        started.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    handles = [psutil.Process(p.pid) for p in started]
    peak, internal_ends = 0, None
    try:
        while time.perf_counter() - t0 < timeout_s:
            for p in started:
                if p.poll() is not None:
                    raise SystemExit(f"{name}: exit code {p.returncode}; see {HOME}/throughput-{name}-*.log")
            try:
                rss = 0
                for h in handles:
                    rss += sum(c.memory_info().rss for c in [h, *h.children(recursive=True)])
                peak = max(peak, rss)
                got = committed(admin, group)
            except (KafkaException, psutil.Error):
                got = {}
            if internal_ends is None and got and _done(got, ends):
                internal = [TopicPartition(t, p) for t, p in got if t not in inputs]
                internal_ends = end_offsets(settings, internal) if internal else {}
            if internal_ends is not None and all(
                got.get(k, 0) >= v for k, v in internal_ends.items() if v > 0
            ):
                return Run(name, events, time.perf_counter() - t0, peak / 2**20)
            time.sleep(0.2)
        raise SystemExit(f"{name} did not finish within {timeout_s:.0f} s; see {HOME}/throughput-*.log")
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def limit_run(settings: Settings, total: int) -> Run:
    """A confluent-kafka consumer, batches of 10k, orjson decode of every value (in this process)."""
    cons = consumer(settings, group_id=f"bench-limit-{time.time_ns()}", **{"fetch.max.bytes": 52428800})
    tps = input_partitions(settings)
    for tp in tps:
        tp.offset = 0
    cons.assign(tps)
    seen = 0
    t0 = time.perf_counter()
    while seen < total:
        for msg in cons.consume(10000, timeout=1.0):
            if msg.error() is None:
                try:
                    orjson.loads(msg.value())
                except orjson.JSONDecodeError:
                    pass
                seen += 1
    elapsed = time.perf_counter() - t0
    cons.close()
    return Run("limit", total, elapsed, psutil.Process().memory_info().rss / 2**20)


def noop_run(settings: Settings, total: int, loop: str) -> Run:
    group = f"bench-noop-{loop}"
    env = {
        **worker_env(settings),
        "BENCH_BOOTSTRAP": settings.bootstrap,
        "BENCH_GROUP": group,
        "BENCH_TOPICS": f"{topic_name(settings, 'predictions')},{topic_name(settings, 'ground-truth')}",
        "BENCH_DATADIR": str(HOME / f"faust-noop-{loop}"),
        "BENCH_WEB_PORT": "6099",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "faust", "-A", "bench.faust_noop", "-L", loop, "worker", "-l", "warn"]
    return run_group(f"faust-noop-{loop}", [(cmd, env)], settings, group, total)


def peer_run(settings: Settings, total: int) -> Run:
    if not PEER_PY.exists():
        raise SystemExit(f"{PEER_PY} is missing: run `make peer-venv` (make bench does)")
    group = f"bench-quix-{time.time_ns() % 10**8}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MODELMON_", "BENCH_"))},
        "BENCH_BOOTSTRAP": settings.bootstrap,
        "BENCH_GROUP": group,
        "BENCH_PRED_TOPIC": topic_name(settings, "predictions"),
        "BENCH_GT_TOPIC": topic_name(settings, "ground-truth"),
        "BENCH_OUT_TOPIC": f"{settings.topic_prefix}quix-metrics",
        "BENCH_STATE_DIR": str(HOME / f"quix-state-{group}"),
        "BENCH_WINDOW_S": str(int(settings.window_s)),
        "BENCH_JOIN_HORIZON_S": str(int(settings.join_horizon_s)),
        "BENCH_GRACE_S": str(int(settings.join_horizon_s)),
        "BENCH_LOGLEVEL": "WARNING",
    }
    cmd = [str(PEER_PY), str(ROOT / "bench" / "peers" / "quix_peer.py")]
    return run_group("quix-peer", [(cmd, env)], settings, group, total)


def modelmon_run(settings: Settings, total: int, workers: int) -> Run:
    s = settings.with_(app_id=f"tput{workers}")
    procs = []
    for i in range(workers):
        w = s.with_(worker_id=f"w{i}", web_port=6100 + i)
        procs.append((modelmon_worker_cmd(), worker_env(w)))
    return run_group(f"modelmon-{workers}w", procs, s, s.group_id, total)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="input records to preload (approx.)")
    parser.add_argument("--skip", default="", help="comma-separated runs to leave out: noop,peer,scale")
    parser.add_argument(
        "--noop-loops",
        default="uvloop",
        help="event loops for the Faust no-op run, comma-separated: uvloop (the worker's loop), aio",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    HOME.mkdir(exist_ok=True)
    base = bench_settings()
    LocalBroker(base, log=lambda m: None).start()
    settings = base.with_(
        topic_prefix=f"tp{time.time_ns() % 10**8}.", store="rocksdb", window_s=60, join_horizon_s=600
    )
    create_topics(settings)
    t0 = time.perf_counter()
    total, mean_bytes = preload(settings, round(args.events / EVENTS_PER_PREDICTION))
    print(
        f"preloaded {total:,} records ({mean_bytes:.0f} B mean) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    runs: dict[str, Run] = {}

    def record(run: Run) -> None:
        runs[run.name] = run
        print(
            f"{run.name}: {run.rate:,.0f} events/s ({run.elapsed_s:.1f} s, RSS {run.peak_rss_mb:.0f} MiB)",
            flush=True,
        )

    record(limit_run(settings, total))
    if "noop" not in skip:
        for loop in args.noop_loops.split(","):
            record(noop_run(settings, total, loop))
    if "peer" not in skip:
        record(peer_run(settings, total))
    record(modelmon_run(settings, total, 1))
    if "scale" not in skip:
        record(modelmon_run(settings, total, 2))

    mm = runs["modelmon-1w"]
    rows = [
        ("limit: confluent-kafka batch consume + orjson (one thread)", "limit"),
        ("Faust no-op agent, asyncio loop (Faust's default)", "faust-noop-aio"),
        ("Faust no-op agent, uvloop (the loop the worker uses)", "faust-noop-uvloop"),
        ("Quix Streams 3.28.1 peer: join + tumbling accuracy/rate (bench/peers)", "quix-peer"),
        ("**modelmon worker** (rocksdict), 1 process", "modelmon-1w"),
        ("modelmon, 2 worker processes in one group", "modelmon-2w"),
    ]
    table = ["| consumer | events/s | wall s | peak RSS MiB | modelmon / it |", "|---|---|---|---|---|"]
    for label, key in rows:
        run = runs.get(key)
        if run is not None:
            table.append(
                f"| {label} | {run.rate:,.0f} | {run.elapsed_s:.1f} | {run.peak_rss_mb:.0f} | "
                f"{mm.rate / run.rate:.2f} |"
            )
    print("\n".join(table))
    write_section(
        "throughput",
        "## Throughput (bench/throughput.py)\n\n"
        f"Machine: {machine()}. {total:,} input records (predictions, ~80% labels, duplicates, invalid), "
        f"mean {mean_bytes:.0f} B, 8 partitions per input topic, 60 s windows, 600 s join horizon; the "
        "broker runs on the same 2 cores. Each consumer starts from an empty group on the same topics "
        "and is timed from process start (imports, group join and table recovery included) until its "
        "group has committed every input offset and every record of its internal topics "
        "(partials, repartition) that existed at that moment.\n\n"
        + "\n".join(table)
        + f"\n\n<!-- modelmon-1w-rate: {mm.rate:.0f} -->\n",
    )


if __name__ == "__main__":
    main()
