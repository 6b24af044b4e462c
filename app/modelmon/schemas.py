"""Event contracts: validation of modelmon events, compiled from the JSON Schemas in ``schemas/``.

The schema files are the single source of truth. Each is compiled once (lazily) with fastjsonschema into
plain Python code, so validating an event costs a few microseconds. On top of the compiled schema this
module only

* decodes raw Kafka values (size limit, UTF-8, JSON, "is it an object"),
* normalises what the schema accepted (``ts`` to epoch seconds, ``task`` defaulted, integral float class
  labels to ``int``),
* checks what JSON Schema cannot (an RFC 3339 string names a real instant, e.g. no 30 February; numbers
  from Python callers are finite), and
* turns a schema failure into an :class:`InvalidEvent` with a reason code, the dotted path of the field
  and a readable message, for the dead-letter topic.

The prediction schema states three cross-field rules in its top-level ``allOf`` (a null prediction needs
an error; a regression prediction is a number; a number with a fraction is not a class label). JSON Schema
can only express them as ``anyOf`` alternatives, which the generated code evaluates by raising and catching
exceptions (costly on every regression event) and which fail with an unspecific message. So the hot path
compiles the schema without that ``allOf`` and checks the same three rules in ``_prediction`` (reason
"semantic", field "prediction"); the unit tests prove both agree (every example and counterexample, and a
few hundred random events, get the same verdict from ``jsonschema`` on the full schema). Change the rules
in both places.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import fastjsonschema
import orjson
from fastjsonschema import JsonSchemaValueException

__all__ = [
    "DEFAULT_MAX_BYTES",
    "INPUT_KINDS",
    "MAX_EPOCH_S",
    "OUTPUT_KINDS",
    "REASONS",
    "GroundTruth",
    "InvalidEvent",
    "Prediction",
    "decode_ground_truth",
    "decode_prediction",
    "load_schema",
    "schema_dir",
    "validate_ground_truth",
    "validate_output",
    "validate_prediction",
]

REASONS = (
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "schema",
    "bad_timestamp",
    "semantic",
    "null_key",
    "key_mismatch",
    "too_late",
)
"""Reason codes of :class:`InvalidEvent` (and of dead-letter events).

oversized: raw payload larger than the limit; not_utf8: payload is not UTF-8; not_json: not parseable
JSON (this includes NaN/Infinity literals); not_object: JSON, but not an object; schema: violates the
event schema; bad_timestamp: ``ts`` is not a usable time; semantic: well-formed but inconsistent (e.g. a
null prediction without an error); null_key: Kafka record without a key (raised by the consumer, not here).
"""

INPUT_KINDS = ("prediction", "ground-truth")
OUTPUT_KINDS = ("model-metrics", "alert", "dead-letter", "monitor-health", "model-feedback")
DEFAULT_MAX_BYTES = 65536
MAX_EPOCH_S = 253402300799.0
"""Largest accepted epoch-seconds ``ts`` (9999-12-31T23:59:59Z); larger values are usually milliseconds."""

Task = Literal["classification", "regression"]

_RFC3339_PATTERN = (
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    "(\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""The RFC 3339 pattern the schema files use (the tests check they all use this one), for error messages."""


class InvalidEvent(ValueError):
    """An event that must not be processed; the dead-letter topic records ``reason``, ``field``, ``message``.

    ``reason`` is one of :data:`REASONS`; ``field`` is the dotted path of the offending field (such as
    ``"scores.cat"`` or ``"prediction"``; array items as ``"matrix[2]"``) or None when the problem is not
    about one field; ``message`` names the field and the problem.
    """

    def __init__(self, reason: str, field: str | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.field, self.message))

    def __repr__(self) -> str:
        return f"InvalidEvent(reason={self.reason!r}, field={self.field!r}, message={self.message!r})"


@dataclass(slots=True)
class Prediction:
    """A validated prediction event. ``ts`` is epoch seconds, or None: use the Kafka timestamp."""

    request_id: str
    model: str
    model_version: str | None
    ts: float | None
    task: Task
    prediction: str | int | float | bool | None
    scores: dict[str, float] | None
    latency_ms: float | None
    features: dict[str, Any] | None
    segment: dict[str, str] | None
    error: str | None


