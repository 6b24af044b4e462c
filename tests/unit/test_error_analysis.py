"""Error analysis against independent computations: scipy's tests, numpy counts, a hand-written Holm."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2_contingency, ttest_ind

from modelmon.aggregate import WindowAccumulator
from modelmon.error_analysis import confused_pairs, holm, segment_table, worst_slices

COUNTRIES = ["us", "de", "gb", "in", "br", "fr", "jp"]
SHARES = [0.4, 0.2, 0.12, 0.1, 0.08, 0.06, 0.04]
DEVICES = ["android", "ios", "web"]


def _classification(seed: int, n: int, bad: str | None, drop: float = 0.25, base: float = 0.85):
    rng = np.random.default_rng(seed)
    country = rng.choice(COUNTRIES, n, p=SHARES)
    device = rng.choice(DEVICES, n, p=[0.5, 0.35, 0.15])
    acc = np.where(country == bad, base - drop, base) if bad else np.full(n, base)
    correct = rng.random(n) < acc
    labelled = rng.random(n) < 0.7
    w = WindowAccumulator()
    for c, d, ok, lab in zip(
        country.tolist(), device.tolist(), correct.tolist(), labelled.tolist(), strict=True
    ):
        seg = {"country": c, "device": d}
        w.add_prediction(3.0, False, task="classification", prediction="a", segment=seg)
        if lab:
            w.add_outcome("classification", "a", "a" if ok else "b", segment=seg)
    return w, {"country": country, "device": device}, correct, labelled


def _oracle_p(slice_mask: np.ndarray, correct: np.ndarray, labelled: np.ndarray) -> float:
    """One-sided p of 'slice accuracy < rest' from scipy's chi-square test of the 2x2 table (z**2)."""
    s = slice_mask & labelled
    r = ~slice_mask & labelled
    table = [
        [int(correct[s].sum()), int((~correct[s]).sum())],
        [int(correct[r].sum()), int((~correct[r]).sum())],
    ]
    _, p, _, _ = chi2_contingency(table, correction=False)
    worse = correct[s].mean() < correct[r].mean()
    return p / 2 if worse else 1 - p / 2


def _oracle_holm(ps: list[float]) -> list[float]:
    m = len(ps)
    order = np.argsort(ps, kind="stable")
    out = np.empty(m)
    prev = 0.0
    for rank, i in enumerate(order):
        prev = max(prev, min(1.0, (m - rank) * ps[i]))
        out[i] = prev
    return out.tolist()


def test_segment_table_equals_numpy_counts() -> None:
    w, tags, correct, labelled = _classification(1, 4000, "br")
    table = segment_table(w, top_n=3)
    assert table is not None
    values = table["keys"]["country"]["values"]
    assert [v["value"] for v in values] == ["us", "de", "gb", "__other__"]
    for v in values[:3]:
        m = tags["country"] == v["value"]
        assert v["predictions"] == int(m.sum())
        assert v["labelled"] == int((m & labelled).sum())
        assert v["accuracy"] == pytest.approx(float(correct[m & labelled].mean()), rel=1e-12)
        assert v["accuracy_ci_low"] < v["accuracy"] < v["accuracy_ci_high"]
    other = values[-1]
    m = np.isin(tags["country"], ["in", "br", "fr", "jp"])
    assert other["predictions"] == int(m.sum())
    assert other["accuracy"] == pytest.approx(float(correct[m & labelled].mean()), rel=1e-12)


def test_the_bad_segment_ranks_first_with_scipy_p_values() -> None:
    w, tags, correct, labelled = _classification(2, 6000, "br")
    report = worst_slices(w)
    assert report is not None
    first = report["slices"][0]
    assert (first["key"], first["value"]) == ("country", "br")
    assert all((s["key"], s["value"]) == ("country", "br") for s in report["slices"])
    m = tags["country"] == "br"
    assert first["p_value"] == pytest.approx(_oracle_p(m, correct, labelled), rel=1e-6)
    assert first["slice"] == pytest.approx(float(correct[m & labelled].mean()))
    assert first["rest"] == pytest.approx(float(correct[~m & labelled].mean()))
    assert first["excess"] == pytest.approx((m & labelled).sum() * (first["rest"] - first["slice"]))
    assert first["ci_low"] < first["slice"] < first["ci_high"]
    assert report["tested"] == len(COUNTRIES) + len(DEVICES)
    assert "two-proportion" in report["test"]


