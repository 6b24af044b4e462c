"""The worker against the real broker: final metric events equal the offline oracle, exactly.

One worker; two workers on 8 partitions; two workers with one killed (-9) mid-stream; one worker killed
(-9) and restarted mid-stream on its rocksdict store. Every run must give the oracle's numbers: nothing
lost, nothing counted twice, and dead-letter holding exactly the invalid (or too late) inputs.
"""

from __future__ import annotations

import re
import time

import pytest

from modelmon.schemas import validate_output
from modelmon.topics import create_topics

from .streamcheck import (
    CLOSER_MODEL,
    WorkerProcess,
    check_rolling,
    check_window,
    closers,
    collect_dead_letters,
    collect_finals,
    expected_feedback,
    feedback_key,
    make_stream,
    oracle,
    produce,
    read_topic,
    stream_settings,
    wait_for_lag_zero,
)

pytestmark = pytest.mark.integration


def _verify(settings, stream, workers, *, crashed: bool = False, feedback: bool = True) -> None:
    """Final metric events, rolling views, dead letters and feedback records against the oracle.

    ``crashed``: a worker was killed, so feedback records may repeat (at least once); the watchdog's
    restarts (see watch_recovery) and rebuilds that re-sent feedback count as crashes too."""
    expected, dead = oracle(settings, stream)
    finals, rolling = collect_finals(settings, set(expected))
    logs = "\n".join(w.log_tail() for w in workers)
    missing = set(expected) - set(finals)
    assert not missing, f"no final metric event for {sorted(missing)[:5]}\n{logs}"
    extra = {key for key in finals if key[0] != CLOSER_MODEL} - set(expected)
    assert not extra, (
        f"final events for windows the oracle does not know: {[finals[k] for k in sorted(extra)[:3]]}"
    )
    errors = []
    for key, facts in expected.items():
        validate_output("model-metrics", finals[key])
        errors += check_window(key, facts, finals[key])
    progress = "\n".join(
        line for w in workers for line in w.log_tail(400).splitlines() if "progress:" in line
    )
    assert not errors, "\n".join(errors[:30]) + "\n" + progress[-3000:]
    rolling_errors = check_rolling(expected, rolling)
    assert not rolling_errors, "\n".join(rolling_errors)
    letters = collect_dead_letters(settings, len(dead))
    for letter in letters:
        validate_output("dead-letter", letter)
    got = [
        (d["source"]["topic"].rsplit(".", 1)[-1], d["key"].encode() if d["key"] else None, d["reason"])
        for d in letters
    ]
    assert len(got) == len(set(got)), "a dead letter was written twice"
    assert set(got) == dead
    if feedback:
        # Records repeat (at least once) after a crash, a watchdog restart, or a rebuild that re-sent the
        # records of joins whose inputs were not committed yet (a rebalance, e.g. after a session expired
        # during a broker outage); otherwise each joined record is on the topic exactly once.
        repeats = any(
            "restarting" in text or re.search(r"feedback re-sent for [1-9]", text)
            for text in (w.log_tail(100_000) for w in workers)
        )
        _verify_feedback(settings, expected, crashed or repeats)


def _verify_feedback(settings, expected, crashed: bool) -> None:
    """model-feedback holds exactly the oracle's joined records: once each, or at least once after a crash."""
    want = expected_feedback(expected)
    records = [r for r in read_topic(settings, "model-feedback") if r["model"] != CLOSER_MODEL]
    for record in records[:50]:
        validate_output("model-feedback", record)
    got = sorted((feedback_key(r) for r in records), key=repr)
    if crashed:  # at least once: a record sent just before a kill -9 is sent again by the replay
        got = sorted(set(got), key=repr)
    missing = [k for k in want if k not in set(got)]
    extra = [k for k in got if k not in set(want)]
    assert not missing and not extra, f"feedback differs: missing {missing[:3]}, extra {extra[:3]}"
    assert got == want


def _run(settings, stream, workers, *, kill_at=None, restart=None):
    """Produce the stream; optionally kill -9 a worker half way and restart one."""
    half = len(stream.events) // 2
    produce(settings, stream.events[:half])
    if kill_at is not None:
        time.sleep(kill_at)
        workers[-1].kill9()
        if restart is not None:
            restart.start()
    produce(settings, stream.events[half:])
    wait_for_lag_zero(settings)
    produce(settings, [("g", lab) for lab in stream.late_labels])
    wait_for_lag_zero(settings)
    produce(settings, closers(stream))


@pytest.fixture
def stream_env(settings, tmp_path):
    s = stream_settings(settings, home=str(tmp_path))
    create_topics(s)
    workers: list[WorkerProcess] = []
    yield s, workers, tmp_path
    for w in workers:
        w.stop()


def _start(stream_env, n: int, store: str = "memory") -> tuple:
    settings, workers, tmp = stream_env
    for i in range(n):
        workers.append(WorkerProcess(settings.with_(store=store), f"w{i + 1}", tmp).start())
    return settings, workers


def test_one_worker_matches_the_oracle(stream_env):
    settings, workers = _start(stream_env, 1)
    stream = make_stream(seed=1)
    _run(settings, stream, workers)
    _verify(settings, stream, workers)


def test_two_workers_match_the_oracle(stream_env):
    settings, workers = _start(stream_env, 2)
    stream = make_stream(seed=4)
    _run(settings, stream, workers)
    _verify(settings, stream, workers)


def test_two_workers_match_the_oracle_and_survive_kill9(stream_env):
    """After the survivor takes back partitions it owned before, Faust's consumer can stop committing them
    (docs/architecture.md §9); the watchdog then restarts the worker and the replay stays exact."""
    settings, workers = _start(stream_env, 2)
    stream = make_stream(seed=2)
    _run(settings, stream, workers, kill_at=4.0)
    _verify(settings, stream, workers, crashed=True)


def test_single_worker_kill9_and_restart_on_rocksdb(stream_env):
    settings, workers = _start(stream_env, 1, store="rocksdb")
    stream = make_stream(seed=3)
    _run(settings, stream, workers, kill_at=6.0, restart=workers[0])
    _verify(settings, stream, workers, crashed=True)