@dataclass(slots=True)
class GroundTruth:
    """A validated ground-truth event. ``ts`` is epoch seconds, or None: use the Kafka timestamp."""

    request_id: str
    label: str | int | float | bool
    ts: float | None
    model: str | None


# --------------------------------------------------------------------------------------------------------
# Loading and compiling the schema files


def schema_dir() -> Path:
    """The folder of the ``*.schema.json`` files: inside the wheel, else the repository's ``schemas/``."""
    packaged = Path(__file__).parent / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schemas"


def load_schema(kind: str) -> dict[str, Any]:
    """The parsed schema of one event kind (a fresh copy), e.g. ``load_schema("prediction")``."""
    if kind not in INPUT_KINDS and kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {INPUT_KINDS + OUTPUT_KINDS}")
    path = schema_dir() / f"{kind}.schema.json"
    return orjson.loads(path.read_bytes())


Validator = Callable[[Any], Any]
_SCHEMAS: dict[str, dict[str, Any]] = {}
_VALIDATORS: dict[str, Validator] = {}
_FRAGMENTS: dict[bytes, Validator] = {}


def _compile(definition: dict[str, Any]) -> Validator:
    # use_default=False: never write schema defaults into the caller's dict; use_formats=False: "format" is
    # an annotation only (jsonschema does not assert it either), patterns do the checking.
    return fastjsonschema.compile(definition, use_default=False, use_formats=False)


def _schema(kind: str) -> dict[str, Any]:
    schema = _SCHEMAS.get(kind)
    if schema is None:
        schema = _SCHEMAS[kind] = load_schema(kind)
    return schema


_CODED_RULES = {"prediction": "allOf"}
"""Top-level keyword per kind whose rules are checked in Python instead (see the module docstring)."""


def _validator(kind: str) -> Validator:
    validator = _VALIDATORS.get(kind)
    if validator is None:
        schema = _schema(kind)
        coded = _CODED_RULES.get(kind)
        if coded:
            schema = {key: value for key, value in schema.items() if key != coded}
        validator = _VALIDATORS[kind] = _compile(schema)
    return validator


def _fragment_validator(definition: Any) -> Validator:
    key = orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)
    validator = _FRAGMENTS.get(key)
    if validator is None:
        validator = _FRAGMENTS[key] = _compile(definition)
    return validator


# --------------------------------------------------------------------------------------------------------
# Timestamps


def _fromisoformat_compat(text: str) -> datetime:
    """``datetime.fromisoformat`` for Python 3.10, which only takes 3 or 6 fraction digits."""
    match = re.match(r"^(.{19})\.([0-9]+)(.*)$", text)
    if match:
        head, frac, tail = match.groups()
        text = f"{head}.{frac[:6].ljust(6, '0')}{tail}"
    return datetime.fromisoformat(text)


_fromisoformat = datetime.fromisoformat if sys.version_info >= (3, 11) else _fromisoformat_compat


