"""Feedback records and policy; data quality against the reference; payload sizes; the reference record."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from modelmon import join, rollup
from modelmon.aggregate import WindowAccumulator, signed_log_bucket
from modelmon.feedback import FeedbackPolicy, feedback_record
from modelmon.schemas import GroundTruth, Prediction, validate_output
from modelmon.stats import against_reference, data_quality, payload_summary

WINDOW, HORIZON = 60.0, 3600.0


def _joined(prediction, label, task="classification", error=None, scores=None):
    p = Prediction("r1", "m", "1", 1000.0, task, prediction, scores, 5.0, {"x": 1.5, "c": "k"},
                   {"country": "de"}, error)  # fmt: skip
    entry = join.apply_prediction(None, p, 1000.0, 0, 0, WINDOW, HORIZON, keep_features=True).entry
    out = join.apply_label(entry, GroundTruth("r1", label, 1030.0, None), 1030.0, 0, 0, HORIZON)
    assert out.verdict == "joined"
    return out.entry


def test_record_of_a_wrong_classification_validates_and_says_so() -> None:
    entry = _joined("a", "b", scores={"a": 0.7, "b": 0.3})
    rec = feedback_record("r1", entry, 2000.0)
    validate_output("model-feedback", rec)
    assert rec["correct"] is False and rec["features"] == {"x": 1.5, "c": "k"}
    assert rec["segment"] == {"country": "de"} and rec["scores"] == {"a": 0.7, "b": 0.3}
    assert rec["label_delay_s"] == 30.0 and rec["error"] is None and not rec["inference_error"]
    assert FeedbackPolicy("errors").keeps(rec) and FeedbackPolicy("all").keeps(rec)


def test_labels_compare_as_the_metrics_do() -> None:
    entry = _joined(1, 1.0)
    assert feedback_record("r1", entry, 0.0)["correct"] is True
    entry = _joined("1", 1)  # classes are their JSON strings: the class "1" and the label 1 are one class
    assert feedback_record("r1", entry, 0.0)["correct"] is True
    entry = _joined(True, 1)  # booleans are not ints
    assert feedback_record("r1", entry, 0.0)["correct"] is False


def test_regression_and_failed_inference_records() -> None:
    entry = _joined(31.5, 28, task="regression")
    rec = feedback_record("r1", entry, 0.0)
    validate_output("model-feedback", rec)
    assert rec["error"] == 3.5 and rec["abs_error"] == 3.5 and rec["correct"] is None
    assert FeedbackPolicy("errors").keeps(rec) and not FeedbackPolicy("errors", min_abs_error=4).keeps(rec)
    failed = _joined(None, "a", error="timeout")
    rec = feedback_record("r1", failed, 0.0)
    validate_output("model-feedback", rec)
    assert rec["inference_error"] and rec["correct"] is None
    assert FeedbackPolicy("errors").keeps(rec)
    right = _joined("a", "a")
    assert not FeedbackPolicy("errors").keeps(feedback_record("r1", right, 0.0))


def test_sampling_is_a_stable_share_of_request_ids() -> None:
    policy = FeedbackPolicy("all", sample=0.25)
    ids = [f"req-{i}" for i in range(20_000)]
    chosen = [i for i in ids if policy.sampled(i)]
    assert abs(len(chosen) / len(ids) - 0.25) < 0.015
    assert chosen == [i for i in ids if zlib.crc32(i.encode()) < 0.25 * 2**32]
    assert all(policy.sampled(i.encode()) for i in chosen)
    assert not FeedbackPolicy("off").sampled("x")
    with pytest.raises(ValueError):
        FeedbackPolicy("some")
    with pytest.raises(ValueError):
        FeedbackPolicy("all", sample=0.0)


def test_raw_features_are_stored_only_when_asked() -> None:
    p = Prediction("r", "m", None, 1.0, "classification", "a", None, None, {"x": 2.0}, None, None)
    assert "rf" not in join.apply_prediction(None, p, 1.0, 0, 0, WINDOW, HORIZON).entry
    entry = join.apply_prediction(
        None, p, 1.0, 0, 0, WINDOW, HORIZON, keep_features=True, payload_bytes=99
    ).entry
    assert entry["rf"] == {"x": 2.0} and entry["b"] == 99
    assert join.effects(entry, WINDOW)[("pred", "m", None, 0.0)][-1] == 99


def _window(values: list, n_missing: int = 0) -> WindowAccumulator:
    w = WindowAccumulator()
    for v in values:
        w.add_prediction(1.0, False, features=join.bucket_features({"f": v}))
    for _ in range(n_missing):
        w.add_prediction(1.0, False, features={})
    return w


def test_data_quality_against_the_reference_equals_an_offline_count() -> None:
    rng = np.random.default_rng(8)
    ref_values = rng.normal(100, 10, 2000).round(3).tolist()
    lo, hi = min(ref_values), max(ref_values)
    cur = rng.normal(110, 15, 1000).round(3).tolist() + ["12.5"] * 50
    ref = _window(ref_values)
    w = _window(cur, n_missing=30)
    dq = data_quality(w, ref)
    assert dq is not None
    f = dq["features"]["f"]
    nums = [v for v in cur if isinstance(v, float)]
    blo, bhi = signed_log_bucket(lo), signed_log_bucket(hi)
    out = sum(1 for v in nums if not blo <= signed_log_bucket(v) <= bhi)
    assert f["reference_kind"] == "numeric"
    assert f["type_change_share"] == 50 / 1050
    assert f["out_of_range_share"] == out / len(nums)
    # the bucket edges differ from the exact range by at most one bucket (~4.4 %)
    strict = sum(1 for v in nums if v < lo / 1.045 or v > hi * 1.045)
    loose = sum(1 for v in nums if v < lo or v > hi)
    assert strict <= out <= loose
    assert f["missing_rate"] == 30 / 1080
    assert data_quality(w)["features"]["f"].keys() == {"present", "missing_rate"}


def test_categorical_reference_counts_unseen_categories() -> None:
    ref = _window(["a", "b", "a", "c"])
    w = _window(["a", "d", "d", "b", 7.0])
    got = against_reference(w, ref, "f")
    assert got == {"reference_kind": "categorical", "type_change_share": 1 / 5, "out_of_range_share": 2 / 4}
    assert against_reference(w, WindowAccumulator(), "f")["reference_kind"] is None


def test_payload_summary_against_numpy() -> None:
    rng = np.random.default_rng(9)
    sizes = rng.integers(200, 5000, 3000).tolist()
    w = WindowAccumulator()
    for s in sizes:
        w.add_prediction(1.0, False, payload_bytes=s)
    got = payload_summary(w)
    assert got is not None and got["n"] == 3000
    assert got["max_bytes"] == max(sizes) and got["mean_bytes"] == pytest.approx(np.mean(sizes), rel=1e-12)
    for name, q in (("p50_bytes", 0.5), ("p95_bytes", 0.95)):
        assert math.isclose(got[name], float(np.quantile(sizes, q)), rel_tol=0.045)
    assert payload_summary(WindowAccumulator()) is None


def test_reference_record_lifecycle() -> None:
    ref = rollup.new_reference("m", "1", 120.0, 300.0)
    assert rollup.extend_reference(ref, 60.0) and (ref["from"], ref["to"]) == (60.0, 360.0)
    acc = _window([1.0, 2.0])
    assert rollup.fold_reference(ref, 60.0, acc)
    assert not rollup.extend_reference(ref, 0.0)  # something is folded: the period stays
    assert not rollup.fold_reference(ref, 360.0, acc)  # after the period
    assert not rollup.reference_due(ref, 360.0 + 299.0, horizon_s=3600.0)
    assert rollup.reference_due(ref, 360.0 + 300.0, horizon_s=3600.0)
    assert rollup.reference_due(ref, 360.0 + 10.0, horizon_s=10.0)
    ref["frozen"] = True
    assert rollup.reference_applies(ref, 360.0) and not rollup.reference_applies(ref, 300.0)
    assert rollup.reference_applies(ref, None) and not rollup.reference_applies(None, 400.0)
    folded = WindowAccumulator.from_dict(ref["acc"])
    assert folded.features is not None and folded.features.count("f") == 2
