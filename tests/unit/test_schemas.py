"""Event contracts: the JSON Schemas in schemas/, their examples, and the validator compiled from them.

``jsonschema`` (Draft 2020-12) is the independent oracle: whatever it says about an event, modelmon's
fastjsonschema-based validator must say too, apart from the few documented cases where modelmon is
stricter than JSON Schema can be (see ``test_stricter_than_the_schema``).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import random
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from modelmon import schemas as S

SCHEMA_DIR = S.schema_dir()
KINDS = S.INPUT_KINDS + S.OUTPUT_KINDS
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Keywords that jsonschema (2020-12) and fastjsonschema (draft-07 semantics) evaluate the same way.
PORTABLE_KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "default",
    "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
    "minProperties", "maxProperties", "items", "minLength", "maxLength", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "multipleOf", "anyOf", "allOf", "oneOf",
}  # fmt: skip
SUBSCHEMA_MAPS = ("properties", "$defs")
SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf")
SUBSCHEMA_ONE = ("additionalProperties", "items", "propertyNames")


def load(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text(encoding="utf-8"))


ORACLES = {kind: jsonschema.Draft202012Validator(load(kind)) for kind in KINDS}


def oracle_ok(kind: str, event: Any) -> bool:
    return ORACLES[kind].is_valid(event)


def ours(kind: str, event: Any) -> Any:
    if kind == "prediction":
        return S.validate_prediction(event)
    if kind == "ground-truth":
        return S.validate_ground_truth(event)
    return S.validate_output(kind, event)


def ours_ok(kind: str, event: Any) -> bool:
    try:
        ours(kind, event)
    except S.InvalidEvent as exc:
        assert exc.reason in S.REASONS
        return False
    return True


def examples(kind: str, which: str) -> list[Path]:
    return sorted((SCHEMA_DIR / "examples" / kind / which).glob("*.json"))


VALID = [
    pytest.param(kind, path, id=f"{kind}/{path.stem}") for kind in KINDS for path in examples(kind, "valid")
]
INVALID = [
    pytest.param(kind, path, id=f"{kind}/{path.stem}") for kind in KINDS for path in examples(kind, "invalid")
]


def subschemas(schema: Any):
    """Every (sub)schema object in a schema document, depth first."""
    if not isinstance(schema, dict):
        return
    yield schema
    for key in SUBSCHEMA_MAPS:
        for sub in schema.get(key, {}).values():
            yield from subschemas(sub)
    for key in SUBSCHEMA_LISTS:
        for sub in schema.get(key, []):
            yield from subschemas(sub)
    for key in SUBSCHEMA_ONE:
        yield from subschemas(schema.get(key))


# ------------------------------------------------------------------------------------------------------
# The schema files


@pytest.mark.parametrize("kind", KINDS)
def test_schema_file_is_a_valid_2020_12_schema(kind: str) -> None:
    schema = load(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT_2020_12
    assert schema["$id"].endswith(f"/{kind}.schema.json")
    assert schema["title"] and schema["description"]
    assert schema["type"] == "object"


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_has_a_description(kind: str) -> None:
    missing = []

    def walk(schema: Any, path: str) -> None:
        if not isinstance(schema, dict):
            return
        for name, sub in schema.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            walk(schema.get(key), f"{path}[{key}]")
        for name, sub in schema.get("$defs", {}).items():
            walk(sub, f"$defs.{name}")

    walk(load(kind), kind)
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_uses_only_portable_keywords(kind: str) -> None:
    for sub in subschemas(load(kind)):
        unknown = set(sub) - PORTABLE_KEYWORDS
        assert not unknown, (
            f"{kind}: keywords {unknown} are not evaluated alike by jsonschema and fastjsonschema"
        )
        ref = sub.get("$ref")
        if ref is not None:  # local refs only: fastjsonschema must never go to the network
            assert ref.startswith("#/$defs/"), ref


@pytest.mark.parametrize("kind", KINDS)
def test_timestamps_use_the_one_rfc3339_pattern(kind: str) -> None:
    patterns = {
        sub["pattern"] for sub in subschemas(load(kind)) if sub.get("pattern", "").startswith("^[0-9]{4}-")
    }
    assert patterns <= {S._RFC3339_PATTERN}


def test_every_kind_has_a_schema_and_examples() -> None:
    assert {f"{kind}.schema.json" for kind in KINDS} <= {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    for kind in KINDS:
        assert examples(kind, "valid"), kind
        assert examples(kind, "invalid"), kind
    for kind in S.INPUT_KINDS:
        assert len(examples(kind, "valid")) >= 3


def test_prediction_cross_field_rules_are_the_ones_coded_in_python() -> None:
    # The hot path compiles the prediction schema without its allOf and checks these rules in Python;
    # a change to them must be made in schemas.py as well (the agreement tests below would catch it).
    rules = [rule["description"] for rule in load("prediction")["allOf"]]
    assert rules == [
        "A null prediction needs an error that says why.",
        "Only classification predictions may be strings or booleans: a regression prediction is a number.",
        "A number with a fractional part is not a class label: such predictions need task 'regression'.",
    ]
    assert S._CODED_RULES == {"prediction": "allOf"}


def test_schema_dir_prefers_the_packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (S.schema_dir() / "prediction.schema.json").is_file()
    (tmp_path / "_schemas").mkdir()
    monkeypatch.setattr(S, "__file__", str(tmp_path / "schemas.py"))
    assert S.schema_dir() == tmp_path / "_schemas"


def test_load_schema_and_unknown_kinds() -> None:
    assert S.load_schema("alert") == load("alert")
    with pytest.raises(ValueError):
        S.load_schema("nope")
    with pytest.raises(ValueError):
        S.validate_output("prediction", {})


# ------------------------------------------------------------------------------------------------------
# Examples and counterexamples


@pytest.mark.parametrize(("kind", "path"), VALID)
def test_valid_example(kind: str, path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    errors = [e.message for e in ORACLES[kind].iter_errors(event)]
    assert not errors, errors
    before = copy.deepcopy(event)
    ours(kind, event)
    assert event == before, "validation must not modify the event"
    if kind in S.INPUT_KINDS:
        decode = S.decode_prediction if kind == "prediction" else S.decode_ground_truth
        assert decode(path.read_bytes()) == ours(kind, event)


@pytest.mark.parametrize(("kind", "path"), INVALID)
def test_invalid_example(kind: str, path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    assert set(case) == {"expect_field", "expect_reason", "event"}
    assert case["expect_reason"] in S.REASONS
    event = case["event"]
    assert not oracle_ok(kind, event), "the jsonschema oracle accepts this counterexample"
    with pytest.raises(S.InvalidEvent) as caught:
        ours(kind, event)
    exc = caught.value
    assert (exc.reason, exc.field) == (case["expect_reason"], case["expect_field"]), exc.message
    if exc.field is not None:
        assert exc.message.startswith(f"{exc.field}: "), exc.message
    assert str(exc) == exc.message
    if kind in S.INPUT_KINDS:  # the same verdict through the raw-bytes path
        decode = S.decode_prediction if kind == "prediction" else S.decode_ground_truth
        with pytest.raises(S.InvalidEvent) as again:
            decode(orjson.dumps(event))
        assert (again.value.reason, again.value.field) == (exc.reason, exc.field)


# ------------------------------------------------------------------------------------------------------
# Raw bytes

DECODERS = [
    pytest.param(S.decode_prediction, b'{"request_id":"r1","model":"m","prediction":"cat"}', id="prediction"),
    pytest.param(S.decode_ground_truth, b'{"request_id":"r1","label":"cat"}', id="ground-truth"),
]


@pytest.mark.parametrize(("decode", "good"), DECODERS)
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"\xff\xfe{}", "not_utf8", id="binary"),
        pytest.param(b'{"request_id":"caf\xe9","model":"m","prediction":1}', "not_utf8", id="latin-1"),
        pytest.param(b"", "not_json", id="empty"),
        pytest.param(None, "not_json", id="tombstone"),
        pytest.param(b'{"request_id": "r1",', "not_json", id="truncated"),
        pytest.param(b"{'request_id': 'r1'}", "not_json", id="python-repr"),
        pytest.param(
            b'{"request_id":"r1","model":"m","prediction":1,"latency_ms":NaN}', "not_json", id="nan"
        ),
        pytest.param(b'{"request_id":"r1","model":"m","prediction":Infinity}', "not_json", id="infinity"),
        pytest.param(b'{"request_id":"r1","model":"m","prediction":1e999}', "not_json", id="overflow"),
        pytest.param(b'[{"request_id":"r1"}]', "not_object", id="array"),
        pytest.param(b"42", "not_object", id="number"),
        pytest.param(b'"r1"', "not_object", id="string"),
        pytest.param(b"null", "not_object", id="null"),
    ],
)
def test_decode_rejects(decode: Any, good: bytes, raw: bytes | None, reason: str) -> None:
    with pytest.raises(S.InvalidEvent) as caught:
        decode(raw)
    assert caught.value.reason == reason
    assert caught.value.field is None


@pytest.mark.parametrize(("decode", "good"), DECODERS)
def test_decode_size_limit(decode: Any, good: bytes) -> None:
    padded = good[:-1] + b" " * (S.DEFAULT_MAX_BYTES - len(good)) + b"}"
    assert len(padded) == S.DEFAULT_MAX_BYTES
    decode(padded)  # exactly at the limit: fine
    with pytest.raises(S.InvalidEvent) as caught:
        decode(padded + b" ")
    assert (caught.value.reason, caught.value.field) == ("oversized", None)
    assert "65537 bytes" in caught.value.message
    with pytest.raises(S.InvalidEvent) as caught:
        decode(good, max_bytes=len(good) - 1)
    assert caught.value.reason == "oversized"


@pytest.mark.parametrize(("decode", "good"), DECODERS)
def test_decode_accepts_any_bytes_like(decode: Any, good: bytes) -> None:
    assert decode(good) == decode(bytearray(good)) == decode(memoryview(good))


# ------------------------------------------------------------------------------------------------------
# Timestamps

EPOCH = 1714564800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1714564800, EPOCH),
        (1714564800.0, EPOCH),
        ("2024-05-01T12:00:00Z", EPOCH),
        ("2024-05-01t12:00:00z", EPOCH),
        ("2024-05-01 12:00:00+00:00", EPOCH),
        ("2024-05-01T14:00:00+02:00", EPOCH),
        ("2024-04-30T23:00:00-13:00", EPOCH),
        ("2024-05-01T12:00:00.000000000Z", EPOCH),
        ("2024-05-01T12:00:00.25Z", 1714564800.25),
        (1714564800.25, 1714564800.25),
        ("2024-05-01T12:00:00.123456Z", 1714564800.123456),
        ("2024-05-01T12:00:00.1234567Z", 1714564800.123456),  # beyond microseconds: truncated
        ("1970-01-01T00:00:00Z", 0.0),
        (0, 0.0),
        ("2024-02-29T00:00:00Z", 1709164800.0),
        ("9999-12-31T23:59:59Z", S.MAX_EPOCH_S),
        (S.MAX_EPOCH_S, S.MAX_EPOCH_S),
    ],
)
def test_timestamps_normalise_to_epoch_seconds(ts: Any, expected: float) -> None:
    prediction = S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1, "ts": ts})
    label = S.validate_ground_truth({"request_id": "r", "label": 1, "ts": ts})
    assert prediction.ts == label.ts == expected
    assert type(prediction.ts) is float


def test_rfc3339_and_epoch_agree_for_random_instants() -> None:
    rng = random.Random(3339)
    for _ in range(300):
        micros = rng.randrange(0, 4_000_000_000 * 10**6)
        offset = timedelta(minutes=rng.randrange(-23 * 60, 23 * 60 + 1))
        moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)
        text = moment.astimezone(timezone(offset)).isoformat()
        if rng.random() < 0.5 and offset == timedelta(0):
            text = text.replace("+00:00", "Z")
        epoch = micros / 10**6
        as_text = S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1, "ts": text})
        as_number = S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1, "ts": epoch})
        assert as_text.ts == as_number.ts == epoch, text


def test_absent_or_null_ts_is_none() -> None:
    assert S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1}).ts is None
    assert S.validate_ground_truth({"request_id": "r", "label": 1, "ts": None}).ts is None


def test_python_310_fraction_fallback() -> None:
    parse = S._fromisoformat_compat
    assert parse("2024-05-01T12:00:00.123456789+00:00") == datetime(
        2024, 5, 1, 12, 0, 0, 123456, timezone.utc
    )
    assert parse("2024-05-01T12:00:00.1+00:00") == datetime(2024, 5, 1, 12, 0, 0, 100000, timezone.utc)
    assert parse("2024-05-01T12:00:00+00:00") == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            {"request_id": "r", "model": "m", "prediction": 1, "ts": "2023-02-29T00:00:00Z"}, id="no-leap-day"
        ),
        pytest.param(
            {"request_id": "r", "model": "m", "prediction": 1, "ts": "2024-04-31T00:00:00Z"}, id="april-31"
        ),
        pytest.param(
            {"request_id": "r", "model": "m", "prediction": 1, "ts": "1969-12-31T23:59:59Z"}, id="pre-1970"
        ),
        pytest.param(
            {"request_id": "r", "model": "m", "prediction": 1, "ts": "0000-01-01T00:00:00Z"}, id="year-0"
        ),
        pytest.param({"request_id": "r", "model": "m\n", "prediction": 1}, id="trailing-newline"),
    ],
)
def test_stricter_than_the_schema(event: dict[str, Any]) -> None:
    # JSON Schema cannot say "a real calendar date" or "not before 1970"; and Python's re (used by the
    # jsonschema oracle) lets '$' match before a final newline, unlike ECMA-262 and fastjsonschema.
    assert oracle_ok("prediction", event)
    assert not ours_ok("prediction", event)


# ------------------------------------------------------------------------------------------------------
# Types, normalisation and the dict API


def test_booleans_are_not_numbers() -> None:
    base = {"request_id": "r", "model": "m", "prediction": 1}
    for field, value, reason in [
        ("ts", True, "schema"),
        ("latency_ms", False, "schema"),
        ("scores", {"a": True}, "schema"),
    ]:
        event = {**base, field: value}
        assert not oracle_ok("prediction", event)
        with pytest.raises(S.InvalidEvent) as caught:
            S.validate_prediction(event)
        assert caught.value.reason == reason
        assert caught.value.field in (field, f"{field}.a")
    regression = {**base, "task": "regression", "prediction": True}
    assert not oracle_ok("prediction", regression)
    with pytest.raises(S.InvalidEvent) as caught:
        S.validate_prediction(regression)
    assert (caught.value.reason, caught.value.field) == ("semantic", "prediction")
    assert S.validate_prediction({**base, "prediction": True}).prediction is True
    assert S.validate_ground_truth({"request_id": "r", "label": False}).label is False


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        ({"latency_ms": math.nan}, "latency_ms", "schema"),
        ({"latency_ms": math.inf}, "latency_ms", "schema"),
        ({"ts": math.nan}, "ts", "bad_timestamp"),
        ({"ts": math.inf}, "ts", "bad_timestamp"),
        ({"scores": {"a": math.nan}}, "scores.a", "schema"),
        ({"features": {"x": -math.inf}}, "features.x", "schema"),
        ({"task": "regression", "prediction": math.nan}, "prediction", "schema"),
        ({"prediction": math.inf}, "prediction", "schema"),
    ],
)
def test_dict_api_rejects_non_finite_numbers(event: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(S.InvalidEvent) as caught:
        S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1, **event})
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_ground_truth_label_must_be_finite() -> None:
    with pytest.raises(S.InvalidEvent) as caught:
        S.validate_ground_truth({"request_id": "r", "label": math.nan})
    assert (caught.value.reason, caught.value.field) == ("schema", "label")


def test_normalisation() -> None:
    event = {"request_id": "r", "model": "m", "prediction": 2.0, "latency_ms": 5, "ts": 1714564800}
    before = copy.deepcopy(event)
    p = S.validate_prediction(event)
    assert event == before
    assert p.task == "classification"
    assert p.prediction == 2 and type(p.prediction) is int
    assert p.latency_ms == 5.0 and type(p.latency_ms) is float
    assert (p.model_version, p.scores, p.features, p.segment, p.error) == (None,) * 5
    r = S.validate_prediction({**event, "task": "regression"})
    assert r.task == "regression" and type(r.prediction) is float
    r = S.validate_prediction({**event, "task": "regression", "prediction": 7})
    assert r.prediction == 7.0 and type(r.prediction) is float
    assert type(S.validate_prediction({**event, "prediction": 7}).prediction) is int
    assert S.validate_prediction({**event, "task": None}).task == "classification"
    failed = S.validate_prediction({"request_id": "r", "model": "m", "prediction": None, "error": "timeout"})
    assert failed.prediction is None and failed.error == "timeout"


@pytest.mark.parametrize("obj", [[], "x", 1, None, ("a", 1)])
def test_dict_api_requires_an_object(obj: Any) -> None:
    for validate in (S.validate_prediction, S.validate_ground_truth):
        with pytest.raises(S.InvalidEvent) as caught:
            validate(obj)
        assert caught.value.reason == "not_object"
    with pytest.raises(S.InvalidEvent) as caught:
        S.validate_output("alert", obj)
    assert caught.value.reason == "not_object"


def test_semantic_rules_agree_with_the_schema() -> None:
    # The cross-field rules run in Python on the hot path; the oracle sees them in the schema's allOf.
    base = {"request_id": "r", "model": "m"}
    cases = [
        {"prediction": None},
        {"prediction": None, "error": None},
        {"prediction": None, "error": "boom"},
        {"prediction": None, "error": "boom", "task": "regression"},
        {"prediction": "cat", "task": "regression"},
        {"prediction": True, "task": "regression"},
        {"prediction": 3, "task": "regression"},
        {"prediction": 3.5, "task": "regression"},
        {"prediction": 3.5},
        {"prediction": 3.5, "task": None},
        {"prediction": 3.0, "task": "classification"},
        {"prediction": -0.0},
        {"prediction": 1e300},
        {"prediction": "cat", "task": None},
        {"prediction": False, "error": "partial failure"},
    ]
    for case in cases:
        event = {**base, **case}
        assert oracle_ok("prediction", event) == ours_ok("prediction", event), event


def test_unknown_field_message_suggests_the_right_name() -> None:
    with pytest.raises(S.InvalidEvent) as caught:
        S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1, "model_verison": "1"})
    assert caught.value.field == "model_verison"
    assert "did you mean 'model_version'" in caught.value.message


def test_invalid_event_is_a_picklable_value_error() -> None:
    exc = S.InvalidEvent("schema", "scores.cat", "scores.cat: must be at most 1")
    assert isinstance(exc, ValueError)
    copied = pickle.loads(pickle.dumps(exc))
    assert (copied.reason, copied.field, copied.message) == (
        "schema",
        "scores.cat",
        "scores.cat: must be at most 1",
    )
    assert "scores.cat" in repr(exc)


def test_validators_are_compiled_once() -> None:
    S.validate_prediction({"request_id": "r", "model": "m", "prediction": 1})
    assert S._validator("prediction") is S._validator("prediction")


# ------------------------------------------------------------------------------------------------------
# Random events: jsonschema and modelmon agree

LABEL_CHARS = string.ascii_letters + string.digits + " -_.é中"
MODEL_CHARS = string.ascii_letters + string.digits + "._-"


def random_text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def random_ts(rng: random.Random) -> Any:
    seconds = rng.uniform(0, 4_000_000_000)
    choice = rng.random()
    if choice < 0.3:
        return seconds
    if choice < 0.4:
        return int(seconds)
    moment = datetime.fromtimestamp(int(seconds), tz=timezone.utc)
    moment = moment.astimezone(timezone(timedelta(minutes=rng.choice([0, 60, -300, 330, 840]))))
    text = moment.isoformat(timespec=rng.choice(["seconds", "milliseconds", "microseconds"]))
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def random_prediction(rng: random.Random) -> dict[str, Any]:
    task = rng.choice(["classification", "regression", None, "absent"])
    classes = [random_text(rng, LABEL_CHARS, 1, 12) for _ in range(rng.randint(2, 6))]
    if task == "regression":
        prediction: Any = rng.choice([rng.uniform(-1e6, 1e6), rng.randint(-100, 100)])
    else:
        prediction = rng.choice(
            [rng.choice(classes), rng.randint(0, 9), rng.random() < 0.5, float(rng.randint(0, 9))]
        )
    event: dict[str, Any] = {
        "request_id": random_text(rng, string.printable, 1, 128),
        "model": rng.choice(string.ascii_letters + string.digits) + random_text(rng, MODEL_CHARS, 0, 40),
        "prediction": prediction,
    }
    if task != "absent":
        event["task"] = task
    optional = {
        "model_version": lambda: rng.choice(["1", "2024.05.1", "3.2.0+cpu", "v7_b", None]),
        "ts": lambda: rng.choice([random_ts(rng), None]),
        "scores": lambda: {c: rng.random() for c in classes} if task != "regression" else None,
        "latency_ms": lambda: rng.choice([rng.uniform(0, 5000), rng.randint(0, 100), 0, None]),
        "features": lambda: {
            random_text(rng, MODEL_CHARS, 1, 20): rng.choice(
                [rng.uniform(-1e9, 1e9), rng.randint(-5, 5), random_text(rng, LABEL_CHARS, 0, 50), True, None]
            )
            for _ in range(rng.randint(0, 30))
        },
        "segment": lambda: {
            rng.choice(string.ascii_letters) + random_text(rng, MODEL_CHARS, 0, 20): random_text(
                rng, LABEL_CHARS, 0, 20
            )
            for _ in range(rng.randint(0, 5))
        },
        "error": lambda: rng.choice([random_text(rng, LABEL_CHARS, 1, 200), None]),
    }
    for name, make in optional.items():
        if rng.random() < 0.5:
            event[name] = make()
    if rng.random() < 0.1:
        event["prediction"] = None
        event["error"] = "model failed: " + random_text(rng, LABEL_CHARS, 0, 30)
    return event


def mutate(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    """One change that may (or may not) make the event invalid."""
    event = copy.deepcopy(event)
    mutations = [
        lambda e: e.pop(rng.choice(["request_id", "model", "prediction"]), None),
        lambda e: e.update(request_id=rng.choice([1, "", None, "x" * 129, ["r"]])),
        lambda e: e.update(model=rng.choice(["a b", "-m", "m/1", "é", "m" * 129, 7])),
        lambda e: e.update(model_version=rng.choice(["", "1 2", "v" * 65, 1.5])),
        lambda e: e.update(
            ts=rng.choice([-1, 1714564800000, "yesterday", "2024-05-01", True, "2024-05-01T12:00:00"])
        ),
        lambda e: e.update(task=rng.choice(["multiclass", "", 1, "regression", "classification"])),
        lambda e: e.update(prediction=rng.choice([None, 0.5, "c" * 257, {"a": 1}, [1], 2.0, True, "cat", 3])),
        lambda e: e.update(scores=rng.choice([{"a": 1.5}, {"a": -0.1}, {"a": "0.3"}, [0.1], {"": 0.5}, {}])),
        lambda e: e.update(latency_ms=rng.choice([-1, "5", True, 0, 1e12])),
        lambda e: e.update(
            features=rng.choice([{"a": {"b": 1}}, {"a": [1]}, {"a": "x" * 1025}, {"a": None}])
        ),
        lambda e: e.update(segment=rng.choice([{"a": 1}, {"a b": "x"}, {"a": "x" * 129}, {"a": ""}])),
        lambda e: e.update(error=rng.choice(["", None, "e" * 2049, 5, "boom"])),
        lambda e: e.update(lantency_ms=1),
    ]
    rng.choice(mutations)(event)
    return event


def test_random_valid_predictions_agree() -> None:
    rng = random.Random(20240501)
    for _ in range(400):
        event = random_prediction(rng)
        assert oracle_ok("prediction", event), [e.message for e in ORACLES["prediction"].iter_errors(event)]
        parsed = S.validate_prediction(event)
        assert parsed == S.decode_prediction(orjson.dumps(event))
        assert parsed.request_id == event["request_id"]


def test_random_mutated_predictions_agree() -> None:
    rng = random.Random(7)
    verdicts = {True: 0, False: 0}
    for _ in range(600):
        event = mutate(rng, random_prediction(rng))
        verdict = oracle_ok("prediction", event)
        assert ours_ok("prediction", event) == verdict, event
        verdicts[verdict] += 1
    assert min(verdicts.values()) > 50  # both outcomes are exercised


def test_random_ground_truth_agree() -> None:
    rng = random.Random(11)
    for _ in range(300):
        event: dict[str, Any] = {
            "request_id": random_text(rng, string.printable, 1, 128),
            "label": rng.choice(
                [random_text(rng, LABEL_CHARS, 0, 30), rng.randint(-3, 3), rng.random(), True]
            ),
        }
        if rng.random() < 0.5:
            event["ts"] = random_ts(rng)
        if rng.random() < 0.3:
            event["model"] = rng.choice(["churn", "m.v2", None])
        if rng.random() < 0.3:
            event[rng.choice(["label", "request_id", "ts", "model", "labl"])] = rng.choice(
                [None, {}, [], "x" * 300, -5, "not a time"]
            )
        assert ours_ok("ground-truth", event) == oracle_ok("ground-truth", event), event


def test_integers_agree_between_validators() -> None:
    # Since draft 6 a float without a fraction is an integer; both implementations follow that.
    path = examples("model-metrics", "valid")[0]
    event = json.loads(path.read_text(encoding="utf-8"))
    for revision, valid in [(2, True), (2.0, True), (2.5, False), (True, False), (0, False)]:
        event["revision"] = revision
        assert oracle_ok("model-metrics", event) is valid
        assert ours_ok("model-metrics", event) is valid
