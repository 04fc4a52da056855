"""The temperature curve a noise run is judged against (verdict.py): greedy (T=0) and the
temperature runs in temperature order, each a point (mean diversity, mean correctness),
read at the noise run's own diversity.

The noise run is placed between the two points around it, which must be at most
`max_temperature_gap` apart in temperature, with a third point beside them. The
contrast noise minus curve is computed per problem (and seed) under each curve model:
the chord, the parabola through the two points and the neighbour nearer in temperature,
and at a cliff (a segment dropping more than twice the margin and twice as steeply as
its neighbours) each of the two points alone. A claim must hold under every model: the
curve's shape is model error. The interpolation weights depend on the diversity means,
whose own sampling error enters through the contrast's linearisation (delta method).
"""

from __future__ import annotations

import numpy as np

from . import stats

MATCH_RESAMPLES = 1000


def _table(group: list[dict], metric: str, problems: list) -> np.ndarray:
    """seeds x problems."""
    return np.array([[run["per_problem"][metric][p] for p in problems] for run in group], dtype=float)


def _row(run: dict, metric: str, problems: list) -> np.ndarray:
    return np.array([run["per_problem"][metric][p] for p in problems], dtype=float)


class Tables:
    """A noise run's tables (seeds x problems) and the curve's rows (points x problems)
    on the shared problems, per metric."""

    def __init__(self, group, curve, problems, diversity_metric, correctness_metrics):
        self.metrics = correctness_metrics
        self.noise = {m: _table(group, m, problems) for m in correctness_metrics}
        self.curve = {m: np.array([_row(run, m, problems) for run in curve]) for m in correctness_metrics}
        self.noise_diversity = _table(group, diversity_metric, problems)
        self.curve_diversity = np.array([_row(run, diversity_metric, problems) for run in curve])
        self.temperatures = [run.get("temperature") or 0.0 for run in curve]

    def means(self) -> dict:
        primary = self.metrics[0]
        return {"noise": {"correctness": float(self.noise[primary].mean()),
                          "diversity": float(self.noise_diversity.mean())},
                "curve": [{"correctness": float(c), "diversity": float(d)} for c, d in
                          zip(self.curve[primary].mean(axis=1), self.curve_diversity.mean(axis=1))]}


def _lagrange(target: float, xs: list[float]) -> np.ndarray:
    """Weights of the polynomial through (xs, .) evaluated at `target`."""
    weights = np.ones(len(xs))
    for i, xi in enumerate(xs):
        for j, xj in enumerate(xs):
            if i != j:
                weights[i] *= (target - xj) / (xi - xj)
    return weights


def _segment(target: float, diversity: np.ndarray) -> int | None:
    """The first segment (j, j+1) of the curve, in temperature order, that spans `target`."""
    for j in range(len(diversity) - 1):
        if min(diversity[j], diversity[j + 1]) <= target <= max(diversity[j], diversity[j + 1]) \
                and diversity[j] != diversity[j + 1]:
            return j
    return None


def _curve_models(target: float, diversity: np.ndarray, temperatures: list[float]) -> list[list[int]] | None:
    """The curve points of the chord through the two points around `target` and of the
    parabola through them and the neighbour nearer in temperature (a local estimate of
    the curve's bend; a neighbour chosen by diversity can sit on a plateau)."""
    j = _segment(target, diversity)
    if j is None or len(diversity) < 3:
        return None
    share = (target - diversity[j]) / (diversity[j + 1] - diversity[j])
    here = temperatures[j] + share * (temperatures[j + 1] - temperatures[j])
    neighbours = [k for k in (j - 1, j + 2) if 0 <= k < len(diversity)
                  and len({float(diversity[i]) for i in (j, j + 1, k)}) == 3]
    if not neighbours:
        return None
    third = min(neighbours, key=lambda k: abs(temperatures[k] - here))
    return [[j, j + 1], sorted([j, j + 1, third])]


