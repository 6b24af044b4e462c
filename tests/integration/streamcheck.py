"""End-to-end harness: a test stream, its offline oracle, worker processes, and the final metric events.

The oracle computes every window's numbers from the list of events the test sent (read back from Kafka
for their partitions and timestamps) with scikit-learn, scipy and numpy. It shares no code with the
worker: the semantics it encodes are the documented ones (join by request_id when the two event times
are within the horizon, first label wins, duplicates and relabels counted, too-late labels dead-lettered).
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import TopicPartition
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from modelmon.client import MonitorClient
from modelmon.kafka_clients import admin_client, consumer
from modelmon.settings import Settings
from modelmon.topics import topic_name
from tests.conftest import env_for

WINDOW = 2.0
HORIZON = 20.0
CLASSES = ["a", "b", "c"]
UNKNOWN = "__unknown__"
LATE_WINDOW = 4.0  # offset from the stream's base of the window whose requests get past-horizon labels
CLOSER_MODEL = "closer"
REGIONS = ["eu", "us", "apac"]


def stream_settings(settings: Settings, **extra: Any) -> Settings:
    # Event time advances only with the events (no idle advance), so every verdict is deterministic;
    # the test closes its windows with one far-future "closer" prediction per partition.
    return settings.with_(
        window_s=WINDOW,
        join_horizon_s=HORIZON,
        idle_advance_s=3600.0,
        emit_interval_s=1.0,
        tick_interval_s=0.5,
        session_timeout_s=6.0,
        recovery_stall_s=15.0,
        **extra,
    )


@dataclass
class Stream:
    """Events in send order: ("p"|"g"|"raw", payload dict or (topic, key, bytes))."""

    base: float
    events: list[tuple[str, Any]] = field(default_factory=list)
    late_labels: list[dict] = field(
        default_factory=list
    )  # sent last: more than the horizon after their prediction
    invalid_keys: set[bytes] = field(default_factory=set)


def make_stream(seed: int, n: int = 1200) -> Stream:
    rng = random.Random(seed)
    frng = random.Random(seed + 10_000)  # features only, so the rest of the stream is as before
    srng = random.Random(seed + 20_000)  # segment tags only
    base = math.ceil(time.time() / WINDOW) * WINDOW + WINDOW  # a window boundary (see LATE_WINDOW)
    st = Stream(base)
    preds, labels, early = [], [], []
    for i in range(n):
        rid = f"s{seed}-r{i}"
        pt = round(base + rng.uniform(0, 10), 6)
        model, version = rng.choice([("clf", "v1"), ("clf", "v2"), ("reg", "1")])
        p: dict[str, Any] = {
            "request_id": rid,
            "model": model,
            "model_version": version,
            "latency_ms": round(rng.lognormvariate(3, 0.6), 3),
        }
        if rng.random() < 0.1:
            pass  # no ts: the Kafka timestamp is the event time
        else:
            p["ts"] = pt
        if model == "clf":
            y = rng.choice(CLASSES)
            guess = y if rng.random() < 0.8 else rng.choice(CLASSES)
            raw = [rng.random() + (2.0 if c == guess else 0.0) for c in CLASSES]
            total = sum(raw)
            p["scores"] = {c: v / total for c, v in zip(CLASSES, raw, strict=False)}
            p["prediction"] = guess
        else:
            y = 0.0 if rng.random() < 0.05 else round(rng.gauss(100, 20), 3)
            p["task"] = "regression"
            p["prediction"] = round(y + rng.gauss(0, 5), 3)
        if rng.random() < 0.02:
            p["prediction"] = None
            p["error"] = "model raised"
            p.pop("scores", None)
        if frng.random() < 0.9:  # features: numbers, a category, a flag; nulls and absent names are missing
            feats: dict[str, Any] = {"amount": round(frng.lognormvariate(3, 1), 3)}
            if frng.random() < 0.8:
                feats["tier"] = frng.choice(["free", "pro", None])
            if frng.random() < 0.7:
                feats["vip"] = frng.random() < 0.2
            if model == "reg" and frng.random() < 0.5:
                feats["sqft"] = frng.randint(20, 300)
            p["features"] = feats
        if srng.random() < 0.85:
            p["segment"] = {"region": srng.choice(REGIONS), "plan": srng.choice(["free", "pro", "team"])}
        preds.append(("p", p))
        if rng.random() < 0.03:
            preds.append(("p", dict(p)))  # duplicate prediction
        roll = rng.random()
        if roll < 0.8:
            lt = round((p.get("ts") or base + 5) + rng.uniform(0, 5), 6)
            lab = {"request_id": rid, "label": y, "ts": lt}
            if rng.random() < 0.1:
                early.append(("g", lab))  # the label arrives before its prediction
            else:
                labels.append(("g", lab))
            if rng.random() < 0.03:
                labels.append(("g", dict(lab)))  # duplicate label
            if rng.random() < 0.03:
                other = rng.choice([c for c in CLASSES if c != y]) if model == "clf" else y + 1.0
                labels.append(("g", {"request_id": rid, "label": other, "ts": lt + 0.5}))  # relabel
        elif roll < 0.83 and "ts" in p and LATE_WINDOW <= pt - base < LATE_WINDOW + 1:
            # Refused by event time (more than the horizon after the prediction), while the window stays
            # open: every late label's ts is below LATE_WINDOW + WINDOW + HORIZON, so none closes it.
            st.late_labels.append({"request_id": rid, "label": y, "ts": pt + HORIZON + 0.5})
    for i in range(8):  # labels whose prediction never comes: orphans
        lab = {"request_id": f"s{seed}-orphan{i}", "label": "a", "ts": round(base + rng.uniform(0, 10), 6)}
        if i % 2 == 0:
            lab["model"] = "clf"
        labels.append(("g", lab))
    invalid = [
        ("predictions", b"bad-1", b"not json at all"),
        ("predictions", b"bad-2", orjson.dumps({"request_id": "bad-2", "model": "clf"})),  # no prediction
        (
            "predictions",
            b"bad-3",
            orjson.dumps({"request_id": "bad-3", "model": "clf", "prediction": "a", "latency_ms": "fast"}),
        ),
        ("predictions", b"bad-4", b"\xff\xfe\x00garbage"),
        (
            "predictions",
            None,
            orjson.dumps({"request_id": "nokey", "model": "reg", "prediction": 1.0, "task": "regression"}),
        ),
        (
            "predictions",
            b"bad-6",
            orjson.dumps(
                {
                    "request_id": "bad-6",
                    "model": "clf",
                    "prediction": "a",
                    "features": {"x": "y" * 1000},
                    "segment": {"s": "z" * 100},
                    "error": "e" * 2000,
                    "pad": "p" * 70000,
                }
            ),
        ),
        ("predictions", b"bad-7", orjson.dumps({"request_id": "other", "model": "clf", "prediction": "a"})),
        ("ground-truth", b"bad-8", orjson.dumps({"request_id": "bad-8"})),
        ("ground-truth", b"bad-9", b"[1, 2, 3]"),
        ("ground-truth", b"bad-10", orjson.dumps({"request_id": "bad-10", "label": "a", "ts": "yesterday"})),
    ]
    for _topic, key, _value in invalid:
        if key is not None:
            st.invalid_keys.add(key)
    body = preds + labels
    rng.shuffle(body)
    # Early labels go before everything; invalid events are spread through the stream.
    st.events = early + body
    for topic, key, value in invalid:
        st.events.insert(rng.randrange(len(st.events)), ("raw", (topic, key, value)))
    return st


def closers(stream: Stream, partitions: int = 8) -> list[tuple[str, Any]]:
    """Closing events far after the stream: move every partition's event time past the horizon."""
    return closer_events(stream.base + 1000.0, partitions)


