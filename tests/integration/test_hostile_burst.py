"""A burst of hostile input on a live worker: it never crashes, and every input is either counted as a valid
prediction or lands in dead-letter (input count = valid + dead letters), against the real broker."""

from __future__ import annotations

import json
import random
import time

import orjson
import pytest

from modelmon.client import MonitorClient
from modelmon.schemas import validate_output
from modelmon.topics import create_topics, topic_name

from .streamcheck import (
    CLOSER_MODEL,
    WorkerProcess,
    closer_events,
    produce,
    read_topic,
    stream_settings,
    wait_for_lag_zero,
)

pytestmark = pytest.mark.integration

T0 = 1_767_571_200.0


def _hostile(rng: random.Random, i: int) -> tuple[bytes | None, bytes]:
    """One hostile record (key, value): each kind of damage the decoders must refuse or survive."""
    rid = f"h-{i}"
    good = {"request_id": rid, "model": "m", "prediction": "a", "ts": T0 + rng.uniform(0, 60)}
    kind = i % 14
    if kind == 0:
        return rid.encode(), bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    if kind == 1:
        depth = rng.randint(100, 3000)
        return (
            rid.encode(),
            b'{"request_id":"'
            + rid.encode()
            + b'","model":"m","prediction":'
            + b"[" * depth
            + b"]" * depth
            + b"}",
        )
    if kind == 2:
        return rid.encode(), json.dumps({**good, "latency_ms": float("nan")}).encode()  # NaN literal
    if kind == 3:
        return rid.encode(), json.dumps({**good, "task": "regression", "prediction": float("inf")}).encode()
    if kind == 4:
        return rid.encode(), json.dumps({**good, "features": {"x": "y" * 5000}}).encode()
    if kind == 5:
        return rid.encode(), json.dumps({**good, "pad": "p" * 70_000}).encode()  # oversized
    if kind == 6:
        return rid.encode(), json.dumps({**good, "prediction": 10**400}).encode()  # not a double
    if kind == 7:
        wrong = rng.choice([["a"], {"a": 1}, True, None, 3.5])
        field = rng.choice(["model", "request_id", "scores", "segment", "error", "ts", "task"])
        return rid.encode(), json.dumps({**good, field: wrong}).encode()
    if kind == 8:
        return rid.encode(), b'{"request_id":"\\ud800","model":"m","prediction":"a"}'  # lone surrogate
    if kind == 9:
        return None, orjson.dumps(good)  # null key
    if kind == 10:
        return b"someone-else", orjson.dumps(good)  # key mismatch
    if kind == 11:
        return rid.encode(), orjson.dumps({**good, "model": "m\u202e\x00"})
    if kind == 12:
        return rid.encode(), b"\xef\xbb\xbf" + orjson.dumps(good)  # BOM
    # valid but odd: astral characters, huge finite numbers, deep-ish feature names
    odd = {**good, "prediction": "\U0001f600", "latency_ms": 1e300, "features": {"\u0301x": 1e308, "n": None}}
    return rid.encode(), orjson.dumps(odd)


def test_a_hostile_burst_is_counted_or_dead_lettered(settings, tmp_path) -> None:
    s = stream_settings(settings, home=str(tmp_path)).with_(window_s=60.0, join_horizon_s=600.0)
    create_topics(s)
    worker = WorkerProcess(s, "hb1", tmp_path).start()
    rng = random.Random(11)
    records: list[tuple[bytes | None, bytes]] = []
    for i in range(2800):
        if i % 2:
            rid = f"v-{i}"
            value = {"request_id": rid, "model": "m", "prediction": "a", "ts": T0 + rng.uniform(0, 60)}
            records.append((rid.encode(), orjson.dumps(value)))
        else:
            records.append(_hostile(rng, i // 2))
    try:
        with MonitorClient(s) as mon:
            for key, value in records:
                mon.send_raw("predictions", key, value)
        wait_for_lag_zero(s, timeout_s=180)
        produce(s, closer_events(T0 + 10_000, s.input_partitions))  # finalizes every window of the burst
        wait_for_lag_zero(s, timeout_s=180)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail(60)

        def finals() -> dict[tuple, dict]:
            out: dict[tuple, dict] = {}
            for event in read_topic(s, "model-metrics"):
                if event["view"] == "window" and event["model"] != CLOSER_MODEL:
                    key = (event["model"], event["model_version"], event["window"]["start"])
                    if key not in out or event["revision"] >= out[key]["revision"]:
                        out[key] = event
            return out

        deadline = time.monotonic() + 120
        while True:
            windows = finals()
            dead = [
                d
                for d in read_topic(s, "dead-letter")
                if d["source"]["topic"] == topic_name(s, "predictions")
            ]
            valid = sum(e["traffic"]["predictions"] for e in windows.values())
            # the burst's windows are final; dead letters are booked at their arrival (wall clock), later
            burst = [e for e in windows.values() if e["window"]["start"] < "2026-01-06"]
            done = burst and all(e["final"] for e in burst) and valid + len(dead) == len(records)
            if done or time.monotonic() > deadline:
                break
            time.sleep(2)
        for letter in dead[:200]:
            validate_output("dead-letter", letter)
        assert valid + len(dead) == len(records), (valid, len(dead), len(records))
        assert valid >= 1400  # the 1,400 valid predictions and the odd-but-valid ones
        reasons = {d["reason"] for d in dead}
        assert {"not_utf8", "not_json", "schema", "oversized", "null_key", "key_mismatch"} <= reasons, reasons
        offsets = [(d["source"]["partition"], d["source"]["offset"]) for d in dead]
        assert len(offsets) == len(set(offsets)), "an input was dead-lettered twice"
        log = worker.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "restarting" not in log, worker.log_tail(80)
        assert worker.proc.poll() is None
    finally:
        worker.stop()
