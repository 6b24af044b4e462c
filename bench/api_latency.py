"""API latency: how fast a worker answers the HTTP API for a model while it processes a steady input load.

    .venv/bin/python bench/api_latency.py [--rate 1000] [--clients 4] [--duration 60] [--forward-duration 45]
                                          [--baseline-duration 20] [--history-minutes 120] [--warmup 5]
                                          [--web-ports 6231,6232] [--quick] [--no-write] [--stop-broker]

One `modelmon worker` (rocksdict store, 8 input / 4 output partitions, default timers) runs on fresh topics
and a fresh app id. Before any request is timed, 2 hours of event time of simulated traffic ending about a
minute before now are produced (3 models x 2 versions, 20 predictions/s, ~80% labels with a 30 s median delay
capped at 5 min, the simulator's duplicates, relabels and invalid events), so each model version has ~120
one-minute windows and the 5m / 1h / 24h rolling views are not trivial. The worker must be ready (/ready 200),
have no input lag (committed offsets of its group = end offsets) and have stage 2 caught up: the windows of
every model version (/api/v1/models/{model}/windows) add up to exactly the predictions produced.

Baseline ("load only", 20 s measured after a 5 s unmeasured warm-up, like every phase): the live load
described next runs with no requests, to tell whether the worker keeps up without the API; the lag must
drain to 0 before phase 1.

Phase 1 ("one worker", 60 s measured): a separate process produces live
simulated traffic for the same models at a paced 1,000 input events/s (event time = now, so the newest window
moves; labels 0.5-2 s after their prediction, so the rate is steady within seconds), while N concurrent
clients (asyncio + aiohttp, one keep-alive connection each, no pause between requests: a closed loop, so the
request rate is what the worker sustains next to its stream processing) cycle over three requests, each for a
random model version:
  (a) the model query  GET /api/v1/models/{model}?version=V    (newest window + the 5m/1h/24h views)
  (b) the dashboard's range  GET /api/v1/models/{model}/windows?version=V&from=<newest window end - 1 h>
      (60 windows, ~90 KB)
  (c) the model list  GET /api/v1/models
Latency = time.perf_counter from before the request to after the whole body was read (aiohttp client); any
non-200 answer or client timeout (10 s) counts as an error and is reported, not timed. Worker CPU = CPU
seconds of the worker process (psutil) per wall second of the measured interval; input lag of the group is
sampled every 5 s.

Phase 2 ("forwarded", 45 s): a second worker joins the group; once both are ready, both own stage-2
partitions and neither has input lag, the same load runs and the clients send only the model query, for
a random model version, alternately to the worker that owns the model's stage-2 partition (answered from its
tables) and to the other one (which forwards the request to the owner over HTTP and relays the answer).
Ownership comes from each worker's /api/v1/health and modelmon.web.reads.model_partition; it is checked
again at the end of the phase.

All of it (broker, workers, load generator, clients) shares one host, so the figures include CPU
contention. About 6-7 minutes with the defaults; --quick runs 15 s phases and a 10 s baseline (a smoke
run). Prints the figures and rewrites the "api-latency" section of docs/benchmarks.md. BENCH_HOME /
BENCH_BROKER_PORT / BENCH_CONTROLLER_PORT choose the broker (see bench/common.py); --stop-broker stops
it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    GroupLag,
    bench_settings,
    code_version,
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
from modelmon.settings import Settings
from modelmon.simulate import LabelDelay, SimConfig, generate
from modelmon.topics import create_topics
from modelmon.web.reads import model_partition

MODELS, VERSIONS = 3, 2
HISTORY_RATE = 20.0  # predictions per event-time second in the preloaded history
LABEL_DELAY = LabelDelay(median_s=30.0, sigma=1.0, max_s=300.0)  # history
# Live load: labels 0.5-2 s after their prediction (as in bench/freshness.py), so the input rate is steady
# within seconds of the load starting (with a 30 s median, the first minute would be mostly predictions).
HISTORY_END_BEFORE_NOW_S = 60.0  # so the history's last labels (sent up to this long after it) are not ahead
LAG_SAMPLE_S = 5.0
REQUEST_TIMEOUT_S = 10.0
WEB_PORTS = (6231, 6232)
ENDPOINTS = {"model": "model query", "windows": "windows, last 1 h", "models": "model list"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ts_of(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------------- load


class Load:
    """The live load process of one phase."""

    def __init__(self, settings: Settings, events_per_s: float, per_prediction: float) -> None:
        ctx = mp.get_context("spawn")
        self.rate = events_per_s
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(
            target=load_process,
            args=(settings, events_per_s / per_prediction, self.stop, self.out),
            daemon=True,
        )
        self.proc.start()
        self.samples: list[tuple[float, int]] = []
        self.behind = 0.0
        self.cpu = 0.0

    def check(self) -> None:
        if not self.proc.is_alive() and not self.stop.is_set():
            raise SystemExit(f"the load process exited with {self.proc.exitcode}")

    def finish(self) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        try:
            self.samples, self.behind, self.cpu = self.out.get(timeout=60)
        except Exception:  # queue.Empty or a dead child: the figures stay empty
            pass
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)

    def sent_rate(self, lo: float, hi: float) -> float:
        return sent_rate(self.samples, lo, hi)


def preload_history(settings: Settings, minutes: float) -> tuple[int, dict[tuple[str, str], int]]:
    """History ending ~1 min before now, produced as fast as possible.

    Returns (events written, valid predictions per (model, version): what the windows must add up to).
    """
    duration = minutes * 60
    cfg = SimConfig(
        models=MODELS,
        versions=VERSIONS,
        rate=HISTORY_RATE,
        start_ts=time.time() - duration - HISTORY_END_BEFORE_NOW_S,
        duration_s=duration,
        label_delay=LABEL_DELAY,
        label_tail_s=HISTORY_END_BEFORE_NOW_S,
        speed=1e9,
        seed=23,
    ).resolved()
    expected: Counter[tuple[str, str]] = Counter()
    n = 0
    with MonitorClient(settings, validate=False) as mon:
        for event in generate(cfg):
            mon.send_raw(event.topic, event.key, event.value())
            n += 1
            if event.kind == "prediction" and event.note != "duplicate" and event.payload is not None:
                expected[(event.payload["model"], event.payload["model_version"])] += 1
    return n, dict(expected)


# ---------------------------------------------------------------------------------------------- workers


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, decoded body); status 0 when the server did not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, orjson.loads(exc.read())
        except orjson.JSONDecodeError:
            return exc.code, None
    except (OSError, orjson.JSONDecodeError):
        return 0, None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the worker's server: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Worker:
    """A `modelmon worker` subprocess with its web server on ``port``."""

    def __init__(self, settings: Settings, worker_id: str, port: int) -> None:
        if not port_free(port):
            raise SystemExit(f"web port {port} is in use; choose others with --web-ports")
        self.settings = settings.with_(worker_id=worker_id, web_port=port)
        self.id = worker_id
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = HOME / f"api-latency-{worker_id}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*modelmon_worker_cmd(), "--web-port", str(port), "--worker-id", worker_id],
                env=worker_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.ps = psutil.Process(self.proc.pid)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"worker {self.id} exited with {self.proc.returncode}; see {self.log_path}")

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def get(self, path: str) -> tuple[int, Any]:
        return get_json(self.url + path)

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.perf_counter()
        while True:
            self.check()
            status, body = self.get("/ready")
            if status == 200:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout_s:
                reason = body.get("reason") if isinstance(body, dict) else f"HTTP {status}"
                raise SystemExit(
                    f"worker {self.id} not ready after {timeout_s:.0f} s ({reason}); see {self.log_path}"
                )
            time.sleep(1.0)

    def stop(self) -> list[str]:
        """Terminate; return the warning and error lines of its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "[WARNING]" in line or "[ERROR]" in line]