def closer_events(ts: float, partitions: int = 8, prefix: str = "closer-") -> list[tuple[str, Any]]:
    """A prediction and its label at ``ts`` on every input partition: the watermark follows the input topic
    furthest behind, so both topics must reach ``ts``. Model ``closer``, ignored by the checks. Request
    ids are ``prefix`` + a number, so two sets of closers with different prefixes never duplicate."""
    from aiokafka.partitioner import DefaultPartitioner

    pick = DefaultPartitioner()
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        rid = f"{prefix}{i}"
        found.setdefault(pick(rid.encode(), list(range(partitions)), list(range(partitions))), rid)
        i += 1
    return [
        event
        for rid in found.values()
        for event in (
            ("p", {"request_id": rid, "model": CLOSER_MODEL, "prediction": "x", "ts": ts}),
            ("g", {"request_id": rid, "model": CLOSER_MODEL, "label": "x", "ts": ts}),
        )
    ]


def produce(settings: Settings, events: list[tuple[str, Any]]) -> None:
    with MonitorClient(settings) as mon:
        for kind, payload in events:
            if kind == "p":
                mon.send_raw("predictions", payload["request_id"].encode(), orjson.dumps(payload))
            elif kind == "g":
                mon.send_raw("ground-truth", payload["request_id"].encode(), orjson.dumps(payload))
            else:
                topic, key, value = payload
                mon.send_raw(topic, key, value)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float


