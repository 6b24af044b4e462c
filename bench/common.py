"""Shared parts of the benchmarks: a local broker of their own, preloading, offsets, lag, the report file.

Every benchmark runs against the real local Kafka broker on ports 19492/19493 (state in .modelmon-bench/)
and writes its figures into a marked section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
# BENCH_HOME / BENCH_BROKER_PORT / BENCH_CONTROLLER_PORT let two benchmark runs use separate brokers.
HOME = Path(os.environ.get("BENCH_HOME", ROOT / ".modelmon-bench"))

from modelmon import __version__  # noqa: E402
from modelmon.client import MonitorClient  # noqa: E402
from modelmon.kafka_clients import admin_client, consumer  # noqa: E402
from modelmon.settings import Settings  # noqa: E402
from modelmon.simulate import LabelDelay, Progress, SimConfig, SimEvent, generate, run  # noqa: E402
from modelmon.topics import topic_name  # noqa: E402


def bench_settings(**changes) -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("MODELMON_CACHE")}
    env.update(
        MODELMON_HOME=str(HOME),
        MODELMON_BROKER_PORT=os.environ.get("BENCH_BROKER_PORT", "19492"),
        MODELMON_CONTROLLER_PORT=os.environ.get("BENCH_CONTROLLER_PORT", "19493"),
    )
    return Settings.from_env(env).with_(**changes)


def preload(settings: Settings, predictions: int, seed: int = 11) -> tuple[int, float]:
    """Simulated predictions (+ ~80% labels, duplicates, a few invalid) into the input topics.

    Returns (records written, mean payload bytes).
    """
    cfg = SimConfig(
        models=3, rate=2000, count=predictions, seed=seed, label_delay=LabelDelay(median_s=5, max_s=60)
    ).resolved()
    sizes = 0
    n = 0
    with MonitorClient(settings, validate=False) as mon:
        for event in generate(cfg):
            value = event.value()
            sizes += len(value)
            n += 1
            mon.send_raw(event.topic, event.key, value)
    return n, sizes / n


def input_partitions(settings: Settings) -> list[TopicPartition]:
    topics = [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")]
    return [TopicPartition(t, p) for t in topics for p in range(settings.input_partitions)]


def end_offsets(settings: Settings, tps: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
    cons = consumer(settings, group_id="bench-ends")
    try:
        return {(tp.topic, tp.partition): cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    finally:
        cons.close()


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env.update(settings.to_env())
    return env


def modelmon_worker_cmd() -> list[str]:
    return [sys.executable, "-m", "modelmon.cli", "worker", "--loglevel", "warn"]


def machine() -> str:
    return (
        f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, modelmon {__version__}, Apache Kafka 4.2.0 (local, same host)"
    )


def write_section(name: str, text: str) -> None:
    """Replace (or append) the section between <!-- name:start --> and <!-- name:end -->."""
    path = ROOT / "docs" / "benchmarks.md"
    path.parent.mkdir(exist_ok=True)
    head = "# Benchmarks\n\nFigures written by the scripts in bench/; rerun them to refresh a section.\n"
    current = path.read_text() if path.exists() else head
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text}\n{end}"
    if start in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current)


class GroupLag:
    """Consumer lag of a group on the input topics: end offsets minus committed offsets (admin API).

    A partition the group has not committed yet counts from its low watermark. Holds one admin client and
    one consumer (for the watermarks) so it can be sampled every few seconds; call close() when done.
    """

    def __init__(self, settings: Settings, group: str) -> None:
        self.group = group
        self.tps = input_partitions(settings)
        self.admin = admin_client(settings)
        self.cons = consumer(settings, group_id=f"{group}-lag-probe")

    def __call__(self) -> int | None:
        """Total lag in records, or None when the broker did not answer."""
        try:
            res = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(self.group, self.tps)])
            got = {(tp.topic, tp.partition): tp.offset for tp in res[self.group].result(10).topic_partitions}
            lag = 0
            for tp in self.tps:
                low, high = self.cons.get_watermark_offsets(tp, timeout=10)
                committed = got.get((tp.topic, tp.partition), -1)
                lag += max(0, high - (committed if committed >= 0 else low))
            return lag
        except KafkaException:
            return None

    def close(self) -> None:
        self.cons.close()


def code_version() -> str:
    """The commit the benchmark ran on, marked when app/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "app"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}" + (" + uncommitted changes in app/" if dirty else "")


def app_digest() -> str:
    """A hash of the worker's source (app/modelmon/*.py): a benchmark can tell that it changed mid-run."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "app" / "modelmon").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------ live load (freshness, API latency)


def live_config(predictions_per_s: float, count: int | None = None) -> SimConfig:
    """Live traffic of the latency benchmarks: three models x two versions, ~80% labels 0.5-2 s after
    their prediction (lognormal, capped)."""
    delay = LabelDelay(median_s=1.0, sigma=0.35, early_fraction=0.02, early_lead_s=0.5, max_s=2.0)
    return SimConfig(models=3, rate=predictions_per_s, count=count, label_delay=delay)


def events_per_prediction() -> float:
    """Input events (labels, duplicates, relabels, invalid included) per prediction of live_config."""
    n = sum(1 for _ in generate(live_config(1000.0, count=20_000).resolved()))
    return n / 20_000


class ClientSink:
    def __init__(self, client: MonitorClient) -> None:
        self.client = client

    def send(self, event: SimEvent) -> None:
        self.client.send_raw(event.topic, event.key, event.value())

    def flush(self) -> None:
        self.client.flush()


def load_process(settings: Settings, predictions_per_s: float, stop: Any, out: Any) -> None:
    """Child process: paced simulated traffic until ``stop`` is set.

    Puts (samples, max_behind_s, cpu): samples are (wall time, events sent so far), about every 0.5 s;
    cpu is this process's CPU time per wall second.
    """
    samples: list[tuple[float, int]] = []
    behind = [0.0]
    t0, cpu0 = time.perf_counter(), time.process_time()

    def track(p: Progress) -> None:
        behind[0] = max(behind[0], p.behind_s)
        samples.append((time.time(), p.sent))

    with MonitorClient(settings, validate=False) as client:
        cfg = live_config(predictions_per_s)
        run(cfg, ClientSink(client), stop=stop, progress=track, progress_every_s=0.5)
    out.put((samples, behind[0], (time.process_time() - cpu0) / (time.perf_counter() - t0)))


def sent_rate(samples: list[tuple[float, int]], lo: float, hi: float) -> float:
    """Events/s the load process sent between wall times lo and hi (from its progress samples)."""
    inside = [(t, n) for t, n in samples if lo <= t <= hi] or samples
    if not inside:
        return 0.0
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
