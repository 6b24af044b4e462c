"""Platform benchmarks: local broker start time, SDK produce throughput, one worker's input throughput.

    .venv/bin/python bench/platform_bench.py [--events 200000]

Runs against its own local broker (ports 19492/19493, state under .modelmon-bench/), prints the figures
and rewrites the "Platform" section of docs/benchmarks.md. Timings are wall-clock medians of the runs
shown; the machine line says where they were taken.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelmon import __version__  # noqa: E402
from modelmon.broker import LocalBroker  # noqa: E402
from modelmon.client import MonitorClient  # noqa: E402
from modelmon.settings import ENV_VARS, Settings  # noqa: E402
from modelmon.simulate import LabelDelay, SimConfig, generate  # noqa: E402
from modelmon.topics import create_topics, topic_name  # noqa: E402

HOME = ROOT / ".modelmon-bench"


def bench_settings(**changes) -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("MODELMON_CACHE")}
    env.update(MODELMON_HOME=str(HOME), MODELMON_BROKER_PORT="19492", MODELMON_CONTROLLER_PORT="19493")
    return Settings.from_env(env).with_(**changes)


def broker_start_times(settings: Settings, runs: int = 3) -> list[float]:
    """Cold start with the jars cached: a fresh data folder each run, until a metadata call answers."""
    times = []
    for _ in range(runs):
        broker = LocalBroker(settings, log=lambda m: None)
        broker.stop()
        shutil.rmtree(settings.broker_dir, ignore_errors=True)
        t0 = time.perf_counter()
        broker.start()
        times.append(time.perf_counter() - t0)
    return times


def sdk_throughput(settings: Settings, n: int) -> tuple[float, float]:
    """log_prediction calls per second including validation and the final flush; mean payload bytes."""
    cfg = SimConfig(
        models=3, rate=1000, count=n, seed=7, invalid_fraction=0, duplicate_fraction=0, label_fraction=0
    ).resolved()
    preds = [e.payload for e in generate(cfg) if e.kind == "prediction"][:n]
    size = statistics.mean(len(orjson.dumps(p)) for p in preds)
    with MonitorClient(settings) as mon:
        t0 = time.perf_counter()
        for p in preds:
            mon.log_prediction(
                p["request_id"],
                p["model"],
                p["prediction"],
                model_version=p["model_version"],
                ts=p["ts"],
                task=p["task"],
                scores=p.get("scores"),
                latency_ms=p["latency_ms"],
                features=p["features"],
                segment=p["segment"],
                error=p.get("error"),
            )
        mon.flush()
        elapsed = time.perf_counter() - t0
    return len(preds) / elapsed, size


def worker_throughput(settings: Settings, n: int) -> dict:
    """Preload n predictions (+ labels); time one worker from empty state until it has consumed them."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    from modelmon.kafka_clients import admin_client, consumer

    cfg = SimConfig(
        models=3,
        rate=2000,
        count=n,
        seed=11,
        label_delay=LabelDelay(median_s=5, max_s=60),
    ).resolved()
    sizes = []
    with MonitorClient(settings, validate=False) as mon:
        for event in generate(cfg):
            value = event.value()
            sizes.append(len(value))
            mon.send_raw(event.topic, event.key, value)
    total = len(sizes)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env.update({var.name: str(getattr(settings, var.attr)) for var in ENV_VARS})
    log = (HOME / "bench-worker.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "worker", "--loglevel", "warn"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    admin = admin_client(settings)
    cons = consumer(settings, group_id="bench-lag")
    topics = [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")]
    tps = [TopicPartition(t, p) for t in topics for p in range(settings.input_partitions)]
    ends = {(tp.topic, tp.partition): cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    done_at = None
    while time.perf_counter() - t0 < 1200:
        peak = max(peak, ps.memory_info().rss)
        try:
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.app_id, tps)])
            got = {
                (tp.topic, tp.partition): tp.offset for tp in res[settings.app_id].result(10).topic_partitions
            }
        except Exception:
            got = {}
        if got and all(got.get(k, -1) >= v for k, v in ends.items()):
            done_at = time.perf_counter()
            break
        time.sleep(0.25)
    proc.terminate()
    proc.wait(30)
    cons.close()
    if done_at is None:
        raise SystemExit("the worker did not finish within 20 minutes")
    elapsed = done_at - t0
    return {
        "events": total,
        "elapsed_s": elapsed,
        "rate": total / elapsed,
        "peak_rss_mb": peak / 2**20,
        "mean_bytes": statistics.mean(sizes),
    }


def machine() -> str:
    return (
        f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, modelmon {__version__}, Apache Kafka 4.2.0 (local, same host)"
    )


def write_section(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    path.parent.mkdir(exist_ok=True)
    head = "# Benchmarks\n\nFigures written by the scripts in bench/; rerun them to refresh a section.\n"
    current = path.read_text() if path.exists() else head
    start, end = "<!-- platform:start -->", "<!-- platform:end -->"
    block = f"{start}\n{text}\n{end}"
    if start in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="predictions for the throughput runs")
    args = parser.parse_args()
    HOME.mkdir(exist_ok=True)
    settings = bench_settings()
    starts = broker_start_times(settings)
    print(f"broker cold start (jars cached): {', '.join(f'{t:.2f}' for t in starts)} s")
    sdk_settings = settings.with_(topic_prefix="sdk.")
    create_topics(sdk_settings)
    sdk_rate, sdk_size = sdk_throughput(sdk_settings, args.events)
    print(f"SDK log_prediction: {sdk_rate:,.0f} events/s ({sdk_size:.0f}-byte payloads)")
    wsettings = settings.with_(
        topic_prefix="wk.",
        app_id="bench-worker",
        store="rocksdb",
        join_horizon_s=120,
        window_s=60,
        worker_id="bench",
    )
    create_topics(wsettings)
    w = worker_throughput(wsettings, args.events)
    print(
        f"worker: {w['events']:,} input events in {w['elapsed_s']:.1f} s = {w['rate']:,.0f} events/s "
        f"(mean {w['mean_bytes']:.0f} B), peak RSS {w['peak_rss_mb']:.0f} MiB"
    )
    LocalBroker(settings, log=lambda m: None).stop()
    write_section(
        "## Platform (bench/platform_bench.py)\n\n"
        f"Machine: {machine()}.\n\n"
        "| figure | value |\n|---|---|\n"
        f"| broker cold start, jars cached (start → metadata answers), 3 runs | "
        f"median {statistics.median(starts):.2f} s (min {min(starts):.2f}, max {max(starts):.2f}) |\n"
        f"| SDK `log_prediction` incl. validation and final flush, {args.events:,} events | "
        f"{sdk_rate:,.0f} events/s ({sdk_size:.0f}-byte payloads) |\n"
        f"| one worker from empty state (rocksdict), 8 partitions, {w['events']:,} input events "
        f"(predictions + labels + duplicates + invalid) | {w['rate']:,.0f} events/s, "
        f"{w['elapsed_s']:.1f} s, mean {w['mean_bytes']:.0f} B/event |\n"
        f"| peak RSS of that worker | {w['peak_rss_mb']:.0f} MiB |\n"
    )


if __name__ == "__main__":
    main()
