"""Rebalances under load: a second and a third worker join, then one leaves gracefully and one is killed
(-9); the final metric events, dead letters and feedback records still equal the offline oracle, and the
HTTP API of every worker answers correctly throughout: numbers, or 503 while it cannot, never wrong ones.

The stream is the stream-core test's (duplicates, relabels, early and late labels, orphans, invalid
events), sent in paced chunks by a thread while the group changes; each membership change starts with
chunks still to send, so every rebalance happens under load. Each step waits until the consumer group
is stable with the expected members (AdminClient) and every live worker reports itself ready with the
partitions split between them.

A poller thread queries every worker (also the stopped and killed ones) for the whole run (models list,
each model and its windows, alerts, /api/v1/health, /ready, /metrics) and sorts the answers: 200, 503
(JSON error with Retry-After), 404 before a model has data or after the close dropped its windows,
connection refused, other connection errors. What it checks (``ApiLog``):
- never a 500 or another status, never malformed JSON, never a 404 for a model that was served before
  (until the close), never a models list missing a series that was listed before (a partial answer);
- per window, the predictions, errors, invalid events and labelled pairs any worker reports never
  exceed the oracle's final counts (nothing visible is counted twice), and a window served as final
  equals the oracle exactly;
- per window, the revision never goes back across reads from any worker, and one revision always has
  one content: stage 2's writes are durable before its input offsets commit, a graceful hand-over
  flushes them, and a replay after a kill reapplies the same snapshots in the same order. The exception
  is a read of a write the killed owner had not yet made durable (see docs/architecture.md §9);
- rolling views never count more predictions than the whole series has;
- a window's counts never drop before the kill (a graceful hand-over moves durable state only).
After the stream, the survivor's answers equal the oracle for every window (expiry counts aside), then,
after closing events that finalise the stream's windows without dropping them yet, every such window
is served final and equal to the oracle; the final closing events then finalise (and drop) the rest.
The report (counts of answers by class, rebalance times) is printed and kept as rebalance-report.json.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import ConsumerGroupState

from modelmon.kafka_clients import admin_client
from modelmon.settings import Settings
from modelmon.topics import create_topics, model_partition, topic_name
from tests.integration.streamcheck import (
    HORIZON,
    UNKNOWN,
    WINDOW,
    Stream,
    _epoch,
    check_window,
    closer_events,
    closers,
    make_stream,
    oracle,
    produce,
    stream_settings,
    wait_for_lag_zero,
)
from tests.integration.test_stream_core import _verify
from tests.integration.webcheck import WebWorker

pytestmark = pytest.mark.integration

MODELS = ("clf", "reg", UNKNOWN)
GROUPS = 5  # chunk groups: a warm-up, then one released at the start of each of the four steps
CHUNKS_PER_GROUP = 24
CHUNK_INTERVAL_S = 0.4
STEP_TIMEOUT_S = 150.0
HTTP_TIMEOUT_S = 12.0  # above the 10 s forwarding timeout


def _digest(event: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in event.items() if k != "emitted_at"}, option=orjson.OPT_SORT_KEYS)


def _counts(event: dict[str, Any]) -> dict[str, int]:
    return {
        "predictions": event["traffic"]["predictions"],
        "errors": event["traffic"]["errors"],
        "invalid": event["traffic"]["invalid"],
        "labelled": event["labels"]["labelled"],
    }


def _oracle_counts(facts: dict | None) -> dict[str, int]:
    if facts is None:
        return {"predictions": 0, "errors": 0, "invalid": 0, "labelled": 0}
    preds = facts.get("predictions", [])
    return {
        "predictions": len(preds),
        "errors": sum(1 for p in preds if p.get("error")),
        "invalid": sum(n for _, n in facts.get("invalid", [])),
        "labelled": len(facts.get("outcomes", [])),
    }


@dataclass
class Seen:
    """What was served for one (model, version, window): the newest revision and the largest counts."""

    rev: int
    at: float
    worker: str
    counts: dict[str, int]
    count_from: dict[str, tuple[str, float, int]] = field(default_factory=dict)


class ApiLog:
    """Every answer the poller got, sorted into classes, and the invariant violations among them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.classes: Counter[tuple[str, str, str]] = Counter()  # (worker, worker state, class)
        self.violations: list[str] = []
        self.regressions: list[dict[str, Any]] = []  # a window's revision went back
        self.windows: dict[tuple, Seen] = {}
        self.contents: dict[tuple[tuple, int], bytes] = {}
        self.conflicts: list[str] = []  # one revision, two contents
        self.drops: list[dict[str, Any]] = []  # a window count below one served before
        self.finals: dict[tuple, dict[str, Any]] = {}
        self.view_max: dict[tuple[str, str | None], int] = defaultdict(int)  # 5m view predictions
        self.view_rev: dict[tuple[str, str | None, str], tuple[int, float, str]] = {}
        self.served: set[str] = set()  # models answered 200 once
        self.listed: set[tuple[str, str | None]] = set()  # series listed by /models once
        self.window_events = 0
        self.events_checked: set[tuple[tuple, int]] = set()

    def note(self, worker: str, state: str, klass: str) -> None:
        with self.lock:
            self.classes[(worker, state, klass)] += 1

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def window_event(self, event: dict[str, Any], worker: str, now: float) -> None:
        key = (event["model"], event["model_version"], _epoch(event["window"]["start"]))
        rev = event["revision"]
        digest = _digest(event)
        counts = _counts(event)
        with self.lock:
            self.window_events += 1
            self.events_checked.add((key, rev))
            known = self.contents.setdefault((key, rev), digest)
            if known != digest:
                self.conflicts.append(f"{key} revision {rev} served with two contents (last from {worker})")
            seen = self.windows.get(key)
            if seen is None:
                seen = self.windows[key] = Seen(rev, now, worker, dict(counts))
                seen.count_from = {k: (worker, now, rev) for k in counts}
            else:
                if rev < seen.rev:
                    self.regressions.append(
                        {"key": key, "rev": rev, "worker": worker, "at": now, "newer": seen.rev,
                         "newer_worker": seen.worker, "newer_at": seen.at}
                    )  # fmt: skip
                else:
                    seen.rev, seen.at, seen.worker = rev, now, worker
                for name, value in counts.items():
                    if value < seen.counts[name]:
                        self.drops.append(
                            {"key": key, "count": name, "value": value, "max": seen.counts[name],
                             "worker": worker, "at": now, "max_from": seen.count_from[name]}
                        )  # fmt: skip
                    if value > seen.counts[name]:
                        seen.counts[name] = value
                        seen.count_from[name] = (worker, now, rev)
            if event["final"]:
                self.finals.setdefault(key, event)

    def views(self, entry: dict[str, Any], worker: str, now: float) -> None:
        series = (entry["model"], entry["model_version"])
        for name, view in (entry.get("views") or {}).items():
            if view is None:
                continue
            with self.lock:
                if name == "5m":
                    self.view_max[series] = max(self.view_max[series], view["traffic"]["predictions"])
                key = (*series, name)
                old = self.view_rev.get(key)
                if old is not None and view["revision"] < old[0]:
                    self.regressions.append(
                        {"key": key, "rev": view["revision"], "worker": worker, "at": now, "newer": old[0],
                         "newer_worker": old[2], "newer_at": old[1]}
                    )  # fmt: skip
                if old is None or view["revision"] >= old[0]:
                    self.view_rev[key] = (view["revision"], now, worker)

    def summary(self) -> dict[str, Any]:
        by_class: Counter[str] = Counter()
        by_worker: dict[str, dict[str, int]] = defaultdict(dict)
        for (worker, state, klass), n in sorted(self.classes.items()):
            by_class[klass] += n
            by_worker[worker][f"{state}:{klass}"] = n
        return {
            "answers": dict(by_class),
            "by_worker": dict(by_worker),
            "window_events_read": self.window_events,
            "distinct_window_revisions": len(self.events_checked),
            "windows_seen": len(self.windows),
            "finals_seen": len(self.finals),
            "regressions": len(self.regressions),
            "count_drops": len(self.drops),
            "windows_with_count_drops": len({d["key"] for d in self.drops}),
            "conflicts": len(self.conflicts),
            "violations": len(self.violations),
        }


