"""Prometheus exposition (modelmon.web.prometheus) checked by independent parsers and oracles.

The text is read back with prometheus_client's parser and linted by Debian's ``promtool check metrics``;
the counters and histograms are compared with numpy counts and exact (Fraction) sums of the raw values
that were fed through real WindowAccumulators, split over two source partitions and several windows.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import shutil
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.aggregate import HISTOGRAM_SPECS, WindowAccumulator
from modelmon.stats import summarize
from modelmon.web.prometheus import (
    CONTENT_TYPE,
    LABEL_DELAY_BUCKETS_S,
    LATENCY_BUCKETS_S,
    PAYLOAD_BUCKETS_BYTES,
    MetricFamily,
    SeriesCounters,
    alert_families,
    exposition,
    view_families,
    worker_families,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def parse(text: str) -> dict[str, object]:
    """name -> prometheus_client family (counter families are keyed by their name with ``_total``)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        key = fam.name + "_total" if fam.type == "counter" else fam.name
        assert key not in out, f"family {key} appears twice"
        out[key] = fam
    return out


def samples(fam, name: str | None = None) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of a parsed family."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in fam.samples
        if name is None or s.name == name
    }


def lab(**kw: str) -> tuple:
    return tuple(sorted(kw.items()))


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess:
    if not os.path.exists(PROMTOOL):
        pytest.fail(
            "promtool is missing: `make system-deps` installs Debian's prometheus package, which provides it",
            pytrace=False,
        )
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


# ------------------------------------------------------------------------------------------ exposition
def test_exposition_round_trips_through_prometheus_client_parser():
    fams = [
        MetricFamily(
            "modelmon_things_total", "counter", "Things.", [("modelmon_things_total", {"a": "x"}, 3)]
        ),
        MetricFamily("modelmon_level", "gauge", "A level.", [("modelmon_level", {}, 0.25)]),
        MetricFamily(
            "modelmon_wait_seconds",
            "histogram",
            "Waits.",
            [
                ("modelmon_wait_seconds_count", {"a": "x"}, 5),
                ("modelmon_wait_seconds_bucket", {"a": "x", "le": "+Inf"}, 5),
                ("modelmon_wait_seconds_bucket", {"a": "x", "le": "0.5"}, 2),
                ("modelmon_wait_seconds_sum", {"a": "x"}, 3.75),
                ("modelmon_wait_seconds_bucket", {"a": "x", "le": "1.0"}, 4),
            ],
        ),
    ]
    text = exposition(fams)
    assert text.endswith("\n")
    got = parse(text)
    assert {k: f.type for k, f in got.items()} == {
        "modelmon_things_total": "counter",
        "modelmon_level": "gauge",
        "modelmon_wait_seconds": "histogram",
    }
    assert got["modelmon_level"].documentation == "A level."
    assert samples(got["modelmon_things_total"]) == {("modelmon_things_total", lab(a="x")): 3}
    hist = [(s.name, s.labels.get("le"), s.value) for s in got["modelmon_wait_seconds"].samples]
    # buckets in le order, then _sum and _count, whatever order they were given in
    assert hist == [
        ("modelmon_wait_seconds_bucket", "0.5", 2),
        ("modelmon_wait_seconds_bucket", "1.0", 4),
        ("modelmon_wait_seconds_bucket", "+Inf", 5),
        ("modelmon_wait_seconds_sum", None, 3.75),
        ("modelmon_wait_seconds_count", None, 5),
    ]
    assert 'modelmon_wait_seconds_bucket{a="x",le="+Inf"} 5\n' in text  # le last
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_label_values_and_help_are_escaped():
    nasty = ["back\\slash", 'quo"te', "new\nline", 'all \\" \n \\n', "ünïcødé ✓", "", "{}=,"]
    fams = [
        MetricFamily(
            "modelmon_x",
            "gauge",
            "Help with a \\ backslash\nand a newline.",
            [("modelmon_x", {"model": v, "rule": v[::-1]}, i) for i, v in enumerate(nasty)],
        )
    ]
    text = exposition(fams)
    assert "\n\n" not in text and text.count("\n") == 2 + len(nasty)
    fam = parse(text)["modelmon_x"]
    assert fam.documentation == "Help with a \\ backslash\nand a newline."
    assert samples(fam) == {("modelmon_x", lab(model=v, rule=v[::-1])): i for i, v in enumerate(nasty)}
    assert promtool_check_metrics(text).returncode == 0


