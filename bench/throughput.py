"""Input throughput of one worker, side by side with the limit and Faust's own floor, on the same topics.

    .venv/bin/python bench/throughput.py [--predictions 500000]

Preloads simulated predictions (+ ~80% labels, ~300-byte mean payloads, 8 partitions) once, then times,
each from an empty consumer group until it has committed every input offset:
  * the limit: a plain confluent-kafka consumer that consumes in batches and decodes with orjson;
  * Faust's floor: bench/faust_noop.py, an agent that does nothing;
  * modelmon: `modelmon worker` from empty state (rocksdict store).
Prints the rates and ratios and rewrites the "throughput" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    ROOT,
    bench_settings,
    input_partitions,
    machine,
    modelmon_worker_cmd,
    preload,
    time_group,
    worker_env,
    write_section,
)

from modelmon.broker import LocalBroker
from modelmon.kafka_clients import consumer
from modelmon.topics import create_topics, topic_name


def limit_rate(settings, total: int) -> float:
    """A confluent-kafka consumer, batches of 10k, orjson decode of every value."""
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
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=500_000)
    args = parser.parse_args()
    HOME.mkdir(exist_ok=True)
    base = bench_settings()
    LocalBroker(base, log=lambda m: None).start()
    settings = base.with_(
        topic_prefix=f"tp{time.time_ns() % 10**8}.",
        store="rocksdb",
        worker_id="tput",
        window_s=60,
        join_horizon_s=600,
    )
    create_topics(settings)
    t0 = time.perf_counter()
    total, mean_bytes = preload(settings, args.predictions)
    print(
        f"preloaded {total:,} records ({mean_bytes:.0f} B mean) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    limit = limit_rate(settings, total)
    print(f"limit (confluent-kafka batch + orjson): {limit:,.0f} events/s", flush=True)

    noop_env = {
        **worker_env(settings),
        "BENCH_BOOTSTRAP": settings.bootstrap,
        "BENCH_GROUP": "bench-noop",
        "BENCH_TOPICS": f"{topic_name(settings, 'predictions')},{topic_name(settings, 'ground-truth')}",
        "BENCH_DATADIR": str(HOME / "faust-noop"),
        "PYTHONPATH": str(ROOT),
    }
    noop = time_group(
        [sys.executable, "-m", "faust", "-A", "bench.faust_noop", "worker", "-l", "warn"],
        noop_env,
        settings,
        "bench-noop",
        HOME / "faust-noop.log",
        cwd=ROOT,
    )
    noop_rate = total / noop.elapsed_s
    print(f"faust no-op agent: {noop_rate:,.0f} events/s ({noop.elapsed_s:.1f} s)", flush=True)

    mm = time_group(
        modelmon_worker_cmd(),
        worker_env(settings),
        settings,
        settings.group_id,
        HOME / "throughput-worker.log",
    )
    mm_rate = total / mm.elapsed_s
    print(
        f"modelmon worker: {mm_rate:,.0f} events/s ({mm.elapsed_s:.1f} s), peak RSS {mm.peak_rss_mb:.0f} MiB",
        flush=True,
    )
    print(f"ratios: modelmon/limit {mm_rate / limit:.3f}, modelmon/faust-noop {mm_rate / noop_rate:.2f}")
    write_section(
        "throughput",
        "## Throughput (bench/throughput.py)\n\n"
        f"Machine: {machine()}. {total:,} input records (predictions, ~80% labels, duplicates, invalid), "
        f"mean {mean_bytes:.0f} B, 8 partitions per input topic, broker on the same 2 cores. Each consumer "
        "starts from an empty group and is timed until it has committed every input offset "
        "(process start included).\n\n"
        "| consumer | events/s | ratio modelmon / it |\n|---|---|---|\n"
        f"| limit: confluent-kafka batch consume + orjson | {limit:,.0f} | {mm_rate / limit:.3f} |\n"
        f"| Faust no-op agent (faust-streaming 0.15.3) | {noop_rate:,.0f} | {mm_rate / noop_rate:.2f} |\n"
        f"| modelmon worker (rocksdict) | {mm_rate:,.0f} | 1.00 |\n\n"
        f"modelmon peak RSS {mm.peak_rss_mb:.0f} MiB. Quix Streams peer: not yet measured.\n",
    )


if __name__ == "__main__":
    main()
