"""Does a noise method replace temperature sampling? A verdict per noise run, judged
against the temperature curve of the same model and task.

The curve: greedy decoding (its T=0 end) and every temperature run, in temperature
order, each a point (diversity, correctness), averaged over the problems all judged
runs share. A noise run is placed on the curve at its own diversity (linear
interpolation between the two temperature points around it), and the per-problem
contrast `noise - curve` (weights fixed at the means) is the effect: its mean, a
Student-t interval over problems, and one-sided t-tests (stats.py).

Axes: for code, correctness is pass@k averaged over every k all judged runs report
(k = 1, 10, ...; so a method that spreads its samples over more solutions gets credit
for it) and diversity is Distinct-2. For chat, quality is the mean per-token log-prob
of the answers under a reference model that is not the generator (a model scoring its
own answers rewards repetition loops), with loops caught by `degenerate_rate`, and
diversity is the normalised pairwise edit distance (Distinct-2 falls with answer
length at equal diversity, 0.88 at 8 words to 0.82 at 128 in a simulation; the edit
distance stays at 0.41).

Verdicts, tried in this order:
- `undetermined`: fewer than `min_problems` problems; correctness at the floor or ceiling
  (every run's mean within `floor` of 0 or 1: nothing to rank); no greedy run or no
  temperature run; chat answers scored by their own generator; the noise run more
  diverse than the hottest temperature (add hotter ones); or the minimum detectable
  effect (one-sided, at the Bonferroni level of the family and `power`) larger than
  `margin` (`chat_margin` for chat);
- `null`: collapse (mean empty_rate or degenerate_rate above its maximum, or a compile
  rate more than `max_compile_drop` below greedy's), or no diversity gain over greedy;
- `success`: above the curve: more correct than temperature at the same diversity by
  more than `margin` (one-sided t-test of contrast > margin, Holm-adjusted over the
  sweep's noise runs of that model and task). The margin also absorbs the chord's error:
  linear interpolation runs below a concave curve, so a run on the true curve sits a
  little above the chord (10% "successes" at margin 0 in the simulation);
- `null`: below the curve by more than `margin` (Holm-adjusted): less correct at the
  same diversity;
- `partial`: on the curve: equivalent to temperature within +-`margin` (two one-sided
  tests, Holm-adjusted): noise can replace temperature but gains nothing;
- `undetermined`: none of these shown (the interval straddles a boundary).

Replicates: runs with the same name (a noise run repeated over several `noise_seed`s)
are averaged per problem before anything else, so intervals over problems carry the
seed-to-seed variation.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ...errors import InputError
from . import stats

THRESHOLDS = {
    "margin": 0.05,  # pass@k difference that matters (code)
    "chat_margin": 0.10,  # reference log-prob difference that matters, nats per token (chat)
    "min_problems": 10,
    "floor": 0.02,
    "alpha": 0.05,  # family-wise, over the noise runs of one model and task
    "power": 0.8,
    "max_empty_rate": 0.10,
    "max_degenerate_rate": 0.10,
    "max_compile_drop": 0.10,
}
NOISE_METHODS = ("noise", "residual")
CODE_DIVERSITY, CHAT_DIVERSITY, CHAT_QUALITY = "distinct_2", "edit_distance", "ref_logprob_mean"
MATCH_RESAMPLES = 1000


def is_noise(method: str, scale: float | None) -> bool:
    """Noise runs: the noise methods, and custom runs that set a noise scale."""
    return method in NOISE_METHODS or (method == "custom" and scale is not None)


def is_noise_run(entry: dict) -> bool:
    """For a leaderboard entry."""
    return is_noise(entry["method"], entry["noise_scale"])


def thresholds(config: dict | None) -> dict:
    """THRESHOLDS updated by a sweep config's `verdict:` mapping; unknown keys refused."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(THRESHOLDS))
    if unknown:
        raise InputError(f"verdict: unknown keys {unknown}; valid: {sorted(THRESHOLDS)}")
    return {**THRESHOLDS, **{k: type(THRESHOLDS[k])(v) for k, v in config.items()}}


def merge_replicates(runs: list[dict]) -> list[dict]:
    """One run per name, its per-problem values the mean over the runs of that name."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[run["name"]].append(run)
    merged = []
    for group in groups.values():
        per_problem: dict[str, dict] = {}
        for metric in {m for run in group for m in run["per_problem"]}:
            values: dict = defaultdict(list)
            for run in group:
                for problem, value in run["per_problem"].get(metric, {}).items():
                    if value is not None and math.isfinite(value):
                        values[problem].append(value)
            per_problem[metric] = {problem: float(np.mean(v)) for problem, v in values.items()}
        merged.append({**group[0], "per_problem": per_problem, "replicates": len(group)})
    return merged


def _pass_metrics(run: dict) -> set[str]:
    return {m for m in run["per_problem"] if m.startswith("pass@")}


def shared_axes(runs: list[dict]) -> tuple[str, str, list[str]] | None:
    """(kind, diversity metric, correctness metrics) shared by all runs, or None."""
    passes = set.intersection(*(_pass_metrics(r) for r in runs))
    if passes:
        return "code", CODE_DIVERSITY, sorted(passes, key=lambda m: int(m[5:]))
    if all(CHAT_QUALITY in r["per_problem"] for r in runs):
        return "chat", CHAT_DIVERSITY, [CHAT_QUALITY]
    return None


def _matrix(runs: list[dict], problems: list, metrics: list[str]) -> np.ndarray:
    """runs x problems: the mean over `metrics` of each run's per-problem values."""
    return np.array([[np.mean([run["per_problem"][m][p] for m in metrics]) for p in problems] for run in runs])