def test_exposition_merges_sorts_and_is_deterministic():
    a = MetricFamily(
        "modelmon_b", "gauge", "B.", [("modelmon_b", {"model": "z"}, 1), ("modelmon_b", {"model": "a"}, 2)]
    )
    b = MetricFamily("modelmon_a", "gauge", "A.", [("modelmon_a", {}, 1)])
    c = MetricFamily("modelmon_b", "gauge", "other help", [("modelmon_b", {"model": "m"}, 3)])
    text = exposition([a, b, c])
    assert text == exposition([b, c, a]).replace("# HELP modelmon_b other help", "# HELP modelmon_b B.")
    assert text.splitlines() == [
        "# HELP modelmon_a A.",
        "# TYPE modelmon_a gauge",
        "modelmon_a 1",
        "# HELP modelmon_b B.",
        "# TYPE modelmon_b gauge",
        'modelmon_b{model="a"} 2',
        'modelmon_b{model="m"} 3',
        'modelmon_b{model="z"} 1',
    ]
    # the inputs are not modified by the merge
    assert len(a.samples) == 2 and len(c.samples) == 1


def test_exposition_values_none_skipped_and_special_floats():
    fams = [
        MetricFamily(
            "modelmon_g",
            "gauge",
            "G.",
            [
                ("modelmon_g", {"k": "none"}, None),
                ("modelmon_g", {"k": "inf"}, math.inf),
                ("modelmon_g", {"k": "ninf"}, -math.inf),
                ("modelmon_g", {"k": "big"}, 2**70),
                ("modelmon_g", {"k": "tiny"}, 1e-300),
                ("modelmon_g", {"k": "true"}, True),
            ],
        ),
        MetricFamily("modelmon_empty", "gauge", "Only None.", [("modelmon_empty", {}, None)]),
        MetricFamily("modelmon_nothing", "gauge", "No samples."),
    ]
    text = exposition(fams)
    assert "NaN" not in text and "none" not in text
    assert "modelmon_empty" not in text and "modelmon_nothing" not in text
    assert 'modelmon_g{k="inf"} +Inf' in text and 'modelmon_g{k="ninf"} -Inf' in text
    assert f'modelmon_g{{k="big"}} {2**70}' in text
    got = samples(parse(text)["modelmon_g"])
    assert got[("modelmon_g", lab(k="big"))] == 2**70
    assert got[("modelmon_g", lab(k="tiny"))] == 1e-300
    assert got[("modelmon_g", lab(k="true"))] == 1
    assert exposition([]) == ""


@pytest.mark.parametrize(
    "fams",
    [
        [MetricFamily("modelmon_x", "summary", "", [("modelmon_x", {}, 1)])],
        [MetricFamily("modelmon-x", "gauge", "", [("modelmon-x", {}, 1)])],
        [MetricFamily("modelmon_x", "gauge", "", [("modelmon_y", {}, 1)])],
        [MetricFamily("modelmon_x", "gauge", "", [("modelmon_x", {"1bad": "v"}, 1)])],
        [MetricFamily("modelmon_x", "gauge", "", [("modelmon_x", {"__name__": "v"}, 1)])],
        [
            MetricFamily(
                "modelmon_x", "gauge", "", [("modelmon_x", {"a": "1"}, 1), ("modelmon_x", {"a": "1"}, 2)]
            )
        ],
        [MetricFamily("modelmon_x", "gauge", "", []), MetricFamily("modelmon_x", "counter", "", [])],
        [MetricFamily("modelmon_h", "histogram", "", [("modelmon_h_bucket", {}, 1)])],
        [MetricFamily("modelmon_h", "histogram", "", [("modelmon_h_total", {}, 1)])],
        [MetricFamily("modelmon_h", "histogram", "", [("modelmon_h_bucket", {"le": "x"}, 1)])],
    ],
)
def test_exposition_rejects_malformed_families(fams):
    with pytest.raises(ValueError):
        exposition(fams)