class Poller(threading.Thread):
    """Queries every worker's API in turn until stopped (one request at a time, so answers are ordered)."""

    def __init__(self, log: ApiLog) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.workers: list[tuple[WebWorker, str]] = []  # (worker, state); the main thread updates states
        self.states: dict[str, str] = {}
        self.closing = False  # the closing events went out: windows are finalised, then dropped
        self.done = threading.Event()
        self.paths = ["/api/v1/models", "/api/v1/alerts?limit=1000", "/api/v1/health", "/ready", "/metrics"]
        for model in MODELS:
            self.paths += [f"/api/v1/models/{model}", f"/api/v1/models/{model}/windows?limit=10000"]

    def add(self, worker: WebWorker, state: str = "starting") -> None:
        self.states[worker.worker_id] = state
        self.workers.append((worker, state))

    def set_state(self, worker: WebWorker, state: str) -> None:
        self.states[worker.worker_id] = state

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            for worker, _ in list(self.workers):
                if self.done.is_set():
                    break
                self.query(worker, self.paths[i % len(self.paths)])
                time.sleep(0.05)
            i += 1

    def query(self, worker: WebWorker, path: str) -> None:
        name = worker.worker_id
        state = self.states[name]
        request = urllib.request.Request(worker.url + path)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
                status, raw, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, raw, headers = err.code, err.read(), dict(err.headers)
        except urllib.error.URLError as err:
            refused = isinstance(err.reason, ConnectionRefusedError)
            self.log.note(name, state, "refused" if refused else f"conn:{type(err.reason).__name__}")
            return
        except TimeoutError:
            self.log.note(name, state, "timeout")
            return
        except OSError as err:  # reset or closed while the worker stops
            self.log.note(name, state, f"conn:{type(err).__name__}")
            return
        now = time.monotonic()
        if (
            path == "/metrics"
        ):  # Prometheus text, always 200 (while recovering, view and alert gauges are left out)
            ok = status == 200 and b"modelmon_worker_ready" in raw
            self.log.note(name, state, f"{status}:metrics")
            if not ok:
                self.log.violation(f"{name} /metrics: {status} {raw[:200]!r}")
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.log.note(name, state, f"{status}:malformed")
            self.log.violation(f"{name} {path}: {status} with a body that is not JSON: {raw[:200]!r}")
            return
        if path == "/ready":  # 200 ready, or 503 with the reason
            self.log.note(name, state, f"{status}:ready")
            if (status, body.get("ready")) not in ((200, True), (503, False)):
                self.log.violation(f"{name} /ready: {status} {body}")
            return
        if status == 503:
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            self.log.note(name, state, f"503:{code}")
            if code not in ("not_ready", "unavailable") or headers.get("Retry-After") is None:
                self.log.violation(
                    f"{name} {path}: 503 without a JSON error and Retry-After: {body} {headers}"
                )
            return
        model = path.split("?")[0].split("/")[4] if path.startswith("/api/v1/models/") else None
        if status == 404 and model is not None:
            if model not in self.log.served:
                self.log.note(name, state, "404:before-data")
                return
            if self.closing:  # every window was finalised and then dropped (kept about two horizons)
                self.log.note(name, state, "404:after-close")
                return
        if status != 200:
            self.log.note(name, state, str(status))
            self.log.violation(f"{name} {path}: {status} {str(body)[:300]}")
            return
        self.log.note(name, state, "200")
        if model is not None:
            self.log.served.add(model)
        self.check(name, path, body, now)

    def check(self, name: str, path: str, body: Any, now: float) -> None:
        if path == "/api/v1/models":
            listed = {(m["model"], m["model_version"]) for m in body["models"]}
            missing = self.log.listed - listed
            if missing and not self.closing:
                self.log.violation(f"{name} /models: {sorted(missing, key=str)} listed before, not now")
            self.log.listed |= listed
        elif path == "/api/v1/health":
            parts = body["partitions"]
            if not (set(parts["input"]) <= set(range(8)) and set(parts["output"]) <= set(range(4))):
                self.log.violation(f"{name} /health: {parts}")
        elif path.startswith("/api/v1/alerts"):
            if body["alerts"]:  # no rules are configured
                self.log.violation(f"{name} /alerts: {body['alerts'][:2]}")
        elif path.endswith("limit=10000"):
            for event in body["windows"]:
                self.log.window_event(event, name, now)
        else:
            for entry in body["versions"]:
                if entry.get("current") is not None:
                    self.log.window_event(entry["current"], name, now)
                self.log.views(entry, name, now)


