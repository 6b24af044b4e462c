"""Manual check of bench/peers/quix_peer.py on a real broker: its windows against an offline computation.

    make peer-venv
    .venv/bin/python bench/peers/check_quix_peer.py [--predictions 20000] [--stop-broker]

Starts (or reuses) a local broker of its own (MODELMON_HOME /tmp/peer-broker, ports 19692/19693; change
with --home/--port/--controller-port), creates fresh topics, preloads simulated traffic the way
bench/common.py preload() does (same SimConfig, seed 11) but keeps the events, then runs the peer from an
empty consumer group, as bench/throughput.py does, and times it:
  * "inputs": until the group has committed every input offset (the benchmark's completion criterion);
  * "all": until it has also committed every offset of its internal repartition topic, i.e. until the
    windowed stage has seen every delta (the inputs are committed as soon as the deltas are forwarded).
Then it reads the output topic and compares the latest result per (model, window) with the same job
computed here in plain Python over the generated events: same validity rules, same dedupe and first-label
rules, same window of the prediction's event time. Exits 1 on any difference.

It also says how the peer's notion of a valid input differs from the worker's (modelmon.schemas), for
information: the peer only checks what its job uses.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import ROOT, end_offsets, input_partitions

from modelmon.broker import LocalBroker
from modelmon.client import MonitorClient
from modelmon.kafka_clients import admin_client, consumer
from modelmon.schemas import InvalidEvent, decode_ground_truth, decode_prediction
from modelmon.settings import Settings
from modelmon.simulate import LabelDelay, SimConfig, SimEvent, generate
from modelmon.topics import create_topics, topic_name

PEER_PY = ROOT / ".venv-peer" / "bin" / "python"
PEER = ROOT / "bench" / "peers" / "quix_peer.py"
MAX_BYTES = 65536
MAX_EPOCH_S = 253402300799.0
LABEL_TYPES = (str, int, float, bool)


# ------------------------------------------------------------------------------------------ the inputs


def preload(settings: Settings, predictions: int, seed: int) -> list[SimEvent]:
    """bench/common.py preload(), keeping the events it sends."""
    cfg = SimConfig(
        models=3, rate=2000, count=predictions, seed=seed, label_delay=LabelDelay(median_s=5, max_s=60)
    ).resolved()
    events = list(generate(cfg))
    with MonitorClient(settings, validate=False) as mon:
        for event in events:
            mon.send_raw(event.topic, event.key, event.value())
    return events


# ------------------------------------------------------------------------------------------ offline job


def _name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 128


def peer_valid(event: SimEvent) -> dict[str, Any] | None:
    """The peer's contract, written again from its docstring: the fields the job uses, with their types."""
    raw = event.value()
    if len(raw) > MAX_BYTES:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    rid, ts = obj.get("request_id"), obj.get("ts")
    if not (_name(rid) and _name(obj.get("model")) and type(ts) in (int, float) and 0 <= ts <= MAX_EPOCH_S):
        return None
    if event.key is None or event.key != rid.encode():
        return None
    if event.topic == "predictions":
        task, y = obj.get("task"), obj.get("prediction")
        if task not in ("classification", "regression") or type(obj.get("model_version")) is not str:
            return None
        if "prediction" not in obj:
            return None
        allowed = (int, float) if task == "regression" else LABEL_TYPES
        if y is not None and type(y) not in allowed:
            return None
        return obj
    return obj if type(obj.get("label")) in LABEL_TYPES else None


def worker_valid(event: SimEvent) -> bool:
    """Whether the modelmon worker accepts the record (its decoder plus its key checks)."""
    if event.key is None:
        return False
    decode = decode_prediction if event.topic == "predictions" else decode_ground_truth
    try:
        parsed = decode(event.value())
    except InvalidEvent:
        return False
    return parsed.request_id.encode() == event.key


def _canonical(label: Any) -> Any:
    return int(label) if type(label) is float and label.is_integer() else label


