"""Crash recovery under continuous load: kill -9 the worker at random moments, five times, and restart it;
the final metric events and dead letters still equal the offline oracle (design rule 6).

The stream is the stream-core test's (duplicates, relabels, early and late labels, orphans, invalid
events), sent in slices while the worker runs; each kill lands after a random delay into a slice, so
it hits the worker mid-batch, mid-commit or mid-rebuild. The store is rocksdb, so every restart
recovers from its local store plus the changelog. At the end a worker with an empty data folder takes
over, so the changelogs alone must hold the whole state.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from modelmon.topics import create_topics
from tests.integration.streamcheck import (
    WorkerProcess,
    closers,
    make_stream,
    produce,
    stream_settings,
    wait_for_lag_zero,
)
from tests.integration.test_stream_core import _verify

pytestmark = pytest.mark.integration

KILLS = 5


def _wait_until_processing(worker: WorkerProcess, rebuilds: int, timeout_s: float = 60.0) -> None:
    """Until the worker's stage 1 has rebuilt its partitions for the ``rebuilds``-th time (it is running)."""
    deadline = time.monotonic() + timeout_s
    while worker.log_path.read_text(errors="replace").count("stage 1 partition 0 rebuilt") < rebuilds:
        assert time.monotonic() < deadline, worker.log_tail(40)
        time.sleep(0.2)


def test_five_kill9_restarts_under_load_stay_exact(settings, tmp_path) -> None:
    s = stream_settings(settings, home=str(tmp_path), store="rocksdb")
    create_topics(s)
    worker = WorkerProcess(s, "crash1", tmp_path).start()
    stream = make_stream(seed=9, n=2400)
    # Predictions without ts take the Kafka timestamp; sent over a minute of kills and restarts, those
    # would move event time past the horizon while earlier slices still wait for their labels, which is
    # the watermark's documented timing dependence (docs/architecture.md §9), not what this test checks.
    for kind, payload in stream.events:
        if kind == "p" and "ts" not in payload:
            payload["ts"] = stream.base + 5.0
    slices = [stream.events[i :: KILLS + 1] for i in range(KILLS + 1)]  # every slice spans the whole stream
    rng = random.Random(9)
    kills = []
    try:
        for i, part in enumerate(slices):
            sender = threading.Thread(target=produce, args=(s, part))
            sender.start()
            if i < KILLS:
                _wait_until_processing(worker, rebuilds=i + 1)
                time.sleep(rng.uniform(0.0, 2.0))  # into the slice: mid-batch, mid-commit or mid-tick
                worker.kill9()
                kills.append(worker.log_path.read_text(errors="replace").count("progress:"))
                sender.join()
                worker.start()
            else:
                sender.join()
        wait_for_lag_zero(s, timeout_s=240)
        assert len(kills) == KILLS
        assert (
            worker.log_path.read_text(errors="replace").count(" rebuilt from ")
            >= (KILLS + 1) * s.input_partitions
        )
        # Hand over to a worker with an empty data folder: it has only the changelogs, so every write
        # the restarted worker's local store kept must have reached them too (a write whose changelog
        # record died with a killed process is sent again by the next rebuild).
        worker.stop()
        worker = WorkerProcess(s, "crash2", tmp_path).start()
        produce(s, [("g", lab) for lab in stream.late_labels])
        wait_for_lag_zero(s, timeout_s=240)
        produce(s, closers(stream))
        # Feedback records too, as a set: a join whose input was not committed when the worker died is
        # re-sent by the restarted worker's rebuild (at least once).
        _verify(s, stream, [worker], crashed=True)
    finally:
        worker.stop()
