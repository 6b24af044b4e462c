"""The API's pure parts: parameter parsing and bounds, window selection, alert ordering, window bodies,
and the partition of a model (Kafka's murmur2 partitioner, checked against Kafka's own test vectors)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from modelmon import rollup
from modelmon.aggregate import WindowAccumulator
from modelmon.topics import model_partition
from modelmon.web import views
from modelmon.web.views import ParamError

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: key -> signed 32-bit murmur2
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "signed"), KAFKA_MURMUR2.items())
@pytest.mark.parametrize("partitions", [1, 4, 7, 12])
def test_model_partition_is_kafkas_default_partitioner(key: bytes, signed: int, partitions: int) -> None:
    # Java: Utils.toPositive(murmur2(key)) % numPartitions, toPositive = value & 0x7fffffff
    assert model_partition(key.decode(), partitions) == (signed & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-01-05T00:10:00Z", datetime(2026, 1, 5, 0, 10, tzinfo=timezone.utc).timestamp()),
        ("2026-01-05T01:10:00+01:00", datetime(2026, 1, 5, 0, 10, tzinfo=timezone.utc).timestamp()),
        ("2026-01-05T00:10:00.250Z", datetime(2026, 1, 5, 0, 10, tzinfo=timezone.utc).timestamp() + 0.25),
        ("1767571800", 1767571800.0),
        ("1767571800.5", 1767571800.5),
        ("0", 0.0),
    ],
)
def test_times_in_rfc3339_or_unix_seconds(raw: str, expected: float) -> None:
    assert views.parse_time("from", raw) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "raw",
    ["yesterday", "2026-13-01T00:00:00Z", "2026-01-05T00:10:00", "-1", "1e300", "nan", "inf", "x" * 300],
)
def test_bad_times_name_the_parameter(raw: str) -> None:
    with pytest.raises(ParamError) as err:
        views.parse_time("to", raw)
    assert err.value.parameter == "to" and str(err.value).startswith("to: ")


def test_range_must_be_ordered_and_absent_bounds_are_open() -> None:
    assert views.parse_range(None, None) == (None, None)
    assert views.parse_range("10", None) == (10.0, None)
    with pytest.raises(ParamError) as err:
        views.parse_range("20", "10")
    assert err.value.parameter == "from" and "before" in str(err.value)
    with pytest.raises(ParamError):
        views.parse_range("10", "10")  # [from, to) would be empty


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("1", True), ("10000", True), ("0", False), ("10001", False), ("-5", False), ("1.5", False),
     ("ten", False), ("", False)],
)  # fmt: skip
def test_limits_are_bounded(raw: str, ok: bool) -> None:
    if ok:
        assert views.parse_limit("limit", raw, 1440, 10_000) == int(raw)
    else:
        with pytest.raises(ParamError, match=r"^limit: "):
            views.parse_limit("limit", raw, 1440, 10_000)
    assert views.parse_limit("limit", None, 1440, 10_000) == 1440


def test_version_filter_distinguishes_absent_and_empty() -> None:
    assert views.parse_version(None) == (False, None)
    assert views.parse_version("") == (True, None)  # the series without a model_version
    assert views.parse_version("1.2.0") == (True, "1.2.0")


def test_window_selection_is_half_open_and_keeps_the_newest() -> None:
    starts = {f"k{i}": 60.0 * i for i in range(10)}
    keys, cut = views.select_windows(starts, 120.0, 300.0, 100)
    assert keys == ["k2", "k3", "k4"] and not cut
    keys, cut = views.select_windows(starts, None, None, 3)
    assert keys == ["k7", "k8", "k9"] and cut
    assert views.select_windows(starts, 1e9, None, 5) == ([], False)


def test_alert_query_and_order() -> None:
    events = [
        {"model": "fraud", "severity": "warning", "state": "resolved", "ts": "2026-01-05T03:00:00Z"},
        {"model": "fraud", "severity": "critical", "state": "firing", "ts": "2026-01-05T01:00:00Z"},
        {"model": "churn", "severity": "warning", "state": "pending", "ts": "2026-01-05T04:00:00Z"},
        {"model": "fraud-2", "severity": "warning", "state": "firing", "ts": "2026-01-05T02:00:00Z"},
    ]
    ordered = views.sort_alerts(events, 10)
    assert [(e["state"], e["ts"][11:13]) for e in ordered] == [
        ("firing", "02"), ("firing", "01"), ("pending", "04"), ("resolved", "03"),
    ]  # fmt: skip
    assert len(views.sort_alerts(events, 2)) == 2
    assert [e["model"] for e in events if views.alert_matches(e, "fraud*", None, "firing")] == [
        "fraud",
        "fraud-2",
    ]
    assert [e["model"] for e in events if views.alert_matches(e, None, "critical", None)] == ["fraud"]
    assert views.parse_alert_query({"state": "firing", "severity": "info", "limit": "5"})[1:] == (
        "info",
        "firing",
        5,
    )
    for query, name in (({"state": "open"}, "state"), ({"severity": "fatal"}, "severity"),
                        ({"limit": "1001"}, "limit"), ({"model": "m" * 257}, "model")):  # fmt: skip
        with pytest.raises(ParamError) as err:
            views.parse_alert_query(query)
        assert err.value.parameter == name


def _window_value(predictions: int, labelled_correct: int) -> dict:
    acc = WindowAccumulator()
    for i in range(predictions):
        acc.add_prediction(10.0 + i, False, task="classification", prediction="a")
    for i in range(predictions):
        acc.add_outcome("classification", "a", "a" if i < labelled_correct else "b", label_delay_s=5.0)
    value = rollup.new_value("m", "1", 1767571200.0)
    snap = {"m": "m", "v": "1", "w": 1767571200.0, "p": 0, "epoch": 1, "seq": 1, "final": False,
            "acc": acc.to_dict()}  # fmt: skip
    return rollup.apply_snapshot(value, snap)


def test_window_bodies_are_the_published_events() -> None:
    value = _window_value(20, 15)
    open_event = views.window_event(value, 60.0, 1.0)
    assert open_event == rollup.metric_event(value, 60.0, 1.0)
    assert open_event["classification"]["accuracy"] == 15 / 20 and not open_event["final"]
    # finalize_due publishes metric_event(final=True), then keeps the tombstone: the API answers the same
    published = rollup.metric_event(value, 60.0, 2.0, final=True)
    tomb = rollup.finalize(value)
    assert views.window_event(tomb, 60.0, 2.0) == published
    assert views.task_of(rollup.merged(value)) == "classification"
    assert views.task_of(WindowAccumulator()) is None


def test_model_version_entry() -> None:
    entry = views.model_version_entry("m", None, [120.0, 60.0, 180.0], 60.0, "regression", None)
    assert entry == {
        "model": "m",
        "model_version": None,
        "task": "regression",
        "first_window_start": "1970-01-01T00:01:00Z",
        "last_window_end": "1970-01-01T00:04:00Z",
        "windows": 3,
        "updated_at": None,
    }
    body = views.error_body(400, "bad_parameter", "limit: too big", "limit")
    assert body == {
        "error": {"status": 400, "code": "bad_parameter", "message": "limit: too big", "parameter": "limit"}
    }