# --------------------------------------------------------------------------------------- bucket bounds
@pytest.mark.parametrize(
    ("kind", "bounds", "to_seconds"),
    [("latency_ms", LATENCY_BUCKETS_S, 1000), ("label_delay_s", LABEL_DELAY_BUCKETS_S, 1)],
)
def test_le_bounds_are_exact_fine_bucket_edges(kind, bounds, to_seconds):
    spec = HISTOGRAM_SPECS[kind]
    edges_s = [e / to_seconds for e in spec.edges]
    assert list(bounds) == sorted(set(bounds)) and 10 <= len(bounds) <= 16
    for le in bounds:
        assert le in edges_s, f"{le} is not an edge of the {kind} buckets"
        # whole powers of two of the lowest edge
        k = math.log2(le * to_seconds / spec.lo)
        assert k == round(k)
    # so no fine bucket straddles a Prometheus bound: each lies wholly at or below it, or above it
    for idx in range(spec.nb + 2):
        lower, upper = spec.bounds(idx)
        for le in bounds:
            le_native = le * to_seconds
            assert upper <= le_native or lower >= le_native or math.isclose(upper, le_native, rel_tol=1e-15)


def test_le_bounds_values():
    assert (
        LATENCY_BUCKETS_S[0] == 0.00032 and LATENCY_BUCKETS_S[-1] == 10.48576 and len(LATENCY_BUCKETS_S) == 16
    )
    assert LABEL_DELAY_BUCKETS_S[0] == 1.024 and LABEL_DELAY_BUCKETS_S[-1] == 1073741.824
    assert len(LABEL_DELAY_BUCKETS_S) == 11


