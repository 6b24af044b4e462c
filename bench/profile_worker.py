"""Where one busy worker's time goes: py-spy samples of its event-loop thread, grouped by who runs.

    .venv/bin/python bench/profile_worker.py [--predictions 150000] [--seconds 30]

Preloads simulated traffic, starts `modelmon worker` from empty state, waits for it to be busy, samples
its main thread with py-spy (`py-spy record --format raw --threads`, idle samples excluded) while it
works through the backlog, and writes the "profile" section of docs/benchmarks.md: the share of samples
in Faust's and aiokafka's event delivery, in modelmon's own per-event code (split by step) and in the
table writes, plus the CPU seconds per input event of the worker and of a Faust no-op agent on the same
topics (the floor).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

import psutil
from confluent_kafka import ConsumerGroupTopicPartitions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    ROOT,
    bench_settings,
    input_partitions,
    machine,
    modelmon_worker_cmd,
    preload,
    worker_env,
    write_section,
)

from modelmon.broker import LocalBroker
from modelmon.kafka_clients import admin_client
from modelmon.settings import Settings
from modelmon.topics import create_topics, topic_name

PY_SPY = Path(sys.executable).with_name("py-spy")

# (label, substring of a frame) in priority order: a sample counts for the first that matches its stack.
CATEGORIES = [
    ("idle in epoll (waiting for the broker or CPU)", "select ("),
    ("modelmon: table writes (RocksDB put + librdkafka produce)", "ChangelogWriter.put"),
    ("modelmon: decode + schema validation", "decode_"),
    ("modelmon: join-table read", "Worker._get"),
    ("modelmon: accumulators (effects fold)", "PartitionState.apply_change"),
    ("modelmon: join state machine", "join.py"),
    ("modelmon: ticks, snapshots, stage 2, emission", "on_tick"),
    ("modelmon: ticks, snapshots, stage 2, emission", "on_partial"),
    ("modelmon: ticks, snapshots, stage 2, emission", "emit_metrics"),
    ("modelmon: rest of on_input", "Worker.on_input"),
    ("Faust + aiokafka: fetch, per-message delivery, stream iteration, acks", "faust/"),
    ("Faust + aiokafka: fetch, per-message delivery, stream iteration, acks", "aiokafka/"),
    ("Faust + aiokafka: fetch, per-message delivery, stream iteration, acks", "mode/"),
]


def categorize(raw: Path) -> tuple[collections.Counter, int]:
    counts: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "MainThread" not in stack.split(";", 1)[0]:
            continue
        total += int(n)
        label = next(
            (lab for lab, needle in CATEGORIES if needle in stack), "other (asyncio/uvloop, logging)"
        )
        counts[label] += int(n)
    return counts, total


def committed_inputs(settings: Settings, group: str) -> int:
    """Input records the group has committed so far (summed over both input topics)."""
    tps = input_partitions(settings)
    admin = admin_client(settings)
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
    return sum(max(tp.offset, 0) for tp in res[group].result(10).topic_partitions)


def cpu_per_event(
    cmd: list[str], env: dict[str, str], settings: Settings, group: str, log: Path, seconds: float
) -> float:
    """CPU microseconds per input event of a consumer process over a busy interval (start excluded).

    Events are counted by the group's committed offsets, which trail processing by up to the commit
    interval (1 s) at either end of the interval, so the figure is good to a few percent.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    ps = psutil.Process(proc.pid)
    try:
        time.sleep(10)  # imports, group join, recovery
        c0, n0 = sum(ps.cpu_times()[:2]), committed_inputs(settings, group)
        time.sleep(seconds)
        c1, n1 = sum(ps.cpu_times()[:2]), committed_inputs(settings, group)
        if n1 <= n0:
            raise SystemExit(f"{cmd[0]} committed nothing during the interval; see {log}")
        return 1e6 * (c1 - c0) / (n1 - n0)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="sampling time")
    args = parser.parse_args()
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} is missing: pip install py-spy (part of the dev extra)")
    HOME.mkdir(exist_ok=True)
    base = bench_settings()
    LocalBroker(base, log=lambda m: None).start()
    settings = base.with_(
        topic_prefix=f"pf{time.time_ns() % 10**8}.",
        store="rocksdb",
        worker_id="profile",
        window_s=60,
        join_horizon_s=600,
    )
    create_topics(settings)
    total, mean_bytes = preload(settings, args.predictions)
    print(f"preloaded {total:,} records ({mean_bytes:.0f} B mean)", flush=True)

    raw = HOME / "profile-worker.txt"
    log = HOME / "profile-worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            modelmon_worker_cmd(), env=worker_env(settings), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        time.sleep(8)
        subprocess.run(
            [
                str(PY_SPY),
                "record",
                "--format",
                "raw",
                "--threads",
                "--rate",
                "200",
                "--duration",
                str(int(args.seconds)),
                "--pid",
                str(proc.pid),
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )
    finally:
        proc.terminate()
        proc.wait(30)
    counts, samples = categorize(raw)

    # CPU per event: the worker and a Faust no-op agent, each on a fresh group over the same topics.
    mm_settings = settings.with_(app_id="profile-cpu", worker_id="profile-cpu")
    mm_us = cpu_per_event(
        modelmon_worker_cmd(),
        worker_env(mm_settings),
        settings,
        mm_settings.group_id,
        HOME / "profile-cpu.log",
        15,
    )
    noop_group = f"profile-noop-{time.time_ns()}"
    noop_env = {
        **worker_env(settings),
        "BENCH_BOOTSTRAP": settings.bootstrap,
        "BENCH_GROUP": noop_group,
        "BENCH_TOPICS": f"{topic_name(settings, 'predictions')},{topic_name(settings, 'ground-truth')}",
        "BENCH_DATADIR": str(HOME / "profile-noop"),
        "BENCH_WEB_PORT": "6098",
        "PYTHONPATH": str(ROOT),
    }
    noop_cmd = [
        sys.executable,
        "-m",
        "faust",
        "-A",
        "bench.faust_noop",
        "-L",
        "uvloop",
        "worker",
        "-l",
        "warn",
    ]
    noop_us = cpu_per_event(noop_cmd, noop_env, settings, noop_group, HOME / "profile-noop.log", 8)

    rows = ["| where the worker's event-loop thread is | share of samples |", "|---|---|"]
    for label, n in counts.most_common():
        rows.append(f"| {label} | {100 * n / samples:.1f}% |")
    text = (
        "## Profile of one worker (bench/profile_worker.py)\n\n"
        f"Machine: {machine()}. py-spy 200 Hz for {args.seconds:.0f} s on the worker's main thread while it "
        f"works through a backlog of {total:,} records ({mean_bytes:.0f} B mean), {samples:,} non-idle "
        "samples; a sample counts for the first matching row, top to bottom as listed in the script.\n\n"
        + "\n".join(rows)
        + "\n\nCPU per input event over a busy interval (process start excluded, all threads of the "
        f"process): modelmon worker {mm_us:.0f} µs, Faust no-op agent on uvloop {noop_us:.0f} µs.\n"
    )
    print(text)
    write_section("profile", text)


if __name__ == "__main__":
    main()
