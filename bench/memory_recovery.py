"""Memory and recovery of one worker holding many pending joins and many open windows.

    .venv/bin/python bench/memory_recovery.py [--pending 1000000] [--memory-pending 100000] [--kill9]
    .venv/bin/python bench/memory_recovery.py --pending 50000 --memory-pending 20000 --windows-per-model 50

(the second line is a quick smoke run). Each run uses fresh topics on the benchmark broker.

Memory (target: peak RSS <= 400 MB with 1 M pending joins):
  * pending joins: N predictions (~300-byte payloads, 4 models, one hour of event time) and no labels are
    preloaded, with a join horizon of 30 days, so nothing expires. One worker (rocksdict store) starts
    from empty state and runs until its group has committed every input offset and it has published the
    right prediction count for every window; the peak RSS of its process tree (sampled every 0.1 s) and
    the RSS at that point (steady) are reported. With --paced LAG the predictions are instead produced
    while the worker runs, at most LAG ahead of its committed offsets (live traffic, no backlog to
    catch up on).
  * per 1,000 open windows: the same number of events spread over many (model, window) pairs (default
    10 models x 500 windows of 60 s, 8 events each, one per input partition) versus over one window per
    model, each run from empty state; the steady-RSS difference divided by the number of extra open
    windows / 1,000.

Recovery (target: <= 20 s with the rocksdict store): the pending-joins worker is stopped (SIGTERM) and
started again with the same settings and data folder, so it reuses its local RocksDB state. Measured: wall
time from process start until it has published, after the restart, a tumbling-window ("view": "window")
metric event for every open (model, window) whose traffic.predictions equals the count computed offline
from the preloaded data (model-metrics is read from its end offsets taken just before the restart).
Optional (--kill9): the same after kill -9 of a running worker. For comparison, a worker with
MODELMON_STORE=memory (its own topics and group, --memory-pending joins, fewer because it first has to
consume them at the worker's input rate) is stopped and restarted the same way; it restores its whole
changelog from Kafka. The worker's log (info level) gives the times of group assignment, the end of
Faust's changelog restore and the end of the stage-1 rebuild.

Runs against its own local broker (BENCH_BROKER_PORT, default 19492; state and worker logs under
BENCH_HOME), prints the figures and rewrites the "memory-recovery" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import psutil
from aiokafka.partitioner import murmur2
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    HOME,
    app_digest,
    bench_settings,
    code_version,
    end_offsets,
    input_partitions,
    machine,
    worker_env,
    write_section,
)

from modelmon.broker import LocalBroker
from modelmon.kafka_clients import admin_client, consumer, producer
from modelmon.rollup import rfc3339
from modelmon.settings import Settings
from modelmon.topics import create_topics, topic_name

WEB_PORTS = iter(range(6211, 6220))
WindowId = tuple[str, str]  # (model, window start as in the metric event)
LOG_MARKS = (  # (name, text of the worker's log line)
    ("partitions assigned", "Executing _on_partitions_assigned"),
    ("table recovery done", "Recovery complete"),
    ("stage-1 rebuild done", "rebuilt from"),
)


T_START = time.perf_counter()


def say(text: str) -> None:
    """Print a line with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - T_START:4.0f} s] {text}", flush=True)


# -- data ---------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    records: int
    mean_bytes: float
    expected: dict[WindowId, int]  # predictions per open (model, window)


def _payload(request_id: str, model: str, ts_ms: int, rng: random.Random) -> bytes:
    """A classification prediction of about 300 bytes (scores, latency, a few features)."""
    fraud = rng.random()
    label = "fraud" if fraud > 0.5 else "legit"
    return (
        f'{{"request_id":"{request_id}","model":"{model}","model_version":"1.4.2",'
        f'"ts":{ts_ms // 1000}.{ts_ms % 1000:03d},"task":"classification","prediction":"{label}",'
        f'"scores":{{"legit":{1 - fraud:.6f},"fraud":{fraud:.6f}}},"latency_ms":{rng.random() * 40:.3f},'
        f'"features":{{"amount":{rng.random() * 500:.4f},"account_age_days":{rng.randrange(3000)},'
        f'"card_present":true}}}}'
    ).encode()


