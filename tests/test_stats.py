"""The sweep's statistics against simulations whose truth is known: interval coverage
at the stated level, Holm's family-wise error, the minimum detectable effect's power,
and the degenerate inputs (no value, one value, identical values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lm_eval_noise.tools.sweep import stats

DRAWS = 2000


def _coverage(draw, truth, interval, draws=DRAWS) -> float:
    hits = 0
    for _ in range(draws):
        _, low, high = interval(draw())
        hits += low <= truth <= high
    return hits / draws


@pytest.mark.parametrize("problems, shape", [
    (5, (1, 1)), (5, (0.3, 0.3)), (5, (5, 5)), (10, (1, 1)), (10, (0.3, 0.3)),  # middling difficulty
    (20, (0.5, 2)), (20, (2, 0.3)), (50, (0.2, 1.5)),  # nearly all unsolved / solved
])
def test_mean_intervals_of_pass_rates_cover_within_3_points(problems, shape):
    """Per-problem pass@1 over 10 samples, problems' solve rates drawn from Beta(shape)."""
    rng = np.random.default_rng(problems)
    truth = shape[0] / sum(shape)
    draw = lambda: rng.binomial(10, rng.beta(*shape, problems)) / 10  # noqa: E731
    coverage = _coverage(draw, truth, lambda v: stats.mean_interval(v, bounded=True))
    assert 0.92 <= coverage <= 0.98, coverage


def test_plain_t_intervals_fail_where_the_widened_ones_hold():
    """Why bounded=True exists: at 5 problems nearly all unsolved, t covers ~75%."""
    rng = np.random.default_rng(0)
    draw = lambda: rng.binomial(10, rng.beta(0.2, 1.5, 5)) / 10  # noqa: E731
    assert _coverage(draw, 0.2 / 1.7, stats.mean_interval) < 0.85


@pytest.mark.parametrize("problems", [5, 10, 20])
@pytest.mark.parametrize("temperatures", [(0.4, 0.8), (0.2, 1.2), (0.6, 0.6)])
def test_paired_intervals_cover_within_3_points(problems, temperatures):
    """pass@1 of two temperatures on the same problems (the sweep simulation's model)."""
    rng = np.random.default_rng(problems)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    population = rng.normal(0.5, 1.5, 1_000_000)
    first, second = temperatures
    truth = float((sigmoid(population - 1.5 * first) - sigmoid(population - 1.5 * second)).mean())

    def draw():
        ability = rng.normal(0.5, 1.5, problems)
        return (rng.binomial(10, sigmoid(ability - 1.5 * first)) / 10,
                rng.binomial(10, sigmoid(ability - 1.5 * second)) / 10)

    coverage = _coverage(draw, truth, lambda pair: stats.paired_interval(*pair))
    assert 0.92 <= coverage <= 0.98, coverage


def test_holm_keeps_the_family_wise_error_under_alpha():
    rng = np.random.default_rng(3)
    sweeps, false_claims = 2000, 0
    for _ in range(sweeps):  # 20 null hypotheses, all true
        p_values = {f"run{i}": stats.p_above(rng.normal(0, 1, 30)) for i in range(20)}
        false_claims += any(stats.holm(p_values).values())
    assert false_claims / sweeps <= 0.06
    assert stats.holm({"a": 0.001, "b": 0.02, "c": 0.06}, 0.05) == {"a": True, "b": True, "c": False}
    assert stats.holm({"a": 0.001, "b": 0.03, "c": 0.04}, 0.05) == {"a": True, "b": False, "c": False}
    assert stats.holm({"a": 0.02, "b": 0.001}, 0.05) == {"a": True, "b": True}  # 0.02 <= 0.05 / 1


def test_the_minimum_detectable_effect_is_detected_with_the_stated_power():
    """An effect of the size computed from one sample's spread is detected in ~80% of new samples."""
    rng = np.random.default_rng(4)
    spread, problems, detected = 0.3, 40, []
    for _ in range(2000):
        effect = stats.minimum_detectable_effect(rng.normal(0, spread, problems))
        detected.append(stats.p_above(rng.normal(effect, spread, problems)) <= 0.05)
    assert 0.75 <= np.mean(detected) <= 0.85, np.mean(detected)


