"""Sweeps whose truth is known, for the statistics and verdict tests.

Each problem has an ability `a` (logit); a method at temperature T solves a sample with
probability sigmoid(a - 1.5 T) and has Distinct-2 0.1 + 0.6 T (plus per-problem noise).
Greedy is T = 0 with identical samples (all correct or all wrong). A noise run is
"temperature T_eff" with its correctness shifted by `delta` (probability points):
delta = 0 is a point on the temperature curve, > 0 above it, < 0 below it.
"""

from __future__ import annotations

from math import comb

import numpy as np

TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)


def _pass_at(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def _run(rng, ability, name, method, temperature, *, delta=0.0, samples=10, empty=0.0, greedy=False, scale=None):
    p = np.clip(1 / (1 + np.exp(-(ability - 1.5 * temperature))) + delta, 0, 1)
    per_problem = {"pass@1": {}, "pass@10": {}, "distinct_2": {}, "empty_rate": {}, "degenerate_rate": {},
                   "compile_rate": {}}
    for i, chance in enumerate(p):
        correct = (samples if rng.random() < chance else 0) if greedy else int(rng.binomial(samples, chance))
        per_problem["pass@1"][i] = correct / samples
        per_problem["pass@10"][i] = _pass_at(samples, correct, 10)
        per_problem["distinct_2"][i] = float(np.clip(0.1 + 0.6 * temperature + rng.normal(0, 0.05), 0, 1))
        per_problem["empty_rate"][i] = empty
        per_problem["degenerate_rate"][i] = empty
        per_problem["compile_rate"][i] = 1.0 - empty
    return {"name": name, "method": method, "temperature": temperature if method == "temperature" else None,
            "scale": scale, "per_problem": per_problem}


def sweep(rng, problems=164, noise=(), temperatures=TEMPERATURES, floor=False, samples=10):
    """The runs of one simulated sweep. `noise`: (name, T_eff, delta[, empty]) per noise run."""
    ability = np.full(problems, -50.0) if floor else rng.normal(0.5, 1.5, problems)
    runs = [_run(rng, ability, "greedy", "greedy", 0.0, greedy=True, samples=samples)]
    runs += [_run(rng, ability, f"temperature-{t}", "temperature", t, samples=samples) for t in temperatures]
    for name, t_eff, delta, *rest in noise:
        runs.append(_run(rng, ability, name, "noise", t_eff, delta=delta, empty=rest[0] if rest else 0.0,
                         samples=samples, scale=1.0))
    return runs
