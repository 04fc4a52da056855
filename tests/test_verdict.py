"""Verdicts against simulated sweeps whose truth is known (sweep_simulation.py): how often
each truth gets each verdict, at the sizes researchers run."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sweep_simulation import sweep

from lm_eval_noise.tools.sweep.verdict import THRESHOLDS, judge_runs, merge_replicates, thresholds

SWEEPS = 30


def _rates(noise, seed, sweeps=SWEEPS, **options) -> Counter:
    rng = np.random.default_rng(seed)
    verdicts = Counter(judge_runs(sweep(rng, noise=[noise], **options))[noise[0]]["verdict"] for _ in range(sweeps))
    return Counter({k: v / sweeps for k, v in verdicts.items()})


@pytest.mark.parametrize("truth, noise, expected, at_least", [
    ("truly better", ("n", 0.6, 0.15), "success", 0.9),
    ("a point on the curve", ("n", 0.5, 0.0), "partial", 0.8),
    ("identical to a temperature run", ("n", 0.8, 0.0), "partial", 0.6),
    ("below the curve", ("n", 0.6, -0.15), "null", 0.8),
    ("collapse", ("n", 0.6, 0.0, 0.5), "null", 1.0),
])
def test_each_truth_gets_its_verdict(truth, noise, expected, at_least):
    rates = _rates(noise, seed=len(truth))
    assert rates[expected] >= at_least, (truth, rates)
    if expected != "success":
        assert rates["success"] <= 0.05, (truth, rates)


def test_the_issues_false_success_a_temperature_between_two_is_not_better():
    """Noise that is really T=0.4, with temperatures 0.2 and 0.8 swept: the old point
    comparison with T=0.2 called it a success 75% of the time."""
    rates = _rates(("n", 0.4, 0.0), seed=7, temperatures=(0.2, 0.8))
    assert rates["success"] <= 0.05, rates


def test_no_verdict_at_the_floor_or_on_five_problems():
    floor = _rates(("n", 0.6, 0.0), seed=1, floor=True, sweeps=10)
    assert floor == Counter({"undetermined": 1.0})
    rng = np.random.default_rng(2)
    judged = judge_runs(sweep(rng, problems=5, noise=[("n", 0.6, 0.3)]))["n"]
    assert judged["verdict"] == "undetermined"
    assert "5 problems" in judged["reason"] and "at least 10" in judged["reason"]
    judged = judge_runs(sweep(rng, floor=True, noise=[("n", 0.6, 0.0)]))["n"]
    assert "floor" in judged["reason"]


def test_few_problems_give_undetermined_with_the_detectable_effect_printed():
    judged = judge_runs(sweep(np.random.default_rng(5), problems=12, noise=[("n", 0.6, 0.0)]))["n"]
    assert judged["verdict"] == "undetermined", judged
    assert f"minimum detectable effect {judged['minimum_detectable_effect']:.3f} > margin 0.05" in judged["reason"]


@pytest.mark.slow
def test_twenty_inferior_runs_rarely_give_a_false_success():
    """Family-wise: a sweep of 20 noise runs, each on the curve or 0.05 below it."""
    rng = np.random.default_rng(8)
    noise = [(f"n{i}", 0.2 + 0.05 * i, -0.05 * (i % 2)) for i in range(20)]
    false = [any(j["verdict"] == "success" for j in judge_runs(sweep(rng, noise=noise)).values()) for _ in range(40)]
    assert np.mean(false) <= 0.05


def test_a_run_more_diverse_than_every_temperature_asks_for_hotter_ones():
    judged = judge_runs(sweep(np.random.default_rng(3), noise=[("n", 1.6, 0.0)], temperatures=(0.2, 0.8)))["n"]
    assert judged["verdict"] == "undetermined" and "add hotter temperatures" in judged["reason"]


def test_no_diversity_gain_over_greedy_is_null_and_the_curve_needs_greedy():
    runs = sweep(np.random.default_rng(4), noise=[("n", 0.0, 0.0)])
    assert judge_runs(runs)["n"]["verdict"] == "null"
    assert "no diversity gain over greedy" in judge_runs(runs)["n"]["reason"]
    without_greedy = [r for r in runs if r["method"] != "greedy"]
    assert "needs a greedy run" in judge_runs(without_greedy)["n"]["reason"]


def test_the_match_reports_where_and_how_often_it_is_defined():
    judged = judge_runs(sweep(np.random.default_rng(6), noise=[("n", 0.5, 0.0)]))["n"]
    assert judged["matched"]["between"] == ["temperature-0.4", "temperature-0.6"]
    assert 0.5 <= judged["matched_defined_in"] <= 1.0
    assert judged["correctness"] == "pass@1 pass@10" and judged["problems"] == 164


def test_replicates_are_averaged_per_problem():
    rng = np.random.default_rng(9)
    runs = sweep(rng, noise=[("n", 0.6, 0.0)])
    second = sweep(rng, noise=[("n", 0.6, 0.0)])[-1]  # another seed of the same noise run
    merged = {r["name"]: r for r in merge_replicates([*runs, second])}
    first = runs[-1]["per_problem"]["pass@1"][0]
    assert merged["n"]["per_problem"]["pass@1"][0] == pytest.approx((first + second["per_problem"]["pass@1"][0]) / 2)
    assert merged["n"]["replicates"] == 2 and judge_runs([*runs, second])["n"]["replicates"] == 2


def test_chat_scored_by_its_own_generator_gets_no_verdict():
    runs = sweep(np.random.default_rng(10), noise=[("n", 0.6, 0.0)])
    for run in runs:
        values = run["per_problem"]
        values["ref_logprob_mean"] = {p: -2 + v for p, v in values.pop("pass@1").items()}
        values["edit_distance"] = values.pop("distinct_2")
        values.pop("pass@10")
        run["self_scored"] = True
    assert "scored by the generator itself" in judge_runs(runs)["n"]["reason"]
    for run in runs:
        run["self_scored"] = False
    judged = judge_runs(runs)["n"]
    assert judged["kind"] == "chat" and judged["diversity"] == "edit_distance" and judged["margin"] == 0.1


def test_thresholds_come_from_the_config_and_unknown_keys_are_refused():
    assert thresholds({"margin": 0.1})["margin"] == 0.1
    assert thresholds(None) == THRESHOLDS
    with pytest.raises(ValueError, match="unknown keys \\['pass_margin'\\]"):
        thresholds({"pass_margin": 0.1})
