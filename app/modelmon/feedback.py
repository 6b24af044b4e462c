"""Joined records for the model-feedback topic: the feedback loop's training data (pure, no Kafka or Faust).

When stage 1 joins a prediction with its ground truth, it can publish the pair: prediction, scores, raw
features, segment tags, label, whether it was right (or the error of a regression), and the label delay;
see schemas/model-feedback.schema.json. Which requests are published is decided here:

* ``mode``: ``all`` joined records, ``errors`` only the wrong ones (a classification whose prediction is
  not the label, a regression whose absolute error exceeds ``min_abs_error``, or a failed inference), or
  ``off``.
* ``sample``: the share of requests, chosen by a hash of the request id, so a request is in or out
  whatever worker sees it and however often it is replayed, and the prediction's raw features are only
  kept (in its join entry) when its request is in the sample.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from .aggregate import canonical_label
from .rollup import rfc3339

__all__ = ["FEEDBACK_MODES", "FeedbackPolicy", "feedback_record"]

FEEDBACK_MODES = ("all", "errors", "off")


@dataclass(frozen=True)
class FeedbackPolicy:
    """Which joined records go to model-feedback."""

    mode: str = "all"
    sample: float = 1.0
    min_abs_error: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in FEEDBACK_MODES:
            raise ValueError(f"feedback mode must be one of {', '.join(FEEDBACK_MODES)}, got {self.mode!r}")
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"feedback sample must be in (0, 1], got {self.sample}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def sampled(self, request_id: str | bytes) -> bool:
        """Whether a request is in the sample (deterministic: CRC-32 of the id below sample * 2**32)."""
        if not self.enabled:
            return False
        if self.sample >= 1.0:
            return True
        raw = request_id if isinstance(request_id, bytes) else request_id.encode()
        return zlib.crc32(raw) < self.sample * 2**32

    def keeps(self, record: dict[str, Any]) -> bool:
        """Whether a built record is published under this policy's mode."""
        if self.mode == "all":
            return True
        if self.mode == "off":
            return False
        if record["inference_error"]:
            return True
        if record["correct"] is not None:
            return not record["correct"]
        return record["abs_error"] is not None and record["abs_error"] > self.min_abs_error


def _correct(task: str, prediction: Any, label: Any) -> bool | None:
    if task == "regression" or prediction is None:
        return None
    try:
        return canonical_label(prediction) == canonical_label(label)
    except ValueError:
        return None


def feedback_record(request_id: str, entry: dict[str, Any], emitted_at: float) -> dict[str, Any]:
    """The model-feedback record of a joined stage-1 entry (see join.py): its prediction and first label.

    The first label is the one the metrics count, so the records and the metrics agree; later labels
    that differ are counted as relabels and not published again. Classification: ``correct`` compares
    labels as the metrics do (classes are JSON strings: 1, 1.0 and "1" alike, true not). Regression:
    ``error`` = prediction - label and ``abs_error``. A failed inference (``inference_error``) has neither.
    """
    label, label_ts = entry["l"], entry["lt"]
    task = entry["k"] or "classification"
    prediction = entry["y"]
    failed = bool(entry["e"])
    error = abs_error = None
    if task == "regression" and not failed and isinstance(prediction, (int, float)):
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            error = float(prediction) - float(label)
            abs_error = abs(error)
    return {
        "request_id": request_id,
        "model": entry["m"],
        "model_version": entry["v"],
        "task": task,
        "prediction": prediction,
        "scores": entry.get("s"),
        "features": entry.get("rf"),
        "segment": entry.get("sg"),
        "label": label,
        "correct": None if failed else _correct(task, prediction, label),
        "error": error,
        "abs_error": abs_error,
        "inference_error": failed,
        "prediction_ts": rfc3339(entry["pt"]),
        "label_ts": rfc3339(label_ts),
        "label_delay_s": label_ts - entry["pt"],
        "emitted_at": rfc3339(emitted_at),
    }