def offline(events: list[SimEvent], window_s: float) -> tuple[dict[tuple[str, float], dict], Counter]:
    """Expected windows: the first prediction and the first label of each request, in send order."""
    preds: dict[str, dict[str, Any]] = {}
    labels: dict[str, Any] = {}
    stats: Counter[str] = Counter()
    for event in events:
        obj = peer_valid(event)
        if obj is None:
            stats["invalid"] += 1
            continue
        rid = obj["request_id"]
        if event.topic == "predictions":
            if rid in preds:
                stats["duplicate predictions"] += 1
            else:
                preds[rid] = obj
        elif rid in labels:
            stats["duplicate labels or relabels"] += 1
        else:
            labels[rid] = obj["label"]
    duration_ms = round(window_s * 1000)
    windows: dict[tuple[str, float], dict[str, Any]] = {}
    for rid, p in preds.items():
        ts_ms = math.floor(p["ts"] * 1000)
        start = (ts_ms - ts_ms % duration_ms) / 1000
        w = windows.setdefault(
            (p["model"], start),
            {"task": p["task"], "predictions": 0, "labelled": 0, "correct": 0, "abs_err": 0.0},
        )
        w["predictions"] += 1
        if rid in labels:
            label, y = labels[rid], p["prediction"]
            w["labelled"] += 1
            if p["task"] == "regression":
                if type(y) in (int, float) and type(label) in (int, float):
                    w["abs_err"] += abs(y - label)
            elif y is not None and _canonical(y) == _canonical(label):
                w["correct"] += 1
    stats["joined labels"] = sum(1 for rid in labels if rid in preds)
    stats["orphan labels"] = sum(1 for rid in labels if rid not in preds)
    return windows, stats


# ------------------------------------------------------------------------------------------ running the peer