def read_inputs(settings: Settings) -> list[Record]:
    """Every input record as Kafka stored it (partition, offset, timestamp)."""
    topics = [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")]
    cons = consumer(settings, group_id=f"oracle-{time.time_ns()}")
    meta = cons.list_topics(timeout=10)
    tps = [TopicPartition(t, p, 0) for t in topics for p in meta.topics[t].partitions]
    ends = {(tp.topic, tp.partition): cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    cons.assign(tps)
    out: list[Record] = []
    want = sum(ends.values())
    deadline = time.monotonic() + 60
    while len(out) < want and time.monotonic() < deadline:
        for msg in cons.consume(1000, timeout=1.0):
            if msg.error() is None:
                out.append(
                    Record(
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        msg.value() or b"",
                        msg.timestamp()[1] / 1000.0,
                    )
                )
    cons.close()
    assert len(out) == want, f"read back {len(out)} of {want} input records"
    return out


def window_of(ts: float) -> float:
    return math.floor(ts / WINDOW) * WINDOW


def oracle(settings: Settings, stream: Stream) -> tuple[dict, set]:
    """Expected final windows {(model, version, window): facts} and dead letters {(topic, key, reason)}."""
    records = read_inputs(settings)
    pred_topic = topic_name(settings, "predictions")
    ordered = sorted(records, key=lambda r: (r.topic != pred_topic, r.partition, r.offset))
    first_pred: dict[str, tuple[dict, float]] = {}
    sizes: dict[str, int] = {}
    labels_by_rid: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    dups: dict[str, int] = defaultdict(int)
    dead: set = set()
    late: dict[str, int] = defaultdict(int)
    invalid_counts: dict[tuple, int] = defaultdict(int)
    for rec in ordered:
        kind = "predictions" if rec.topic == pred_topic else "ground-truth"
        if rec.key is None or rec.key in stream.invalid_keys:
            reason = classify_invalid(rec, kind)
            dead.add((kind, rec.key, reason))
            invalid_counts[(model_hint(rec.value), window_of(rec.timestamp), reason)] += 1
            continue
        body = orjson.loads(rec.value)
        rid = body["request_id"]
        if body.get("model") == CLOSER_MODEL:
            continue
        if kind == "predictions":
            if rid in first_pred:
                dups[rid] += 1
            else:
                first_pred[rid] = (body, body.get("ts", rec.timestamp))
                sizes[rid] = len(rec.value)
        elif rid in first_pred and body["ts"] - first_pred[rid][1] > HORIZON:
            late[rid] += 1  # refused by event time: counted as a late label, the prediction stays unmatched
        else:
            labels_by_rid[rid].append((body, body["ts"]))
    windows: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))

    def win(key: tuple) -> dict:
        w = windows[key]
        w.setdefault("counters", defaultdict(int))
        return w

    for rid, (p, pt) in first_pred.items():
        key = (p["model"], p.get("model_version"), window_of(pt))
        w = win(key)
        w["predictions"].append(p)
        w["sizes"].append(sizes[rid])
        labs = labels_by_rid.get(rid, [])
        w["counters"]["duplicates"] += dups.get(rid, 0)
        w["counters"]["late_labels"] += late.get(rid, 0)
        if not labs:
            w["counters"]["unmatched_predictions"] += 1
            continue
        first, lt = labs[0]
        w["feedback"].append((rid, p, pt, first["label"], lt))
        for other, _ in labs[1:]:
            w["counters"]["duplicates" if other["label"] == first["label"] else "relabels"] += 1
        if p["prediction"] is not None:
            w["outcomes"].append((p, first["label"], max(0.0, lt - pt)))
    for rid, labs in labels_by_rid.items():
        if rid in first_pred:
            continue
        first, lt = labs[0]
        w = win((first.get("model", UNKNOWN), None, window_of(lt)))
        w["counters"]["orphan_labels"] += 1
        for other, _ in labs[1:]:
            w["counters"]["duplicates" if other["label"] == first["label"] else "relabels"] += 1
    for (model, window, reason), n in invalid_counts.items():
        win((model, None, window))["invalid"].append((reason, n))
    return windows, dead