def test_degenerate_inputs_say_so_instead_of_inventing_precision():
    assert all(math.isnan(v) for v in stats.mean_interval([]))
    mean, low, high = stats.mean_interval([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)  # one problem: no interval
    assert stats.mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)  # no spread under t ...
    _, low, high = stats.mean_interval([0.0] * 5, bounded=True)
    assert low == 0.0 and high > 0.3  # ... but five unsolved problems do not prove a rate of 0
    assert stats.mean_interval([1.0, float("nan"), None, 0.0])[0] == 0.5  # undefined values left out
    assert stats.minimum_detectable_effect([0.1]) == math.inf
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_interval([1, 2], [1])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        stats.mean_interval([2.0, 0.5], bounded=True)
    # Identical runs do not prove equal rates: the interval still allows a difference on
    # the problems not seen to differ, shrinking with their number ...
    assert stats.paired_interval([1.0] * 4, [1.0] * 4) == (0.0, 0.0, 0.0)
    assert stats.paired_interval([1.0] * 4, [1.0] * 4, bounded=True)[2] == pytest.approx(3.84 / 7.84, abs=1e-3)
    assert stats.paired_interval([1.0] * 164, [1.0] * 164, bounded=True)[2] == pytest.approx(0.023, abs=1e-3)
    # ... and leaves a t interval wider than that alone.
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert stats.paired_interval(a, b, bounded=True) == stats.paired_interval(a, b)
    # Mappings pair by problem id, whatever the order.
    assert stats.paired_interval({"a": 1.0, "b": 0.0, "c": 0.5}, {"b": 0.0, "a": 0.5})[0] == pytest.approx(0.25)


def test_holm_equals_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(21)
    for _ in range(40):  # multipletests runs gc.collect() on every call
        p_values = rng.uniform(0, 0.1, rng.integers(1, 12))
        expected = multitest.multipletests(p_values, alpha=0.05, method="holm")[0]
        mine = stats.holm({str(i): p for i, p in enumerate(p_values)}, 0.05)
        assert [mine[str(i)] for i in range(len(p_values))] == list(expected)


def test_crossed_mean_carries_seed_variation():
    """seeds x problems with a seed-level effect: the crossed interval covers the true mean
    ~95% of the time; a t interval over seed-averaged problems does not. One seed is the
    plain t interval over problems."""
    rng = np.random.default_rng(22)
    covered, naive = [], []
    for _ in range(2000):
        table = rng.normal(0, 1, 40)[None, :] + rng.normal(0, 0.5, (3, 1)) + rng.normal(0, 0.5, (3, 40))
        low, high = stats.crossed_mean(table).interval()
        covered.append(low <= 0 <= high)
        _, low, high = stats.mean_interval(table.mean(axis=0))
        naive.append(low <= 0 <= high)
    assert 0.93 <= np.mean(covered) <= 0.985, np.mean(covered)
    assert np.mean(naive) < 0.8, np.mean(naive)
    row = rng.normal(0, 1, 30)
    one = stats.crossed_mean(row[None, :])
    assert one.interval() == pytest.approx(stats.mean_interval(row)[1:])
    assert one.p_above(0.1) == pytest.approx(stats.p_above(row, 0.1))
    # Without a seed effect the interval is no wider than problems alone make it.
    quiet = rng.normal(0, 1, 40)[None, :] + rng.normal(0, 0.05, (3, 40))
    estimate, problems_only = stats.crossed_mean(quiet), stats.crossed_mean(quiet.mean(axis=0)[None, :])
    assert estimate.df >= 38 and estimate.se == pytest.approx(problems_only.se, rel=0.02)
    assert math.isinf(stats.crossed_mean([[0.1]]).minimum_detectable_effect())
