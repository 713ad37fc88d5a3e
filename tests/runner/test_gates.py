"""Gates: thresholds from numbers and `base` expressions, comparators, missing metrics."""

from __future__ import annotations

import pytest

from runner.gates import judge, rule_text, threshold, verdict_json

METRICS = {"base": {"f1": 0.40, "mmlu": 0.75, "loss": 2.0}, "candidate": {"f1": 0.55, "mmlu": 0.74, "loss": 2.3}}


def gate(metric, comparator, value=None, base_op=None, uses_base=False):
    return {"metric": metric, "comparator": comparator, "value": value, "base_op": base_op, "uses_base": uses_base}


@pytest.mark.parametrize("g, expected", [
    (gate("f1", ">=", 0.5), 0.5),
    (gate("mmlu", ">=", None, None, True), 0.75),
    (gate("mmlu", ">=", 0.02, "-", True), 0.73),
    (gate("mmlu", ">=", 0.02, "+", True), 0.77),
    (gate("loss", "<=", 1.1, "*", True), 2.2),
])
def test_thresholds(g, expected):
    assert threshold(g, METRICS["base"][g["metric"]]) == pytest.approx(expected)


def test_the_motivating_case_passes_f1_and_mmlu_but_not_loss():
    verdicts = judge([gate("f1", ">=", 0.5), gate("mmlu", ">=", 0.02, "-", True), gate("loss", "<=", 1.1, "*", True)],
                     METRICS)
    assert [v.passed for v in verdicts] == [True, True, False]
    assert [rule_text(g) for g in (gate("mmlu", ">=", 0.02, "-", True), gate("x", "<", 3.0))] == ["base - 0.02", "3"]
    out = verdict_json(verdicts)
    assert out["passed"] is False and out["gates"][2]["threshold"] == pytest.approx(2.2)
    assert out["gates"][1] | {"threshold": None} == {"metric": "mmlu", "comparator": ">=", "rule": "base - 0.02",
                                                        "base": 0.75, "candidate": 0.74, "threshold": None,
                                                        "passed": True, "reason": ""}


@pytest.mark.parametrize("comparator, candidate, passed", [(">", 0.5, False), (">=", 0.5, True), ("<", 0.5, False),
                                                           ("<=", 0.5, True), (">", 0.6, True), ("<", 0.4, True)])
def test_comparators_at_the_boundary(comparator, candidate, passed):
    assert judge([gate("f1", comparator, 0.5)], {"base": {}, "candidate": {"f1": candidate}})[0].passed is passed


def test_a_missing_metric_fails_and_says_why():
    (v,) = judge([gate("f1", ">=", None, None, True)], {"base": {}, "candidate": {"f1": 0.9}})
    assert not v.passed and "missing" in v.reason
