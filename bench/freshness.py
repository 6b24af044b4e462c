"""Freshness: the delay from a label being produced to its effect in a model-metrics event, under load.

    .venv/bin/python bench/freshness.py [--rate 2000] [--max-rate N] [--duration 60] [--warmup 6]
                                        [--idle-duration 10] [--default-duration 15] [--stop-broker]

One `modelmon worker` (rocksdict store, 8 input partitions) runs on fresh topics. A separate process
produces a steady, paced load of R input events/s: simulated predictions of 3 models x 2 versions plus
~80% labels 0.5-2 s after their prediction (and the simulator's ~1% duplicates and relabels, 0.5%
invalid events; ~300-byte payloads). On top of the load, a probe model ("freshness-probe") gets 10
predictions/s, each labelled 0.5 s later; each probe label's send time is taken right after produce + poll.
A consumer tails model-metrics from its end and notes, for every tumbling-window event ("view": "window")
of the probe model, its receive time and `labels.labelled`. The delay of the k-th probe label of a window
(in send order) is the receive time of the first event of that window with labelled >= k minus that
label's send time. Only labels sent after the warm-up are measured; a label whose effect has not been
seen by the end of the phase (the load keeps running for a grace period after the measured interval) is
reported as missing. Consumer lag of the worker's group (committed vs end offsets) is sampled during
each phase, so a rate the worker cannot sustain shows up as growing lag.

Phases, on one worker with low-latency timers (MODELMON_TICK_INTERVAL_S=0.25, MODELMON_EMIT_INTERVAL_S=0.5):
the probe alone (the floor the timers set), then 2,000 events/s and 80% of the maximum rate (--max-rate;
default: modelmon's rate in the "throughput" section of docs/benchmarks.md, else 4,000), lowest first.
Then a second worker with the default timers (tick 1 s, emit 5 s) runs a shorter phase at 2,000 events/s.
About 4 minutes with the defaults. Prints the figures and rewrites the "freshness" section of
docs/benchmarks.md. BENCH_HOME / BENCH_BROKER_PORT / BENCH_CONTROLLER_PORT choose the broker (see
bench/common.py); --stop-broker stops it at the end.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import psutil
from confluent_kafka import OFFSET_END, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    ROOT,
    GroupLag,
    bench_settings,
    events_per_prediction,
    load_process,
    machine,
    modelmon_worker_cmd,
    sent_rate,
    worker_env,
    write_section,
)

from modelmon.broker import LocalBroker
from modelmon.client import MonitorClient
from modelmon.join import window_start
from modelmon.kafka_clients import consumer
from modelmon.rollup import rfc3339
from modelmon.settings import Settings
from modelmon.topics import create_topics, topic_name

PROBE_MODEL = "freshness-probe"
PROBE_RATE = 10.0  # probe predictions per second
PROBE_LABEL_AFTER_S = 0.5
LAG_SAMPLE_S = 5.0
FALLBACK_MAX_RATE = 4000.0
LOW_LATENCY = {"tick_interval_s": 0.25, "emit_interval_s": 0.5}
DEFAULT_TIMERS = {"tick_interval_s": 1.0, "emit_interval_s": 5.0}


# ------------------------------------------------------------------------------------------------- load


# ------------------------------------------------------------------------------------------------ probe


class Probe(threading.Thread):
    """Sends PROBE_RATE probe predictions/s, each labelled PROBE_LABEL_AFTER_S later; records label sends."""

    def __init__(self, settings: Settings, tag: str) -> None:
        super().__init__(daemon=True, name="probe")
        self.settings = settings
        self.tag = tag
        self.stop = threading.Event()
        self.labels: list[tuple[float, str]] = []  # (send time, window start as in model-metrics), send order
        self.rng = random.Random(7)

    def run(self) -> None:
        client = MonitorClient(self.settings)
        rng = self.rng
        pending: deque[tuple[float, str, str, str]] = deque()  # (due, request id, label, window start)
        period = 1.0 / PROBE_RATE
        next_pred = time.monotonic()
        i = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_pred:
                i += 1
                rid = f"probe-{self.tag}-{i:07d}"
                ts = time.time()
                score = rng.random()
                pred = "pos" if score >= 0.5 else "neg"
                client.log_prediction(
                    rid,
                    PROBE_MODEL,
                    pred,
                    model_version="v1",
                    ts=ts,
                    task="classification",
                    scores={"pos": round(score, 4), "neg": round(1 - score, 4)},
                    latency_ms=round(rng.lognormvariate(2.5, 0.4), 2),
                    features={
                        "amount": round(rng.gauss(80, 25), 2),
                        "account_age_days": rng.randint(1, 2000),
                        "merchant_risk": round(rng.random(), 3),
                        "channel": rng.choice(["web", "app", "pos"]),
                    },
                    segment={"country": rng.choice(["de", "us", "fr"])},
                )
                label = pred if rng.random() < 0.9 else ("neg" if pred == "pos" else "pos")
                pending.append(
                    (now + PROBE_LABEL_AFTER_S, rid, label, rfc3339(window_start(ts, self.settings.window_s)))
                )
                next_pred = max(next_pred + period, now - period)
            while pending and pending[0][0] <= time.monotonic():
                _, rid, label, window = pending.popleft()
                client.log_ground_truth(rid, label, ts=time.time(), model=PROBE_MODEL)
                self.labels.append((time.time(), window))
            due = min(next_pred, pending[0][0]) if pending else next_pred
            wait = due - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)
        client.flush()


class MetricTap(threading.Thread):
    """Tails model-metrics from its end; keeps (receive time, labelled) of the probe's window events."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True, name="metric-tap")
        self.cons = consumer(
            settings, group_id=f"bench-fresh-tap-{time.time_ns()}", **{"fetch.wait.max.ms": 50}
        )
        name = topic_name(settings, "model-metrics")
        parts = self.cons.list_topics(name, timeout=10).topics[name].partitions
        self.cons.assign([TopicPartition(name, p, OFFSET_END) for p in parts])
        self.stop = threading.Event()
        self.first_probe = threading.Event()
        self.lock = threading.Lock()
        self.obs: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.transport: list[tuple[float, float]] = []  # (receive time, receive - emitted_at), probe only
        self.window_events = 0
        self.rolling_events = 0
        self.final_events = 0

    def run(self) -> None:
        while not self.stop.is_set():
            msg = self.cons.poll(0.2)
            recv = time.time()
            if msg is None or msg.error() is not None:
                continue
            body = orjson.loads(msg.value())
            if body.get("view") != "window":
                self.rolling_events += 1
                continue
            self.window_events += 1
            self.final_events += bool(body.get("final"))
            if body.get("model") != PROBE_MODEL:
                continue
            emitted = datetime.fromisoformat(body["emitted_at"].replace("Z", "+00:00")).timestamp()
            with self.lock:
                self.obs[body["window"]["start"]].append((recv, int(body["labels"]["labelled"])))
                self.transport.append((recv, recv - emitted))
            self.first_probe.set()
        self.cons.close()


