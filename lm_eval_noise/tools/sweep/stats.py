"""Intervals and tests over problems: what every number of a sweep's verdict rests on.

The unit is the problem (prompt): a run gives one value per problem (pass@k over its n
samples, Distinct-2 over them, ...), and two runs are compared on the problems both
have, pair by pair. Intervals are Student-t intervals over problems; for values bounded
in [0, 1] (`bounded=True`: pass@k, rates, Distinct-n) the interval is widened to cover a
Wilson score interval at the effective number of problems, which keeps it honest where
t fails: all problems at 0 (or 1) give [0, 0] under t, and a few skewed problems give
intervals far too short. Coverage, checked by simulation in tests/test_stats.py, is
within 3 points of the stated level from 5 problems up for problems of middling
difficulty, and from 20 up where nearly all problems are solved or nearly none are;
percentile-bootstrap intervals covered 80-85% at 5 problems.

Where a run is repeated over seeds, its values form a seeds x problems table and
`crossed_mean` estimates the standard error of its grand mean with both as random
effects (two-way crossed ANOVA, Satterthwaite's degrees of freedom), so an interval
carries seed-to-seed variation as well as problem-to-problem.

NumPy and SciPy only: runs from any source can be judged the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy

LEVEL = 0.95


def _finite(values: Iterable[float]) -> np.ndarray:
    data = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return data[np.isfinite(data)]


def mean_interval(values: Iterable[float], level: float = LEVEL, bounded: bool = False) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values at `level`. NaNs throughout for no value;
    (mean, nan, nan) for one (no interval rests on a single problem)."""
    data = _finite(values)
    n = data.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = float(_scipy.t.ppf(0.5 + level / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if bounded:
        if data.min() < 0 or data.max() > 1:
            raise ValueError("bounded=True needs values in [0, 1]")
        wilson_low, wilson_high = _wilson(mean, _effective_count(data), level)
        low, high = max(0.0, min(low, wilson_low)), min(1.0, max(high, wilson_high))
    return mean, low, high


def _effective_count(data: np.ndarray) -> float:
    """How many independent 0/1 outcomes the values are worth: n x the largest variance
    values with this mean could have / their variance (n where that is undefined)."""
    mean, variance = data.mean(), data.var(ddof=1)
    if variance == 0 or mean * (1 - mean) == 0:
        return float(data.size)
    return float(max(data.size, data.size * mean * (1 - mean) / variance))


def _wilson(mean: float, count: float, level: float) -> tuple[float, float]:
    z = float(_scipy.norm.ppf(0.5 + level / 2))
    centre = (mean + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(mean * (1 - mean) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return centre - half, centre + half


def paired_values(a: Mapping | Sequence, b: Mapping | Sequence) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both are finite: by key for mappings (problem id -> value), by
    position for sequences."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("a and b must both be mappings or both sequences")
    if isinstance(a, Mapping):
        keys = [k for k in a if k in b]
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    elif len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    left, right = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(left) & np.isfinite(right)
    return left[keep], right[keep]


def paired_interval(a, b, level: float = LEVEL, bounded: bool = False) -> tuple[float, float, float]:
    """(mean of a - b, low, high): a Student-t interval over the problems both have.
    With `bounded` (values in [0, 1]) it is at least as wide as a difference no problem
    showed could be: where the runs differ on none of n problems, the share of problems
    where they do still has a Wilson upper bound of z^2 / (n + z^2), so identical runs on
    4 problems give +-0.49, not [0, 0]."""
    left, right = paired_values(a, b)
    mean, low, high = mean_interval(left - right, level)
    if bounded and left.size >= 2:
        if min(left.min(), right.min()) < 0 or max(left.max(), right.max()) > 1:
            raise ValueError("bounded=True needs values in [0, 1]")
        unseen = _wilson(0.0, left.size, level)[1]
        low, high = max(-1.0, min(low, mean - unseen)), min(1.0, max(high, mean + unseen))
    return mean, low, high


def over_problems(differences: Iterable[float]) -> Estimate:
    """The Student-t estimate of the mean of one value per problem (undefined: NaN mean,
    df 0, so every p-value is 1 and no effect is detectable)."""
    data = _finite(differences)
    return crossed_mean(data[None, :]) if data.size else Estimate(math.nan, math.nan, 0.0)


def p_above(differences: Iterable[float], shift: float = 0.0) -> float:
    """One-sided p-value of a t-test that the mean difference is above `shift`."""
    return over_problems(differences).p_above(shift)


def p_below(differences: Iterable[float], shift: float = 0.0) -> float:
    """One-sided p-value of a t-test that the mean difference is below `shift`."""
    return over_problems(differences).p_below(shift)


def holm(p_values: Mapping[str, float], alpha: float = 1 - LEVEL) -> dict[str, bool]:
    """Which hypotheses Holm's step-down procedure rejects, family-wise error <= alpha.
    Equal to statsmodels' multipletests(method="holm") (tests/test_stats.py), which
    runs a full garbage collection on every call: 70 ms each inside a test run."""
    order = sorted(p_values, key=p_values.get)
    rejected, going = {}, True
    for rank, name in enumerate(order):
        going = going and p_values[name] <= alpha / (len(order) - rank)
        rejected[name] = going
    return rejected


def minimum_detectable_effect(differences: Iterable[float], alpha: float = 1 - LEVEL, power: float = 0.8) -> float:
    """The smallest true mean difference a one-sided t-test at `alpha` detects with
    `power`, given the spread and number of these paired differences (inf for < 2)."""
    return over_problems(differences).minimum_detectable_effect(alpha, power)


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and degrees of freedom: what a t-test needs."""

    mean: float
    se: float
    df: float

    def p_above(self, shift: float = 0.0) -> float:
        """One-sided p-value that the true mean is above `shift`."""
        if not (self.df > 0 and math.isfinite(self.se)):
            return 1.0
        if self.se == 0:
            return 0.0 if self.mean > shift else 1.0
        return float(_scipy.t.sf((self.mean - shift) / self.se, self.df))

    def p_below(self, shift: float = 0.0) -> float:
        return Estimate(-self.mean, self.se, self.df).p_above(-shift)

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        if not (self.df > 0 and math.isfinite(self.se)):
            return math.nan, math.nan
        half = float(_scipy.t.ppf(0.5 + level / 2, self.df) * self.se)
        return self.mean - half, self.mean + half

    def minimum_detectable_effect(self, alpha: float = 1 - LEVEL, power: float = 0.8) -> float:
        """The smallest true difference a one-sided test at `alpha` detects with `power`
        at this standard error: a planning figure, never a veto of an observed result."""
        if not (self.df > 0 and math.isfinite(self.se)):
            return math.inf
        return float((_scipy.t.ppf(1 - alpha, self.df) + _scipy.t.ppf(power, self.df)) * self.se)


def crossed_mean(table) -> Estimate:
    """The grand mean of a seeds x problems table (one row per seed), with seeds and
    problems both random effects: Var = s_problem^2/P + s_seed^2/S + s_error^2/(PS),
    estimated from the two-way ANOVA mean squares as (MS_P + MS_S - MS_E) / (PS) with
    Satterthwaite's degrees of freedom (1 with two seeds); a seed component estimated
    below zero counts as zero. One row: the Student-t estimate over problems (seed
    variation unmeasured)."""
    data = np.atleast_2d(np.asarray(table, dtype=float))
    seeds, problems = data.shape
    mean = float(data.mean())
    if problems < 2:
        return Estimate(mean, math.nan, 0.0)
    if seeds == 1:
        return Estimate(mean, float(data.std(ddof=1) / math.sqrt(problems)), problems - 1.0)
    problem_means, seed_means = data.mean(axis=0), data.mean(axis=1)
    ms_problem = seeds * float(((problem_means - mean) ** 2).sum()) / (problems - 1)
    ms_seed = problems * float(((seed_means - mean) ** 2).sum()) / (seeds - 1)
    residual = data - seed_means[:, None] - problem_means[None, :] + mean
    ms_error = float((residual**2).sum()) / ((seeds - 1) * (problems - 1))
    cells = seeds * problems
    if ms_seed <= ms_error:
        return Estimate(mean, math.sqrt(ms_problem / cells), problems - 1.0)
    total = ms_problem + ms_seed - ms_error
    df = total**2 / (ms_problem**2 / (problems - 1) + ms_seed**2 / (seeds - 1)
                     + ms_error**2 / ((seeds - 1) * (problems - 1)))
    if seeds == 2:  # a seed variance on one degree of freedom: Satterthwaite covered 86-90%, so take 1
        df = 1.0
    return Estimate(mean, math.sqrt(total / cells), float(df))
