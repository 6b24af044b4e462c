"""Hostile input, property-based (hypothesis): the decoders either accept an event or raise InvalidEvent with
a known reason, they agree with the jsonschema oracle on every object, and whatever they accept goes
through the stage-1 join and the window accumulators to a valid metric event without an exception.

Inputs: random bytes, JSON with deep nesting, huge strings and numbers, NaN/Infinity literals, wrong
types in every field, unicode edge cases (NUL, BOM, lone surrogates, right-to-left marks, astral
characters), oversized payloads.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmon import join
from modelmon import schemas as S
from modelmon.partition import PartitionState
from modelmon.rollup import apply_snapshot, metric_event
from modelmon.schemas import InvalidEvent, decode_ground_truth, decode_prediction

from .test_schemas import oracle_ok, ours_ok

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WINDOW, HORIZON = 60.0, 3600.0

UNICODE_EDGES = ["\x00", "\ufeff", "\u202e", "\U0001f600", "é", "\u0301", "\uffff", "a" * 300, ""]
text = st.one_of(st.text(max_size=40), st.sampled_from(UNICODE_EDGES), st.text(min_size=200, max_size=2000))
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, 2**64 + 1, 1e15, 253402300800.0]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

PREDICTION_FIELDS = ["request_id", "model", "model_version", "ts", "task", "prediction", "scores",
                     "latency_ms", "features", "segment", "error"]  # fmt: skip
GOOD = {"request_id": "r1", "model": "m", "prediction": "a"}


def _near_valid(fields: list[str], base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid-looking event with some fields replaced by hostile values, some dropped, some added."""
    return st.builds(
        lambda replaced, dropped, extra: {
            **{k: v for k, v in base.items() if k not in dropped},
            **replaced,
            **extra,
        },
        st.dictionaries(st.sampled_from(fields), json_values, max_size=4),
        st.sets(st.sampled_from(list(base)), max_size=2),
        st.dictionaries(text, json_values, max_size=2),
    )


def _decoded_or_invalid(decode: Any, raw: bytes) -> Any:
    try:
        return decode(raw, 65536)
    except InvalidEvent as exc:
        assert exc.reason in S.REASONS
        assert exc.message and (exc.field is None or exc.message.startswith(f"{exc.field}: "))
        return None


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes_are_decoded_or_refused_with_a_reason(raw: bytes) -> None:
    _decoded_or_invalid(decode_prediction, raw)
    _decoded_or_invalid(decode_ground_truth, raw)


@SETTINGS
@given(_near_valid(PREDICTION_FIELDS, GOOD))
def test_hostile_predictions_agree_with_the_oracle_and_survive_the_pipeline(event: dict[str, Any]) -> None:
    verdict = ours_ok("prediction", event)
    assert verdict == oracle_ok("prediction", event), event
    raw = json.dumps(event).encode()
    decoded = _decoded_or_invalid(decode_prediction, raw)
    if len(raw) <= 65536 and verdict:
        # The bytes path accepts what the object path accepts, unless orjson cannot hold a number
        # (integers beyond 64 bits become floats, 1e400 is refused as not_json).
        assert decoded is not None or any(isinstance(v, int) and abs(v) >= 2**64 for v in _leaves(event))
    if decoded is not None:
        _through_the_pipeline(decoded)


@SETTINGS
@given(_near_valid(["request_id", "label", "ts", "model"], {"request_id": "r1", "label": "a"}))
def test_hostile_ground_truth_agrees_with_the_oracle(event: dict[str, Any]) -> None:
    assert ours_ok("ground-truth", event) == oracle_ok("ground-truth", event), event
    _decoded_or_invalid(decode_ground_truth, json.dumps(event).encode())


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _through_the_pipeline(pred: S.Prediction) -> None:
    """Join, fold, snapshot round trip and the metric event of one accepted prediction (and a label)."""
    ts = pred.ts if pred.ts is not None else 1_767_571_200.0
    entry = join.apply_prediction(
        None, pred, ts, 0, 0, WINDOW, HORIZON, payload_bytes=100, keep_features=True
    )
    assert entry.entry is not None
    orjson.dumps(entry.entry)  # the table write
    label = pred.prediction if pred.prediction is not None else "x"
    joined = join.apply_label(
        entry.entry, S.GroundTruth(pred.request_id, label, ts + 1, None), ts + 1, 0, 0, HORIZON
    )
    state = PartitionState(0, WINDOW, HORIZON, epoch=1)
    state.apply_change(pred.request_id, None, entry.entry)
    state.apply_change(pred.request_id, entry.entry, joined.entry)
    for snap in state.flush():
        value = apply_snapshot(None, orjson.loads(orjson.dumps(snap.to_dict())))  # through the partials topic
        assert value is not None
        event = metric_event(orjson.loads(orjson.dumps(value)), WINDOW, ts)
        assert event is not None
        S.validate_output("model-metrics", orjson.loads(orjson.dumps(event)))


@pytest.mark.parametrize(
    "raw, reason",
    [
        (
            b'{"request_id":"a","model":"m","prediction":"x","features":' + b"[" * 5000 + b"]" * 5000 + b"}",
            "not_json",
        ),
        (
            b'{"request_id":"a","model":"m","prediction":' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}",
            "schema",
        ),
        (b'{"request_id":"a","model":"m","prediction":1.5,"task":"regression","latency_ms":NaN}', "not_json"),
        (b'{"request_id":"a","model":"m","prediction":Infinity,"task":"regression"}', "not_json"),
        (b'{"request_id":"a","model":"m","prediction":1e400,"task":"regression"}', "not_json"),
        (b'{"request_id":"\\ud800","model":"m","prediction":"x"}', "not_json"),
        (b'\xef\xbb\xbf{"request_id":"a","model":"m","prediction":"x"}', "not_json"),
        (b'{"request_id":"a\x00","model":"m","prediction":"x"}', "not_json"),
        (b'{"request_id":"a","model":"m","prediction":"x","pad":"' + b"p" * 70000 + b'"}', "oversized"),
        (b'{"request_id":"a","model":"m","prediction":"' + b"x" * 300 + b'"}', "schema"),
        (b'{"request_id":"a","model":"m","prediction":"x","latency_ms":"fast"}', "schema"),
        (b'{"request_id":"a","model":"m","prediction":"x","ts":1e15}', "bad_timestamp"),
        (b'{"request_id":"a","model":"m","prediction":null}', "semantic"),
        (b"\xff\xfe\x00\x01", "not_utf8"),
        (b"[1,2,3]", "not_object"),
        (b"", "not_json"),
    ],
)
def test_named_hostile_payloads_get_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_prediction(raw, 65536)
    assert caught.value.reason == reason, caught.value.message


def test_huge_but_valid_numbers_are_accepted_as_finite_floats() -> None:
    raw = json.dumps({**GOOD, "task": "regression", "prediction": 1e308, "latency_ms": 10**25}).encode()
    pred = decode_prediction(raw, 65536)
    assert pred.prediction == 1e308 and math.isfinite(pred.latency_ms or 0.0)
    _through_the_pipeline(pred)