def window_totals(worker: Worker, series: list[tuple[str, str]]) -> dict[tuple[str, str], int] | None:
    out = {}
    for model, version in series:
        status, body = worker.get(f"/api/v1/models/{model}/windows?version={version}&limit=10000")
        if status != 200:
            return None
        out[(model, version)] = sum(int(w["traffic"]["predictions"]) for w in body["windows"])
    return out


def wait_caught_up(
    workers: list[Worker], lag: GroupLag, expected: dict[tuple[str, str], int], timeout_s: float
) -> float:
    """Until no input lag and the windows hold exactly the preloaded predictions (stage 2 caught up)."""
    t0 = time.perf_counter()
    next_note = t0 + 15
    series = sorted(expected)
    while True:
        for w in workers:
            w.check()
        current = lag()
        totals = window_totals(workers[0], series)
        done = sum(totals.values()) if totals else 0
        if current == 0 and totals is not None and all(totals[s] >= expected[s] for s in series):
            return time.perf_counter() - t0
        now = time.perf_counter()
        if now - t0 > timeout_s:
            raise SystemExit(
                f"not caught up after {timeout_s:.0f} s: input lag {current}, windows hold {done:,} of "
                f"{sum(expected.values()):,} predictions; see {', '.join(str(w.log_path) for w in workers)}"
            )
        if now >= next_note:
            log(f"  catching up: input lag {current}, windows hold {done:,} of {sum(expected.values()):,}")
            next_note = now + 15
        time.sleep(2.0)


