"""The Quix Streams peer of the modelmon worker: the same join + windowed-accuracy job, written with Quix.

bench/throughput.py times it like the other consumers: it starts this script in its own virtualenv
(`make peer-venv` builds .venv-peer with quixstreams 3.28.1, whose confluent-kafka<2.13 clashes with the
project's pin; this file must therefore not import modelmon) from an empty consumer group, and stops it
(SIGTERM) once the job is done (see below):

    BENCH_BOOTSTRAP=127.0.0.1:19492 BENCH_GROUP=bench-quix BENCH_PRED_TOPIC=... BENCH_GT_TOPIC=... \\
    BENCH_OUT_TOPIC=... BENCH_STATE_DIR=.modelmon-bench/quix-state \\
    .venv-peer/bin/python bench/peers/quix_peer.py

Committed input offsets mean "joined and forwarded", not "in the windows": Quix commits the inputs once
the deltas are in its repartition topic, and the windowed stage (same process, same group) catches up on
that topic later. The job is done when the group has also committed the repartition topic
(repartition__<BENCH_GROUP>--*) up to its last record; bench/peers/check_quix_peer.py times both.

The job, per input record (key = request_id, value = JSON):
  1. Validate what the job uses (otherwise the record is counted as invalid and skipped, its offset still
     committed): a non-null key equal to request_id, a UTF-8 JSON object of at most 64 KiB with
     request_id, model, model_version, ts (epoch seconds), task and prediction (predictions) or
     request_id, model, label and ts (ground truth), each of the right type.
  2. Join by request_id: the predictions and ground-truth dataframes are concatenated (the topics are
     co-partitioned by request_id) into one stateful step whose per-key state (RocksDB, changelog-backed)
     remembers the prediction and the first label. A request's prediction counts once and its first label
     once, in either arrival order; duplicates and relabels change nothing. Entries expire (event-time
     TTL) BENCH_JOIN_HORIZON_S after the event that wrote them, like the worker's join horizon.
  3. Each change is emitted with the prediction's event time as its timestamp, regrouped by model
     (`group_by`, through an internal repartition topic) and summed in event-time tumbling windows of
     BENCH_WINDOW_S seconds with a grace period of BENCH_GRACE_S (late deltas are counted and dropped).
  4. Every window update is published to BENCH_OUT_TOPIC (key = model): predictions, labelled, correct,
     accuracy (classification), abs_error_sum and mae (regression), rate = predictions / window length.
     `.current()` is used, not `.final()`: a window only closes once event time passes its end plus the
     grace period, which a finite benchmark input never reaches. The latest record per (model, window)
     is the result.

Environment: BENCH_BOOTSTRAP (host:port), BENCH_GROUP, BENCH_PRED_TOPIC, BENCH_GT_TOPIC, BENCH_OUT_TOPIC,
BENCH_STATE_DIR (required); BENCH_WINDOW_S (60), BENCH_GRACE_S (600), BENCH_JOIN_HORIZON_S (600),
BENCH_COMMIT_INTERVAL_S (1.0, the worker's broker_commit_interval), BENCH_PROCESSING_GUARANTEE
("at-least-once" or "exactly-once"), BENCH_LOGLEVEL (INFO).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import orjson
from quixstreams import Application, State
from quixstreams.models import TimestampType
from quixstreams.models.serializers import Deserializer, SerializationContext

log = logging.getLogger("quix_peer")

MAX_BYTES = 65536
MAX_EPOCH_S = 253402300799.0
TASKS = ("classification", "regression")
LABEL_TYPES = (str, int, float, bool)

#: Skipped inputs by reason, and window deltas dropped as late; printed when the peer stops.
COUNTS: Counter[str] = Counter()


def _epoch_s(value: Any) -> bool:
    return type(value) in (int, float) and 0 <= value <= MAX_EPOCH_S


def _name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 128


class EventDeserializer(Deserializer):
    """Decodes and checks one input record; an invalid one becomes None (counted), never an exception.

    Returning None instead of raising IgnoreMessage matters: Quix stores the offset of a record only once
    it has been through the dataframe, so an ignored last record would leave its partition uncommitted.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any] | None:
        if len(value) > MAX_BYTES:
            COUNTS[f"invalid {self.kind}: oversized"] += 1
            return None
        try:
            obj = orjson.loads(value)  # also rejects invalid UTF-8
        except orjson.JSONDecodeError:
            COUNTS[f"invalid {self.kind}: not JSON"] += 1
            return None
        event = self.check(obj) if type(obj) is dict else None
        if event is None:
            COUNTS[f"invalid {self.kind}: fields"] += 1
        return event

    def check(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        rid, model, ts = obj.get("request_id"), obj.get("model"), obj.get("ts")
        if not (_name(rid) and _name(model) and _epoch_s(ts)):
            return None
        if self.kind == "prediction":
            task, prediction, version = obj.get("task"), obj.get("prediction"), obj.get("model_version")
            if task not in TASKS or type(version) is not str or "prediction" not in obj:
                return None
            if task == "regression":
                if not (prediction is None or type(prediction) in (int, float)):
                    return None
            elif not (prediction is None or type(prediction) in LABEL_TYPES):
                return None
            return {"g": 0, "r": rid, "m": model, "t": ts, "k": task, "y": prediction}
        label = obj.get("label")
        if type(label) not in LABEL_TYPES:
            return None
        return {"g": 1, "r": rid, "m": model, "t": ts, "l": label}


def event_time_ms(value: Any, headers: Any, timestamp: float, timestamp_type: TimestampType) -> int:
    """The payload's ts (epoch seconds) in ms; the Kafka timestamp for an invalid record."""
    if value is None:
        return int(timestamp)
    return math.floor(value["t"] * 1000)


def keyed(value: dict[str, Any] | None, key: bytes | None, timestamp: int, headers: Any) -> bool:
    """Drop invalid records and those whose key is not their request_id (they would join the wrong way)."""
    if value is None:
        return False
    if key is None or key != value["r"].encode():
        COUNTS["invalid: null or mismatched key"] += 1
        return False
    return True


def _canonical(label: Any) -> Any:
    """1 == 1.0 as labels, "1" != 1."""
    return int(label) if type(label) is float and label.is_integer() else label


def _scored(entry: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Add the labelled / correct / abs-error contribution of a prediction with its first label."""
    y, label = entry["y"], entry["l"]
    delta["labelled"] = 1
    if entry["k"] == "regression":
        if type(y) in (int, float) and type(label) in (int, float):
            delta["abs_err"] = abs(y - label)
    elif y is not None and _canonical(y) == _canonical(label):
        delta["correct"] = 1
    return delta


def make_join(horizon: timedelta):
    def join(
        value: dict[str, Any], key: bytes, timestamp: int, headers: Any, state: State
    ) -> list[dict[str, Any]]:
        """Per-request state: the prediction and the first label; returns the window delta (or none)."""
        entry = state.get("e")
        if entry is None:
            entry = {}
        if value["g"] == 0:
            if "y" in entry:  # a duplicate prediction
                return []
            entry.update(m=value["m"], k=value["k"], y=value["y"], t=value["t"])
            delta = {"model": value["m"], "task": value["k"], "ts_ms": timestamp, "predictions": 1}
            state.set("e", entry, ttl=horizon)
            return [_scored(entry, delta) if "l" in entry else delta]
        if "l" in entry:  # a duplicate label or a relabel: the first label counts
            return []
        entry["l"] = value["l"]
        state.set("e", entry, ttl=horizon)
        if "y" not in entry:  # the label came first: counted when its prediction arrives
            return []
        delta = {"model": entry["m"], "task": entry["k"], "ts_ms": math.floor(entry["t"] * 1000)}
        return [_scored(entry, delta)]

    return join


def init_window(delta: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": delta["task"],
        "predictions": delta.get("predictions", 0),
        "labelled": delta.get("labelled", 0),
        "correct": delta.get("correct", 0),
        "abs_err": delta.get("abs_err", 0.0),
    }


def add_to_window(agg: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    agg["predictions"] += delta.get("predictions", 0)
    agg["labelled"] += delta.get("labelled", 0)
    agg["correct"] += delta.get("correct", 0)
    agg["abs_err"] += delta.get("abs_err", 0.0)
    return agg


def on_late(*args: Any, **kwargs: Any) -> bool:
    COUNTS["late window deltas dropped"] += 1
    return False  # do not log each one


def make_result(window_s: float):
    def result(window: dict[str, Any], key: str, timestamp: int, headers: Any) -> dict[str, Any]:
        agg = window["value"]
        labelled = agg["labelled"]
        clf = agg["task"] == "classification"
        return {
            "model": key,
            "task": agg["task"],
            "window_start": window["start"] / 1000,
            "window_end": window["end"] / 1000,
            "predictions": agg["predictions"],
            "labelled": labelled,
            "correct": agg["correct"] if clf else None,
            "accuracy": agg["correct"] / labelled if clf and labelled else None,
            "abs_error_sum": None if clf else agg["abs_err"],
            "mae": agg["abs_err"] / labelled if not clf and labelled else None,
            "rate": agg["predictions"] / window_s,
        }

    return result


def build(env: dict[str, str]) -> Application:
    window_s = float(env.get("BENCH_WINDOW_S", "60"))
    grace_s = float(env.get("BENCH_GRACE_S", "600"))
    horizon = timedelta(seconds=float(env.get("BENCH_JOIN_HORIZON_S", "600")))
    app = Application(
        broker_address=env["BENCH_BOOTSTRAP"],
        consumer_group=env["BENCH_GROUP"],
        auto_offset_reset="earliest",
        state_dir=env["BENCH_STATE_DIR"],
        commit_interval=float(env.get("BENCH_COMMIT_INTERVAL_S", "1.0")),
        processing_guarantee=env.get("BENCH_PROCESSING_GUARANTEE", "at-least-once"),  # type: ignore[arg-type]
        loglevel=env.get("BENCH_LOGLEVEL", "INFO"),  # type: ignore[arg-type]
    )
    preds = app.dataframe(
        app.topic(
            env["BENCH_PRED_TOPIC"],
            value_deserializer=EventDeserializer("prediction"),
            timestamp_extractor=event_time_ms,
        )
    )
    labels = app.dataframe(
        app.topic(
            env["BENCH_GT_TOPIC"],
            value_deserializer=EventDeserializer("ground-truth"),
            timestamp_extractor=event_time_ms,
        )
    )
    out = app.topic(env["BENCH_OUT_TOPIC"], key_serializer="str", value_serializer="json")

    sdf = preds.concat(labels).filter(keyed, metadata=True)
    sdf = sdf.apply(make_join(horizon), stateful=True, metadata=True, expand=True)
    # A label's delta belongs to its prediction's window: stamp every delta with the prediction's time.
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value["ts_ms"])
    sdf = sdf.group_by("model")
    sdf = (
        sdf.tumbling_window(
            duration_ms=timedelta(seconds=window_s), grace_ms=timedelta(seconds=grace_s), on_late=on_late
        )
        .reduce(reducer=add_to_window, initializer=init_window)
        .current()
    )
    sdf = sdf.apply(make_result(window_s), metadata=True)
    sdf.to_topic(out)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build(dict(os.environ))
    try:
        app.run()
    finally:
        log.info("stopped; %s", dict(COUNTS) or "no invalid input, no late deltas")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
