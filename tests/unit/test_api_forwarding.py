"""The API while workers come and go (both seen in tests/faults/test_rebalance.py): a model's request
forwarded to its owner relays the owner's answer, and a 503 (owner rebalancing or recovering) keeps saying
when to retry, like a 503 this worker raises itself (relayed 503s had lost Retry-After); a worker whose
Faust consumer has not started yet owns nothing (its /api/v1/health was a 500)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
from aiohttp.test_utils import make_mocked_request
from faust.exceptions import ConsumerNotStarted

from modelmon.web.api import Api
from modelmon.web.reads import StageReads


def _api(answer: tuple[int, Any]) -> Api:
    """An Api of a worker that owns no stage-2 partition, whose forwarding returns ``answer``."""
    api = object.__new__(Api)
    api.s = SimpleNamespace(worker_id="w1", output_partitions=4)
    api.r = SimpleNamespace(
        not_ready_reason=lambda: None,
        model_partition=lambda model: 1,
        owned_outputs=lambda: set(),
        partition_owners=lambda: {1: "http://owner:6066"},
    )

    async def forward(request: Any, url: str, *, local: bool = False) -> tuple[int, Any]:
        assert url == "http://owner:6066"
        return answer

    api._forward = forward  # type: ignore[method-assign]
    return api


def _relay(answer: tuple[int, Any]) -> Any:
    request = make_mocked_request("GET", "/api/v1/models/clf", match_info={"model": "clf"})
    return asyncio.run(_api(answer)._for_model(request, lambda: {"local": True}))


def test_a_relayed_503_keeps_retry_after() -> None:
    body = {"error": {"status": 503, "code": "not_ready", "message": "worker w2 is not ready: rebalancing"}}
    response = _relay((503, body))
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert orjson.loads(response.body) == body


def test_a_relayed_200_is_the_owners_answer() -> None:
    response = _relay((200, {"model": "clf", "versions": []}))
    assert response.status == 200
    assert "Retry-After" not in response.headers
    assert orjson.loads(response.body) == {"model": "clf", "versions": []}


def test_a_starting_worker_owns_no_partition() -> None:
    def not_started() -> set:
        raise ConsumerNotStarted("Consumer thread not yet started")

    worker = SimpleNamespace(
        s=SimpleNamespace(),
        app=SimpleNamespace(consumer=SimpleNamespace(assignment=not_started)),
        partials=SimpleNamespace(get_topic_name=lambda: "partials"),
        pred_name="predictions",
    )
    reads = StageReads(worker)  # type: ignore[arg-type]
    assert reads.owned_inputs() == set()
    assert reads.owned_outputs() == set()