def wait_two_owners(a: Worker, b: Worker, output_partitions: int, timeout_s: float) -> dict[str, list[int]]:
    """Until both workers are ready, each owns stage-2 partitions, and both list the same 2 workers."""
    t0 = time.perf_counter()
    while True:
        a.check()
        b.check()
        owned: dict[str, list[int]] = {}
        views = []
        for w in (a, b):
            status, body = w.get("/api/v1/health")
            if status == 200 and body.get("ready") and body["partitions"]["output"]:
                owned[w.url] = body["partitions"]["output"]
                views.append(sorted((x["url"], tuple(x["output_partitions"])) for x in body["workers"]))
        if (
            len(owned) == 2
            and views[0] == views[1]
            and len(views[0]) == 2
            and sorted(q for qs in owned.values() for q in qs) == list(range(output_partitions))
        ):
            return owned
        if time.perf_counter() - t0 > timeout_s:
            raise SystemExit(
                f"the two workers did not share the stage-2 partitions within {timeout_s:.0f} s (owned: "
                f"{owned}); see {a.log_path}, {b.log_path}"
            )
        time.sleep(1.0)


# ---------------------------------------------------------------------------------------------- clients


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    sizes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    problems: Counter[str] = field(default_factory=Counter)  # 200 answers whose content looked wrong
    windows_returned: list[int] = field(default_factory=list)


Request = tuple[str, str, str]  # (label, url, "model" | "windows" | "models")


class Targets:
    """Chooses the next request of a client; keeps the newest window end from the model list answers."""

    def __init__(self, models: list[dict[str, Any]], seed: int) -> None:
        self.series = [(m["model"], m["model_version"]) for m in models if m["model_version"]]
        self.newest = {(m["model"], m["model_version"]): ts_of(m["last_window_end"]) for m in models}
        self.rng = random.Random(seed)
        self.history_windows = min(m["windows"] for m in models if m["model_version"])

    def note_models(self, body: dict[str, Any]) -> None:
        for m in body["models"]:
            self.newest[(m["model"], m["model_version"])] = ts_of(m["last_window_end"])

    def pick(self) -> tuple[str, str]:
        return self.rng.choice(self.series)

    def mix(self, url: str, i: int) -> Request:
        kind = ("model", "windows", "models")[i % 3]
        model, version = self.pick()
        if kind == "model":
            return ENDPOINTS[kind], f"{url}/api/v1/models/{model}?version={version}", kind
        if kind == "windows":
            start = int(self.newest[(model, version)] - 3600)
            return (
                ENDPOINTS[kind],
                f"{url}/api/v1/models/{model}/windows?version={version}&from={start}",
                kind,
            )
        return ENDPOINTS[kind], f"{url}/api/v1/models", kind