# ---------------------------------------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    timers: str
    target_rate: float
    sent_rate: float
    max_behind_s: float
    delays: list[float]
    missing: int
    late: int  # of the missing: seen after the phase, once the load had stopped
    lags: list[tuple[float, int | None]]  # (seconds since the measured interval began, lag in records)
    drained_s: float | None  # after the phase: seconds until the lag drained (None: it did not)
    transport: list[float]  # receive time - emitted_at of the probe's window events during the phase
    loadavg: list[float]  # 1-minute load average of the host, sampled with the lag
    worker_cpu: float  # CPU time of the worker process per wall second over the phase (1.0 = one core)
    load_cpu: float  # the same for the load generator process

    def q(self, p: float) -> float | None:
        return float(np.percentile(self.delays, p)) if self.delays else None

    @property
    def max_delay(self) -> float | None:
        return max(self.delays) if self.delays else None

    @property
    def end_lag(self) -> int | None:
        return self.lags[-1][1] if self.lags else None

    def _known_lags(self) -> list[tuple[float, int]]:
        return [(t, lag) for t, lag in self.lags if lag is not None]

    @property
    def mean_lag(self) -> float | None:
        known = self._known_lags()
        return float(np.mean([lag for _, lag in known])) if known else None

    @property
    def lag_slope(self) -> float | None:
        """Least-squares growth of the lag over the phase, records per second."""
        known = self._known_lags()
        if len(known) < 3:
            return None
        t, lag = zip(*known, strict=True)
        return float(np.polyfit(t, lag, 1)[0])

    @property
    def kept_up(self) -> bool:
        """The lag did not grow by more than 2% of the input rate (i.e. the worker consumed >= 98% of it)."""
        slope = self.lag_slope
        return slope is not None and slope <= max(0.02 * self.target_rate, 20.0)


