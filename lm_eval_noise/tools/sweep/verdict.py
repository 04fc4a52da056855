"""Does a noise method replace temperature sampling? A verdict per noise run, judged
against the temperature runs of the same model and task.

Axes. Code: correctness is pass@k, pass@1 the primary endpoint and every other k the
runs share judged on its own (never a mean over k); diversity is Distinct-2. Chat:
quality is the mean per-token log-prob of the answers under a reference model whose
weights are not the generator's (a model scoring its own answers rewards repetition
loops); diversity is `edit_distance_matched`, the pairwise edit distance at matched
length (each pair cut to the shorter, pooled over pairs), so appending words to identical
answers adds none. A noise run whose answers are less than half as long as greedy's
(`min_length_ratio`) counts as collapse: early stops are not diversity.

Verdicts, in this order:
1. collapse first, whatever else is missing: a mean empty_rate or degenerate_rate above
   its maximum, or a compile rate more than `max_compile_drop` below greedy's -> `null`;
2. `undetermined` when nothing can be judged: no greedy or temperature run, no shared
   metric, chat scored by its own generator, fewer than `min_problems` problems, every
   run at the correctness floor or ceiling;
3. `null` without a diversity gain over greedy;
4. the claims, each a one-sided test, Holm-adjusted over every (noise run, k) of the
   model and task that makes the same kind of claim:
   - below (-> `null`): some k below the temperature curve at matched diversity by more
     than `margin`;
   - above (-> `success`, naming the criterion that held): pass@1 above the curve by
     more than `margin`; or, for a run more diverse than every temperature run, pass@1
     above the most diverse one by more than `margin` where the curve is shown to fall
     at that end (so hotter temperatures would be no more correct);
   - on the curve (-> `partial`): pass@1 within +-`margin` of the curve (two one-sided
     tests), or beyond the curve within `margin` of its most diverse run or better;
   - none of these: `undetermined`, with the minimum detectable effect when the run had
     too little data to settle it.
The seed study's own criterion (every pass@k non-inferior within `margin` to a
temperature run, with Distinct-2 at least `diversity_gain`, 20%, higher) is judged as
stated, Holm-adjusted in a family of its own, and reported beside the verdict
(`seed_criterion`), not as it: temperature itself meets it against a cooler
temperature wherever the curve is flatter than the margin (a run identical to T=0.8
met it against T=0.6 in 18% of simulated sweeps), so it cannot show that noise
does better than temperature.
The minimum detectable effect is reported beside every verdict; it never vetoes an
observed interval that settles the question.

The curve (curve.py): greedy (T=0) and the temperature runs in temperature order, read
at the noise run's diversity between two points at most `max_temperature_gap` apart;
every claim must hold under each curve model there (chord, parabola, each end at a
cliff). A curve of greedy plus one temperature judges nothing between them.

Seeds: runs sharing a name are replicates over `noise_seeds`; their per-problem values
form a seeds x problems table and every estimate uses `stats.crossed_mean` (seeds and
problems both random), so intervals carry seed-to-seed variation. One seed: problems
only, and the verdict says so.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from . import stats
from .curve import Tables, defined_share, matched_contrasts

THRESHOLDS = {
    "margin": 0.05,  # pass@k difference that matters (code)
    "chat_margin": 0.10,  # reference log-prob difference that matters, nats per token (chat)
    "diversity_gain": 0.20,  # the seed study's criterion: diversity at least 20% above a temperature run's
    "max_temperature_gap": 0.4,  # the curve points around a noise run, at most this far apart in temperature
    "min_problems": 10,
    "floor": 0.02,
    "alpha": 0.05,  # family-wise, over the claims of the noise runs of one model and task
    "power": 0.8,
    "max_empty_rate": 0.10,
    "max_degenerate_rate": 0.10,
    "max_compile_drop": 0.10,
    "min_length_ratio": 0.5,  # answers (response_length) shorter than this share of greedy's: collapse
    "dev_share": 0.0,  # > 0: choose the best noise setting on this share of problems, confirm it on the rest
}
NOISE_METHODS = ("noise", "residual")
CODE_DIVERSITY, CHAT_DIVERSITY, CHAT_QUALITY = "distinct_2", "edit_distance_matched", "ref_logprob_mean"


def is_noise(method: str, scale: float | None) -> bool:
    """Noise runs: the noise methods, and custom runs that set a noise scale."""
    return method in NOISE_METHODS or (method == "custom" and scale is not None)


def thresholds(config: dict | None) -> dict:
    """THRESHOLDS updated by a sweep config's `verdict:` mapping; unknown keys refused."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(THRESHOLDS))
    if unknown:
        raise InputError(f"verdict: unknown keys {unknown}; valid: {sorted(THRESHOLDS)}")
    limits = {**THRESHOLDS, **{k: type(THRESHOLDS[k])(v) for k, v in config.items()}}
    if not 0 <= limits["dev_share"] < 1:
        raise InputError(f"verdict: dev_share is a share of the problems in [0, 1), not {limits['dev_share']}")
    return limits


