"""Choose on dev, confirm on held-out problems: the sweep's optional confirmation
(verdict threshold `dev_share`, 0 = off).

A sweep that tries many noise settings and reports its best one overstates it (the
winner's curse): Holm controls false claims across the settings, but the effect of the
one picked for the paper is biased upwards. With `dev_share` > 0, the problems of each
model and task are split by a hash of their id (the same split on every run and
machine) into a dev share and a held-out test share. Every noise setting is judged on
dev; the best (a success first, then the largest pass@1 difference from the curve) is
judged alone on test, where nothing was selected, against the same temperature runs.

Equal tuning budgets: the report states how many noise settings the choice was made
from and how many sampling settings (temperature, nucleus, min-p and top-k runs) there
were; a sampling grid smaller than the noise grid is named as unequal, since sampling
tuned as widely (temperature x top-p / min-p) could do better than its curve shows.
"""

from __future__ import annotations

import hashlib
import math

from .verdict import is_noise, judge_runs

SAMPLING_METHODS = ("temperature", "nucleus", "min_p", "top_k")


def is_dev(problem, share: float) -> bool:
    """Whether `problem` (an id) falls in the dev share: a hash, not the order, decides."""
    digest = hashlib.sha256(str(problem).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _restricted(runs: list[dict], dev: bool, share: float) -> list[dict]:
    return [{**run, "per_problem": {metric: {p: v for p, v in values.items() if is_dev(p, share) == dev}
                                    for metric, values in run["per_problem"].items()}} for run in runs]


def _rank(judgement: dict) -> tuple:
    matched = judgement.get("matched", {}).get(judgement.get("primary"))
    return judgement["verdict"] == "success", matched["difference"] if matched else -math.inf


def budgets(runs: list[dict]) -> dict:
    noise = {r["name"] for r in runs if is_noise(r["method"], r.get("scale"))}
    sampling = {r["name"] for r in runs if r["method"] in SAMPLING_METHODS}
    return {"noise_settings": len(noise), "sampling_settings": len(sampling),
            "equal": len(sampling) >= len(noise)}


def confirm(runs: list[dict], limits: dict) -> dict:
    """For runs of ONE model and task (verdict.judge_runs's input): the noise setting
    chosen on dev and its verdict on the held-out problems."""
    share = limits["dev_share"]
    budget = budgets(runs)
    dev = judge_runs(_restricted(runs, True, share), limits)
    candidates = {name: j for name, j in dev.items() if j["verdict"] != "null"}
    if not candidates:
        return {"selected": None, "budget": budget,
                "reason": "no noise setting passed on dev: each was null (collapse, no diversity gain or below "
                          "the curve)" if dev else "no noise run"}
    chosen = max(sorted(candidates), key=lambda name: _rank(candidates[name]))
    held_out = [r for r in runs if r["name"] == chosen or not is_noise(r["method"], r.get("scale"))]
    test = judge_runs(_restricted(held_out, False, share), limits)[chosen]
    return {"selected": chosen, "budget": budget, "dev": _summary(dev[chosen]), "test": _summary(test),
            "chosen_from": len(dev)}


def _summary(judgement: dict) -> dict:
    matched = judgement.get("matched", {}).get(judgement.get("primary"))
    return {"verdict": judgement["verdict"], "reason": judgement["reason"], "problems": judgement.get("problems", 0),
            "difference": None if not matched else [matched["difference"], matched["low"], matched["high"]]}
