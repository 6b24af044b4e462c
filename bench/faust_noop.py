"""Faust's own floor: an app whose agent reads the inputs as raw bytes and does nothing else.

Run by bench/throughput.py as `faust -A bench.faust_noop worker`; configured through the environment
(BENCH_BOOTSTRAP, BENCH_GROUP, BENCH_TOPICS comma-separated, BENCH_DATADIR, BENCH_WEB_PORT).
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ.get("BENCH_GROUP", "bench-faust-noop"),
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/bench-faust-noop"),
    web_port=int(os.environ.get("BENCH_WEB_PORT", "6099")),
    web_host="127.0.0.1",
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=1.0,
    stream_buffer_maxsize=65536,
)
inputs = app.topic(
    *os.environ.get("BENCH_TOPICS", "predictions,ground-truth").split(","),
    key_serializer="raw",
    value_serializer="raw",
)


@app.agent(inputs)
async def noop(stream):
    async for _event in stream.events():
        pass