def group_replicates(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs by name: a noise run repeated over seeds is one group of replicates."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[run["name"]].append(run)
    return dict(groups)


def merge_replicates(runs: list[dict]) -> list[dict]:
    """One run per name, its per-problem values the mean over the runs of that name
    (for plots and curve points; the tests keep the seeds x problems table)."""
    merged = []
    for group in group_replicates(runs).values():
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
    return {m for m in run["per_problem"] if re.fullmatch(r"pass@\d+", m)}


def shared_axes(runs: list[dict]) -> tuple[str, str, list[str]] | None:
    """(kind, diversity metric, correctness metrics, the primary first) shared by all
    runs, or None."""
    passes = set.intersection(*(_pass_metrics(r) for r in runs))
    if passes and all(CODE_DIVERSITY in r["per_problem"] for r in runs):
        return "code", CODE_DIVERSITY, sorted(passes, key=lambda m: int(m[5:]))
    if all(CHAT_QUALITY in r["per_problem"] and CHAT_DIVERSITY in r["per_problem"] for r in runs):
        return "chat", CHAT_DIVERSITY, [CHAT_QUALITY]
    return None


@dataclass(frozen=True)
class Claim:
    """One test behind a verdict: its kind (above, below, equivalent), the run it is
    about, what it says, and its p-value (before Holm)."""

    kind: str
    run: str
    label: str
    p: float
    against: str = ""  # the temperature run of a claim against one


def judge_runs(runs: list[dict], limits: dict | None = None) -> dict[str, dict]:
    """{noise run name: judgement} for runs of ONE model and task. Each run: {"name",
    "method" ("greedy", "temperature", "noise", "residual", ...), "temperature" (float
    or None), "scale" (float or None), "per_problem": {metric: {problem_id: value}}};
    optional "self_scored" (chat). Runs sharing a name are seed replicates. A
    judgement: "verdict" (success, partial, null, undetermined), "reason", "problems",
    "criteria" (the claims that held), and the numbers behind them (module docstring)."""
    limits = thresholds(limits)
    runs = _checked(runs)
    groups = group_replicates(runs)
    curve_runs = {r["name"]: r for r in merge_replicates(runs) if r["method"] in ("greedy", "temperature")}
    greedy = next((r for r in curve_runs.values() if r["method"] == "greedy"), None)
    temperatures = sorted((r for r in curve_runs.values() if r["method"] == "temperature"
                           and r.get("temperature") is not None), key=lambda r: r["temperature"])
    judged, claims = {}, []
    for name, group in groups.items():
        if is_noise(group[0]["method"], group[0].get("scale")):
            judged[name], run_claims = _prepare(group, greedy, temperatures, limits)
            claims += run_claims
    _decide(judged, claims, limits)
    return judged


def _checked(runs: list[dict]) -> list[dict]:
    """Runs from any source, refused in one line where they cannot be judged; problem ids
    as strings (ids read back from JSON are strings: 3 and "3" are one problem)."""
    methods: dict[str, set] = defaultdict(set)
    checked = []
    for run in runs:
        if not isinstance(run, dict) or not isinstance(run.get("per_problem"), dict) or "name" not in run:
            raise InputError("judge_runs: each run is a mapping with a name, a method and per_problem values")
        temperature = run.get("temperature")
        if run.get("method") == "temperature" and (isinstance(temperature, bool)
                                                   or not isinstance(temperature, (int, float))):
            raise InputError(f"judge_runs: temperature run {run['name']!r} has temperature {temperature!r}, "
                             "not a number")
        methods[run["name"]].add(run.get("method"))
        checked.append({**run, "per_problem": {metric: {str(p): v for p, v in values.items()}
                                               for metric, values in run["per_problem"].items()}})
    mixed = {name: sorted(map(str, found)) for name, found in methods.items() if len(found) > 1}
    if mixed:
        name, found = next(iter(mixed.items()))
        raise InputError(f"judge_runs: the name {name!r} is used by runs of methods {', '.join(found)}; runs "
                         "sharing a name are seed replicates of one method")
    return checked


def _undetermined(reason: str, **numbers) -> tuple[dict, list]:
    return {"verdict": "undetermined", "reason": reason, **numbers}, []


def _shared_problems(group: list[dict], others: list[dict], metrics: list[str]) -> list:
    sets = [{p for p, v in run["per_problem"].get(m, {}).items() if v is not None and math.isfinite(v)}
            for run in (*group, *others) for m in metrics]
    return sorted(set.intersection(*sets), key=str) if sets else []


def _prepare(group: list[dict], greedy: dict | None, temperatures: list[dict], limits: dict) -> tuple[dict, list]:
    """The judgement short of the multiplicity-adjusted decision, and the run's claims."""
    own = sorted({p for run in group for values in run["per_problem"].values() for p in values}, key=str)
    numbers = {"problems": len(own), "replicates": len(group)}
    collapse = _collapse(group, greedy, own, limits)
    if collapse:
        return {"verdict": "null", "reason": f"{collapse} ({len(own)} problems)", **numbers}, []
    if greedy is None or not temperatures:
        return _undetermined("needs a greedy run and at least one temperature run: the curve runs from greedy",
                             **numbers)
    curve = [greedy, *temperatures]
    axes = shared_axes([*group, *curve])
    if axes is None:
        return _undetermined("no correctness and diversity metrics (pass@k and distinct_2, or ref_logprob_mean "
                             "and edit_distance_matched for chat) shared with the temperature runs", **numbers)
    kind, diversity_metric, correctness_metrics = axes
    if kind == "chat" and any(run.get("self_scored") for run in (*group, *curve)):
        return _undetermined("chat answers scored by the generator's own weights: its log-prob rewards "
                             "repetition loops; set metadata reference_model to another model", **numbers)
    problems = _shared_problems(group, curve, [diversity_metric, *correctness_metrics])
    margin = limits["margin"] if kind == "code" else limits["chat_margin"]
    numbers.update({"kind": kind, "problems": len(problems), "correctness": " ".join(correctness_metrics),
                    "primary": correctness_metrics[0], "diversity": diversity_metric, "margin": margin,
                    "curve": [{"name": r["name"], "temperature": r.get("temperature") or 0.0} for r in curve]})
    if len(problems) < limits["min_problems"]:
        return _undetermined(f"{len(problems)} problems shared with the temperature runs; a verdict needs at "
                             f"least {limits['min_problems']}", **numbers)
    data = Tables(group, curve, problems, diversity_metric, correctness_metrics)
    numbers["means"] = data.means()
    primary_means = [data.noise[correctness_metrics[0]].mean(), *data.curve[correctness_metrics[0]].mean(axis=1)]
    if kind == "code" and (max(primary_means) <= limits["floor"] or min(primary_means) >= 1 - limits["floor"]):
        edge = "floor" if max(primary_means) <= limits["floor"] else "ceiling"
        return _undetermined(f"correctness at the {edge}: every run's mean {correctness_metrics[0]} is within "
                             f"{limits['floor']} of {0 if edge == 'floor' else 1}, so nothing ranks the methods",
                             **numbers)
    gain = stats.crossed_mean(data.noise_diversity - data.curve_diversity[0])
    low, high = gain.interval()
    numbers["diversity_gain_over_greedy"] = {"mean": gain.mean, "low": low, "high": high}
    if not gain.p_above(0) <= limits["alpha"]:
        return {"verdict": "null", "reason": f"no diversity gain over greedy: {diversity_metric} difference "
                                             f"{gain.mean:+.3f} [{low:+.3f}, {high:+.3f}]", **numbers}, []
    name = group[0]["name"]
    claims = []
    matched = matched_contrasts(data, temperatures, margin, limits)
    if isinstance(matched, str):
        numbers["curve_undefined"] = matched
    else:
        numbers["matched"] = matched
        for metric, contrast in matched.items():
            primary = metric == correctness_metrics[0]
            claims.append(Claim("below", name, f"{metric} below the temperature curve by more than {margin}",
                                contrast["p_below"]))
            if primary:
                claims.append(Claim("above", name, f"{metric} above the temperature curve by more than {margin}",
                                    contrast["p_above"]))
                claims.append(Claim("equivalent", name, f"{metric} on the temperature curve (within +-{margin}): "
                                    "can replace temperature, gains nothing", contrast["p_equivalent"]))
        numbers["minimum_detectable_effect"] = matched[correctness_metrics[0]]["minimum_detectable_effect"]
    numbers["matched_defined_in"] = defined_share(data)
    against = {index: _against(data, index, margin, limits["diversity_gain"])
               for index in range(1, len(temperatures) + 1)}  # curve points after greedy
    numbers["against_temperatures"] = {t["name"]: _intervals(against[index])
                                       for index, t in enumerate(temperatures, start=1)}
    claims += _point_claims(name, data, temperatures, against, margin, limits)
    return {"verdict": None, "reason": "", **numbers}, claims


def _against(data: Tables, index: int, margin: float, diversity_gain: float) -> dict:
    """Paired comparison with one temperature run (curve point `index`): the seed study's
    criterion's p-value and the differences in each correctness metric and in diversity."""
    correct = {m: stats.crossed_mean(data.noise[m] - data.curve[m][index]) for m in data.metrics}
    diverse = stats.crossed_mean(data.noise_diversity - data.curve_diversity[index])
    diverse_by_gain = stats.crossed_mean(data.noise_diversity - (1 + diversity_gain) * data.curve_diversity[index])
    return {"seed_criterion": max([diverse_by_gain.p_above(0)] + [c.p_above(-margin) for c in correct.values()]),
            "correct": correct, "diverse": diverse}


def _intervals(pair: dict) -> dict:
    """[mean, low, high] of each difference of an `_against` comparison, for the record."""
    estimates = {**pair["correct"], "diversity": pair["diverse"]}
    return {name: [e.mean, *e.interval()] for name, e in estimates.items()}


def _point_claims(name: str, data: Tables, temperatures: list[dict], against: dict, margin: float,
                  limits: dict) -> list[Claim]:
    """Claims against single temperature runs, each chosen by mean diversity alone:
    - the seed study's criterion, against the most diverse run whose diversity x (1 + gain)
      the noise run's reaches (where it is easiest to meet);
    - beyond the curve (the noise run more diverse than every point): against the most
      diverse temperature run, pass@1 above it by more than the margin (`success`) or
      within the margin or better (`partial`), with diversity above every point's; only
      where the curve is shown to fall at that end (a one-sided test at `alpha` between
      its two most diverse points), so that temperature hotter still would be no more
      correct (dominating any other run proves nothing: a run on the curve
      dominates every run hotter and less correct than it).
    `against`: `_against` for each temperature run, by curve point."""
    gain, alpha = limits["diversity_gain"], limits["alpha"]
    mine = float(data.noise_diversity.mean())
    levels = data.curve_diversity.mean(axis=1)
    primary, claims = data.metrics[0], []
    reachable = [i for i in range(1, len(levels)) if levels[i] * (1 + gain) <= mine]
    if reachable:
        index = max(reachable, key=lambda i: levels[i])
        claims.append(Claim("seed", name, f"the seed study's criterion against {temperatures[index - 1]['name']}: "
                            f"{' '.join(data.metrics)} within {margin} or better and diversity at least "
                            f"{gain:.0%} higher", against[index]["seed_criterion"],
                            temperatures[index - 1]["name"]))
    order = np.argsort(levels)
    top, runner_up = int(order[-1]), int(order[-2]) if len(order) > 1 else None
    falls = runner_up is not None and stats.crossed_mean(
        data.curve[primary][runner_up] - data.curve[primary][top]).p_above(0) <= alpha  # shown, not just seen
    if mine > levels[top] and top > 0 and falls:
        other = temperatures[top - 1]["name"]
        above_all = max(stats.crossed_mean(data.noise_diversity - data.curve_diversity[k]).p_above(0)
                        for k in range(len(levels)))
        versus = against[top]["correct"][primary]
        claims += [
            Claim("above", name, f"more diverse than every temperature run and {primary} above {other}, the most "
                  f"diverse, by more than {margin}", max(versus.p_above(margin), above_all), other),
            Claim("equivalent", name, f"more diverse than every temperature run and {primary} within {margin} of "
                  f"{other}, the most diverse, or better: can replace temperature (the curve falls at that end)",
                  max(versus.p_above(-margin), above_all), other),
        ]
    return claims


def _collapse(group: list[dict], greedy: dict | None, problems: list, limits: dict) -> str:
    """Collapse of the noise run, over every problem it has (checked before anything else)."""
    reasons = []
    for rate in ("empty_rate", "degenerate_rate"):
        values = [v for run in group for v in run["per_problem"].get(rate, {}).values()
                  if v is not None and math.isfinite(v)]
        if values and np.mean(values) > limits[f"max_{rate}"]:
            reasons.append(f"{rate} {np.mean(values):.2f} > {limits[f'max_{rate}']}")
    compiled = _beside_greedy(group, greedy, "compile_rate")
    if compiled and compiled[0] < compiled[1] - limits["max_compile_drop"]:
        reasons.append(f"compile_rate {compiled[0]:.2f} < greedy's {compiled[1]:.2f} - {limits['max_compile_drop']}")
    length = _beside_greedy(group, greedy, "response_length")
    if length and length[0] < limits["min_length_ratio"] * length[1]:
        reasons.append(f"response_length {length[0]:.1f} < {limits['min_length_ratio']} x greedy's "
                       f"{length[1]:.1f}: early stops are not diversity")
    return "collapse: " + "; ".join(reasons) if reasons else ""


def _beside_greedy(group: list[dict], greedy: dict | None, metric: str) -> tuple[float, float] | None:
    """(the noise run's mean, greedy's) of `metric` over the problems both have; None
    where either lacks it."""
    if greedy is None or metric not in greedy["per_problem"] or any(metric not in r["per_problem"] for r in group):
        return None
    mine, base = stats.paired_values(merge_replicates(group)[0]["per_problem"][metric], greedy["per_problem"][metric])
    return (float(mine.mean()), float(base.mean())) if mine.size else None


def _decide(judged: dict[str, dict], claims: list[Claim], limits: dict) -> None:
    """success / partial / null / undetermined for the runs still open: Holm's procedure
    over each kind of claim, across every run and k (or temperature run) at once."""
    held = set()
    for kind in ("above", "below", "equivalent", "seed"):
        family = [c for c in claims if c.kind == kind]
        rejected = stats.holm({str(i): c.p for i, c in enumerate(family)}, limits["alpha"])
        held |= {c for i, c in enumerate(family) if rejected[str(i)]}
    for name, judgement in judged.items():
        tried = [c for c in claims if c.run == name and c.kind == "seed"]
        judgement["seed_criterion"] = ({"claim": tried[0].label, "against": tried[0].against, "met": tried[0] in held}
                                       if tried else None)
        if judgement["verdict"] is not None:
            judgement.setdefault("criteria", [])
            continue
        mine = {kind: sorted(c.label for c in held if c.run == name and c.kind == kind)
                for kind in ("above", "below", "equivalent")}
        judgement["criteria"] = mine["below"] or mine["above"] or mine["equivalent"]
        where = _where(judgement)
        if mine["below"]:
            judgement.update(verdict="null", reason="; ".join(mine["below"]) + where)
        elif mine["above"]:
            judgement.update(verdict="success", reason="; ".join(mine["above"]) + where)
        elif mine["equivalent"]:
            judgement.update(verdict="partial", reason=f"{mine['equivalent'][0]}{where}{_power_note(judgement)}")
        else:
            why = judgement.get("curve_undefined") or "inconclusive"
            judgement.update(verdict="undetermined", reason=f"{why}{where}{_significance(judgement)}"
                             f"{_power_note(judgement)}")


def _where(judgement: dict) -> str:
    """The primary contrast with the curve, its problems and seeds, for a reason line."""
    seeds = judgement["replicates"]
    rests = f"{judgement['problems']} problems, " + (f"{seeds} seeds" if seeds > 1 else
                                                     "1 seed: seed-to-seed variation unmeasured")
    matched = judgement.get("matched", {}).get(judgement.get("primary"))
    if not matched:
        return f" ({rests})"
    return (f" ({judgement['primary']} vs the curve at the same {judgement['diversity']}, that of "
            f"T={matched['temperature']:.2f}: {matched['difference']:+.3f} [{matched['low']:+.3f}, "
            f"{matched['high']:+.3f}]; {rests})")


def _significance(judgement: dict) -> str:
    """An inconclusive verdict whose interval still excludes zero says so."""
    matched = judgement.get("matched", {}).get(judgement.get("primary"))
    if not matched or matched["low"] <= 0 <= matched["high"]:
        return ""
    side = "above" if matched["low"] > 0 else "below"
    return f"; {side} the curve, but not by more than the margin {judgement['margin']}"


def _power_note(judgement: dict) -> str:
    effect = judgement.get("minimum_detectable_effect")
    if effect is None or effect <= judgement["margin"]:
        return ""
    return (f"; minimum detectable effect {effect:.3f} > margin {judgement['margin']}: too few problems or "
            "seeds to settle a difference of that size")