def classify_invalid(rec: Record, kind: str) -> str:
    if rec.key is None:
        return "null_key"
    if len(rec.value) > 65536:
        return "oversized"
    try:
        text = rec.value.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "not_json"
    if not isinstance(body, dict):
        return "not_object"
    if isinstance(body.get("ts"), str):
        return "bad_timestamp"
    if body.get("request_id", "").encode() != rec.key and "prediction" in body:
        return "key_mismatch"
    return "schema"


def model_hint(value: bytes) -> str:
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return UNKNOWN
    return body.get("model", UNKNOWN) if isinstance(body, dict) else UNKNOWN


# -- workers -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """`modelmon worker` in a subprocess with the test's settings."""

    def __init__(self, settings: Settings, worker_id: str, log_dir: Path) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.port = free_port()
        self.log_path = log_dir / f"{worker_id}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = env_for(self.settings)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelmon.cli",
                "worker",
                "--worker-id",
                self.worker_id,
                "--web-port",
                str(self.port),
                "--loglevel",
                "info",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.settings.home,
        )
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def input_lag(settings: Settings) -> int:
    """Messages of the inputs not yet committed by the worker group (None-safe: missing commits count)."""
    admin = admin_client(settings)
    cons = consumer(settings, group_id=f"lag-{time.time_ns()}")
    total = 0
    topics = [topic_name(settings, "predictions"), topic_name(settings, "ground-truth")]
    meta = cons.list_topics(timeout=10)
    tps = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
    from confluent_kafka import ConsumerGroupTopicPartitions

    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.group_id, tps)])
    committed = {
        (tp.topic, tp.partition): tp.offset for tp in fut[settings.group_id].result(10).topic_partitions
    }
    for tp in tps:
        end = cons.get_watermark_offsets(tp, timeout=10)[1]
        total += end - max(0, committed.get((tp.topic, tp.partition), 0))
    cons.close()
    return total