Row = tuple[str, str, int]  # (request_id, model, event time in ms)


def write_predictions(
    settings: Settings, rows: Iterator[Row], seed: int, throttle: Callable[[int], None] | None = None
) -> Dataset:
    """Produce one prediction per row (key = request_id, murmur2 partitioner); no labels.

    ``throttle(n)``, if given, is called after every 5,000 records with the number produced so far.
    """
    topic = topic_name(settings, "predictions")
    prod = producer(
        settings,
        **{"linger.ms": 50, "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000},
    )
    failed: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    rng = random.Random(seed)
    expected: Counter[tuple[str, float]] = Counter()
    window_ms = int(settings.window_s * 1000)
    n = size = 0
    for request_id, model, ts_ms in rows:
        value = _payload(request_id, model, ts_ms, rng)
        n += 1
        size += len(value)
        expected[(model, ts_ms // window_ms * settings.window_s)] += 1
        while True:
            try:
                prod.produce(topic, value, request_id.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.05)
        if n % 5000 == 0:
            prod.poll(0)
            if throttle is not None:
                throttle(n)
    if prod.flush(120) or failed:
        raise SystemExit(f"preload failed: {failed[:1] or 'records still queued after 120 s'}")
    return Dataset(n, size / n, {(m, rfc3339(w)): c for (m, w), c in expected.items()})


def lag_throttle(settings: Settings, max_lag: int, worker: WorkerProcess) -> Callable[[int], None]:
    """Hold the producer until the worker's group has committed all but ``max_lag`` predictions."""
    tps = [TopicPartition(topic_name(settings, "predictions"), p) for p in range(settings.input_partitions)]
    admin = admin_client(settings)
    group = settings.group_id

    def throttle(produced: int) -> None:
        while True:
            worker.check_alive()
            try:
                res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
                done = sum(max(tp.offset, 0) for tp in res[group].result(10).topic_partitions)
            except KafkaException:
                done = 0
            if produced - done <= max_lag:
                return
            time.sleep(0.2)

    return throttle


def pending_rows(n: int, models: int, span_s: int, start_ms: int, seed: int) -> Iterator[Row]:
    """``n`` predictions with random request ids, spread evenly over ``span_s`` of event time."""
    rng = random.Random(seed)
    for i in range(n):
        yield f"{rng.getrandbits(128):032x}", f"model-{i % models:02d}", start_ms + i * span_s * 1000 // n


class KeysByPartition:
    """Random request ids sorted by the input partition murmur2 sends them to (as Java and Faust do)."""

    def __init__(self, partitions: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.queues: list[deque[str]] = [deque() for _ in range(partitions)]

    def take(self, partition: int) -> str:
        queue = self.queues[partition]
        while not queue:
            key = f"{self.rng.getrandbits(128):032x}"
            self.queues[(murmur2(key.encode()) & 0x7FFFFFFF) % len(self.queues)].append(key)
        return queue.popleft()


def window_rows(
    models: int, windows: int, per_window: int, partitions: int, window_s: float, start_ms: int, seed: int
) -> Iterator[Row]:
    """``per_window`` events in each of ``windows`` consecutive windows of each model, in event-time order.

    The events of a window go to the input partitions in turn, so with ``per_window`` >= ``partitions``
    every window is open in every partition (one stage-1 accumulator per partition, P parts in stage 2).
    """
    keys = KeysByPartition(partitions, seed)
    step = int(window_s * 1000) // per_window
    for w in range(windows):
        for j in range(per_window):
            for m in range(models):
                key = keys.take((j + m) % partitions)
                yield key, f"model-{m:02d}", start_ms + int(w * window_s * 1000) + j * step + m


# -- a worker process ---------------------------------------------------------------------------------


class WorkerProcess:
    """`modelmon worker --loglevel info` with its process-tree RSS sampled every 0.1 s."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        cmd = [sys.executable, "-m", "modelmon.cli", "worker", "--loglevel", "info"]
        with log_path.open("ab") as log:
            log.write(f"==== start {datetime.now().isoformat()} store={settings.store}\n".encode())
            log.flush()
            self.wall0 = time.time()
            self.t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT)
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        ps = psutil.Process(self.proc.pid)
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                self.peak_mb = max(self.peak_mb, self.rss_mb(ps))
            except psutil.Error:
                pass
            time.sleep(0.1)

    def rss_mb(self, ps: psutil.Process | None = None) -> float:
        ps = ps or psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]) / 2**20

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"worker exited with {self.proc.returncode}; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> float:
        """Send ``sig`` and wait for the exit; return how long that took."""
        t0 = time.perf_counter()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            say(f"  worker did not exit {timeout_s:.0f} s after signal {sig}: killed")
            self.proc.kill()
            self.proc.wait()
        self._stop.set()
        return time.perf_counter() - t0

    def log_marks(self) -> tuple[dict[str, float], int]:
        """When this run's log reached a few steps (seconds after process start), and how many join
        entries its last stage-1 rebuild folded (Faust's log time stamps, the worker's info lines)."""
        marks: dict[str, float] = {}
        stamp = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
        rebuilt: dict[int, int] = {}
        text = self.log_path.read_text(errors="replace").rsplit("==== start ", 1)[-1]
        for line in text.splitlines():
            m = stamp.match(line)
            if not m:
                continue
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - self.wall0
            for name, needle in LOG_MARKS:
                if needle in line:
                    marks[name] = t  # the last occurrence: a rebalance repeats them
            if (
                found := re.search(r"stage 1 partition (\d+) rebuilt from (\d+) join entries", line)
            ) is not None:
                if int(found.group(1)) in rebuilt:
                    rebuilt = {}  # a new rebuild
                rebuilt[int(found.group(1))] = int(found.group(2))
        return marks, sum(rebuilt.values())


def wait_committed(worker: WorkerProcess, group: str, timeout_s: float) -> float:
    """Seconds from process start until ``group`` has committed every input offset."""
    settings = worker.settings
    tps = input_partitions(settings)
    ends = end_offsets(settings, tps)
    admin = admin_client(settings)
    while worker.elapsed() < timeout_s:
        worker.check_alive()
        try:
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
            got = {(tp.topic, tp.partition): tp.offset for tp in res[group].result(10).topic_partitions}
        except KafkaException:
            got = {}
        # An empty partition (ground-truth here) never gets a committed offset: nothing to wait for.
        if got and all(got.get(k, -1) >= v for k, v in ends.items() if v > 0):
            return worker.elapsed()
        time.sleep(0.2)
    raise SystemExit(f"the worker did not commit every input offset within {timeout_s:.0f} s")


class MetricsWatch:
    """Reads model-metrics from given offsets: which open windows were published with the right count."""

    def __init__(self, settings: Settings, start: dict[int, int] | None = None) -> None:
        self.topic = topic_name(settings, "model-metrics")
        self.cons = consumer(settings, group_id=f"bench-metrics-{time.time_ns()}")
        offsets = start or {p: 0 for p in range(settings.output_partitions)}
        self.cons.assign([TopicPartition(self.topic, p, off) for p, off in offsets.items()])
        self.wrong = 0  # window events whose prediction count differed from the offline one

    @staticmethod
    def ends(settings: Settings) -> dict[int, int]:
        tps = [
            TopicPartition(topic_name(settings, "model-metrics"), p)
            for p in range(settings.output_partitions)
        ]
        return {tp: off for (_, tp), off in end_offsets(settings, tps).items()}

    def wait_correct(self, worker: WorkerProcess, expected: dict[WindowId, int], timeout_s: float) -> float:
        """Seconds from process start until every expected window was published with its count."""
        missing = set(expected)
        while missing:
            if worker.elapsed() > timeout_s:
                raise SystemExit(
                    f"{len(missing)} of {len(expected)} windows not published with the right count "
                    f"within {timeout_s:.0f} s ({self.wrong} events with another count); "
                    f"see {worker.log_path}"
                )
            worker.check_alive()
            for msg in self.cons.consume(5000, timeout=0.2):
                if msg.error() is not None:
                    continue
                event = orjson.loads(msg.value())
                if event.get("view") != "window":
                    continue
                key = (event["model"], event["window"]["start"])
                if event["traffic"]["predictions"] == expected.get(key):
                    missing.discard(key)
                else:
                    self.wrong += 1
        return worker.elapsed()

    def close(self) -> None:
        self.cons.close()


# -- the runs -----------------------------------------------------------------------------------------


def new_settings(base: Settings, tag: str, store: str, emit_interval_s: float) -> Settings:
    settings = base.with_(
        topic_prefix=f"mr{tag}{time.time_ns() % 10**8}.",
        store=store,
        worker_id=f"mr-{tag}-{store}",
        web_port=next(WEB_PORTS),
        window_s=60,
        join_horizon_s=HORIZON_S,  # far longer than any data's event-time span: nothing expires or closes
        idle_advance_s=86400,
        emit_interval_s=emit_interval_s,
    )
    create_topics(settings)
    return settings


HORIZON_S = 30 * 86400


@dataclass
class FirstRun:
    committed_s: float
    correct_s: float
    peak_mb: float
    steady_mb: float
    stop_s: float


def first_run(
    settings: Settings, feed: Callable[[WorkerProcess], Dataset], log_path: Path, timeout_s: float
) -> tuple[Dataset, FirstRun]:
    """A worker from empty state until it has committed every input and published every window right.

    ``feed(worker)`` returns the data set, preloaded before or produced while the worker runs.
    """
    log_path.unlink(missing_ok=True)
    worker = WorkerProcess(settings, log_path)
    try:
        data = feed(worker)
        committed = wait_committed(worker, settings.group_id, timeout_s)
        watch = MetricsWatch(settings)
        try:
            correct = watch.wait_correct(worker, data.expected, timeout_s)
        finally:
            watch.close()
        steady = worker.rss_mb()
    finally:
        stop_s = worker.stop()
    return data, FirstRun(committed, correct, worker.peak_mb, steady, stop_s)


@dataclass
class Recovery:
    label: str
    entries: int  # pending joins
    correct_s: float
    peak_mb: float
    steady_mb: float  # RSS when every window was correct
    wrong: int
    marks: dict[str, float]
    rebuilt: int

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.marks.items())


def restart(settings: Settings, data: Dataset, log_path: Path, label: str, timeout_s: float) -> Recovery:
    """Start a worker on existing state and time it until it has republished every window correctly."""
    watch = MetricsWatch(settings, MetricsWatch.ends(settings))
    worker = WorkerProcess(settings, log_path)
    try:
        correct = watch.wait_correct(worker, data.expected, timeout_s)
        steady = worker.rss_mb()
    finally:
        watch.close()
        worker.stop()
    marks, rebuilt = worker.log_marks()
    rec = Recovery(label, data.records, correct, worker.peak_mb, steady, watch.wrong, marks, rebuilt)
    say(
        f"  {label}, {rec.entries:,} pending: correct numbers {rec.correct_s:.1f} s after process start "
        f"(RSS peak {rec.peak_mb:.0f} MiB, then {rec.steady_mb:.0f} MiB; {rec.wrong} window events with "
        f"another count; stage-1 rebuild of {rebuilt:,} entries; log: {rec.describe()})"
    )
    return rec


def kill9_restart(settings: Settings, data: Dataset, log_path: Path, timeout_s: float) -> Recovery:
    """Run a worker until it is up to date, kill -9 it, and time the restart."""
    watch = MetricsWatch(settings, MetricsWatch.ends(settings))
    worker = WorkerProcess(settings, log_path)
    try:
        watch.wait_correct(worker, data.expected, timeout_s)
        time.sleep(2 * settings.tick_interval_s)
    finally:
        watch.close()
        worker.stop(signal.SIGKILL)
    return restart(settings, data, log_path, "rocksdict, after kill -9", timeout_s)


def feeder(
    settings: Settings, rows: Iterator[Row], seed: int, paced_lag: int | None
) -> Callable[[WorkerProcess], Dataset]:
    """Preload the rows now, or (``paced_lag``) produce them while the worker runs, bounded lag."""
    if paced_lag is not None:
        return lambda worker: write_predictions(
            settings, rows, seed, lag_throttle(settings, paced_lag, worker)
        )
    t0 = time.perf_counter()
    data = write_predictions(settings, rows, seed)
    say(
        f"preloaded {data.records:,} predictions without labels ({data.mean_bytes:.0f} B mean, "
        f"{len(data.expected)} open windows) in {time.perf_counter() - t0:.1f} s"
    )
    return lambda worker: data


def changelog_partitions(settings: Settings) -> list[TopicPartition]:
    return [
        TopicPartition(f"{settings.group_id}-{table}-changelog", p)
        for table, n in (("join", settings.input_partitions), ("windows", settings.output_partitions))
        for p in range(n)
    ]


def report_first(label: str, data: Dataset, run: FirstRun) -> None:
    say(
        f"{label}: {data.records:,} predictions, {len(data.expected):,} open windows: peak RSS "
        f"{run.peak_mb:.0f} MiB, steady {run.steady_mb:.0f} MiB; all input committed after "
        f"{run.committed_s:.1f} s ({data.records / run.committed_s:,.0f} events/s), every window correct "
        f"after {run.correct_s:.1f} s; SIGTERM stop took {run.stop_s:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pending", type=int, default=1_000_000, help="pending joins (predictions, no labels)"
    )
    parser.add_argument("--models", type=int, default=4, help="models of the pending-joins data")
    parser.add_argument("--span-s", type=int, default=3600, help="event-time span of the pending-joins data")
    parser.add_argument(
        "--memory-pending", type=int, default=100_000, help="pending joins of the memory-store comparison"
    )
    parser.add_argument("--window-models", type=int, default=10)
    parser.add_argument("--windows-per-model", type=int, default=500)
    parser.add_argument(
        "--events-per-window", type=int, default=8, help="spread over the input partitions in turn"
    )
    parser.add_argument("--emit-interval", type=float, default=5.0, help="MODELMON_EMIT_INTERVAL_S")
    parser.add_argument(
        "--paced",
        type=int,
        metavar="LAG",
        help="produce the pending joins while the worker runs, at most LAG ahead of its committed offsets "
        "(default: preload them all before it starts)",
    )
    parser.add_argument("--kill9", action="store_true", help="also time a restart after kill -9")
    parser.add_argument("--no-memory-store", action="store_true", help="skip the memory-store comparison")
    parser.add_argument("--no-windows", action="store_true", help="skip the per-1,000-windows runs")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for each worker run")
    args = parser.parse_args()
    t_start = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that finally blocks stop the worker
    HOME.mkdir(exist_ok=True)
    code, digest = code_version(), app_digest()
    say(f"worker code: {code}")
    base = bench_settings()
    LocalBroker(base, log=lambda m: None).start()
    hour_ms = int(time.time()) // 3600 * 3600 * 1000
    span_ms = args.span_s * 1000

    # 1. pending joins (rocksdict): memory while consuming, then restarts on the local state
    settings = new_settings(base, "p", "rocksdb", args.emit_interval)
    rows = pending_rows(args.pending, args.models, args.span_s, hour_ms - span_ms, seed=11)
    log_path = HOME / "memory-recovery-rocksdict.log"
    data, run = first_run(settings, feeder(settings, rows, 11, args.paced), log_path, args.timeout)
    report_first("pending joins, rocksdict", data, run)
    recoveries = [restart(settings, data, log_path, "rocksdict, after SIGTERM", args.timeout)]
    if args.kill9:
        recoveries.append(kill9_restart(settings, data, log_path, args.timeout))

    # 2. the memory store: its own (smaller) data and group, consumed, then restarted
    mem_run, mem_note = None, ""
    if not args.no_memory_store:
        mem = new_settings(base, "m", "memory", args.emit_interval)
        rows = pending_rows(args.memory_pending, args.models, args.span_s, hour_ms - span_ms, seed=13)
        mem_log = HOME / "memory-recovery-memory.log"
        mem_data, mem_run = first_run(mem, feeder(mem, rows, 13, args.paced), mem_log, args.timeout)
        report_first("pending joins, memory store", mem_data, mem_run)
        changelog = sum(end_offsets(mem, changelog_partitions(mem)).values())
        rec = restart(mem, mem_data, mem_log, "memory store, after SIGTERM", args.timeout)
        recoveries.append(rec)
        restore_s = rec.marks.get("table recovery done", 0) - rec.marks.get("partitions assigned", 0)
        if restore_s > 0:
            rate = changelog / restore_s
            mem_note = (
                f"The memory-store worker restored {changelog:,} changelog records in {restore_s:.1f} s "
                f"({rate:,.0f} records/s); at that rate the restore alone would take about "
                f"{changelog * args.pending / mem_data.records / rate:.0f} s with {args.pending:,} pending "
                "joins (an extrapolation, not measured)."
            )
            say(f"  {mem_note}")

    # 3. open windows: many versus one per model, the same events, each from empty state
    windows_runs: list[tuple[str, Dataset, FirstRun]] = []
    if not args.no_windows:
        for tag, windows, per_window, start_ms in (
            ("many windows", args.windows_per_model, args.events_per_window, hour_ms - 86400 * 1000),
            ("few windows", 1, args.events_per_window * args.windows_per_model, hour_ms - 3600 * 1000),
        ):
            ws = new_settings(base, tag.split()[0], "rocksdb", args.emit_interval)
            rows = window_rows(
                args.window_models, windows, per_window, ws.input_partitions, ws.window_s, start_ms, seed=7
            )
            log = HOME / f"memory-recovery-{tag.split()[0]}.log"
            wdata, wrun = first_run(ws, feeder(ws, rows, 7, None), log, args.timeout)
            report_first(tag, wdata, wrun)
            windows_runs.append((tag, wdata, wrun))
    per_1000 = None
    if windows_runs:
        (_, many, many_run), (_, few, few_run) = windows_runs
        extra = (len(many.expected) - len(few.expected)) / 1000
        per_1000 = (
            (many_run.steady_mb - few_run.steady_mb) / extra,
            (many_run.peak_mb - few_run.peak_mb) / extra,
        )
        say(f"per 1,000 open windows: {per_1000[0]:.1f} MiB steady RSS ({per_1000[1]:.1f} MiB peak)")
    total_s = time.perf_counter() - t_start
    say(f"total {total_s:.0f} s")
    if app_digest() != digest:
        code += ", CHANGED during the run (the figures mix versions)"
        say("warning: app/modelmon changed during the run; the workers started before and after differ")

    feed = (
        f"produced while the worker ran, at most {args.paced:,} ahead of its committed offsets"
        if args.paced is not None
        else "preloaded before the worker started (it catches up on the whole backlog)"
    )
    lines = [
        "## Memory and recovery (bench/memory_recovery.py)\n",
        f"Machine: {machine()}; {code}. One worker at a time, {settings.input_partitions} input and "
        f"{settings.output_partitions} output partitions, {settings.window_s:g}-s windows, join horizon "
        f"{HORIZON_S // 86400} days (nothing expires or closes), emit interval {args.emit_interval:g} s, "
        "broker on the same host. Payloads: classification predictions with scores, latency and three "
        f"features, {data.mean_bytes:.0f} B mean; no labels, so every prediction is a pending join.\n",
        "**Memory.** Each worker starts from empty state and runs until its group has committed every "
        "input offset and it has published every window with the right prediction count. RSS is that of "
        "the process tree, sampled every 0.1 s (peak), and at that point (steady). Pending-joins input: "
        f"{feed}; windows runs: preloaded.\n",
        "| run | store | pending joins | open windows | peak RSS | steady RSS | input rate | every window "
        "right after | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table = [("pending joins", "rocksdict", data, run, "peak <= 400 MB")]
    if mem_run is not None:
        table.append(("pending joins", "memory", mem_data, mem_run, ""))
    table += [(tag, "rocksdict", wdata, wrun, "") for tag, wdata, wrun in windows_runs]
    for tag, store, d, r, target in table:
        lines.append(
            f"| {tag} | {store} | {d.records:,} | {len(d.expected):,} | {r.peak_mb:.0f} MiB | "
            f"{r.steady_mb:.0f} MiB | {d.records / r.committed_s:,.0f} events/s | {r.correct_s:.1f} s | "
            f"{target} |"
        )
    if per_1000 is not None:
        lines.append(
            f"\n**Per 1,000 open windows: {per_1000[0]:.1f} MiB** of steady RSS ({per_1000[1]:.1f} MiB by "
            f"peak RSS): the difference of the two windows runs divided by {extra:g} thousand extra "
            f"windows. In the many-windows run each (model, window) has {args.events_per_window} events, "
            "sent to the input partitions in turn, so a window is open in up to every partition (one "
            "stage-1 accumulator per partition, that many parts in stage 2)."
        )
    lines.append(
        "\n**Recovery.** A worker holding the pending joins above is stopped and started again (same "
        "settings and data folder). Measured: wall time from process start until it has published, after "
        "the restart, a tumbling-window metric event with the right prediction count for every open window "
        "(model-metrics read from its end offsets taken just before the restart). Log marks, in seconds "
        "after process start: the worker's last 'partitions assigned', Faust's 'Recovery complete' "
        "(changelog restore done) and the last 'stage 1 partition ... rebuilt' line (the join table has "
        "been folded into the stage-1 accumulators). The memory-store worker restores its whole "
        "changelog from Kafka on every start.\n",
    )
    lines.append("| restart | pending joins | right numbers after | target | RSS peak, then | log marks |")
    lines.append("|---|---|---|---|---|---|")
    for rec in recoveries:
        target = "<= 20 s" if rec.label.startswith("rocksdict") else ""
        lines.append(
            f"| {rec.label} | {rec.entries:,} | {rec.correct_s:.1f} s | {target} | {rec.peak_mb:.0f} MiB, "
            f"{rec.steady_mb:.0f} MiB | {rec.describe()} |"
        )
    if args.kill9:
        lines.append(
            f"\nAfter kill -9 the new worker joins the group only once the dead member's session has "
            f"expired (MODELMON_SESSION_TIMEOUT_S = {settings.session_timeout_s:g} s)."
        )
    if mem_note:
        lines.append(f"\n{mem_note}")
    command = " ".join(["bench/memory_recovery.py", *sys.argv[1:]])
    lines.append(f"\nWhole benchmark (`{command}`): {total_s:.0f} s.\n")
    write_section("memory-recovery", "\n".join(lines))


if __name__ == "__main__":
    main()
