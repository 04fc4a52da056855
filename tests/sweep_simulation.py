"""Sweeps whose truth is known, for the statistics and verdict tests, in a world shaped
like HumanEval for a 1.5B-7B code model:

- problem difficulty is U-shaped: each problem's logit `a` ~ N(0.3, 2.5), so most
  problems are nearly always or nearly never solved;
- at temperature T a sample solves a problem with p = sigmoid(a (1 - 0.5 T) - 0.8 T):
  temperature lowers pass@1 (easy problems slip) and raises pass@10 (hard ones get
  a chance), as sampling does on real code models;
- Distinct-2 is 0.1 + 0.6 T plus per-problem noise;
- greedy is T = 0 with identical samples (all correct or all wrong).

A noise run (`Noise`) behaves like temperature `t_eff`, changed by: `delta` (probability
points added to every problem), `spread` (a per-problem logit effect, N(0, spread):
heterogeneous effects), `flatten` (pulls p toward `toward`: spreads success over problems,
pass@1 down, pass@10 up), `seed_sd` (a logit shift shared by every problem of one seed:
a seed-level random effect, over `seeds` replicates), `diversity` (added Distinct-2),
`empty` (empty and degenerate rates). `truth(noise, k)` is its expected pass@k minus the
temperature curve's at the same diversity (temperature t_eff), over the population of
problems and seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import comb

import numpy as np

TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
SAMPLES = 10


@dataclass(frozen=True)
class World:
    """How correctness (a problem's logit at temperature T) and Distinct-2 move with T;
    the defaults are the module docstring's. Tests swap in curves that bend, dip or fall
    off a cliff."""

    logit: Callable = lambda ability, t: ability * (1 - 0.5 * t) - 0.8 * t
    distinct: Callable = lambda t: 0.1 + 0.6 * t


DEFAULT = World()


@dataclass(frozen=True)
class Noise:
    name: str
    t_eff: float
    delta: float = 0.0
    spread: float = 0.0
    flatten: float = 0.0
    toward: float = 0.2
    seed_sd: float = 0.0
    seeds: int = 1
    diversity: float = 0.0
    empty: float = 0.0


def _noise(spec) -> Noise:
    """A Noise, or the short form (name, t_eff, delta[, empty])."""
    if isinstance(spec, Noise):
        return spec
    name, t_eff, delta, *rest = spec
    return Noise(name, t_eff, delta, empty=rest[0] if rest else 0.0)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def chance(ability, temperature, noise: Noise | None = None, seed_shift=0.0, problem_shift=0.0, world=DEFAULT):
    """Per-sample probability of solving each problem."""
    logit = world.logit(ability, temperature) + seed_shift + problem_shift
    p = _sigmoid(logit)
    if noise is not None:
        p = (1 - noise.flatten) * p + noise.flatten * noise.toward + noise.delta
    return np.clip(p, 0, 1)


def _pass_at(n: int, c: int, k: int) -> float:
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def _run(rng, name, method, p, distinct, *, temperature=None, samples=SAMPLES, empty=0.0, greedy=False,
         scale=None):
    per_problem = {"pass@1": {}, "pass@10": {}, "distinct_2": {}, "empty_rate": {}, "degenerate_rate": {},
                   "compile_rate": {}}
    for i, chance_i in enumerate(p):
        correct = (samples if rng.random() < chance_i else 0) if greedy else int(rng.binomial(samples, chance_i))
        per_problem["pass@1"][i] = correct / samples
        per_problem["pass@10"][i] = _pass_at(samples, correct, 10)
        per_problem["distinct_2"][i] = float(np.clip(distinct + rng.normal(0, 0.05), 0, 1))
        per_problem["empty_rate"][i] = empty
        per_problem["degenerate_rate"][i] = empty
        per_problem["compile_rate"][i] = 1.0 - empty
    return {"name": name, "method": method, "temperature": temperature, "scale": scale, "per_problem": per_problem}


def abilities(rng, problems: int, floor: bool = False) -> np.ndarray:
    return np.full(problems, -50.0) if floor else rng.normal(0.3, 2.5, problems)


def sweep(rng, problems=164, noise=(), temperatures=TEMPERATURES, floor=False, samples=SAMPLES, world=DEFAULT):
    """The runs of one simulated sweep: greedy, the temperatures, each noise run (its
    seed replicates share its name)."""
    ability = abilities(rng, problems, floor)
    runs = [_run(rng, "greedy", "greedy", chance(ability, 0.0, world=world), world.distinct(0.0), greedy=True,
                 samples=samples)]
    runs += [_run(rng, f"temperature-{t}", "temperature", chance(ability, t, world=world), world.distinct(t),
                  temperature=t, samples=samples) for t in temperatures]
    for spec in map(_noise, noise):
        problem_shift = rng.normal(0, spec.spread, problems) if spec.spread else 0.0
        for _ in range(spec.seeds):
            seed_shift = rng.normal(0, spec.seed_sd) if spec.seed_sd else 0.0
            p = chance(ability, spec.t_eff, spec, seed_shift, problem_shift, world)
            runs.append(_run(rng, spec.name, "noise", p, world.distinct(spec.t_eff) + spec.diversity,
                             samples=samples, empty=spec.empty, scale=1.0))
    return runs


def seed_coverage(rng, noise: Noise, sweeps: int) -> tuple[float, float]:
    """How often the verdict's pass@1 interval against the curve covers the truth, and how
    often a t interval over seed-averaged problems (against the temperature run at the
    noise run's t_eff) does, for a noise run repeated over seeds."""
    from lm_eval_noise.tools.sweep import stats
    from lm_eval_noise.tools.sweep.verdict import judge_runs

    expected, covered, naive = truth(noise), [], []
    for _ in range(sweeps):
        runs = sweep(rng, noise=[noise])
        matched = judge_runs(runs)[noise.name]["matched"]["pass@1"]
        covered.append(matched["low"] <= expected <= matched["high"])
        table = np.array([list(r["per_problem"]["pass@1"].values()) for r in runs if r["name"] == noise.name])
        temperature = next(r for r in runs if r["temperature"] == noise.t_eff)["per_problem"]["pass@1"]
        _, low, high = stats.mean_interval(table.mean(axis=0) - np.array(list(temperature.values())))
        naive.append(low <= expected <= high)
    return float(np.mean(covered)), float(np.mean(naive))


def expected_pass(p: np.ndarray, k: int) -> np.ndarray:
    """E[the unbiased pass@k estimate] at per-sample probability p: 1 - (1 - p)^k."""
    return 1 - (1 - p) ** k


def truth(spec, k: int = 1, draws: int = 400_000, seed: int = 12345, world=DEFAULT) -> float:
    """The noise run's expected pass@k minus temperature t_eff's, over problems and seeds."""
    spec = _noise(spec)
    rng = np.random.default_rng(seed)
    ability = abilities(rng, draws)
    seed_shift = rng.normal(0, spec.seed_sd, draws) if spec.seed_sd else 0.0
    problem_shift = rng.normal(0, spec.spread, draws) if spec.spread else 0.0
    noisy = chance(ability, spec.t_eff, spec, seed_shift, problem_shift, world)
    plain = chance(ability, spec.t_eff, world=world)
    return float(expected_pass(noisy, k).mean() - expected_pass(plain, k).mean())


WORDS = ("the a model answer data list value function because however therefore first then result code "
         "sort python use return number string example simple each new step").split()


def _answer(rng, length: int) -> list[str]:
    return [WORDS[i] for i in rng.integers(0, len(WORDS), length)]


STUBS = ("Sure!", "Okay.", "Yes.", "I can help with that.", "Certainly.", "Good question.")


def chat_sweep(rng, problems=100, temperatures=(0.3, 0.7, 1.0), samples=5, padded_noise=True, stubs=0):
    """A chat sweep whose answers are text, scored by the package's own metric functions.
    Temperature T rewrites each word of greedy's answer with probability 0.6 T and lowers
    the reference log-prob by 0.8 T nats per token; the noise run ("noise-padded") is
    greedy's answer with 0-30 random words appended (a length-only change) at greedy's
    quality, or with `stubs` of its samples replaced by a short fluent stub (an early
    stop)."""
    from lm_eval_noise.metrics import edit_distance, edit_distance_matched

    greedy_answers = [_answer(rng, int(rng.integers(60, 120))) for _ in range(problems)]
    quality = rng.normal(-1.5, 0.3, problems)

    def run(name, method, temperature, answers_of, lowered):
        per_problem = {"ref_logprob_mean": {}, "edit_distance": {}, "edit_distance_matched": {}, "empty_rate": {},
                       "degenerate_rate": {}}
        for p in range(problems):
            answers = [" ".join(answers_of(p)) for _ in range(samples)]
            per_problem["ref_logprob_mean"][p] = float(quality[p] - lowered + rng.normal(0, 0.05))
            per_problem["edit_distance"][p] = edit_distance(answers)
            per_problem["edit_distance_matched"][p] = edit_distance_matched(answers)
            per_problem["empty_rate"][p] = per_problem["degenerate_rate"][p] = 0.0
        return {"name": name, "method": method, "temperature": temperature,
                "scale": 1.0 if method == "noise" else None, "per_problem": per_problem, "self_scored": False}

    def rewritten(p, t):
        return [WORDS[rng.integers(len(WORDS))] if rng.random() < 0.6 * t else w for w in greedy_answers[p]]

    runs = [run("greedy", "greedy", None, lambda p: greedy_answers[p], 0.0)]
    runs += [run(f"temperature-{t}", "temperature", t, lambda p, t=t: rewritten(p, t), 0.8 * t)
             for t in temperatures]
    if padded_noise:
        runs.append(run("noise-padded", "noise", None,
                         lambda p: greedy_answers[p] + _answer(rng, int(rng.integers(0, 31))), 0.0))
        if stubs:  # the first `stubs` of each problem's samples stop early
            stubbed = runs[-1]["per_problem"]
            for p in range(problems):
                answers = [" ".join(greedy_answers[p])] * (samples - stubs) + list(STUBS[:stubs])
                stubbed["edit_distance"][p] = edit_distance(answers)
                stubbed["edit_distance_matched"][p] = edit_distance_matched(answers)
    return runs