def _parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 string that already matched the schema pattern."""
    iso = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        moment = _fromisoformat(iso)
    except ValueError as exc:
        raise _bad_ts(f"ts: {_short(text)} is not a valid RFC 3339 timestamp: {exc}") from None
    if moment.tzinfo is None:
        raise _bad_ts(f"ts: {_short(text)} has no timezone (add 'Z' or an offset like +02:00)")
    epoch = moment.timestamp()
    if not 0.0 <= epoch <= MAX_EPOCH_S:
        raise _bad_ts(f"ts: {_short(text)} is outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z")
    return epoch


def _bad_ts(message: str) -> InvalidEvent:
    return InvalidEvent("bad_timestamp", "ts", message)


def _event_time(ts: Any) -> float:
    # The schema has already checked: a number in [0, MAX_EPOCH_S] (not a bool) or an RFC 3339 string.
    if type(ts) is str:
        return _parse_rfc3339(ts)
    return float(ts)


# --------------------------------------------------------------------------------------------------------
# Turning fastjsonschema errors into InvalidEvent


def _short(value: Any) -> str:
    """A value as it would look in JSON, cut to 80 characters."""
    try:
        text = orjson.dumps(value).decode() if not _is_non_finite(value) else repr(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _short_list(values: list[Any]) -> str:
    return ", ".join(_short(v) for v in values)


def _join(prefix: str | None, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _from_schema_error(kind: str, obj: Any, exc: JsonSchemaValueException) -> InvalidEvent:
    name = exc.name or "data"
    prefix = name[5:] if name.startswith("data.") else None  # None: the event itself
    rule, value, definition = exc.rule, exc.value, exc.definition
    rule_definition = exc.rule_definition
    where = prefix or f"{kind} event"

    if rule == "required" and isinstance(value, dict) and isinstance(rule_definition, list):
        missing = [key for key in rule_definition if key not in value]
        if missing:
            field = _join(prefix, missing[0])
            return InvalidEvent("schema", field, f"{field}: required field is missing")

    if rule == "additionalProperties" and isinstance(value, dict) and isinstance(definition, dict):
        allowed = list(definition.get("properties", {}))
        unknown = [key for key in value if key not in allowed]
        if unknown:
            field = _join(prefix, unknown[0])
            hint = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            return InvalidEvent(
                "schema", field, f"{field}: unknown field{did_you_mean}; allowed here: {', '.join(allowed)}"
            )

    if rule == "propertyNames" and isinstance(value, dict):
        check = _fragment_validator(rule_definition)
        for key in value:
            try:
                check(key)
            except JsonSchemaValueException as bad:
                problem = bad.message[5:] if bad.message.startswith("data ") else bad.message
                return InvalidEvent("schema", prefix, f"{where}: key {_short(key)} {problem}")

    if prefix == "ts" and kind in INPUT_KINDS and rule in ("pattern", "minimum", "maximum"):
        if rule == "pattern":
            message = (
                f"ts: {_short(value)} is not an RFC 3339 timestamp with a timezone "
                "(e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.250+02:00)"
            )
        else:
            message = f"ts: {_short(value)} is not epoch seconds between 0 and {MAX_EPOCH_S:.0f}" + (
                " (it looks like milliseconds)" if rule == "maximum" else ""
            )
        return InvalidEvent("bad_timestamp", "ts", message)

    problem = exc.message[len(name) :].strip() if exc.message.startswith(name) else exc.message
    if rule == "pattern":
        if rule_definition == _RFC3339_PATTERN:
            problem = "must be an RFC 3339 timestamp with a timezone (e.g. 2024-05-01T12:00:00Z)"
        else:
            problem = f"must match the pattern {rule_definition}"
    elif rule == "enum" and isinstance(rule_definition, list):
        problem = f"must be one of {_short_list(rule_definition)}"
    if rule in ("maxProperties", "minProperties") and isinstance(value, dict):
        got = f" (got {len(value)})"
    elif value is None or isinstance(value, (str, int, float)):
        got = f" (got {_short(value)})"
    else:
        got = f" (got {'an' if isinstance(value, (list, dict)) else 'a'} {_json_type_name(value)})"
    return InvalidEvent("schema", prefix, f"{where}: {problem}{got}")


def _semantic(message: str) -> InvalidEvent:
    return InvalidEvent("semantic", "prediction", message)


def _is_non_finite(value: Any) -> bool:
    return type(value) is float and not math.isfinite(value)


def _non_finite(obj: dict[str, Any], kind: str) -> InvalidEvent | None:
    """Python callers can pass NaN or infinity, which JSON (and so the schema) cannot express."""
    bad = _is_non_finite
    fields = ("ts", "latency_ms", "prediction") if kind == "prediction" else ("ts", "label")
    for name in fields:
        value = obj.get(name)
        if bad(value):
            reason = "bad_timestamp" if name == "ts" else "schema"
            return InvalidEvent(reason, name, f"{name}: must be a finite number (got {value!r})")
    for section in ("scores", "features") if kind == "prediction" else ():
        values = obj.get(section)
        if isinstance(values, dict):
            for key, value in values.items():
                if bad(value):
                    field = f"{section}.{key}"
                    return InvalidEvent("schema", field, f"{field}: must be a finite number (got {value!r})")
    return None


# --------------------------------------------------------------------------------------------------------
# Input events


def _check_object(kind: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", None, f"{kind} event must be an object, got {type(obj).__name__}")


def _prediction(obj: dict[str, Any]) -> Prediction:
    validator = _VALIDATORS.get("prediction") or _validator("prediction")
    try:
        validator(obj)
    except JsonSchemaValueException as exc:
        raise _from_schema_error("prediction", obj, exc) from None
    get = obj.get
    ts = get("ts")
    if ts is not None:
        ts = _event_time(ts)
    task = get("task") or "classification"
    prediction = obj["prediction"]
    # The three cross-field rules of the schema's allOf (see the module docstring).
    if prediction is None:
        if get("error") is None:
            raise _semantic("prediction: null is only allowed together with an 'error' that says why")
    elif task == "classification":
        if type(prediction) is float:
            if not prediction.is_integer():
                raise _semantic(
                    f"prediction: {prediction!r} is not a class label (labels are strings, integers or "
                    "booleans); set task to 'regression' for numeric predictions"
                )
            prediction = int(prediction)  # 1.0 is the class label 1
    elif type(prediction) is str or type(prediction) is bool:
        raise _semantic(f"prediction: a regression prediction must be a number (got {_short(prediction)})")
    elif type(prediction) is int:
        prediction = float(prediction)  # regression predictions are always floats
    latency = get("latency_ms")
    if type(latency) is int:
        latency = float(latency)
    return Prediction(
        obj["request_id"],
        obj["model"],
        get("model_version"),
        ts,
        task,
        prediction,
        get("scores"),
        latency,
        get("features"),
        get("segment"),
        get("error"),
    )


def _ground_truth(obj: dict[str, Any]) -> GroundTruth:
    validator = _VALIDATORS.get("ground-truth") or _validator("ground-truth")
    try:
        validator(obj)
    except JsonSchemaValueException as exc:
        raise _from_schema_error("ground-truth", obj, exc) from None
    ts = obj.get("ts")
    if ts is not None:
        ts = _event_time(ts)
    return GroundTruth(obj["request_id"], obj["label"], ts, obj.get("model"))


def validate_prediction(obj: dict[str, Any]) -> Prediction:
    """Validate a prediction event given as a dict, return it normalised; raises :class:`InvalidEvent`."""
    _check_object("prediction", obj)
    problem = _non_finite(obj, "prediction")
    if problem is not None:
        raise problem
    return _prediction(obj)


def validate_ground_truth(obj: dict[str, Any]) -> GroundTruth:
    """Validate a ground-truth event given as a dict, return it normalised; raises :class:`InvalidEvent`."""
    _check_object("ground-truth", obj)
    problem = _non_finite(obj, "ground-truth")
    if problem is not None:
        raise problem
    return _ground_truth(obj)


def _decode(kind: str, raw: bytes | bytearray | memoryview | str | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidEvent("not_json", None, f"{kind} payload is empty (null Kafka value)")
    size = len(raw)
    if size > max_bytes:
        raise InvalidEvent(
            "oversized", None, f"{kind} payload is {size} bytes, over the {max_bytes}-byte limit"
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not isinstance(raw, str):  # orjson also rejects bad UTF-8: tell the two apart
            try:
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError as bad:
                raise InvalidEvent("not_utf8", None, f"{kind} payload is not valid UTF-8: {bad}") from None
        raise InvalidEvent("not_json", None, f"{kind} payload is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise InvalidEvent(
            "not_object", None, f"{kind} payload must be a JSON object, got {_json_type_name(obj)}"
        )
    return obj


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def decode_prediction(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Prediction:
    """Decode and validate a raw prediction payload (Kafka value); raises :class:`InvalidEvent`."""
    # orjson never yields NaN or infinity, so the finiteness scan of validate_prediction is not needed.
    return _prediction(_decode("prediction", raw, max_bytes))


def decode_ground_truth(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> GroundTruth:
    """Decode and validate a raw ground-truth payload (Kafka value); raises :class:`InvalidEvent`."""
    return _ground_truth(_decode("ground-truth", raw, max_bytes))


# --------------------------------------------------------------------------------------------------------
# Output events


def validate_output(kind: str, obj: dict[str, Any]) -> None:
    """Check an event modelmon is about to publish against its schema; raises :class:`InvalidEvent`.

    ``kind`` is one of :data:`OUTPUT_KINDS`. Only the schema is checked (timestamps by pattern).
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output event kind {kind!r}; expected one of {OUTPUT_KINDS}")
    _check_object(kind, obj)
    try:
        _validator(kind)(obj)
    except JsonSchemaValueException as exc:
        raise _from_schema_error(kind, obj, exc) from None
