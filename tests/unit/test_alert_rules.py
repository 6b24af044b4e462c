"""The rules file: the example parses, and every kind of mistake is reported with its rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmon.alerts.rules import RulesError, load_rules, parse_duration, parse_rules

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "alert-rules.yaml"


def _problems(text: str, window_s: float = 60.0) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(text, window_s, "r.yaml")
    return info.value.problems


def test_the_example_file_is_valid_and_covers_every_kind() -> None:
    rules = load_rules(EXAMPLE, 60.0)
    kinds = {r.kind for r in rules.rules}
    assert kinds == {"threshold", "baseline", "cusum", "drift", "data_quality"}
    by_name = rules.by_name()
    acc = by_name["accuracy-below-floor"]
    assert (acc.metric, acc.op, acc.threshold, acc.confidence) == ("accuracy", "<", 0.8, 0.95)
    assert (acc.view_s, acc.for_n, acc.delay_s, acc.severity) == (600.0, 2, 300.0, "critical")
    assert acc.labels == {"team": "ml-platform"}
    cusum = by_name["accuracy-change"]
    assert cusum.shifts == (0.05, 0.1, 0.2)
    assert cusum.false_alarm_every_s == 365 * 86400
    assert cusum.reference_s == 3600
    traffic = by_name["traffic-drop"]
    assert traffic.delay_s == 0.0  # not a label metric: no default delay
    assert by_name["feature-drift"].features == ("*",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
    ],
)
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", "0", True, [1], "1y"])
def test_bad_durations(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_every_problem_names_its_rule_and_field_and_all_are_reported_at_once() -> None:
    text = """
rules:
  - name: ok-rule
    kind: threshold
    metric: accuracy
    op: "<"
    threshold: 0.9
  - name: bad-one
    kind: threshold
    metric: acuracy
    op: "=<"
    threshold: high
    severity: page
    for: 0
    view: 90s
    lables: {a: b}
  - name: ok-rule
    kind: cusum
    shifts: [0.05, 2]
  - kind: drift
    target: everything
    alpha: 0.9
  - name: dq
    kind: data_quality
    check: missing_rate
    threshold: 0.1
    range: [5, 1]
  - name: base
    kind: baseline
    metric: rate
    direction: drop
    baseline: 30s
    ratio: 1.5
"""
    problems = _problems(text)
    expected = [
        "rule 2 ('bad-one'), field 'metric'",
        "rule 2 ('bad-one'), field 'op'",
        "rule 2 ('bad-one'), field 'threshold': must be a number",
        "rule 2 ('bad-one'), field 'severity'",
        "rule 2 ('bad-one'), field 'for': must be at least 1",
        "rule 2 ('bad-one'), field 'view': must be a whole number of windows",
        "rule 2 ('bad-one'), field 'lables': unknown field",
        "rule 3 ('ok-rule'), field 'name': duplicate rule name",
        "rule 3 ('ok-rule'), field 'shifts'",
        "rule 4, field 'name': is required",
        "rule 4, field 'target'",
        "rule 4, field 'alpha': must be <= 0.5",
        "rule 5 ('dq'), field 'range': applies to check 'out_of_range' only",
        "rule 6 ('base'), field 'baseline': must cover at least two windows",
        "rule 6 ('base'), field 'ratio': a drop rule needs a ratio below 1",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), f"{fragment!r} not in {problems}"
    assert all(p.startswith("r.yaml: ") for p in problems)
    assert len(problems) == len(expected)


def test_yaml_syntax_errors_name_the_line() -> None:
    problems = _problems("rules:\n  - name: x\n    kind: [threshold\n")
    assert len(problems) == 1 and "not valid YAML at line" in problems[0]


def test_top_level_shape() -> None:
    assert "expected a mapping with a 'rules' list" in _problems("- a\n- b\n")[0]
    assert "unknown top-level key 'rule'" in _problems("rules: []\nrule: []\n")[0]
    assert parse_rules("", 60.0).rules == ()


def test_message_templates_are_checked() -> None:
    base = "rules:\n  - name: m\n    kind: threshold\n    metric: rate\n    op: '<'\n    threshold: 1\n"
    assert "unknown placeholder {valu}" in _problems(base + "    message: '{valu} is low'\n")[0]
    assert "bad template" in _problems(base + "    message: '{value'\n")[0]
    rule = parse_rules(base + "    message: '{model} rate {value} < {threshold}'\n", 60.0).rules[0]
    assert rule.message == "{model} rate {value} < {threshold}"


def test_confidence_only_for_proportions_and_counts() -> None:
    text = (
        "rules:\n  - {name: l, kind: threshold, metric: latency_p95, "
        "op: '>', threshold: 100, confidence: 0.9}\n"
    )
    assert "applies to proportions and counts" in _problems(text)[0]


def test_hysteresis_must_be_on_the_healthy_side() -> None:
    text = (
        "rules:\n  - {name: a, kind: threshold, metric: accuracy, "
        "op: '<', threshold: 0.8, resolve_threshold: 0.7}\n"
    )
    assert "field 'resolve_threshold'" in _problems(text)[0]


def test_for_as_a_duration_counts_windows() -> None:
    text = (
        "rules:\n  - {name: a, kind: threshold, metric: rate, op: '<', "
        "threshold: 1, for: 5m, resolve_for: 90s}\n"
    )
    rule = parse_rules(text, 60.0).rules[0]
    assert (rule.for_n, rule.resolve_for_n) == (5, 2)


def test_fixed_reference_window() -> None:
    text = (
        "rules:\n  - name: d\n    kind: drift\n    target: score\n"
        "    reference: {start: 2026-01-01T00:00:00Z, end: '2026-01-01T06:00:00+00:00'}\n"
    )
    rule = parse_rules(text, 60.0).rules[0]
    assert rule.reference_window == (1767225600.0, 1767225600.0 + 6 * 3600)
    bad = text.replace("06:00:00+00:00", "00:00:00+00:00")
    assert "end must be after start" in _problems(bad)[0]


def test_selectors_are_globs() -> None:
    text = (
        "rules:\n  - {name: a, kind: threshold, metric: rate, op: '<', "
        "threshold: 1, models: ['fraud-*'], versions: '2.*'}\n"
    )
    rule = parse_rules(text, 60.0).rules[0]
    assert rule.matches("fraud-detector", "2.1.0")
    assert not rule.matches("fraud-detector", "1.0.0")
    assert not rule.matches("churn", "2.1.0")
    assert not rule.matches("fraud-detector", None)
    wide = parse_rules(text.replace("versions: '2.*'", "versions: '*'"), 60.0).rules[0]
    assert wide.matches("fraud-x", None)


def test_digest_follows_semantics_not_wording() -> None:
    base = "rules:\n  - {name: a, kind: threshold, metric: rate, op: '<', threshold: 1%s}\n"
    d0 = parse_rules(base % "", 60.0).rules[0].digest
    assert parse_rules(base % ", message: 'hello {model}', severity: critical", 60.0).rules[0].digest == d0
    assert parse_rules(base % ", for: 2", 60.0).rules[0].digest != d0
    assert parse_rules(base % "", 30.0).rules[0].digest != d0


def test_unreadable_file(tmp_path) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "missing.yaml", 60.0)
    assert "cannot read the rules file" in info.value.problems[0]
    raw = tmp_path / "latin.yaml"
    raw.write_bytes(b"rules: [\xff]\n")
    with pytest.raises(RulesError) as info:
        load_rules(raw, 60.0)
    assert "not UTF-8" in info.value.problems[0]