def _paced_sender(
    settings: Settings,
    groups: list[list[list[tuple[str, Any]]]],
    steps: list[threading.Event],
    sent: list[int],
) -> None:
    """Send the chunks at a steady pace; group g + 1 only once step g has started (so each step begins
    with load still coming, however long the previous one took). ``sent``: [events, chunks] so far."""
    for g, group in enumerate(groups):
        if g > 0:
            steps[g - 1].wait(timeout=4 * STEP_TIMEOUT_S)
        for chunk in group:
            produce(settings, chunk)
            sent[0] += len(chunk)
            sent[1] += 1
            time.sleep(CHUNK_INTERVAL_S)


def _wait_for_chunks(sent: list[int], chunks: int, sender: threading.Thread) -> None:
    """Until the sender is half way through the group a step starts in."""
    deadline = time.monotonic() + 120
    while sent[1] < chunks and sender.is_alive():
        assert time.monotonic() < deadline, f"the sender is stuck at chunk {sent[1]}"
        time.sleep(0.1)


def _group(admin: Any, settings: Settings) -> tuple[Any, list[set[tuple[str, int]]]]:
    """The consumer group's state and each member's assigned topic partitions."""
    desc = admin.describe_consumer_groups([settings.group_id])[settings.group_id].result(10)
    members = [{(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} for m in desc.members]
    return desc.state, members


def _wait_rebalanced(
    admin: Any, settings: Settings, live: list[WebWorker], step: str, timeout_s: float = STEP_TIMEOUT_S
) -> float:
    """Until the group is stable with one member per live worker, every input partition assigned once,
    and every live worker ready, owning its share of the stage-2 partitions; returns the seconds taken."""
    started = time.monotonic()
    deadline = started + timeout_s
    pred = topic_name(settings, "predictions")
    last: Any = None
    while time.monotonic() < deadline:
        try:
            state, members = _group(admin, settings)
            answers = [w.get("/api/v1/health", timeout=10) for w in live]
        except Exception as exc:  # the coordinator is moving, or a worker restarts: try again
            last = repr(exc)
            time.sleep(0.5)
            continue
        assert all(status == 200 for status, _, _ in answers), f"{step}: /api/v1/health {answers}"
        healths = [body for _, body, _ in answers]
        inputs = [sorted(p for t, p in m if t == pred) for m in members]
        last = (state, inputs, [(h.get("ready"), h.get("partitions")) for h in healths])
        owned_in = [p for h in healths for p in h["partitions"]["input"]]
        owned_out = [q for h in healths for q in h["partitions"]["output"]]
        if (
            state == ConsumerGroupState.STABLE
            and len(members) == len(live)
            and sorted(p for ps in inputs for p in ps) == list(range(settings.input_partitions))
            and all(h["ready"] and len(h["workers"]) == len(live) for h in healths)
            and sorted(owned_in) == list(range(settings.input_partitions))
            and sorted(owned_out) == list(range(settings.output_partitions))
        ):
            return time.monotonic() - started
        time.sleep(0.5)
    logs = "\n".join(f"--- {w.worker_id}\n{w.log_tail(30)}" for w in live)
    raise AssertionError(f"{step}: not rebalanced within {timeout_s} s: {last}\n{logs}")


def _step_starter(
    steps: list[threading.Event], sent: list[int], sender: threading.Thread, report: dict[str, Any]
) -> Any:
    """step(k, name): wait until the sender is half way through group k, then let it go on to group k + 1."""

    def step(k: int, name: str) -> None:
        _wait_for_chunks(sent, k * CHUNKS_PER_GROUP + CHUNKS_PER_GROUP // 2, sender)
        report.setdefault("events_sent_at_step", {})[name] = sent[0]
        steps[k].set()

    return step


def _preclose_errors(expected: dict, answers: dict[tuple, dict]) -> list[str]:
    """The survivor's windows against the oracle before the closing events. Pending joins have not
    expired yet, so unmatched predictions and orphan labels may still be lower than at the close."""
    errors = []
    for key, facts in expected.items():
        if key[0] not in MODELS:
            continue
        event = answers.get(key)
        counters = facts.get("counters", {})
        if event is None:
            pending_only = not facts.get("predictions") and not facts.get("invalid")
            if pending_only and not any(n for k, n in counters.items() if k != "orphan_labels"):
                continue  # only orphan labels, which are counted when they expire at the close
            errors.append(f"{key}: not served")
            continue
        adjusted = copy.deepcopy(facts)
        adjusted.setdefault("counters", defaultdict(int))
        for name in ("unmatched_predictions", "orphan_labels"):
            got = event["counters"][name]
            if got <= counters.get(name, 0):
                adjusted["counters"][name] = got
        errors += check_window(key, adjusted, event)
    for key in set(answers) - set(expected):
        errors.append(f"{key}: served, but the oracle has no such window: {_counts(answers[key])}")
    return errors


def _survivor_windows(worker: WebWorker) -> dict[tuple, dict] | None:
    out = {}
    for model in MODELS:
        status, body, _ = worker.get(f"/api/v1/models/{model}/windows?limit=10000", timeout=HTTP_TIMEOUT_S)
        if status == 404:
            continue
        if status != 200:
            return None
        for event in body["windows"]:
            out[(event["model"], event["model_version"], _epoch(event["window"]["start"]))] = event
    return out


def _wait_preclose_exact(worker: WebWorker, expected: dict, timeout_s: float = 90.0) -> int:
    """Until the survivor's answers equal the oracle (stage 2 may still apply the last snapshots)."""
    deadline = time.monotonic() + timeout_s
    errors: list[str] = ["no answer"]
    while time.monotonic() < deadline:
        answers = _survivor_windows(worker)
        if answers is not None:
            errors = _preclose_errors(expected, answers)
            if not errors:
                return len(answers)
        time.sleep(1.0)
    raise AssertionError("the survivor's windows differ from the oracle:\n" + "\n".join(errors[:30]))


def _wait_finals_exact(worker: WebWorker, expected: dict, close_at: float, timeout_s: float = 90.0) -> int:
    """Until the survivor serves every window the watermark ``close_at`` closed as final, equal to the
    oracle; returns how many."""
    closed = {k for k in expected if k[0] in MODELS and k[2] + WINDOW + HORIZON <= close_at}
    deadline = time.monotonic() + timeout_s
    errors: list[str] = ["no answer"]
    while time.monotonic() < deadline:
        answers = _survivor_windows(worker)
        if answers is not None:
            errors = []
            for key in closed:
                event = answers.get(key)
                if event is None or not event["final"]:
                    errors.append(f"{key}: {'not final' if event else 'not served'}")
                else:
                    errors += check_window(key, expected[key], event)
            for key, event in answers.items():
                if key not in expected and event["final"]:
                    errors.append(f"{key}: final, but the oracle has no such window")
            if not errors:
                return len(closed)
        time.sleep(1.0)
    raise AssertionError("the survivor's final windows differ from the oracle:\n" + "\n".join(errors[:30]))


def _first_closers(ts: float, partitions: int) -> list[tuple[str, Any]]:
    """streamcheck.closer_events under request ids of their own, so the final closing events are not
    duplicates of these."""
    return closer_events(ts, partitions, prefix="close-first-")


def _chunks(stream: Stream) -> list[list[list[tuple[str, Any]]]]:
    n = GROUPS * CHUNKS_PER_GROUP
    chunks = [stream.events[i::n] for i in range(n)]  # every chunk spans the whole stream
    return [chunks[g * CHUNKS_PER_GROUP : (g + 1) * CHUNKS_PER_GROUP] for g in range(GROUPS)]


@pytest.mark.timeout(480)
def test_scale_out_and_in_under_load_stays_exact(settings, tmp_path: Path) -> None:
    s = stream_settings(settings, home=str(tmp_path))
    create_topics(s)
    stream = make_stream(seed=11, n=2400)
    # As in the crash test: predictions without ts would take the Kafka timestamp, which moves event time
    # with the wall clock over the run and expires joins mid-stream (a documented timing dependence).
    for kind, payload in stream.events:
        if kind == "p" and "ts" not in payload:
            payload["ts"] = stream.base + 5.0
    groups = _chunks(stream)
    admin = admin_client(s)
    steps = [threading.Event() for _ in range(GROUPS - 1)]
    sent = [0, 0]
    log = ApiLog()
    poller = Poller(log)
    workers: list[WebWorker] = []
    timings: dict[str, float] = {}
    report: dict[str, Any] = {
        "partitions_of_models": {m: model_partition(m, s.output_partitions) for m in MODELS}
    }

    def start(name: str) -> WebWorker:
        worker = WebWorker(s, name, tmp_path).start()
        workers.append(worker)
        poller.add(worker)
        return worker

    sender = threading.Thread(target=_paced_sender, args=(s, groups, steps, sent), daemon=True)
    try:
        started = time.monotonic()
        w1 = start("rb1")
        w1.wait_ready(120)
        _wait_rebalanced(admin, s, [w1], "one worker")
        timings["first worker ready"] = time.monotonic() - started
        poller.set_state(w1, "live")
        poller.start()
        sender.start()

        step = _step_starter(steps, sent, sender, report)
        step(0, "join 2nd")
        w2 = start("rb2")
        timings["join 2nd"] = _wait_rebalanced(admin, s, [w1, w2], "a second worker joins")
        poller.set_state(w2, "live")

        step(1, "join 3rd")
        w3 = start("rb3")
        timings["join 3rd"] = _wait_rebalanced(admin, s, [w1, w2, w3], "a third worker joins")
        poller.set_state(w3, "live")

        step(2, "leave (SIGTERM)")
        poller.set_state(w2, "stopping")
        assert w2.proc is not None
        w2.proc.terminate()
        graceful_started = time.monotonic()
        report["graceful_exit_code"] = w2.proc.wait(60)
        report["graceful_exit_s"] = round(time.monotonic() - graceful_started, 1)
        poller.set_state(w2, "stopped")
        waited = _wait_rebalanced(admin, s, [w1, w3], "a worker leaves gracefully")
        timings["leave (SIGTERM)"] = waited + report["graceful_exit_s"]

        step(3, "leave (kill -9)")
        poller.set_state(w3, "killed")
        killed_at = time.monotonic()
        w3.kill9()
        timings["leave (kill -9)"] = _wait_rebalanced(admin, s, [w1], "a worker is killed")

        sender.join(timeout=4 * STEP_TIMEOUT_S)
        assert not sender.is_alive(), "the sender did not finish"
        report["sent_total"] = sent[0]
        wait_for_lag_zero(s, timeout_s=180)
        produce(s, [("g", lab) for lab in stream.late_labels])
        wait_for_lag_zero(s, timeout_s=120)

        expected, _ = oracle(s, stream)
        report["survivor_windows_exact"] = _wait_preclose_exact(w1, expected)

        # The close in two steps. First, event time just past every prediction window's end plus the
        # horizon on every partition: those windows are final, and their tombstones stay (they are dropped
        # one more horizon later), so the API serves the finals. Then far past everything.
        close_at = stream.base + 10.0 + WINDOW + HORIZON
        produce(s, _first_closers(close_at, s.input_partitions))
        report["survivor_finals_exact"] = _wait_finals_exact(w1, expected, close_at)
        poller.closing = True
        produce(s, closers(stream))
        restarted = [w.worker_id for w in workers if "restarting" in w.log_path.read_text(errors="replace")]
        report["watchdog_restarts"] = restarted
        _verify(s, stream, workers, crashed=True)
    finally:
        poller.done.set()
        for event in steps:
            event.set()
        if poller.is_alive():
            poller.join(timeout=2 * HTTP_TIMEOUT_S)
        for w in workers:
            w.stop()
        report["rebalance_s"] = {k: round(v, 1) for k, v in timings.items()}
        report["api"] = log.summary()
        report["api_count_drops_sample"] = log.drops[:3]
        (tmp_path / "rebalance-report.json").write_text(json.dumps(report, indent=1, default=str))
        print(json.dumps(report, indent=1, default=str))

    # -- what the API served throughout ----------------------------------------------------------------
    assert not log.violations, "\n".join(log.violations[:20])
    assert not log.conflicts, "\n".join(log.conflicts[:20])
    too_high = []
    for key, seen in log.windows.items():
        want = _oracle_counts(expected.get(key))
        for name, value in seen.counts.items():
            if value > want[name]:
                too_high.append(
                    f"{key} {name}: {value} served by {seen.count_from[name]}, final {want[name]}"
                )
    assert not too_high, "served more than the final counts:\n" + "\n".join(too_high[:20])
    for (model, version), served in log.view_max.items():
        total = sum(
            _oracle_counts(f)["predictions"] for k, f in expected.items() if k[:2] == (model, version)
        )
        assert served <= total, f"rolling view {model} {version}: {served} predictions served, {total} in all"
    final_errors = [e for key, event in log.finals.items() for e in check_window(key, expected[key], event)]
    assert not final_errors, "\n".join(final_errors[:20])
    assert not log.regressions, f"revisions went back: {log.regressions[:10]}"
    # A graceful hand-over moves durable state only, so counts never drop. After a kill -9 they may, for a
    # moment: the new owner of an input partition rebuilds it from the durable join table, without what
    # the killed worker processed but had not made durable, and counts it again when it replays it.
    before_kill = [d for d in log.drops if d["at"] < killed_at]
    assert not before_kill, f"counts dropped without a kill: {before_kill[:10]}"
    # Each worker answered with numbers while it was live, and the dead ones refused, never hung.
    for w in workers:
        assert log.classes[(w.worker_id, "live", "200")] > 0, (w.worker_id, log.summary())
    for w in workers:
        state = poller.states[w.worker_id]
        refused_live = log.classes[(w.worker_id, "live", "refused")]
        if refused_live:  # only a watchdog restart (a new process image on the same port) explains it
            assert w.worker_id in report["watchdog_restarts"], (w.worker_id, state, log.summary())