class Session:
    """One worker on fresh topics with the probe and the metric tap running for its whole life."""

    def __init__(self, base: Settings, tag: str, web_port: int, timers: dict[str, float]) -> None:
        self.settings = base.with_(
            topic_prefix=f"fr{tag}{time.time_ns() % 10**7}.",
            store="rocksdb",
            worker_id=f"fresh{tag}",
            web_port=web_port,
            window_s=60,
            join_horizon_s=600,
            **timers,
        )
        self.timers = f"tick {self.settings.tick_interval_s:g} s, emit {self.settings.emit_interval_s:g} s"
        create_topics(self.settings)
        self.log_path = HOME / f"freshness-worker-{tag}.log"
        self.tap = MetricTap(self.settings)
        self.tap.start()
        self.probe = Probe(self.settings, tag)
        self.lag = GroupLag(self.settings, self.settings.group_id)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                modelmon_worker_cmd(), env=worker_env(self.settings), stdout=log, stderr=subprocess.STDOUT
            )
        self.probe.start()

    def wait_ready(self, timeout_s: float = 120) -> float:
        """Seconds until the first metric event of the probe model arrived (the worker is consuming)."""
        t0 = time.perf_counter()
        while not self.tap.first_probe.wait(0.5):
            self.check_worker()
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit(
                    f"no metric event from the worker within {timeout_s:.0f} s; see {self.log_path}"
                )
        return time.perf_counter() - t0

    def worker_cpu(self) -> float:
        """CPU seconds (user + system) the worker process has used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def check_worker(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"modelmon worker exited with {self.proc.returncode}; see {self.log_path}")

    def run_phase(self, rate: float, per_prediction: float, warmup: float, duration: float) -> PhaseResult:
        """Load at ``rate`` for warmup + duration + grace; measure the probe labels sent in the duration."""
        timers = self.settings.tick_interval_s + self.settings.emit_interval_s
        grace = max(8.0 if rate else 4.0, 2 * timers + 2)
        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        load = ctx.Process(target=load_process, args=(self.settings, rate / per_prediction, stop, out))
        if rate:
            load.start()
        lo = time.time() + warmup
        hi = lo + duration
        end = hi + grace
        lags: list[tuple[float, int | None]] = []
        loadavg: list[float] = []
        next_sample = lo
        while True:
            self.check_worker()
            if rate and not load.is_alive():
                raise SystemExit(f"the load process exited with {load.exitcode}")
            now = time.time()
            if now >= next_sample:
                if not lags:
                    cpu0 = (time.perf_counter(), self.worker_cpu())
                lags.append((now - lo, self.lag()))
                loadavg.append(os.getloadavg()[0])
                next_sample += LAG_SAMPLE_S
            if now >= end:
                break
            time.sleep(max(0.0, min(next_sample, end) - time.time()))
        lags.append((time.time() - lo, self.lag()))
        worker_cpu = (self.worker_cpu() - cpu0[1]) / (time.perf_counter() - cpu0[0])
        stop.set()
        samples, behind, load_cpu = out.get(timeout=60) if rate else ([], 0.0, 0.0)
        if rate:
            load.join(30)
        drained = self.drain(rate)
        delays, missing, late = self.delays(lo, hi, end)
        if missing:  # one more tick and emission, so labels still in flight can show up late
            time.sleep(timers + 0.5)
            delays, missing, late = self.delays(lo, hi, end)
        with self.tap.lock:
            transport = [dt for recv, dt in self.tap.transport if lo <= recv <= end]
        return PhaseResult(
            self.timers,
            rate,
            sent_rate(samples, lo, hi),
            behind,
            delays,
            missing,
            late,
            lags,
            drained,
            transport,
            loadavg,
            worker_cpu,
            load_cpu,
        )

    def delays(self, lo: float, hi: float, deadline: float) -> tuple[list[float], int, int]:
        """Delays of the probe labels sent in [lo, hi); how many were not seen by ``deadline``; how many
        of those have been seen since."""
        labels = list(self.probe.labels)
        with self.tap.lock:
            obs = {w: list(v) for w, v in self.tap.obs.items()}
        k_of: dict[str, int] = defaultdict(int)
        delays: list[float] = []
        missing = late = 0
        for sent, window in labels:
            k_of[window] += 1
            if not lo <= sent < hi:
                continue
            k = k_of[window]
            seen = next((recv for recv, labelled in obs.get(window, []) if labelled >= k), None)
            if seen is None or seen > deadline:
                missing += 1
                late += seen is not None
            else:
                delays.append(seen - sent)
        return delays, missing, late

    def drain(self, rate: float, timeout_s: float = 20.0) -> float | None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            lag = self.lag()
            if lag is not None and lag <= max(200, 0.25 * rate):
                return time.perf_counter() - t0
            time.sleep(0.5)
        return None

    def close(self) -> list[str]:
        """Stop everything; return the warning and error lines of the worker log."""
        self.probe.stop.set()
        self.probe.join(10)
        self.tap.stop.set()
        self.tap.join(10)
        self.lag.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "[WARNING]" in line or "[ERROR]" in line]


# ------------------------------------------------------------------------------------------------ report


def max_rate_from_docs() -> tuple[float, str]:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else ""
    section = re.search(r"<!-- throughput:start -->(.*?)<!-- throughput:end -->", text, re.S)
    # bench/throughput.py leaves the one-worker rate in a comment of its section for this look-up.
    row = re.search(r"<!-- modelmon-1w-rate: ([\d.]+) -->", section.group(1)) if section else None
    if row is None:
        return FALLBACK_MAX_RATE, "fallback (no throughput figure in docs/benchmarks.md)"
    return float(row.group(1).replace(",", "")), "bench/throughput.py figure in docs/benchmarks.md"


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def fmt_lag(r: PhaseResult) -> str:
    """Mean and end lag of the phase, in records and in seconds of input at the target rate."""
    mean, end = r.mean_lag, r.end_lag
    if mean is None or end is None:
        return "n/a"
    if not r.target_rate:
        return f"{mean:,.0f} / {end:,}"
    return f"{mean:,.0f} / {end:,} ({mean / r.target_rate:.1f} / {end / r.target_rate:.1f} s of input)"


def fmt_trend(r: PhaseResult) -> str:
    slope = r.lag_slope
    if slope is None:
        return "n/a"
    if not r.target_rate:
        return f"{slope:+,.0f} records/s"
    return f"{slope:+,.0f} records/s (worker consumed ~{100 * (1 - slope / r.target_rate):.1f}% of the input)"


def fmt_rate(r: PhaseResult) -> str:
    return f"{r.target_rate:,.0f}" if r.target_rate else "0 (probe only)"


def fmt_missing(r: PhaseResult) -> str:
    return f"{r.missing} ({r.late} seen after the phase)" if r.missing else "0"


def print_phase(r: PhaseResult) -> None:
    lags = ", ".join("?" if lag is None else f"{lag:,}" for _, lag in r.lags)
    print(
        f"  [{r.timers}] target {fmt_rate(r)} events/s, sent {r.sent_rate:,.0f} events/s "
        f"(producer at most {r.max_behind_s:.2f} s behind schedule)\n"
        f"    probe labels measured {len(r.delays)}, missing {fmt_missing(r)}; "
        f"delay p50 {fmt_s(r.q(50))}, p99 {fmt_s(r.q(99))}, max {fmt_s(r.max_delay)}\n"
        f"    probe metric events, emitted_at -> received: p50 "
        f"{fmt_s(float(np.median(r.transport)) if r.transport else None)}\n"
        f"    lag every {LAG_SAMPLE_S:g} s from the end of the warm-up: {lags}\n"
        f"    lag mean / end {fmt_lag(r)}, trend {fmt_trend(r)}: "
        f"{'kept up' if r.kept_up else 'DID NOT KEEP UP (lag grows)'}; "
        f"drained after the phase: {'no (20 s)' if r.drained_s is None else f'{r.drained_s:.1f} s'}; "
        f"host load average {min(r.loadavg):.1f}-{max(r.loadavg):.1f}\n"
        f"    CPU per wall second (1.0 = one core): worker {r.worker_cpu:.2f}, "
        f"load generator {r.load_cpu:.2f}",
        flush=True,
    )


def table_row(r: PhaseResult) -> str:
    kept = "yes" if r.kept_up else "**no, lag grows**"
    return (
        f"| {r.timers} | {fmt_rate(r)} | {r.sent_rate:,.0f} | {len(r.delays)} | {fmt_missing(r)} | "
        f"{fmt_s(r.q(50))} | {fmt_s(r.q(99))} | {fmt_s(r.max_delay)} | {fmt_lag(r)} | {fmt_trend(r)} | "
        f"{kept} | {r.worker_cpu:.2f} |"
    )


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0e-\x1f]")


def summarize_log(name: str, lines: list[str]) -> str:
    """One line: how many warnings/errors the worker logged, by kind (numbers masked), with an example."""
    if not lines:
        return f"{name}: no warnings or errors in the worker log"
    kinds: dict[str, tuple[int, str]] = {}
    for line in lines:
        msg = re.sub(r"^\[[^\]]*\] \[\d+\] ", "", _ANSI.sub("", line)).strip()
        kind = re.sub(r"\d+(\.\d+)?", "#", msg)[:80]
        n, example = kinds.get(kind, (0, msg))
        kinds[kind] = (n + 1, example)
    parts = [f"{n} x `{example[:150]}`" for n, example in list(kinds.values())[:4]]
    return f"{name}: {len(lines)} warning/error lines in the worker log: " + "; ".join(parts)


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="fixed input rate, events/s (default 2000)"
    )
    parser.add_argument("--max-rate", type=float, help="maximum rate; the second phase runs at 80%% of it")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=6.0, help="unmeasured seconds before each rate")
    parser.add_argument(
        "--idle-duration",
        type=float,
        default=10.0,
        help="measured seconds of the probe alone, before the loaded rates (0: skip)",
    )
    parser.add_argument(
        "--default-duration",
        type=float,
        default=15.0,
        help="measured seconds with the default timers (0: skip)",
    )
    parser.add_argument("--stop-broker", action="store_true", help="stop the benchmark broker at the end")
    args = parser.parse_args()
    logging.getLogger("modelmon.rdkafka").setLevel(logging.ERROR)  # e.g. retries while topics are new
    t_total = time.perf_counter()
    if args.max_rate is not None:
        max_rate, max_source = args.max_rate, "--max-rate"
    else:
        max_rate, max_source = max_rate_from_docs()
    rates = sorted({round(args.rate), round(0.8 * max_rate)})
    HOME.mkdir(parents=True, exist_ok=True)
    base = bench_settings()
    broker = LocalBroker(base, log=lambda m: None)
    broker.start()
    per_prediction = events_per_prediction()
    print(
        f"max rate {max_rate:,.0f} events/s ({max_source}); rates {', '.join(f'{r:,}' for r in rates)}; "
        f"{per_prediction:.3f} input events per prediction",
        flush=True,
    )
    results: list[PhaseResult] = []
    notes: list[str] = []
    try:
        fast = Session(base, "a", 6201, LOW_LATENCY)
        try:
            print(f"worker [{fast.timers}] consuming after {fast.wait_ready():.1f} s", flush=True)
            if args.idle_duration > 0:
                results.append(fast.run_phase(0, per_prediction, 2.0, args.idle_duration))
                print_phase(results[-1])
            for rate in rates:
                results.append(fast.run_phase(rate, per_prediction, args.warmup, args.duration))
                print_phase(results[-1])
        finally:
            events = (fast.tap.window_events, fast.tap.final_events, fast.tap.rolling_events)
            notes.append(summarize_log(f"worker [{fast.timers}]", fast.close()))
            print(f"  window events {events[0]:,} (final {events[1]}), rolling-view events {events[2]:,}")
        if args.default_duration > 0:
            slow = Session(base, "b", 6202, DEFAULT_TIMERS)
            try:
                print(f"worker [{slow.timers}] consuming after {slow.wait_ready():.1f} s", flush=True)
                results.append(
                    slow.run_phase(args.rate, per_prediction, min(args.warmup, 5.0), args.default_duration)
                )
                print_phase(results[-1])
            finally:
                notes.append(summarize_log(f"worker [{slow.timers}]", slow.close()))
    finally:
        if args.stop_broker:
            broker.stop()
    for note in notes:
        print(note)
    elapsed = time.perf_counter() - t_total
    print(f"total run time {elapsed:.0f} s")

    verdict = target_verdict(results, round(args.rate))
    print(f"target p99 <= 2 s at {args.rate:,.0f} events/s with low-latency timers: {verdict}")
    default = [r for r in results if r.timers != results[0].timers]
    default_line = (
        f"With the default timers ({default[0].timers}) at {default[0].target_rate:,.0f} events/s "
        f"({min(args.warmup, 5.0):g} s warm-up, {args.default_duration:g} s measured) the delay is "
        f"p50 {fmt_s(default[0].q(50))}, p99 {fmt_s(default[0].q(99))} ({len(default[0].delays)} probe "
        "labels).\n\n"
        if default
        else ""
    )
    loads = [x for r in results for x in r.loadavg]
    gen = [r.load_cpu for r in results if r.target_rate]
    if gen:
        notes.append(f"the load generator process used {min(gen):.2f}-{max(gen):.2f} cores on the same host")
    write_section(
        "freshness",
        "## Freshness (bench/freshness.py)\n\n"
        f"Machine: {machine()}. One worker (rocksdict), 8 input partitions, 60 s windows, join horizon "
        f"600 s, fresh topics. Steady paced load from a separate process: 3 models x 2 versions, ~80% "
        f"labels 0.5-2 s after their prediction, ~1% duplicates and relabels, 0.5% invalid, "
        f"{per_prediction:.2f} input events per prediction. Probe model `{PROBE_MODEL}`: "
        f"{PROBE_RATE:g} predictions/s, each labelled {PROBE_LABEL_AFTER_S:g} s later. Delay = receive time "
        "of the first tumbling-window model-metrics event of the probe's window whose `labels.labelled` "
        "covers the label (k-th label of the window in send order) minus the label's send time (after "
        f"produce + poll). On one worker: first the probe alone ({args.idle_duration:g} s, rate 0: the "
        f"floor set by the timers), then each rate, lowest first, {args.warmup:g} s warm-up and "
        f"{args.duration:g} s measured; maximum rate {max_rate:,.0f} events/s ({max_source}), the second "
        "rate is 80% of it. Missing = sent in the measured interval but not reflected in a metric event "
        "by the end of the phase, max(8 s, 2 x (tick + emit) + 2 s) later (4 s for the probe alone); the "
        "load goes on until then. Lag = input records not yet committed by the worker's group, sampled "
        f"every {LAG_SAMPLE_S:g} s from the end of the warm-up; commits run every 1 s and wait for the "
        "changelog writes, so the committed position trails the processed one by up to the commit "
        "interval plus the commit's own duration; trend = least-squares growth of the lag; kept up = "
        "trend below 2% of the input rate; worker CPU = CPU seconds of the worker process per wall second "
        "over the phase. "
        f"Host 1-minute load average during the phases {min(loads, default=0):.1f}-"
        f"{max(loads, default=0):.1f} (2 cores, shared with the broker and other runs).\n\n"
        "| timers | target events/s | sent events/s | probe labels | missing | p50 | p99 | max "
        "| lag mean / end | lag trend | kept up | worker CPU (cores) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(table_row(r) for r in results)
        + "\n\n"
        + f"Target p99 <= 2 s at {args.rate:,.0f} events/s (low-latency timers): {verdict}. "
        + default_line
        + "\n".join(f"- {n}" for n in notes)
        + "\n",
    )


def target_verdict(results: list[PhaseResult], rate: float) -> str:
    """Whether the low-latency phase at ``rate`` met p99 <= 2 s with no probe label missing."""
    r = next((r for r in results if r.target_rate == rate and r.timers == results[0].timers), None)
    p99 = r.q(99) if r is not None else None
    if r is None or p99 is None:
        return "not measured"
    ok = p99 <= 2.0 and r.missing == 0
    return f"{'met' if ok else 'NOT met'} (p99 {p99:.2f} s, {r.missing} missing)"


if __name__ == "__main__":
    main()
