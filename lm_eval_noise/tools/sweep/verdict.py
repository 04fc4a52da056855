"""Does a noise method replace temperature sampling? A verdict per noise run against each
temperature run of the same model and task, and a comparison at matched diversity.

Verdict (the seed experiments' criteria; thresholds from the sweep config's `verdict:`
mapping, defaults in THRESHOLDS):
- `null`: the noise produced garbage (mean empty_rate above `max_empty_rate`,
  degenerate_rate above `max_degenerate_rate`, or a compile rate more than
  `max_compile_drop` below the temperature run's), or no diversity gain (the 95%
  interval of the paired Distinct-2 difference lies at or below 0);
- `success`: pass@k matches temperature (the lower end of the paired difference's
  interval is above -`pass_margin`) while Distinct-2 is at least `diversity_gain`
  (relative) higher (the lower end of its paired difference is at least
  `diversity_gain` x the temperature run's mean);
- `partial`: anything else (diverse but less correct, or not clearly more diverse).
Runs of tasks without pass@k (chat) get no verdict.

Matched diversity: the temperature runs, ordered by temperature, trace a curve of
pass@k against Distinct-2. At the noise run's Distinct-2 the curve is interpolated
linearly (first crossing in temperature order), and the noise run's pass@k minus the
curve's is reported with a bootstrap interval over problems (problems resampled
together for every run). Outside the curve's range of Distinct-2 it is undefined.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = {
    "k": 1,
    "pass_margin": 0.05,
    "diversity_gain": 0.20,
    "max_empty_rate": 0.10,
    "max_degenerate_rate": 0.10,
    "max_compile_drop": 0.10,
}
NOISE_METHODS = ("noise", "residual")


def thresholds(config: dict | None) -> dict:
    """THRESHOLDS updated by a sweep config's `verdict:` mapping; unknown keys refused."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(THRESHOLDS))
    if unknown:
        raise ValueError(f"verdict: unknown keys {unknown}; valid: {sorted(THRESHOLDS)}")
    return {**THRESHOLDS, **{k: type(THRESHOLDS[k])(v) for k, v in config.items()}}


def is_noise_run(entry: dict) -> bool:
    return entry["method"] in NOISE_METHODS or (entry["method"] == "custom" and entry["noise_scale"] is not None)


def verdict(entry: dict, temperature: dict, limits: dict) -> dict:
    """The verdict of a noise run's leaderboard entry against a temperature run's."""
    metric = f"pass@{limits['k']}"
    if metric not in entry["metrics"] or metric not in temperature["metrics"]:
        return {"verdict": None, "reasons": [f"no {metric} in both runs"]}
    mean = lambda e, m: (e["metrics"].get(m) or {}).get("mean")  # noqa: E731
    reasons = []
    for rate in ("empty_rate", "degenerate_rate"):
        value = mean(entry, rate)
        if value is not None and value > limits[f"max_{rate}"]:
            reasons.append(f"{rate} {value:.2f} > {limits[f'max_{rate}']}")
    compiled, compiled_base = mean(entry, "compile_rate"), mean(temperature, "compile_rate")
    if compiled is not None and compiled_base is not None and compiled < compiled_base - limits["max_compile_drop"]:
        reasons.append(f"compile_rate {compiled:.2f} < {compiled_base:.2f} - {limits['max_compile_drop']}")
    against = entry["vs_temperature"][temperature["name"]]
    passed, diverse = against.get(metric), against.get("distinct_2")
    if not passed or not diverse or passed["n"] == 0 or diverse["n"] == 0:
        return {"verdict": None, "reasons": ["no paired pass@k and Distinct-2"]}
    if diverse["ci_high"] <= 0:
        reasons.append(f"no diversity gain: Distinct-2 difference CI high {diverse['ci_high']:.3f} <= 0")
    if reasons:
        return {"verdict": "null", "reasons": reasons}
    needed = limits["diversity_gain"] * mean(temperature, "distinct_2")
    keeps_correctness = passed["ci_low"] > -limits["pass_margin"]
    gains_diversity = diverse["ci_low"] >= needed
    reasons = [
        f"{metric} difference CI low {passed['ci_low']:.3f} {'>' if keeps_correctness else '<='} "
        f"-{limits['pass_margin']}",
        f"Distinct-2 difference CI low {diverse['ci_low']:.3f} {'>=' if gains_diversity else '<'} "
        f"{needed:.3f} ({limits['diversity_gain']:.0%} of temperature's)",
    ]
    return {"verdict": "success" if keeps_correctness and gains_diversity else "partial", "reasons": reasons}


def matched_diversity(run: dict[int, dict[str, float]], curve: list[dict[int, dict[str, float]]], metric: str,
                      iterations: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """pass@k of `run` minus the temperature curve's at the run's Distinct-2. `run` and
    each curve point map doc -> {metric: value, "distinct_2": value}; the curve is in
    temperature order."""
    docs = sorted(set(run).intersection(*curve)) if curve else []
    docs = [d for d in docs if all(metric in r[d] and "distinct_2" in r[d] for r in (run, *curve))]
    if len(curve) < 2 or not docs:
        return {"difference": None, "reason": "needs two temperature runs sharing problems with the noise run"}
    runs = (run, *curve)
    passes = np.array([[r[d][metric] for d in docs] for r in runs])
    diversity = np.array([[r[d]["distinct_2"] for d in docs] for r in runs])
    point = _difference(passes.mean(axis=1), diversity.mean(axis=1))
    if point is None:
        return {"difference": None, "reason": "the noise run's Distinct-2 is outside the temperature curve's range",
                "distinct_2": float(diversity[0].mean())}
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(iterations):
        pick = rng.integers(0, len(docs), size=len(docs))
        value = _difference(passes[:, pick].mean(axis=1), diversity[:, pick].mean(axis=1))
        if value is not None:
            resampled.append(value)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail]) if resampled else (None, None)
    return {"difference": point, "ci_low": None if low is None else float(low),
            "ci_high": None if high is None else float(high), "n": len(docs),
            "defined_in": len(resampled) / iterations, "distinct_2": float(diversity[0].mean())}


def _difference(passes: np.ndarray, diversity: np.ndarray) -> float | None:
    """passes[0] minus the curve (points 1.. in order) interpolated at diversity[0]."""
    target = diversity[0]
    for (x0, y0), (x1, y1) in zip(zip(diversity[1:-1], passes[1:-1]), zip(diversity[2:], passes[2:])):
        if min(x0, x1) <= target <= max(x0, x1):
            share = 0.0 if x1 == x0 else (target - x0) / (x1 - x0)
            return float(passes[0] - (y0 + share * (y1 - y0)))
    return None