def _curve_weights(target: float, diversity: np.ndarray) -> np.ndarray | None:
    """Weights over the curve's points (in temperature order) that interpolate it at
    `target` diversity: the first segment that spans it; None outside the curve."""
    for j in range(len(diversity) - 1):
        x0, x1 = diversity[j], diversity[j + 1]
        if min(x0, x1) <= target <= max(x0, x1):
            weights = np.zeros(len(diversity))
            share = 0.0 if x1 == x0 else (target - x0) / (x1 - x0)
            weights[j], weights[j + 1] = 1 - share, share
            return weights
    return None


def _defined_share(noise: np.ndarray, curve: np.ndarray, seed: int = 0) -> float:
    """Share of problem resamples in which the noise run's diversity lies on the curve."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, noise.size, size=(MATCH_RESAMPLES, noise.size))
    targets, points = noise[picks].mean(axis=1), curve[:, picks].mean(axis=2)
    return float(np.mean([_curve_weights(t, points[:, i]) is not None for i, t in enumerate(targets)]))


def judge_runs(runs: list[dict], limits: dict | None = None) -> dict[str, dict]:
    """{noise run name: judgement} for runs of ONE model and task. Each run: {"name",
    "method" ("greedy", "temperature", "noise", "residual", ...), "temperature" (float
    or None), "scale" (float or None), "per_problem": {metric: {problem_id: value}}}.
    A judgement: "verdict" (success, partial, null, undetermined), "reason", and the
    numbers behind it (see the module docstring)."""
    limits = thresholds(limits)
    runs = merge_replicates(runs)
    noise_runs = [r for r in runs if is_noise(r["method"], r.get("scale"))]
    greedy = next((r for r in runs if r["method"] == "greedy"), None)
    temperatures = sorted((r for r in runs if r["method"] == "temperature" and r.get("temperature") is not None),
                          key=lambda r: r["temperature"])
    judged = {run["name"]: _prepare(run, greedy, temperatures, limits) for run in noise_runs}
    _decide(judged, limits)
    return judged


def _undetermined(reason: str, **numbers) -> dict:
    return {"verdict": "undetermined", "reason": reason, **numbers}


def _prepare(noise: dict, greedy: dict | None, temperatures: list[dict], limits: dict) -> dict:
    """Everything short of the multiplicity-adjusted decision."""
    if greedy is None or not temperatures:
        return _undetermined("needs a greedy run and at least one temperature run: the curve runs from greedy")
    curve = [greedy, *temperatures]
    axes = shared_axes([noise, *curve])
    if axes is None:
        return _undetermined("no correctness metric (pass@k, or ref_logprob_mean for chat) shared with the curve")
    kind, diversity_metric, correctness_metrics = axes
    if kind == "chat" and any(run.get("self_scored") for run in (noise, *curve)):
        return _undetermined("chat answers scored by the generator itself: its log-prob rewards repetition "
                             "loops; set metadata reference_model to another model")
    needed = [diversity_metric, *correctness_metrics]
    shared = set.intersection(*(set(run["per_problem"].get(m, {})) for run in (noise, *curve) for m in needed))
    problems = sorted(shared, key=str)
    numbers = {"kind": kind, "problems": len(problems), "replicates": noise.get("replicates", 1),
               "correctness": " ".join(correctness_metrics), "diversity": diversity_metric,
               "margin": limits["margin"] if kind == "code" else limits["chat_margin"],
               "curve": [{"name": r["name"], "temperature": r.get("temperature") or 0.0} for r in curve]}
    if len(problems) < limits["min_problems"]:
        return _undetermined(f"{len(problems)} problems shared with the curve; a verdict needs at least "
                             f"{limits['min_problems']}", **numbers)
    correctness = _matrix([noise, *curve], problems, correctness_metrics)
    diversity = _matrix([noise, *curve], problems, [diversity_metric])
    means = correctness.mean(axis=1)
    numbers["means"] = {"noise": {"correctness": float(means[0]), "diversity": float(diversity[0].mean())},
                        "curve": [{"correctness": float(c), "diversity": float(d)}
                                  for c, d in zip(means[1:], diversity[1:].mean(axis=1))]}
    if kind == "code" and (means.max() <= limits["floor"] or means.min() >= 1 - limits["floor"]):
        edge = "floor" if means.max() <= limits["floor"] else "ceiling"
        return _undetermined(f"correctness at the {edge}: every run's mean {numbers['correctness']} is within "
                             f"{limits['floor']} of {0 if edge == 'floor' else 1}, so nothing ranks the methods",
                             **numbers)
    collapse = _collapse(noise, greedy, problems, kind, limits)
    if collapse:
        return {"verdict": "null", "reason": collapse, **numbers}
    gain = stats.paired_interval(diversity[0], diversity[1])
    numbers["diversity_gain_over_greedy"] = {"mean": gain[0], "low": gain[1], "high": gain[2]}
    if not gain[1] > 0:
        return {"verdict": "null", "reason": f"no diversity gain over greedy: {diversity_metric} difference "
                                             f"{gain[0]:+.3f} [{gain[1]:+.3f}, {gain[2]:+.3f}]", **numbers}
    weights = _curve_weights(diversity[0].mean(), diversity[1:].mean(axis=1))
    numbers["matched_defined_in"] = _defined_share(diversity[0], diversity[1:])
    if weights is None:
        hottest = temperatures[-1]
        return _undetermined(f"more diverse ({diversity[0].mean():.3f}) than every temperature run (hottest "
                             f"{hottest['name']}: {diversity[-1].mean():.3f}); add hotter temperatures", **numbers)
    contrast = correctness[0] - weights @ correctness[1:]
    mean, low, high = stats.mean_interval(contrast)
    numbers["matched"] = {"difference": mean, "low": low, "high": high,
                          "between": [r["name"] for r, w in zip(curve, weights) if w > 0]}
    numbers["_contrast"] = contrast
    return {"verdict": None, "reason": "", **numbers}


def _collapse(noise: dict, greedy: dict, problems: list, kind: str, limits: dict) -> str:
    reasons = []
    for rate in ("empty_rate", "degenerate_rate"):
        values = [noise["per_problem"].get(rate, {}).get(p) for p in problems]
        values = [v for v in values if v is not None]
        if values and np.mean(values) > limits[f"max_{rate}"]:
            reasons.append(f"{rate} {np.mean(values):.2f} > {limits[f'max_{rate}']}")
    if kind == "code" and "compile_rate" in noise["per_problem"] and "compile_rate" in greedy["per_problem"]:
        mine, base = stats.paired_values(noise["per_problem"]["compile_rate"], greedy["per_problem"]["compile_rate"])
        if mine.size and mine.mean() < base.mean() - limits["max_compile_drop"]:
            reasons.append(f"compile_rate {mine.mean():.2f} < greedy's {base.mean():.2f} "
                           f"- {limits['max_compile_drop']}")
    return "collapse: " + "; ".join(reasons) if reasons else ""


def _decide(judged: dict[str, dict], limits: dict) -> None:
    """success / partial / null / undetermined for the runs still open, with Holm's
    procedure over them for each claim."""
    open_runs = {name: j for name, j in judged.items() if j["verdict"] is None}
    if not open_runs:
        return
    alpha = limits["alpha"]
    above = stats.holm({n: stats.p_above(j["_contrast"], j["margin"]) for n, j in open_runs.items()}, alpha)
    equivalent = stats.holm({n: max(stats.p_above(j["_contrast"], -j["margin"]),
                                    stats.p_below(j["_contrast"], j["margin"])) for n, j in open_runs.items()}, alpha)
    below = stats.holm({n: stats.p_below(j["_contrast"], -j["margin"]) for n, j in open_runs.items()}, alpha)
    for name, judgement in open_runs.items():
        contrast, margin = judgement.pop("_contrast"), judgement["margin"]
        matched = judgement["matched"]
        detectable = stats.minimum_detectable_effect(contrast, alpha / len(open_runs), limits["power"])
        judgement["minimum_detectable_effect"] = detectable
        where = (f"{judgement['correctness']} vs the temperature curve at the same {judgement['diversity']}: "
                 f"{matched['difference']:+.3f} [{matched['low']:+.3f}, {matched['high']:+.3f}]")
        if detectable > margin:
            judgement.update(verdict="undetermined", reason=f"minimum detectable effect {detectable:.3f} > margin "
                             f"{margin} ({judgement['problems']} problems): {where}")
        elif above[name]:
            judgement.update(verdict="success", reason=f"above the temperature curve by more than {margin}: {where}")
        elif below[name]:
            judgement.update(verdict="null", reason=f"below the temperature curve by more than {margin}: {where}")
        elif equivalent[name]:
            judgement.update(verdict="partial", reason=f"on the temperature curve (within +-{margin}): {where}")
        else:
            judgement.update(verdict="undetermined", reason=f"inconclusive: {where}")