def test_a_value_exactly_on_a_bound_is_counted_one_bucket_up():
    """The documented measure-zero difference: fine buckets are [lower, upper), ``le`` is inclusive."""
    w = WindowAccumulator()
    w.add_outcome("classification", "a", "a", None, LABEL_DELAY_BUCKETS_S[3])
    sc = SeriesCounters()
    sc.observe("m", None, None, w.to_dict())
    fam = parse(exposition(sc.families()))["modelmon_label_delay_seconds"]
    buckets = {float(s.labels["le"]): s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert buckets[LABEL_DELAY_BUCKETS_S[3]] == 0 and buckets[LABEL_DELAY_BUCKETS_S[4]] == 1


# ------------------------------------------------------------------------------------- series counters
SERIES = [("fraud", "1.0", "classification"), ("fraud", None, "classification"), ("price", "7", "regression")]


def _stream(seed: int, n: int = 4000):
    """Random events; returns (events, oracle) where each event is a dict and oracle holds raw values."""
    rng = np.random.default_rng(seed)
    series = rng.integers(0, len(SERIES), n)
    part = rng.integers(0, 2, n)
    window = rng.integers(0, 3, n)
    has_latency = rng.random(n) < 0.9
    latency_ms = np.exp(rng.normal(2.5, 3.0, n))  # ~ 1e-4 ms .. 1e5 ms: under- and overflow included
    error = rng.random(n) < 0.05
    labelled = rng.random(n) < 0.7
    delay_s = np.exp(rng.normal(5.0, 4.0, n))  # ~ 1e-4 s .. 1e8 s
    delay_s[rng.random(n) < 0.05] *= -1.0  # negative delays count as 0
    y_pred = rng.integers(0, 3, n)
    y_true = np.where(rng.random(n) < 0.6, y_pred, rng.integers(0, 3, n))
    invalid = rng.random(n) < 0.03
    reason = rng.choice(["schema", "not_json", 'we"ird\\reason'], n)
    sizes = np.exp(rng.normal(7.0, 1.5, n)).astype(int) + 20  # bytes: about 20 B .. 200 KB
    events = [
        {
            "series": int(series[i]),
            "part": int(part[i]),
            "window": int(window[i]),
            "latency_ms": float(latency_ms[i]) if has_latency[i] else None,
            "error": bool(error[i]),
            "labelled": bool(labelled[i]),
            "delay_s": float(delay_s[i]),
            "y_pred": int(y_pred[i]),
            "y_true": int(y_true[i]),
            "invalid": str(reason[i]) if invalid[i] else None,
            "size": int(sizes[i]),
        }
        for i in range(n)
    ]
    return events


def _feed(events, sc: SeriesCounters, rng: random.Random) -> None:
    """Apply events to per-(series, part, window) accumulators; after each chunk, observe the snapshots
    that changed, the way stage 2 replaces a part's latest snapshot."""
    accs: dict[tuple, WindowAccumulator] = {}
    last: dict[tuple, dict] = {}
    i = 0
    while i < len(events):
        chunk = events[i : i + rng.randint(1, 300)]
        i += len(chunk)
        touched = set()
        for e in chunk:
            key = (e["series"], e["part"], e["window"])
            acc = accs.setdefault(key, WindowAccumulator())
            touched.add(key)
            model, version, task = SERIES[e["series"]]
            if e["invalid"]:
                acc.add_counter("invalid:" + e["invalid"])
                continue
            if task == "classification":
                acc.add_prediction(
                    e["latency_ms"],
                    e["error"],
                    task=task,
                    prediction=str(e["y_pred"]),
                    payload_bytes=e["size"],
                )
                if e["labelled"] and not e["error"]:
                    acc.add_outcome(task, str(e["y_pred"]), str(e["y_true"]), None, e["delay_s"])
            else:
                acc.add_prediction(
                    e["latency_ms"],
                    e["error"],
                    task=task,
                    prediction=float(e["y_pred"]),
                    payload_bytes=e["size"],
                )
                if e["labelled"] and not e["error"]:
                    acc.add_outcome(task, float(e["y_pred"]), float(e["y_true"]) + 0.5, None, e["delay_s"])
        for key in sorted(touched):
            model, version, _ = SERIES[key[0]]
            new = accs[key].to_dict()
            sc.observe(model, version, last.get(key), new)
            last[key] = new


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_series_counters_match_numpy_oracle(seed):
    events = _stream(seed)
    sc = SeriesCounters()
    _feed(events, sc, random.Random(seed))
    text = exposition(sc.families())
    got = parse(text)
    assert promtool_check_metrics(text).returncode == 0

    for s_idx, (model, version, task) in enumerate(SERIES):
        ev = [e for e in events if e["series"] == s_idx]
        valid = [e for e in ev if not e["invalid"]]
        out = [e for e in valid if e["labelled"] and not e["error"]]
        labels = lab(model=model, model_version=version or "")

        def value(name, labels=labels):
            fam = got[name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")]
            return samples(fam)[(name, labels)]

        assert value("modelmon_predictions_total") == len(valid)
        assert value("modelmon_prediction_errors_total") == sum(e["error"] for e in valid)
        assert value("modelmon_labels_total") == len(out)
        n_correct = sum(e["y_true"] == e["y_pred"] for e in out) if task == "classification" else 0
        assert value("modelmon_correct_predictions_total") == n_correct
        for reason in {e["invalid"] for e in ev if e["invalid"]}:
            want = sum(e["invalid"] == reason for e in ev)
            assert value("modelmon_invalid_events_total", (*labels, ("reason", reason))) == want

        for fam_name, raw, to_seconds, bounds in [
            (
                "modelmon_prediction_latency_seconds",
                [e["latency_ms"] for e in valid if e["latency_ms"] is not None],
                1000,
                LATENCY_BUCKETS_S,
            ),
            ("modelmon_label_delay_seconds", [max(e["delay_s"], 0.0) for e in out], 1, LABEL_DELAY_BUCKETS_S),
            (
                "modelmon_prediction_payload_bytes",
                [float(e["size"]) for e in valid],
                1,
                PAYLOAD_BUCKETS_BYTES,
            ),
        ]:
            x = np.asarray(raw) / to_seconds
            assert len(x) > 100
            fam = got[fam_name]
            buckets = {
                s.labels["le"]: s.value
                for s in fam.samples
                if s.name == fam_name + "_bucket"
                and tuple(sorted(kv for kv in s.labels.items() if kv[0] != "le")) == labels
            }
            assert list(buckets) == [repr(b) for b in bounds] + ["+Inf"]
            for le in bounds:
                assert buckets[repr(le)] == int(np.count_nonzero(x <= le)), (fam_name, le)
            assert buckets["+Inf"] == len(x)
            assert value(fam_name + "_count") == len(x)
            exact = sum(Fraction(v) for v in raw) / to_seconds
            assert value(fam_name + "_sum") == float(exact)  # correctly rounded from the exact sum


def test_observe_is_monotonic_when_a_snapshot_shrinks():
    rng = np.random.default_rng(7)
    lat = list(np.exp(rng.normal(3.0, 2.0, 30)))

    def snap(values, labelled):
        w = WindowAccumulator()
        for v in values:
            w.add_prediction(float(v), False)
        for _ in range(labelled):
            w.add_outcome("classification", "a", "a", None, 10.0)
        w.add_counter("invalid:schema", len(values))
        return w.to_dict()

    s1, s2, s3 = snap(lat[:10], 8), snap(lat[:6], 3), snap(lat[:6] + lat[20:26], 9)
    sc = SeriesCounters()
    history = []
    for old, new in [(None, s1), (s1, s2), (s2, s3)]:
        sc.observe("m", "v", old, new)
        history.append(parse(exposition(sc.families())))

    def flat(g):
        return {k: v for fam in g.values() for k, v in samples(fam).items()}

    for before, after in itertools.pairwise(history):
        fb, fa = flat(before), flat(after)
        assert set(fb) <= set(fa)
        for k in fb:
            assert fa[k] >= fb[k], k
    final = flat(history[-1])
    lv = lab(model="m", model_version="v")
    # the shrink (10 -> 6) is ignored, the growth after it (6 -> 12) is added
    assert final[("modelmon_predictions_total", lv)] == 10 + 6
    assert final[("modelmon_labels_total", lv)] == 8 + 6
    assert final[("modelmon_invalid_events_total", (*lv, ("reason", "schema")))] == 16
    counted = np.asarray(lat[:10] + lat[20:26]) / 1000
    for le in LATENCY_BUCKETS_S:
        key = ("modelmon_prediction_latency_seconds_bucket", tuple(sorted(dict(lv, le=repr(le)).items())))
        assert final[key] == np.count_nonzero(counted <= le)
    assert final[("modelmon_prediction_latency_seconds_count", lv)] == 16
    exact = sum(Fraction(v) for v in lat[:10] + lat[20:26]) / 1000
    assert final[("modelmon_prediction_latency_seconds_sum", lv)] == float(exact)


def test_observe_same_snapshot_twice_adds_nothing_and_forget_drops_the_series():
    w = WindowAccumulator()
    w.add_prediction(12.0, False)
    d = w.to_dict()
    sc = SeriesCounters()
    sc.observe("a", None, None, d)
    sc.observe("a", None, d, d)
    sc.observe("b", "2", None, d)
    assert sc.series() == [("a", ""), ("b", "2")] and len(sc) == 2
    fam = parse(exposition(sc.families()))["modelmon_predictions_total"]
    assert samples(fam) == {
        ("modelmon_predictions_total", lab(model="a", model_version="")): 1,
        ("modelmon_predictions_total", lab(model="b", model_version="2")): 1,
    }
    text = exposition(sc.families())
    assert "modelmon_label_delay_seconds" not in text  # no label yet: no empty histogram
    sc.forget("a", None)
    sc.forget("nope", None)
    assert sc.series() == [("b", "2")]
    assert 'model="a"' not in exposition(sc.families())
    sc.forget("b", "2")
    assert exposition(sc.families()) == ""


def test_observe_rejects_a_foreign_histogram():
    w = WindowAccumulator()
    w.add_prediction(1.0, False)
    d = w.to_dict()
    d["latency"] = {**d["latency"], "buckets": {"99999": 1}}
    with pytest.raises(ValueError, match="unknown bucket"):
        SeriesCounters().observe("m", None, None, d)


def test_observe_is_cheap():
    """observe() runs for every stage-2 snapshot: a dict walk, well under a millisecond."""
    rng = np.random.default_rng(3)
    w = WindowAccumulator()
    for x in np.exp(rng.normal(3.0, 1.0, 2000)):
        w.add_prediction(float(x), False, task="classification", prediction="a")
        w.add_outcome("classification", "a", "b", {"a": 0.6, "b": 0.4}, float(x))
    old = w.to_dict()
    w.add_prediction(5.0, False, task="classification", prediction="a")
    w.add_outcome("classification", "a", "a", {"a": 0.6, "b": 0.4}, 3.0)
    new = w.to_dict()
    sc = SeriesCounters()
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        sc.observe("m", "v", old, new)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 1e-3, f"observe took {per_call * 1e6:.0f} µs"


# ---------------------------------------------------------------------------------------------- views
def _event(view: str, acc: WindowAccumulator, view_s: float) -> dict:
    return {"model": "fraud", "model_version": "1.0", "view": view, **summarize(acc, view_s)}


def test_view_families_from_real_metric_events():
    rng = np.random.default_rng(5)
    w = WindowAccumulator()
    for i in range(500):
        w.add_prediction(float(rng.uniform(5, 50)), i % 25 == 0, task="classification", prediction="a")
        if i % 2:
            w.add_outcome("classification", "a", "a" if i % 5 else "b", {"a": 0.8, "b": 0.2}, float(i))
    r = WindowAccumulator()
    for i in range(40):
        r.add_prediction(3.0, False, task="regression", prediction=1.0)
        r.add_outcome("regression", 1.0, 1.5 + i, None, 2.0)
    e5, e1h = _event("5m", w, 300.0), _event("1h", w, 3600.0)
    reg = {**_event("5m", r, 300.0), "model": "price", "model_version": None}
    views = {
        ("fraud", "1.0"): {"5m": e5, "1h": e1h, "24h": None, "7d": e5},
        ("price", None): {"5m": reg},
    }
    text = exposition(view_families(views))
    assert promtool_check_metrics(text).returncode == 0
    got = parse(text)
    assert all(f.type == "gauge" for f in got.values())
    f5 = lab(model="fraud", model_version="1.0", view="5m")
    f1h = lab(model="fraud", model_version="1.0", view="1h")
    p5 = lab(model="price", model_version="", view="5m")

    def v(name, labels):
        return samples(got[name]).get((name, labels))

    c = e5["classification"]
    assert v("modelmon_accuracy", f5) == c["accuracy"] and v("modelmon_accuracy", f1h) == c["accuracy"]
    assert v("modelmon_accuracy_ci_low", f5) == c["accuracy_ci_low"]
    assert v("modelmon_accuracy_ci_high", f5) == c["accuracy_ci_high"]
    assert v("modelmon_log_loss", f5) == c["log_loss"]
    assert v("modelmon_brier_score", f5) == c["brier"]
    assert v("modelmon_prediction_rate_per_second", f5) == 500 / 300
    assert v("modelmon_prediction_rate_per_second", f1h) == 500 / 3600
    assert v("modelmon_prediction_error_ratio", f5) == 20 / 500
    assert v("modelmon_view_predictions", f5) == 500 and v("modelmon_view_labels", f5) == 250
    assert v("modelmon_label_coverage_ratio", f5) == 0.5
    assert v("modelmon_label_delay_p95_seconds", f5) == e5["labels"]["delay_p95_s"]
    assert v("modelmon_prediction_latency_p95_seconds", f5) == pytest.approx(e5["latency"]["p95_ms"] / 1000)
    assert 0.005 < v("modelmon_prediction_latency_p95_seconds", f5) < 0.05
    assert (
        v("modelmon_mae", p5) == reg["regression"]["mae"]
        and v("modelmon_rmse", p5) == reg["regression"]["rmse"]
    )
    assert v("modelmon_mape_ratio", p5) == reg["regression"]["mape"]
    # undefined values give no sample: no regression metrics for fraud, no accuracy for price
    assert v("modelmon_mae", f5) is None and v("modelmon_accuracy", p5) is None
    assert v("modelmon_brier_score", p5) is None
    # only the bounded view names
    assert {dict(s.labels)["view"] for f in got.values() for s in f.samples} == {"5m", "1h"}


def test_view_families_tolerate_sparse_events():
    views = {
        ("m", None): {"5m": {"traffic": {"predictions": 0, "rate_per_s": 0.0, "errors": 0}, "labels": {}}}
    }
    got = parse(exposition(view_families(views)))
    assert set(got) == {"modelmon_view_predictions", "modelmon_prediction_rate_per_second"}
    views = {("m", None): {"5m": {"traffic": {"predictions": 4, "errors": 1}}}}  # no error_rate: derived
    got = parse(exposition(view_families(views)))
    assert samples(got["modelmon_prediction_error_ratio"]) == {
        ("modelmon_prediction_error_ratio", lab(model="m", model_version="", view="5m")): 0.25
    }


# --------------------------------------------------------------------------------------------- alerts
def test_alert_families_only_firing_with_bounded_labels():
    def alert(rule, model, version, severity, state):
        return {
            "id": rule + model,
            "rule": rule,
            "model": model,
            "version": version,
            "severity": severity,
            "state": state,
            "ts": "2026-11-28T03:00:00Z",
            "message": "m",
        }

    alerts = [
        alert("acc", "fraud", "1.0", "critical", "firing"),
        alert("acc", "fraud", None, "warning", "firing"),
        alert("lat", "fraud", "1.0", "info", "pending"),
        alert("cov", "churn", "2", "warning", "resolved"),
        alert("acc", "fraud", "1.0", "critical", "firing"),
    ]
    text = exposition(alert_families(alerts))
    got = parse(text)
    assert samples(got["modelmon_alerts_firing"]) == {
        (
            "modelmon_alerts_firing",
            lab(model="fraud", model_version="1.0", rule="acc", severity="critical"),
        ): 1,
        ("modelmon_alerts_firing", lab(model="fraud", model_version="", rule="acc", severity="warning")): 1,
    }
    assert "id=" not in text
    assert exposition(alert_families([alerts[2]])) == ""


# --------------------------------------------------------------------------------------------- worker
def test_worker_families():
    counts = {"joined": 10, "invalid:schema": 2, "stage2:final_windows": 3, "alerts:firing": 1}
    process = {
        "rss_bytes": 123456789,
        "cpu_seconds": 12.5,
        "open_fds": 42,
        "threads": None,
        "cpu_percent": 3.0,
    }
    text = exposition(worker_families("w-1", False, counts, process))
    got = parse(text)
    assert samples(got["modelmon_worker_info"]) == {("modelmon_worker_info", lab(worker_id="w-1")): 1}
    assert samples(got["modelmon_worker_ready"]) == {("modelmon_worker_ready", ()): 0}
    assert got["modelmon_worker_events_total"].type == "counter"
    assert samples(got["modelmon_worker_events_total"]) == {
        ("modelmon_worker_events_total", lab(outcome=k)): v for k, v in counts.items()
    }
    assert got["modelmon_process_cpu_seconds_total"].type == "counter"
    assert samples(got["modelmon_process_resident_memory_bytes"]) == {
        ("modelmon_process_resident_memory_bytes", ()): 123456789
    }
    assert samples(got["modelmon_process_open_fds"]) == {("modelmon_process_open_fds", ()): 42}
    assert "modelmon_process_threads" not in got
    ready = parse(exposition(worker_families("w-1", True, {}, {})))
    assert samples(ready["modelmon_worker_ready"]) == {("modelmon_worker_ready", ()): 1}


# ------------------------------------------------------------------------------------------- promtool
def realistic_exposition() -> str:
    events = _stream(11, 1500)
    sc = SeriesCounters()
    _feed(events, sc, random.Random(11))
    w = WindowAccumulator()
    for i in range(100):
        w.add_prediction(10.0 + i, False, task="classification", prediction="a")
        w.add_outcome("classification", "a", "a" if i % 3 else "b", {"a": 0.9, "b": 0.1}, 30.0 + i)
    views = {
        ("fraud", "1.0"): {v: _event(v, w, s) for v, s in (("5m", 300.0), ("1h", 3600.0), ("24h", 86400.0))}
    }
    alerts = [{"rule": "acc", "model": "fraud", "version": "1.0", "severity": "warning", "state": "firing"}]
    worker = worker_families(
        "worker-1",
        True,
        {"joined": 1000, "invalid:schema": 3, "stage2:final_windows": 12},
        {"rss_bytes": 2**28, "cpu_seconds": 31.25, "open_fds": 57, "threads": 9},
    )
    return exposition(sc.families() + view_families(views) + alert_families(alerts) + worker)


def test_promtool_check_metrics_finds_no_problem():
    text = realistic_exposition()
    fams = parse(text)
    assert len(fams) >= 25
    assert all(name.startswith("modelmon_") for name in fams)
    res = promtool_check_metrics(text)
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", (
        res.stdout + res.stderr
    )


def test_promtool_check_metrics_does_report_problems():
    """The check above is live: promtool flags a gauge named like a counter and a non-base unit."""
    bad = exposition(
        [
            MetricFamily("modelmon_bad_total", "gauge", "x", [("modelmon_bad_total", {}, 1)]),
            MetricFamily(
                "modelmon_latency_milliseconds", "gauge", "y", [("modelmon_latency_milliseconds", {}, 1)]
            ),
        ]
    )
    res = promtool_check_metrics(bad)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "_total" in out and "milliseconds" in out


def test_module_is_pure():
    code = (
        "import sys, modelmon.web.prometheus; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('faust', 'aiokafka', 'confluent_kafka', 'aiohttp', 'mode')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