def test_every_tested_p_value_and_the_holm_adjustment_match_the_oracle() -> None:
    w, tags, correct, labelled = _classification(3, 5000, "jp", drop=0.1)
    report = worst_slices(w, alpha=1.0)  # alpha 1: every slice worse than its rest is listed
    assert report is not None
    want = {}
    for key in ("country", "device"):
        for value in np.unique(tags[key]).tolist():
            want[(key, value)] = _oracle_p(tags[key] == value, correct, labelled)
    names = list(want)
    adjusted = dict(zip(names, _oracle_holm([want[n] for n in names]), strict=True))
    listed = {(s["key"], s["value"]): s for s in report["slices"]}
    for name, s in listed.items():
        assert s["p_value"] == pytest.approx(want[name], rel=1e-6, abs=1e-12)
        assert s["p_adjusted"] == pytest.approx(adjusted[name], rel=1e-6, abs=1e-12)
    assert len(names) == 10  # at most the listing limit: every slice worse than its rest is listed
    assert set(listed) == {n for n in names if want[n] < 0.5}


def test_clean_streams_flag_slices_no_more_often_than_alpha() -> None:
    flagged = 0
    runs = 150
    for seed in range(runs):
        w, *_ = _classification(100 + seed, 2000, None)
        report = worst_slices(w)
        assert report is not None
        flagged += report["significant"] > 0
    # Holm keeps the family-wise error at alpha = 1 %: expect ~1.5 of 150; 6 would be p < 0.5 % binomially
    assert flagged <= 6, flagged


def test_no_clean_slice_is_flagged_next_to_a_bad_one() -> None:
    for seed in range(20):
        w, *_ = _classification(300 + seed, 6000, "br")
        report = worst_slices(w)
        assert report is not None
        assert [(s["key"], s["value"]) for s in report["slices"]] == [("country", "br")], seed


def test_regression_slices_use_welch_against_scipy() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    y = rng.normal(50, 10, n)
    noise = np.where(region == "east", 9.0, 5.0)
    yhat = y + rng.normal(0, 1, n) * noise
    w = WindowAccumulator()
    for r, t, p in zip(region.tolist(), y.tolist(), yhat.tolist(), strict=True):
        w.add_prediction(2.0, False, task="regression", prediction=p, segment={"region": r})
        w.add_outcome("regression", p, t, segment={"region": r})
    report = worst_slices(w)
    assert report is not None and report["slices"][0]["value"] == "east"
    s = report["slices"][0]
    err = np.abs(yhat - y)
    m = region == "east"
    t = ttest_ind(err[m], err[~m], equal_var=False, alternative="greater")
    assert s["metric"] == "mae"
    assert s["slice"] == pytest.approx(float(err[m].mean()), rel=1e-9)
    assert s["rest"] == pytest.approx(float(err[~m].mean()), rel=1e-9)
    # normal approximation of Welch's t with ~800 and ~3200 samples: same order of magnitude far out
    assert s["p_value"] <= max(10 * t.pvalue, 1e-300)
    assert "Welch" in report["test"]


def test_small_slices_are_not_tested() -> None:
    w = WindowAccumulator()
    for i in range(100):
        seg = {"k": "tiny" if i < 10 else "big"}
        w.add_prediction(1.0, False, task="classification", prediction="a", segment=seg)
        w.add_outcome("classification", "a", "b" if i < 10 else "a", segment=seg)
    report = worst_slices(w)
    assert report is not None and report["tested"] == 0 and report["slices"] == []


def test_confused_pairs_are_the_largest_off_diagonal_counts() -> None:
    rng = np.random.default_rng(6)
    classes = ["cat", "dog", "fox", "owl"]
    y = rng.choice(classes, 3000)
    p = np.where(rng.random(3000) < 0.7, y, rng.choice(classes, 3000))
    w = WindowAccumulator()
    for t, q in zip(y.tolist(), p.tolist(), strict=True):
        w.add_outcome("classification", q, t)
    mistakes = Counter((t, q) for t, q in zip(y.tolist(), p.tolist(), strict=True) if t != q)
    want = sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    got = confused_pairs(w)
    assert got is not None
    assert [((g["true"], g["predicted"]), g["count"]) for g in got] == want
    assert got[0]["share_of_errors"] == pytest.approx(want[0][1] / sum(mistakes.values()))


def test_holm_matches_the_definition() -> None:
    ps = [0.01, 0.04, 0.03, 0.005, 0.5]
    assert holm(ps) == pytest.approx(_oracle_holm(ps))
    assert holm([]) == []
