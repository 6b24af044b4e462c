"""Any worker answers for any model: with two workers each request is answered by the owner of the model's
stage-2 partition (forwarded when it reaches the other one), lists gather from both, /ready is 503 while a
worker has not recovered its partitions (data endpoints say so too), and after a kill -9 the survivor
answers everything with the same numbers.
"""

from __future__ import annotations

import time

import pytest

from modelmon.topics import model_partition

from .webcheck import WebWorker, caught_up, expected_predictions, load_traffic, wait_for, web_settings

pytestmark = pytest.mark.integration

VERSIONS = {"fraud-detector": "1.0.0", "churn": "2.0.0", "price-regressor": "3.0.0"}


def _readiness_until_ready(worker: WebWorker, timeout_s: float = 120.0) -> list[tuple[int, int, dict]]:
    """(/ready status, /api/v1/models status, its body) from the first answer until /ready says 200."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ready = worker.get("/ready", timeout=5)[0]
            status, body, _ = worker.get("/api/v1/models", timeout=10)
        except OSError:
            time.sleep(0.05)
            continue
        seen.append((ready, status, body))
        if ready == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not ready within {timeout_s} s: {seen[-3:]}\n{worker.log_tail()}")


def _no_revision(body: dict) -> dict:
    """A body without the fields a restart may change (revisions grow when a partition is rebuilt)."""
    if isinstance(body, dict):
        return {
            k: _no_revision(v) for k, v in body.items() if k not in ("emitted_at", "revision", "updated_at")
        }
    if isinstance(body, list):
        return [_no_revision(v) for v in body]
    return body


def _differences(a: object, b: object, where: str = "") -> list[str]:
    """Paths where two JSON bodies differ (revision-like fields ignored), for the failure message."""
    a, b = _no_revision(a), _no_revision(b)
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _same_from_both(w1: WebWorker, w2: WebWorker, path: str, timeout_s: float = 30.0) -> dict:
    """The answer of both workers to one path, once they agree and it no longer changes: the owner answers
    both (one directly, one forwarded), but stage 2 may still finalise windows between two reads."""
    last: list = []

    def agree() -> dict | None:
        a, b = w1.get(path)[1], w2.get(path)[1]
        last[:] = [a, b]
        return a if _no_revision(a) == _no_revision(b) else None

    def settled() -> dict | None:  # the same answer twice, two seconds apart: stage 2 has gone quiet
        first = wait_for(agree, timeout_s, f"both workers to answer {path} alike")
        time.sleep(2.0)
        second = wait_for(agree, timeout_s, f"both workers to answer {path} alike")
        return second if _no_revision(first) == _no_revision(second) else None

    try:
        return wait_for(settled, 3 * timeout_s, f"a settled answer to {path}")
    except AssertionError:
        raise AssertionError((path, _differences(*last))) from None


@pytest.mark.timeout(600)
def test_any_worker_answers_for_any_model(settings, tmp_path) -> None:
    s = web_settings(settings)
    load_traffic(s)
    expected = expected_predictions()
    w1 = WebWorker(s, "r1", tmp_path).start()
    w2: WebWorker | None = None
    try:
        # Starting: the web server answers before the worker owns and has recovered its partitions.
        seen = _readiness_until_ready(w1)
        not_ready = [(r, st, b) for r, st, b in seen if r == 503]
        assert not_ready, "expected /ready to say 503 before the worker had its partitions"
        for _, status, body in not_ready:
            assert status == 503 and body["error"]["code"] == "not_ready", body
        w2 = WebWorker(s, "r2", tmp_path).start()
        caught_up(s, [w1, w2], expected)

        def split() -> tuple[dict, dict] | None:
            h1, h2 = (w.get("/api/v1/health")[1] for w in (w1, w2))
            o1, o2 = set(h1["partitions"]["output"]), set(h2["partitions"]["output"])
            if o1 and o2 and not o1 & o2 and o1 | o2 == {0, 1, 2, 3} and h1["ready"] and h2["ready"]:
                return h1, h2
            return None

        h1, h2 = wait_for(split, 120, "the two workers to share the stage-2 partitions", w1)
        assert h1["workers"] == h2["workers"] and len(h1["workers"]) == 2
        owned = {w1.url: set(h1["partitions"]["output"]), w2.url: set(h2["partitions"]["output"])}
        owner = {m: next(u for u, qs in owned.items() if model_partition(m, 4) in qs) for m in VERSIONS}
        # The models sit on partitions 0, 1 and 2, so each worker owns some and forwards the others.
        assert set(owner.values()) == {w1.url, w2.url}

        before = {}
        for model, version in VERSIONS.items():
            paths = [
                f"/api/v1/models/{model}?version={version}",
                f"/api/v1/models/{model}/windows?version={version}&limit=10000",
            ]
            for path in paths:
                before[path] = _same_from_both(w1, w2, path)
            assert len(before[paths[1]]["windows"]) > 100
            assert before[paths[0]]["versions"][0]["views"]["1h"]["traffic"]["predictions"] > 1000
        for path in ("/api/v1/models", "/api/v1/alerts?limit=1000"):
            before[path] = _same_from_both(w1, w2, path)
        versioned = {(m["model"], m["model_version"]) for m in before["/api/v1/models"]["models"]}
        assert set(VERSIONS.items()) <= versioned
        assert before["/api/v1/alerts?limit=1000"]["alerts"], "the incident should have raised alerts"

        # kill -9 the worker owning fraud-detector: the survivor recovers its partitions and answers all.
        victim = w1 if owner["fraud-detector"] == w1.url else w2
        survivor = w2 if victim is w1 else w1
        victim.kill9()
        # Until the group notices (session timeout 6 s), the survivor still forwards to the dead owner:
        # a clear 503, not a hang or a 500.
        status, body, headers = survivor.get("/api/v1/models/fraud-detector?version=1.0.0")
        assert status == 503 and body["error"]["code"] in ("unavailable", "not_ready"), body
        assert headers.get("Retry-After") == "5"

        def survivor_owns_all() -> bool:
            h = survivor.get("/api/v1/health")[1]
            return h["ready"] and h["partitions"]["output"] == [0, 1, 2, 3] and len(h["workers"]) == 1

        wait_for(survivor_owns_all, 180, "the survivor to own every stage-2 partition", survivor)
        caught_up(s, [survivor], expected)
        for path, answer in before.items():
            status, body, _ = survivor.get(path)
            assert status == 200, (path, body)
            if path == "/api/v1/models":
                body = {"models": [m for m in body["models"] if m["model_version"] is not None]}
                answer = {"models": [m for m in answer["models"] if m["model_version"] is not None]}
            assert _no_revision(body) == _no_revision(answer), (path, _differences(body, answer))
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()