def _contrast_table(data: Tables, metric: str, points: list[int], target: float) -> np.ndarray:
    """seeds x problems: the noise run minus the curve model through `points` at the
    noise run's mean diversity, linearised in every diversity mean so that the
    interpolation weights' own error enters the variance (delta method)."""
    diversity = data.curve_diversity[points].mean(axis=1)
    correctness = data.curve[metric][points]

    def curve_mean(noise_level: float, levels: np.ndarray) -> float:
        return float(_lagrange(noise_level, list(levels)) @ correctness.mean(axis=1))

    base = curve_mean(target, diversity)
    step = 1e-6
    slope_noise = (curve_mean(target + step, diversity) - base) / step
    slopes = [(curve_mean(target, diversity + step * np.eye(len(points))[i]) - base) / step
              for i in range(len(points))]
    weights = _lagrange(target, list(diversity))
    table = data.noise[metric] - weights @ correctness
    table = table - slope_noise * (data.noise_diversity - target)
    for slope, k in zip(slopes, points):
        table = table - slope * (data.curve_diversity[k] - data.curve_diversity[k].mean())
    return table


def matched_contrasts(data: Tables, temperatures: list[dict], margin: float, limits: dict) -> dict | str:
    """Per correctness metric: the contrast with the curve at the noise run's diversity
    under each curve model (the chord, the parabola, and at a cliff (`_cliff`) each of the
    two points alone), or why the curve cannot be read there."""
    target = float(data.noise_diversity.mean())
    diversity = data.curve_diversity.mean(axis=1)
    if target > diversity.max():
        return (f"more diverse ({target:.3f}) than every temperature run (hottest {temperatures[-1]['name']}: "
                f"{diversity[-1]:.3f}); add hotter temperatures to compare at matched diversity")
    if len(diversity) < 3:
        return "the curve is greedy plus one temperature: add temperatures to judge anything between them"
    models = _curve_models(target, diversity, data.temperatures)
    if models is None:
        return f"no curve segment of three distinct points spans the noise run's {target:.3f}"
    chord = models[0]
    gap = abs(data.temperatures[chord[1]] - data.temperatures[chord[0]])
    if gap > limits["max_temperature_gap"] + 1e-9:
        names = " and ".join(f"T={data.temperatures[k]:g}" for k in chord)
        return (f"the curve around the noise run ({names}) is {gap:g} apart in temperature, more than "
                f"max_temperature_gap {limits['max_temperature_gap']}: add temperatures between them")
    label = lambda points: "/".join(f"T={data.temperatures[k]:g}" for k in points)  # noqa: E731
    results = {}
    for metric in data.metrics:
        shapes = [("chord", chord)] + [(f"parabola {label(points)}", points) for points in models[1:]]
        if _cliff(data.curve[metric].mean(axis=1), chord[0], margin):
            shapes += [(f"{label([k])} alone", [k]) for k in chord]
        estimates = {name: stats.crossed_mean(_contrast_table(data, metric, points, target))
                     for name, points in shapes}
        lows, highs = zip(*(e.interval() for e in estimates.values()))
        results[metric] = {
            "difference": estimates["chord"].mean, "low": min(lows), "high": max(highs),
            "temperature": float(_lagrange(target, list(diversity[chord])) @ [data.temperatures[k] for k in chord]),
            "curve_models": {name: e.mean for name, e in estimates.items()},
            "between": label(chord).split("/"),
            "p_above": max(e.p_above(margin) for e in estimates.values()),
            "p_below": max(e.p_below(-margin) for e in estimates.values()),
            "p_equivalent": max(max(e.p_above(-margin), e.p_below(margin)) for e in estimates.values()),
            "minimum_detectable_effect": max(e.minimum_detectable_effect(limits["alpha"], limits["power"])
                                             for e in estimates.values()),
        }
    return results


def _cliff(correctness: np.ndarray, j: int, margin: float) -> bool:
    """Whether the segment (j, j+1) drops more than twice the margin and more than twice
    as steeply as its neighbours: a bend no chord or parabola follows (the curve could lie
    anywhere between the two points)."""
    drops = np.abs(np.diff(correctness))
    neighbours = [drops[k] for k in (j - 1, j + 1) if 0 <= k < len(drops)]
    return bool(drops[j] > 2 * margin and all(drops[j] > 2 * d for d in neighbours))


def defined_share(data: Tables, seed: int = 0) -> float:
    """Share of problem resamples in which the noise run's diversity lies on the curve."""
    noise, curve = data.noise_diversity.mean(axis=0), data.curve_diversity
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, noise.size, size=(MATCH_RESAMPLES, noise.size))
    targets, points = noise[picks].mean(axis=1), curve[:, picks].mean(axis=2)
    return float(np.mean([_segment(t, points[:, i]) is not None for i, t in enumerate(targets)]))
