"""The verdict of a noise run against temperature, and pass@k at matched diversity, on
leaderboards and per-problem values built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lm_eval_noise.tools.sweep.verdict import THRESHOLDS, _difference, matched_diversity, thresholds, verdict


def _interval(mean, low, high, n=20):
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}


def _entries(pass_diff, distinct_diff, *, empty=0.0, compile_rate=0.9):
    temperature = {"name": "temperature-0.8", "metrics": {
        "pass@1": _interval(0.5, 0.4, 0.6), "distinct_2": _interval(0.5, 0.45, 0.55),
        "compile_rate": _interval(0.9, 0.85, 0.95)}}
    noise = {"name": "noise", "metrics": {
        "pass@1": _interval(0.5, 0.4, 0.6), "empty_rate": _interval(empty, 0, empty),
        "degenerate_rate": _interval(empty, 0, empty), "compile_rate": _interval(compile_rate, 0, 1)},
        "vs_temperature": {"temperature-0.8": {"pass@1": _interval(*pass_diff),
                                               "distinct_2": _interval(*distinct_diff)}}}
    return noise, temperature


@pytest.mark.parametrize("pass_diff, distinct_diff, kwargs, expected", [
    ((0.0, -0.02, 0.02), (0.2, 0.15, 0.25), {}, "success"),  # as correct, 30% more diverse
    ((-0.1, -0.2, -0.05), (0.2, 0.15, 0.25), {}, "partial"),  # more diverse, less correct
    ((0.0, -0.02, 0.02), (0.05, 0.01, 0.09), {}, "partial"),  # more diverse, by less than 20%
    ((0.0, -0.02, 0.02), (-0.1, -0.2, -0.01), {}, "null"),  # less diverse
    ((0.0, -0.02, 0.02), (0.2, 0.15, 0.25), {"empty": 0.5}, "null"),  # collapsed to empty answers
    ((0.0, -0.02, 0.02), (0.2, 0.15, 0.25), {"compile_rate": 0.5}, "null"),  # broken code
])
def test_verdicts(pass_diff, distinct_diff, kwargs, expected):
    noise, temperature = _entries(pass_diff, distinct_diff, **kwargs)
    judged = verdict(noise, temperature, dict(THRESHOLDS))
    assert judged["verdict"] == expected, judged
    assert judged["reasons"]


def test_thresholds_come_from_the_config_and_unknown_keys_are_refused():
    assert thresholds({"pass_margin": 0.1})["pass_margin"] == 0.1
    assert thresholds(None) == THRESHOLDS
    with pytest.raises(ValueError, match="unknown keys \\['margin'\\]"):
        thresholds({"margin": 0.1})


def test_interpolation_on_the_temperature_curve():
    # curve points (distinct, pass): (0.2, 0.6) -> (0.4, 0.5) -> (0.6, 0.3); noise at 0.5 passes 0.45
    passes, diversity = np.array([0.45, 0.6, 0.5, 0.3]), np.array([0.5, 0.2, 0.4, 0.6])
    assert _difference(passes, diversity) == pytest.approx(0.45 - 0.4)
    assert _difference(passes, np.array([0.9, 0.2, 0.4, 0.6])) is None  # outside the curve


def test_matched_diversity_with_bootstrap_over_problems():
    rng = np.random.default_rng(1)
    docs = range(40)
    curve = [{d: {"pass@1": p + rng.normal(0, 0.05), "distinct_2": x + rng.normal(0, 0.02)} for d in docs}
             for p, x in ((0.6, 0.2), (0.5, 0.4), (0.3, 0.6))]
    better = {d: {"pass@1": 0.55 + rng.normal(0, 0.05), "distinct_2": 0.5 + rng.normal(0, 0.02)} for d in docs}
    result = matched_diversity(better, curve, "pass@1", iterations=500)
    assert result["difference"] == pytest.approx(0.15, abs=0.05)
    assert 0 < result["ci_low"] < result["difference"] < result["ci_high"]
    assert matched_diversity(better, curve[:1], "pass@1")["difference"] is None