def wait_for_lag_zero(settings: Settings, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    from confluent_kafka import KafkaException

    while time.monotonic() < deadline:
        try:
            if input_lag(settings) == 0:
                return
        except KafkaException:  # e.g. the group coordinator is still loading on a fresh broker
            pass
        time.sleep(0.5)
    raise AssertionError(f"the worker group did not catch up within {timeout_s} s")


def collect_finals(settings: Settings, expected: set, timeout_s: float = 180) -> tuple[dict, dict]:
    """Final metric events by (model, version, window start), and the newest rolling view events by
    (model, version, view). Fails on two different finals for one window."""
    cons = consumer(settings, group_id=f"finals-{time.time_ns()}")
    cons.subscribe([topic_name(settings, "model-metrics")])
    finals: dict[tuple, dict] = {}
    rolling: dict[tuple, dict] = {}
    deadline = time.monotonic() + timeout_s
    grace_until = None
    while time.monotonic() < (grace_until or deadline):
        for msg in cons.consume(500, timeout=1.0):
            if msg.error() is not None:
                continue
            event = orjson.loads(msg.value())
            if event["view"] != "window":
                key = (event["model"], event["model_version"], event["view"])
                order = (event["window"]["end"], event["revision"])
                old = rolling.get(key)
                if old is None or (old["window"]["end"], old["revision"]) <= order:
                    rolling[key] = event
                continue
            if not event["final"]:
                continue
            key = (event["model"], event["model_version"], _epoch(event["window"]["start"]))
            if key in finals:
                assert _strip(finals[key]) == _strip(event), f"two different final revisions for {key}"
            finals[key] = event
        if grace_until is None and expected <= set(finals):
            grace_until = time.monotonic() + 3.0  # the rolling views of the last changes follow
    cons.close()
    return finals, rolling


def check_rolling(expected: dict, rolling: dict) -> list[str]:
    """Each model version's 5-minute view covers the whole test stream: it must equal the oracle's totals."""
    errs = []
    series: dict[tuple, list[dict]] = defaultdict(list)
    for (model, version, _), facts in expected.items():
        if model in ("clf", "reg"):
            series[(model, version)].append(facts)
    for (model, version), parts in series.items():
        event = rolling.get((model, version, "5m"))
        if event is None:
            errs.append(f"no rolling 5m view for {model} {version}")
            continue
        preds = sum(len(f.get("predictions", [])) for f in parts)
        outcomes = [o for f in parts for o in f.get("outcomes", [])]
        if event["traffic"]["predictions"] != preds:
            errs.append(
                f"rolling {model} {version}: {event['traffic']['predictions']} predictions, want {preds}"
            )
        if event["labels"]["labelled"] != len(outcomes):
            errs.append(
                f"rolling {model} {version}: {event['labels']['labelled']} labelled, want {len(outcomes)}"
            )
        if model == "clf" and outcomes:
            want = float(
                accuracy_score(
                    [str(lab) for _, lab, _ in outcomes], [str(p["prediction"]) for p, _, _ in outcomes]
                )
            )
            if not _close(event["classification"]["accuracy"], want):
                errs.append(
                    f"rolling {model} {version}: accuracy {event['classification']['accuracy']}, want {want}"
                )
        if model == "reg" and outcomes:
            y = np.array([float(lab) for _, lab, _ in outcomes])
            yhat = np.array([float(p["prediction"]) for p, _, _ in outcomes])
            if not _close(event["regression"]["mae"], float(mean_absolute_error(y, yhat))):
                errs.append(f"rolling {model} {version}: mae {event['regression']['mae']}")
    return errs


def _strip(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "emitted_at"}


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def collect_dead_letters(settings: Settings, want: int, timeout_s: float = 60) -> list[dict]:
    cons = consumer(settings, group_id=f"dl-{time.time_ns()}")
    cons.subscribe([topic_name(settings, "dead-letter")])
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        for msg in cons.consume(500, timeout=1.0):
            if msg.error() is None:
                out.append(orjson.loads(msg.value()))
    # a little longer, to catch anything unexpected
    for msg in cons.consume(500, timeout=2.0):
        if msg.error() is None:
            out.append(orjson.loads(msg.value()))
    cons.close()
    return out


# -- comparison ----------------------------------------------------------------------------------------


def _close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol * max(1.0, abs(b))


def check_window(key: tuple, facts: dict, event: dict) -> list[str]:
    """Differences between a final metric event and the oracle's facts for its window."""
    errs: list[str] = []

    def eq(name: str, got: Any, want: Any) -> None:
        if isinstance(want, float) or isinstance(got, float):
            if not _close(got, want):
                errs.append(f"{key} {name}: got {got!r}, want {want!r}")
        elif got != want:
            errs.append(f"{key} {name}: got {got!r}, want {want!r}")

    preds = facts.get("predictions", [])
    outcomes = facts.get("outcomes", [])
    counters = facts.get("counters", {})
    invalid = facts.get("invalid", [])
    eq("traffic.predictions", event["traffic"]["predictions"], len(preds))
    eq("traffic.errors", event["traffic"]["errors"], sum(1 for p in preds if p.get("error")))
    eq("traffic.invalid", event["traffic"]["invalid"], sum(n for _, n in invalid))
    by_reason: dict[str, int] = defaultdict(int)
    for reason, n in invalid:
        by_reason[reason] += n
    eq(
        "counters.invalid_by_reason",
        {k: v for k, v in event["counters"]["invalid_by_reason"].items() if v},
        dict(by_reason),
    )
    for name in ("duplicates", "relabels", "unmatched_predictions", "orphan_labels", "late_labels"):
        eq(f"counters.{name}", event["counters"][name], counters.get(name, 0))
    eq("labels.labelled", event["labels"]["labelled"], len(outcomes))
    present: dict[str, int] = defaultdict(int)
    for p in preds:
        for name, value in (p.get("features") or {}).items():
            if value is not None:
                present[name] += 1
    dq = event.get("data_quality")
    if present:
        want_dq = {
            name: {"present": c, "missing_rate": (len(preds) - c) / len(preds)} for name, c in present.items()
        }
        eq("data_quality.features", dq and dq["features"], want_dq)
        eq("data_quality.capped", dq and dq["capped"], False)
    else:
        eq("data_quality", dq, None)
    conf = [p["scores"][p["prediction"]] for p in preds if p.get("scores") and p.get("error") is None]
    sc = event.get("scores")
    if conf:
        eq("scores.n", sc and sc["n"], len(conf))
        mean = float(np.mean(conf))
        if sc is None or abs(sc["confidence_mean"] - mean) > 0.005 + 1e-12:  # percent buckets' mid-points
            errs.append(
                f"{key} scores.confidence_mean: got {sc and sc['confidence_mean']}, want {mean} ± 0.005"
            )
    else:
        eq("scores", sc, None)
    if preds:
        eq("labels.coverage", event["labels"]["coverage"], len(outcomes) / len(preds))
    lat = [p["latency_ms"] for p in preds if p.get("latency_ms") is not None]
    if lat:
        eq("latency.max_ms", event["latency"]["max_ms"], float(max(lat)))
        for q, name in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            want = float(np.quantile(lat, q))
            got = event["latency"][name]
            if abs(got - want) > 0.045 * want:
                errs.append(f"{key} latency.{name}: got {got}, want {want} (±4.5%)")
    if outcomes:
        delays = [d for _, _, d in outcomes]
        for q, name in ((0.5, "delay_p50_s"), (0.95, "delay_p95_s")):
            want = float(np.quantile(delays, q))
            got = event["labels"][name]
            if abs(got - want) > 0.045 * want + 1e-3:
                errs.append(f"{key} labels.{name}: got {got}, want {want}")
    if key[0] == "clf" and outcomes:
        y_true = [str(lab) for _, lab, _ in outcomes]
        y_pred = [str(p["prediction"]) for p, _, _ in outcomes]
        c = event["classification"]
        eq("accuracy", c["accuracy"], float(accuracy_score(y_true, y_pred)))
        k = sum(1 for a, b in zip(y_true, y_pred, strict=False) if a == b)
        ci = binomtest(k, len(y_true)).proportion_ci(confidence_level=0.95, method="wilson")
        eq("accuracy_ci_low", c["accuracy_ci_low"], float(ci.low))
        eq("accuracy_ci_high", c["accuracy_ci_high"], float(ci.high))
        labels = c["confusion"]["labels"]
        eq("confusion", c["confusion"]["matrix"], confusion_matrix(y_true, y_pred, labels=labels).tolist())
        prec, rec, f1, sup = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        for i, lab in enumerate(labels):
            got = c["per_class"][lab]
            eq(f"precision[{lab}]", got["precision"], float(prec[i]))
            eq(f"recall[{lab}]", got["recall"], float(rec[i]))
            eq(f"f1[{lab}]", got["f1"], float(f1[i]))
            eq(f"support[{lab}]", got["support"], int(sup[i]))
        probs = np.array([[p["scores"][cl] for cl in CLASSES] for p, _, _ in outcomes])
        eq("log_loss", c["log_loss"], float(log_loss(y_true, probs, labels=CLASSES)))
        eq("brier", c["brier"], float(brier_score_loss(y_true, probs, labels=CLASSES, scale_by_half=False)))
    errs += _check_payload_and_segments(key, facts, event)
    if key[0] == "reg" and outcomes:
        y = np.array([float(lab) for _, lab, _ in outcomes])
        yhat = np.array([float(p["prediction"]) for p, _, _ in outcomes])
        r = event["regression"]
        eq("mae", r["mae"], float(mean_absolute_error(y, yhat)))
        eq("rmse", r["rmse"], float(math.sqrt(mean_squared_error(y, yhat))))
        eq("mean_error", r["mean_error"], float(np.mean(yhat - y)))
        nz = np.abs(y) > 1e-12
        want_mape = float(np.mean(np.abs(yhat[nz] - y[nz]) / np.abs(y[nz]))) if nz.any() else None
        eq("mape", r["mape"], want_mape)
    return errs


def _check_payload_and_segments(key: tuple, facts: dict, event: dict) -> list[str]:
    """Payload sizes, per-segment slices and confused class pairs against counts of the sent events."""
    errs: list[str] = []
    preds = facts.get("predictions", [])
    outcomes = facts.get("outcomes", [])
    sizes = facts.get("sizes", [])
    pay = event.get("payload")
    if sizes:
        want = {"n": len(sizes), "max_bytes": float(max(sizes)), "mean_bytes": float(np.mean(sizes))}
        got = {k: pay and pay[k] for k in want}
        if got["n"] != want["n"] or not all(_close(got[k], want[k]) for k in ("max_bytes", "mean_bytes")):
            errs.append(f"{key} payload: got {got}, want {want}")
    elif pay is not None:
        errs.append(f"{key} payload: got {pay}, want None")
    tagged = [p for p in preds if p.get("segment")]
    segs = event.get("segments")
    if not tagged:
        if segs is not None:
            errs.append(f"{key} segments: got {segs}, want None")
        return errs
    for seg_key in ("region", "plan"):
        values = {v["value"]: v for v in segs["keys"][seg_key]["values"]}
        want_values = sorted({p["segment"][seg_key] for p in tagged})
        if sorted(values) != want_values:
            errs.append(f"{key} segments.{seg_key}: values {sorted(values)}, want {want_values}")
            continue
        for value in want_values:
            in_slice = [p for p in tagged if p["segment"][seg_key] == value]
            labelled = [(p, lab) for p, lab, _ in outcomes if (p.get("segment") or {}).get(seg_key) == value]
            got = values[value]
            want_row = {
                "predictions": len(in_slice),
                "errors": sum(1 for p in in_slice if p.get("error")),
                "labelled": len(labelled),
            }
            if {k: got[k] for k in want_row} != want_row:
                errs.append(f"{key} segments.{seg_key}={value}: got {got}, want {want_row}")
            if key[0] == "clf" and labelled:
                acc = float(np.mean([str(p["prediction"]) == str(lab) for p, lab in labelled]))
                if not _close(got["accuracy"], acc):
                    errs.append(f"{key} segments.{seg_key}={value}: accuracy {got['accuracy']}, want {acc}")
            if key[0] == "reg" and labelled:
                mae = float(np.mean([abs(float(p["prediction"]) - float(lab)) for p, lab in labelled]))
                if not _close(got["mae"], mae):
                    errs.append(f"{key} segments.{seg_key}={value}: mae {got['mae']}, want {mae}")
    if key[0] == "clf" and outcomes:
        mistakes: dict[tuple, int] = defaultdict(int)
        for p, lab, _ in outcomes:
            if str(p["prediction"]) != str(lab):
                mistakes[(str(lab), str(p["prediction"]))] += 1
        want_pairs = sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        got_pairs = [
            ((c["true"], c["predicted"]), c["count"]) for c in event["error_analysis"]["confused_pairs"]
        ]
        if got_pairs != want_pairs:
            errs.append(f"{key} confused_pairs: got {got_pairs}, want {want_pairs}")
    return errs


def expected_feedback(expected: dict) -> list[tuple]:
    """The joined records the oracle expects on model-feedback, as comparable tuples (see feedback_key)."""
    out = []
    for facts in expected.values():
        for rid, p, pt, label, lt in facts.get("feedback", []):
            failed = p.get("error") is not None
            task = p.get("task") or "classification"
            correct = None if failed or task == "regression" else str(p["prediction"]) == str(label)
            abs_error = None
            if task == "regression" and not failed:
                abs_error = round(abs(float(p["prediction"]) - float(label)), 9)
            out.append(
                (
                    rid,
                    p["model"],
                    p.get("model_version"),
                    float(label) if task == "regression" else label,
                    correct,
                    abs_error,
                    failed,
                    round(lt - pt, 4),
                    orjson.dumps(p.get("features"), option=orjson.OPT_SORT_KEYS),
                    orjson.dumps(p.get("segment"), option=orjson.OPT_SORT_KEYS),
                    orjson.dumps(p.get("scores"), option=orjson.OPT_SORT_KEYS),
                )
            )
    return sorted(out, key=repr)


def feedback_key(rec: dict) -> tuple:
    """A model-feedback record as the tuple :func:`expected_feedback` builds."""
    label = rec["label"]
    return (
        rec["request_id"], rec["model"], rec["model_version"],
        float(label) if rec["task"] == "regression" else label, rec["correct"],
        None if rec["abs_error"] is None else round(rec["abs_error"], 9), rec["inference_error"],
        round(rec["label_delay_s"], 4), orjson.dumps(rec.get("features"), option=orjson.OPT_SORT_KEYS),
        orjson.dumps(rec.get("segment"), option=orjson.OPT_SORT_KEYS),
        orjson.dumps(rec.get("scores"), option=orjson.OPT_SORT_KEYS),
    )  # fmt: skip


def read_topic(settings: Settings, kind: str, timeout_s: float = 30.0) -> list[dict]:
    """Every event on one of modelmon's topics so far (decoded JSON), in partition order."""
    topic = topic_name(settings, kind)
    cons = consumer(settings, group_id=f"webcheck-{time.time_ns()}")
    try:
        meta = cons.list_topics(topic, timeout=10)
        tps = [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
        ends = {tp.partition: cons.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        cons.assign(tps)
        out: list[dict] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(tps) and time.monotonic() < deadline:
            msg = cons.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(orjson.loads(msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return out
    finally:
        cons.close()