def check_body(kind: str, body: Any, stats: Stats, targets: Targets) -> None:
    if kind == "model":
        versions = body.get("versions") or []
        if len(versions) != 1 or versions[0].get("current") is None:
            stats.problems["model query: no current window"] += 1
        elif any(versions[0]["views"].get(v) is None for v in ("5m", "1h", "24h")):
            stats.problems["model query: a rolling view is null"] += 1
    elif kind == "windows":
        n = len(body.get("windows") or [])
        stats.windows_returned.append(n)
        if not min(50, 0.8 * targets.history_windows) <= n <= 62:
            stats.problems[f"windows: {n} windows instead of ~60"] += 1
    else:
        if len(body.get("models") or []) < MODELS * VERSIONS:
            stats.problems["model list: model versions missing"] += 1
        targets.note_models(body)


async def client_loop(
    plan: Any,
    targets: Targets,
    stats: Stats,
    measure_from: float,
    until: float,
    start_index: int,
    interval: float | None = None,
) -> None:
    """Requests back to back (closed loop), or one every ``interval`` seconds (paced, as dashboards do)."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=1)) as session:
        i = start_index
        next_at = time.monotonic() + (interval or 0.0) * start_index / 4
        while time.time() < until:
            if interval is not None:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            label, url, kind = plan(i)
            i += 1
            t0 = time.perf_counter()
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if time.time() >= measure_from:
                    stats.errors[label][type(exc).__name__] += 1
                continue
            elapsed = time.perf_counter() - t0
            if time.time() < measure_from:
                continue
            if status != 200:
                stats.errors[label][f"HTTP {status}"] += 1
                continue
            stats.latencies[label].append(elapsed)
            stats.sizes[label].append(len(body))
            check_body(kind, orjson.loads(body), stats, targets)


class Sampler(threading.Thread):
    """Group input lag and host load average every LAG_SAMPLE_S during a phase."""

    def __init__(self, lag: GroupLag) -> None:
        super().__init__(daemon=True, name="lag-sampler")
        self.lag = lag
        self.stop = threading.Event()
        self.lags: list[int | None] = []
        self.loadavg: list[float] = []

    def run(self) -> None:
        while True:
            self.lags.append(self.lag())
            self.loadavg.append(os.getloadavg()[0])
            if self.stop.wait(LAG_SAMPLE_S):
                break
        self.lags.append(self.lag())


@dataclass
class PhaseResult:
    name: str
    stats: Stats
    seconds: float
    worker_cpu: dict[str, float]  # worker id -> cores over the measured interval
    client_cpu: float
    lags: list[int | None]
    loadavg: list[float]
    sent_rate: float
    load_cpu: float
    notes: list[str] = field(default_factory=list)


def run_phase(
    name: str,
    workers: list[Worker],
    lag: GroupLag,
    load: Load,
    plans: list[Any],
    targets: Targets,
    warmup: float,
    duration: float,
    interval: float | None = None,
) -> PhaseResult:
    stats = Stats()
    start = time.time()
    measure_from = start + warmup
    until = measure_from + duration
    sampler = Sampler(lag)

    async def main() -> tuple[float, dict[str, float], float]:
        tasks = [
            asyncio.create_task(client_loop(plan, targets, stats, measure_from, until, k, interval))
            for k, plan in enumerate(plans)
        ]
        await asyncio.sleep(max(0.0, measure_from - time.time()))
        for w in workers:
            w.check()
        load.check()
        sampler.start()
        t0, c0, p0 = time.perf_counter(), {w.id: w.cpu() for w in workers}, time.process_time()
        await asyncio.sleep(max(0.0, until - time.time()))
        t1, c1, p1 = time.perf_counter(), {w.id: w.cpu() for w in workers}, time.process_time()
        await asyncio.gather(*tasks)
        return t1 - t0, {k: (c1[k] - c0[k]) / (t1 - t0) for k in c0}, (p1 - p0) / (t1 - t0)

    seconds, cpu, client_cpu = asyncio.run(main())
    sampler.stop.set()
    sampler.join(30)
    for w in workers:
        w.check()
    load.check()
    return PhaseResult(name, stats, seconds, cpu, client_cpu, sampler.lags, sampler.loadavg, 0.0, 0.0)


# ------------------------------------------------------------------------------------------------ report


def ms(xs: list[float], p: float) -> str:
    return f"{1000 * float(np.percentile(xs, p)):.1f}" if xs else "n/a"


def row(label: str, r: PhaseResult) -> str:
    lat = r.stats.latencies.get(label, [])
    errs = r.stats.errors.get(label, Counter())
    err = f"{sum(errs.values())}" + (f" ({', '.join(f'{k}: {v}' for k, v in errs.items())})" if errs else "")
    size = r.stats.sizes.get(label, [])
    kb = f"{np.mean(size) / 1024:.1f}" if size else "n/a"
    top = f"{1000 * max(lat):.1f}" if lat else "n/a"
    return (
        f"| {r.name} | {label} | {len(lat):,} | {len(lat) / r.seconds:.1f} | {ms(lat, 50)} | {ms(lat, 90)} | "
        f"{ms(lat, 99)} | {top} | {err} | {kb} |"
    )


def fmt_lags(lags: list[int | None]) -> str:
    return ", ".join("?" if x is None else f"{x:,}" for x in lags)


def lag_slope(lags: list[int | None]) -> float | None:
    """Least-squares growth of the sampled lag, records per second."""
    known = [(LAG_SAMPLE_S * i, x) for i, x in enumerate(lags) if x is not None]
    if len(known) < 3:
        return None
    t, y = zip(*known, strict=True)
    return float(np.polyfit(t, y, 1)[0])


def phase_line(r: PhaseResult, rate: float) -> str:
    cpu = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r.worker_cpu.items())
    known = [x for x in r.lags if x is not None]
    slope = lag_slope(r.lags)
    if slope is None:
        trend = "lag trend n/a"
    else:
        kept = "kept up" if slope <= max(0.05 * rate, 20.0) else "**did not keep up**"
        trend = f"lag trend {slope:+,.0f} records/s: {kept}"
    return (
        f"{r.name}: load {rate:,.0f} events/s requested, {r.sent_rate:,.0f} sent; worker CPU {cpu} of one "
        f"core; input lag every {LAG_SAMPLE_S:g} s: {fmt_lags(r.lags)} (max {max(known, default=0):,}, end "
        f"{r.lags[-1] if r.lags else '?'}), {trend}; load generator {100 * r.load_cpu:.0f}%, clients "
        f"{100 * r.client_cpu:.0f}% of one core; host load average "
        f"{min(r.loadavg, default=0):.1f}-{max(r.loadavg, default=0):.1f}"
    )


def summarize_log(name: str, lines: list[str]) -> str:
    if not lines:
        return f"{name}: no warnings or errors in the worker log"
    kinds = Counter(line.split("]", 2)[-1].strip()[:100] for line in lines)
    return f"{name}: {len(lines)} warning/error lines, e.g. " + "; ".join(
        f"{n} x `{k}`" for k, n in kinds.most_common(3)
    )


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="live input events/s during the phases")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument(
        "--paced-rate", type=float, default=12.0, help="requests/s of the paced phase (default 12)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds, one worker")
    parser.add_argument("--forward-duration", type=float, default=45.0, help="measured seconds, two workers")
    parser.add_argument(
        "--baseline-duration", type=float, default=20.0, help="measured seconds of the load alone (0: skip)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each phase")
    parser.add_argument(
        "--history-minutes", type=float, default=120.0, help="event time of preloaded history"
    )
    parser.add_argument("--quick", action="store_true", help="15 s phases (a smoke run)")
    parser.add_argument(
        "--web-ports",
        default=",".join(map(str, WEB_PORTS)),
        help="the two workers' web ports (default 6231,6232)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--stop-broker", action="store_true", help="stop the benchmark broker at the end")
    args = parser.parse_args()
    if args.quick:
        args.duration = args.forward_duration = 15.0
        args.baseline_duration = min(args.baseline_duration, 10.0)
    ports = [int(p) for p in args.web_ports.split(",")]
    if len(ports) != 2:
        parser.error("--web-ports needs two ports")
    busy = [p for p in ports if not port_free(p)]
    if busy:
        parser.error(f"web port(s) {busy} in use; choose others with --web-ports")
    logging.getLogger("modelmon.rdkafka").setLevel(logging.ERROR)
    t_total = time.perf_counter()

    HOME.mkdir(parents=True, exist_ok=True)
    base = bench_settings()
    broker = LocalBroker(base, log=lambda m: None)
    broker.start()
    tag = time.time_ns() % 10**7
    settings = base.with_(topic_prefix=f"api{tag}.", app_id=f"apibench{tag}", store="rocksdb", window_s=60)
    workers: list[Worker] = []
    loads: list[Load] = []
    results: list[PhaseResult] = []
    notes: list[str] = []
    lag: GroupLag | None = None
    try:
        create_topics(settings)
        per_prediction = events_per_prediction()
        t0 = time.perf_counter()
        n_history, expected = preload_history(settings, args.history_minutes)
        preload_s = time.perf_counter() - t0
        log(
            f"preloaded {n_history:,} events ({sum(expected.values()):,} predictions, {len(expected)} model "
            f"versions, {args.history_minutes:g} min of event time) in {preload_s:.0f} s"
        )
        lag = GroupLag(settings, settings.group_id)
        workers.append(Worker(settings, "api-a", ports[0]))
        ready_s = workers[0].wait_ready(180)
        caught_s = wait_caught_up(workers, lag, expected, 600)
        log(f"worker api-a ready after {ready_s:.0f} s, caught up {caught_s:.0f} s later")
        status, body = workers[0].get("/api/v1/models")
        if status != 200:
            raise SystemExit(f"/api/v1/models answered {status}: {body}")
        models = body["models"]
        windows_per_series = {(m["model"], m["model_version"]): m["windows"] for m in models}
        log(f"model versions: {windows_per_series}")
        targets = Targets(models, seed=5)

        # -- baseline: the load alone, no requests (does the worker keep up without the API?)
        if args.baseline_duration > 0:
            log(f"baseline: no requests, {args.rate:,.0f} events/s, {args.baseline_duration:g} s")
            loads.append(Load(settings, args.rate, per_prediction))
            lo = time.time()
            r0 = run_phase(
                "load only", workers, lag, loads[-1], [], targets, args.warmup, args.baseline_duration
            )
            loads[-1].finish()
            r0.sent_rate, r0.load_cpu = loads[-1].sent_rate(lo + args.warmup, time.time()), loads[-1].cpu
            results.append(r0)
            print(phase_line(r0, args.rate), flush=True)
            wait_caught_up(workers, lag, expected, 300)

        url = workers[0].url
        plans = [lambda i, url=url: targets.mix(url, i) for _ in range(args.clients)]
        # -- phase 0: one worker, requests at a dashboard-like pace (a refresh is ~4 requests per 5 s)
        log(f"paced: {args.paced_rate:g} requests/s, {args.rate:,.0f} events/s, {args.duration:g} s")
        loads.append(Load(settings, args.rate, per_prediction))
        lo = time.time()
        r_paced = run_phase(
            "one worker, paced",
            workers,
            lag,
            loads[-1],
            plans,
            targets,
            args.warmup,
            args.duration,
            interval=args.clients / args.paced_rate,
        )
        loads[-1].finish()
        r_paced.sent_rate = loads[-1].sent_rate(lo + args.warmup, time.time())
        r_paced.load_cpu = loads[-1].cpu
        results.append(r_paced)
        for label in ENDPOINTS.values():
            print(row(label, r_paced))
        print(phase_line(r_paced, args.rate), flush=True)
        wait_caught_up(workers, lag, expected, 300)

        # -- phase 1: one worker, the three requests back to back
        log(f"phase 1: {args.clients} clients, {args.rate:,.0f} events/s, {args.duration:g} s")
        loads.append(Load(settings, args.rate, per_prediction))
        lo = time.time()
        r1 = run_phase("one worker", workers, lag, loads[-1], plans, targets, args.warmup, args.duration)
        loads[-1].finish()
        r1.sent_rate, r1.load_cpu = loads[-1].sent_rate(lo + args.warmup, time.time()), loads[-1].cpu
        results.append(r1)
        for label in ENDPOINTS.values():
            print(row(label, r1))
        print(phase_line(r1, args.rate), flush=True)

        # -- phase 2: two workers, owner vs forwarded
        workers.append(Worker(settings, "api-b", ports[1]))
        t0 = time.perf_counter()
        owned = wait_two_owners(workers[0], workers[1], settings.output_partitions, 240)
        wait_caught_up(workers, lag, expected, 300)
        log(f"second worker joined; stage-2 partitions {owned} after {time.perf_counter() - t0:.0f} s")
        owner_of: dict[str, str] = {}
        for m in {m for m, _ in targets.series}:
            q = model_partition(m, settings.output_partitions)
            owner_of[m] = next(u for u, qs in owned.items() if q in qs)
        other = {workers[0].url: workers[1].url, workers[1].url: workers[0].url}
        placement = ", ".join(f"{m} -> {owner_of[m].rsplit(':', 1)[1]}" for m in sorted(owner_of))
        log(f"model owners (web port): {placement}")

        def owner_plan(i: int) -> Request:
            model, version = targets.pick()
            forwarded = i % 2 == 1
            base_url = other[owner_of[model]] if forwarded else owner_of[model]
            label = "model query, forwarded" if forwarded else "model query, owner"
            return label, f"{base_url}/api/v1/models/{model}?version={version}", "model"

        log(f"phase 2: {args.clients} clients, {args.rate:,.0f} events/s, {args.forward_duration:g} s")
        loads.append(Load(settings, args.rate, per_prediction))
        lo = time.time()
        plans2 = [owner_plan for _ in range(args.clients)]
        r2 = run_phase(
            "two workers", workers, lag, loads[-1], plans2, targets, args.warmup, args.forward_duration
        )
        loads[-1].finish()
        r2.sent_rate, r2.load_cpu = loads[-1].sent_rate(lo + args.warmup, time.time()), loads[-1].cpu
        after = {
            w.url: (w.get("/api/v1/health")[1] or {}).get("partitions", {}).get("output") for w in workers
        }
        if after != owned:
            r2.notes.append(f"stage-2 ownership changed during the phase: {owned} -> {after}")
        results.append(r2)
        for label in ("model query, owner", "model query, forwarded"):
            print(row(label, r2))
        print(phase_line(r2, args.rate), flush=True)
    finally:
        for load in loads:
            load.finish()
        for w in workers:
            notes.append(summarize_log(f"worker {w.id}", w.stop()))
        if lag is not None:
            lag.close()
        if args.stop_broker:
            broker.stop()
    elapsed = time.perf_counter() - t_total
    for r in results:
        for problem, n in r.stats.problems.items():
            notes.append(f"{r.name}: {n} answers with {problem}")
        notes.extend(f"{r.name}: {n}" for n in r.notes)
    for n in notes:
        print(n)
    print(f"total run time {elapsed:.0f} s")
    if args.no_write:
        return

    r_paced, r1, r2 = results[-3:]
    win = r1.stats.windows_returned
    header = (
        "| phase | request | requests | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| mean body KB |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [row(label, r_paced) for label in ENDPOINTS.values()]
    rows += [row(label, r1) for label in ENDPOINTS.values()] + [
        row(label, r2) for label in ("model query, owner", "model query, forwarded")
    ]
    kept = [n for (_, version), n in windows_per_series.items() if version is not None]
    wmin, wmax = min(kept, default=0), max(kept, default=0)
    span = f"{wmin}" if wmin == wmax else f"{wmin}-{wmax}"
    method = " ".join(
        [
            f"Machine: {machine()}. {code_version()}.",
            "One `modelmon worker` (rocksdict, 8 input / 4 output partitions, 60 s windows, default timers:",
            "tick 1 s, emit 5 s) on fresh topics, preloaded with",
            f"{args.history_minutes:g} min of event time of simulated traffic ({n_history:,} input events,",
            f"3 models x 2 versions, {span} one-minute windows per model version), waited for until",
            "stage 2 held every preloaded prediction. Then a separate process produced",
            f"{args.rate:,.0f} live input events/s of the same models while {args.clients} concurrent HTTP",
            "clients (asyncio + aiohttp, one keep-alive connection each, no pause: a closed loop, so",
            "requests/s is what the worker sustained next to its stream processing) asked for random model",
            "versions, in turn: the model query `/api/v1/models/{model}?version=` (newest window + 5m/1h/24h",
            "views), the dashboard's hour `/api/v1/models/{model}/windows?version=&from=` (from = newest",
            f"window end - 1 h; {np.mean(win) if win else 0:.0f} windows on average) and the model list",
            "`/api/v1/models`; first paced at",
            f"{args.paced_rate:g} requests/s in all (about 15 dashboards refreshing every 5 s), then back",
            "to back. Latency = time.perf_counter from before the request until the whole body was",
            f"read; any non-200 or timeout ({REQUEST_TIMEOUT_S:g} s) is an error, not timed. Each phase:",
            f"{args.warmup:g} s warm-up, then measured. First {args.baseline_duration:g} s of the load alone",
            "(no requests: does the worker keep up without the API?), then, after the lag drained,",
            f"{args.duration:g} s of paced and {args.duration:g} s of back-to-back requests on one worker;",
            "then a second",
            "worker joined the group and, once both owned stage-2 partitions and the lag was 0,",
            f"{args.forward_duration:g} s of model queries only, alternately to the worker owning the",
            "model's stage-2 partition and to the other one, which forwards the request over HTTP (model",
            f"owners by web port: {placement}). Worker CPU = psutil CPU seconds of the worker process per",
            "wall second (100% = one core); lag = input records not yet committed by the group, every",
            f"{LAG_SAMPLE_S:g} s; kept up = least-squares lag growth below 5% of the input rate.",
            "Broker, workers, load generator and clients share the host, so CPU",
            "contention is included.",
        ]
    )
    write_section(
        "api-latency",
        "## API latency (bench/api_latency.py)\n\n"
        + method
        + "\n\n"
        + header
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(f"- {phase_line(r, args.rate)}" for r in results)
        + "\n"
        + "\n".join(f"- {n}" for n in notes)
        + f"\n- run time {elapsed:.0f} s (preload {preload_s:.0f} s)\n",
    )


if __name__ == "__main__":
    main()
