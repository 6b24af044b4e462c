"""Platform benchmarks: local broker start time and SDK produce throughput.

    .venv/bin/python bench/platform_bench.py [--events 200000]

Runs against its own local broker (ports 19492/19493, state under .modelmon-bench/), prints the figures
and rewrites the "Platform" section of docs/benchmarks.md. Timings are wall-clock medians of the runs
shown; the machine line says where they were taken.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    bench_settings,
    machine,
    write_section,
)

from modelmon.broker import LocalBroker
from modelmon.client import MonitorClient
from modelmon.settings import Settings
from modelmon.simulate import SimConfig, generate
from modelmon.topics import create_topics


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="predictions for the SDK run")
    args = parser.parse_args()
    HOME.mkdir(exist_ok=True)
    settings = bench_settings()
    starts = broker_start_times(settings)
    print(f"broker cold start (jars cached): {', '.join(f'{t:.2f}' for t in starts)} s")
    sdk_settings = settings.with_(topic_prefix="sdk.")
    create_topics(sdk_settings)
    sdk_rate, sdk_size = sdk_throughput(sdk_settings, args.events)
    print(f"SDK log_prediction: {sdk_rate:,.0f} events/s ({sdk_size:.0f}-byte payloads)")
    LocalBroker(settings, log=lambda m: None).stop()
    write_section(
        "platform",
        "## Platform (bench/platform_bench.py)\n\n"
        f"Machine: {machine()}.\n\n"
        "| figure | value |\n|---|---|\n"
        f"| broker cold start, jars cached (start → metadata answers), 3 runs | "
        f"median {statistics.median(starts):.2f} s (min {min(starts):.2f}, max {max(starts):.2f}) |\n"
        f"| SDK `log_prediction` incl. validation and final flush, {args.events:,} events | "
        f"{sdk_rate:,.0f} events/s ({sdk_size:.0f}-byte payloads) |\n\n"
        "The worker's throughput, memory and recovery are in the sections below.\n",
    )


if __name__ == "__main__":
    main()