def committed(admin, group: str, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
    try:
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
        return {(tp.topic, tp.partition): tp.offset for tp in res[group].result(10).topic_partitions}
    except KafkaException:
        return {}


def wait_committed(
    admin, group: str, ends: dict[tuple[str, int], int], proc, deadline: float, log_path: Path
) -> None:
    tps = [TopicPartition(t, p) for t, p in ends]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the peer exited with {proc.returncode}; see {log_path}")
        got = committed(admin, group, tps)
        if got and all(got.get(k, -1) >= v for k, v in ends.items()):
            return
        time.sleep(0.1)
    raise SystemExit(f"the peer did not commit {sorted(ends)} in time; see {log_path}")


def data_ends(settings: Settings, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
    """One past the last data record of each non-empty partition.

    Not the end offset: with exactly-once, a transactional topic ends with a commit marker that no consumer
    ever commits past.
    """
    cons = consumer(settings, group_id=f"check-quix-{time.time_ns()}", **{"enable.partition.eof": True})
    tails = []
    for tp in tps:
        end = cons.get_watermark_offsets(tp, timeout=10)[1]
        if end > 0:  # the last data record is within the last few offsets: one marker per transaction
            tails.append(TopicPartition(tp.topic, tp.partition, max(0, end - 20)))
    cons.assign(tails)
    ends: dict[tuple[str, int], int] = {}
    pending = {tp.partition for tp in tails}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for msg in cons.consume(1000, timeout=1.0):
            if msg.error() is None:
                ends[(msg.topic(), msg.partition())] = msg.offset() + 1
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
    cons.close()
    if pending:
        raise SystemExit(f"could not read the tail of {tps[0].topic} partitions {sorted(pending)}")
    return ends


def run_peer(settings: Settings, group: str, out_topic: str, state_dir: Path, log_path: Path, args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELMON_", "BENCH_"))}
    env.update(
        BENCH_BOOTSTRAP=settings.bootstrap,
        BENCH_GROUP=group,
        BENCH_PRED_TOPIC=topic_name(settings, "predictions"),
        BENCH_GT_TOPIC=topic_name(settings, "ground-truth"),
        BENCH_OUT_TOPIC=out_topic,
        BENCH_STATE_DIR=str(state_dir),
        BENCH_WINDOW_S=str(args.window_s),
        BENCH_PROCESSING_GUARANTEE=args.guarantee,
    )
    tps = input_partitions(settings)
    ends = end_offsets(settings, tps)
    admin = admin_client(settings)
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(PEER_PY), str(PEER)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.timeout
    try:
        wait_committed(admin, group, ends, proc, deadline, log_path)
        t_inputs = time.perf_counter() - t0
        prefix = f"repartition__{group}--"
        internal = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if len(internal) != 1:
            raise SystemExit(f"expected one repartition topic {prefix}*, found {internal}")
        meta = admin.list_topics(internal[0], timeout=10).topics[internal[0]]
        rtps = [TopicPartition(internal[0], p) for p in meta.partitions]
        rends = data_ends(settings, rtps)
        wait_committed(admin, group, rends, proc, deadline, log_path)
        t_all = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"inputs_s": t_inputs, "all_s": t_all, "repartition": internal[0]}


def read_output(settings: Settings, topic: str) -> tuple[dict[tuple[str, float], dict], int]:
    """The latest record per (model, window start) of the peer's output topic, and how many it holds."""
    cons = consumer(settings, group_id=f"check-quix-{time.time_ns()}", **{"enable.partition.eof": True})
    meta = cons.list_topics(topic, timeout=10).topics[topic]
    cons.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    latest: dict[tuple[str, float], dict] = {}
    n = 0
    pending = set(meta.partitions)
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
        for msg in cons.consume(10000, timeout=1.0):
            if msg.error() is None:
                n += 1
                value = orjson.loads(msg.value())
                latest[(value["model"], value["window_start"])] = value
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
    cons.close()
    if pending:
        raise SystemExit(f"could not read {topic} to its end")
    return latest, n


# ------------------------------------------------------------------------------------------ main


def compare(expected: dict, got: dict, window_s: float) -> list[str]:
    problems = []
    for key in sorted(set(expected) | set(got)):
        e, g = expected.get(key), got.get(key)
        if e is None or g is None:
            problems.append(f"{key}: expected {e}, published {g}")
            continue
        clf = e["task"] == "classification"
        want = {
            "predictions": e["predictions"],
            "labelled": e["labelled"],
            "correct": e["correct"] if clf else None,
            "accuracy": e["correct"] / e["labelled"] if clf and e["labelled"] else None,
            "rate": e["predictions"] / window_s,
        }
        for name, value in want.items():
            if g[name] != value:
                problems.append(f"{key}: {name} expected {value}, published {g[name]}")
        if not clf and not math.isclose(g["abs_error_sum"], e["abs_err"], rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"{key}: abs_error_sum expected {e['abs_err']}, published {g['abs_error_sum']}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--guarantee", default="at-least-once", choices=["at-least-once", "exactly-once"])
    parser.add_argument("--home", default="/tmp/peer-broker")
    parser.add_argument("--port", default="19692")
    parser.add_argument("--controller-port", default="19693")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--stop-broker", action="store_true", help="stop the broker at the end")
    args = parser.parse_args()
    if not PEER_PY.exists():
        raise SystemExit(f"{PEER_PY} is missing: run `make peer-venv` first")

    env = {k: v for k, v in os.environ.items() if k.startswith("MODELMON_CACHE")}
    env.update(
        MODELMON_HOME=args.home, MODELMON_BROKER_PORT=args.port, MODELMON_CONTROLLER_PORT=args.controller_port
    )
    base = Settings.from_env(env)
    broker = LocalBroker(base, log=print)
    broker.start()
    try:
        run_id = f"qp{time.time_ns() % 10**8}"
        settings = base.with_(topic_prefix=f"{run_id}.")
        create_topics(settings)
        t0 = time.perf_counter()
        events = preload(settings, args.predictions, args.seed)
        print(f"preloaded {len(events):,} records in {time.perf_counter() - t0:.1f} s", flush=True)

        expected, stats = offline(events, args.window_s)
        disagree = Counter(
            f"{e.topic}/{e.note or 'valid'}: peer {'accepts' if peer_ok else 'rejects'}, worker does not"
            for e in events
            if (peer_ok := peer_valid(e) is not None) != worker_valid(e)
        )
        print(f"offline: {dict(stats)}; {len(expected)} (model, window) results")
        print(f"validity vs the worker's decoder: {dict(disagree) or 'same verdict on every record'}")

        group = f"{run_id}-quix"
        out_topic = f"{run_id}.quix-out"
        home = Path(args.home)
        run = run_peer(
            settings, group, out_topic, home / f"{run_id}-state", home / f"{run_id}-peer.log", args
        )
        got, n_out = read_output(settings, out_topic)
        total = len(events)
        print(
            f"peer ({args.guarantee}): inputs committed after {run['inputs_s']:.1f} s "
            f"({total / run['inputs_s']:,.0f} input records/s); its repartition topic "
            f"committed after {run['all_s']:.1f} s ({total / run['all_s']:,.0f} input records/s); "
            f"{n_out:,} output records"
        )
        log_tail = (home / f"{run_id}-peer.log").read_text(errors="replace").splitlines()
        print(
            "peer: " + next((line for line in reversed(log_tail) if "quix_peer" in line), "(no summary line)")
        )

        print(f"{'model':<18} {'window start':>14} {'preds':>6} {'labelled':>8} {'accuracy/mae':>12}")
        for (model, start), g in sorted(got.items()):
            metric = g["accuracy"] if g["task"] == "classification" else g["mae"]
            print(f"{model:<18} {start:>14.0f} {g['predictions']:>6} {g['labelled']:>8} {metric or 0:>12.4f}")
        problems = compare(expected, got, args.window_s)
        if problems:
            print(f"MISMATCH: {len(problems)} difference(s)")
            for line in problems[:50]:
                print("  " + line)
            raise SystemExit(1)
        print(f"OK: all {len(expected)} (model, window) results equal the offline computation")
    finally:
        if args.stop_broker:
            broker.stop()


if __name__ == "__main__":
    main()
