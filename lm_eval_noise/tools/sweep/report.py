"""From finished sweep runs to one leaderboard JSON and a markdown table (plots: plots.py).

Every headline metric gets its mean over problems (prompts) with a 95% percentile
bootstrap confidence interval (problems resampled with replacement; problems where a
metric is undefined, e.g. diversity among correct samples where fewer than two passed,
left out), and a paired comparison with the baseline method: the mean per-problem
difference (run - baseline) over the problems both have, with its own bootstrap
interval. A metric defined for no problem is `null` in the JSON (strict JSON: never
NaN) and "undefined" in the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .plots import write_plots
from .verdict import is_noise_run, matched_diversity, verdict

HEADLINE = (
    "pass@1", "pass@10", "compile_rate", "empty_rate", "degenerate_rate", "distinct_2", "self_bleu",
    "pairwise_bleu", "edit_distance", "ref_logprob_mean", "response_length",
)
BOOTSTRAP_ITERATIONS = 2000
LEVEL = 0.95


def bootstrap_mean_ci(values, iterations: int = BOOTSTRAP_ITERATIONS, seed: int = 0, level: float = LEVEL):
    """(mean, low, high, n) of the non-NaN values; NaNs throughout when there are none."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(iterations, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(data.mean()), float(low), float(high), int(data.size)


def paired_difference(run: dict, baseline: dict, **options):
    """bootstrap_mean_ci of run[doc] - baseline[doc] over docs where both are defined."""
    common = [doc for doc in run if doc in baseline and not math.isnan(run[doc]) and not math.isnan(baseline[doc])]
    return bootstrap_mean_ci([run[doc] - baseline[doc] for doc in common], **options)


def per_doc_metrics(run_dir: Path) -> dict[str, dict[int, float]]:
    """{metric: {doc_id: value}} from a run's samples files (per-problem values)."""
    values: dict[str, dict[int, float]] = {}
    for path in sorted(run_dir.rglob("samples_*.jsonl")):
        for line in path.open(encoding="utf-8"):
            if not line.strip():
                continue
            sample = json.loads(line)
            for metric, value in sample.items():
                if _is_headline(metric) and isinstance(value, (int, float)) and not math.isnan(value):
                    values.setdefault(metric, {})[sample["doc_id"]] = float(value)
    return values


def _is_headline(metric: str) -> bool:
    return metric in HEADLINE or metric.startswith("pass@")


def _headline_order(metrics) -> list[str]:
    """pass@k by k, then the rest of HEADLINE in its order."""
    passes = sorted((m for m in metrics if m.startswith("pass@")), key=lambda m: int(m[5:]))
    return passes + [m for m in HEADLINE if m in metrics and not m.startswith("pass@")]


def _interval(mean, low, high, n) -> dict:
    if n == 0:  # undefined: null in strict JSON, not NaN
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}


def build_leaderboard(sweep, outcomes) -> dict:
    finished = [o for o in outcomes if o.status in ("done", "skipped")]
    per_doc = {o.run.run_id: per_doc_metrics(o.directory) for o in finished}
    entries = []
    for outcome in finished:
        run = outcome.run
        metrics = per_doc[run.run_id]
        entry = {
            "name": run.name, "run_id": run.run_id, "model": run.model, "task": run.task, "method": run.method,
            "noise_scale": run.noise_scale, "model_args": run.model_args, "gen_kwargs": run.gen_kwargs,
            "samples": sweep.samples, "limit": sweep.limit, "directory": str(outcome.directory),
            "metrics": {m: _interval(*bootstrap_mean_ci(list(v.values()))) for m, v in metrics.items()},
            "vs_baseline": {},
        }
        base = next((o for o in finished if o.run.name == sweep.baseline and o.run.model == run.model
                     and o.run.task == run.task), None)
        if base is not None and base.run.run_id != run.run_id:
            base_metrics = per_doc[base.run.run_id]
            entry["vs_baseline"] = {
                m: _interval(*paired_difference(v, base_metrics[m])) for m, v in metrics.items() if m in base_metrics
            }
        entries.append(entry)
    _judge_noise_runs(entries, per_doc, sweep.verdict)
    failed = [{"name": o.run.name, "run_id": o.run.run_id, "detail": o.detail}
              for o in outcomes if o.status == "failed"]
    return {"sweep": sweep.name, "baseline": sweep.baseline, "confidence": LEVEL, "verdict_thresholds": sweep.verdict,
            "bootstrap_iterations": BOOTSTRAP_ITERATIONS, "runs": entries, "failed": failed}


def temperature_curve(entries: list[dict], like: dict) -> list[dict]:
    """The temperature runs of `like`'s model and task, in temperature order."""
    runs = [e for e in entries if e["method"] == "temperature" and e["model"] == like["model"]
            and e["task"] == like["task"]]
    return sorted(runs, key=lambda e: e["gen_kwargs"].get("temperature", 0))


def _judge_noise_runs(entries: list[dict], per_doc: dict, limits: dict) -> None:
    """Verdicts and the matched-diversity comparison for every noise run (verdict.py)."""
    metric = f"pass@{limits['k']}"
    by_doc = {run_id: _by_doc(values) for run_id, values in per_doc.items()}
    for entry in filter(is_noise_run, entries):
        curve = temperature_curve(entries, entry)
        mine = per_doc[entry["run_id"]]
        entry["vs_temperature"] = {
            t["name"]: {m: _interval(*paired_difference(mine[m], per_doc[t["run_id"]][m]))
                        for m in (metric, "distinct_2") if m in mine and m in per_doc[t["run_id"]]}
            for t in curve
        }
        entry["verdict"] = {t["name"]: verdict(entry, t, limits) for t in curve}
        entry["matched_diversity"] = matched_diversity(by_doc[entry["run_id"]], [by_doc[t["run_id"]] for t in curve],
                                                       metric)


def _by_doc(values: dict[str, dict[int, float]]) -> dict[int, dict[str, float]]:
    docs: dict[int, dict[str, float]] = {}
    for metric, per_doc_values in values.items():
        for doc, value in per_doc_values.items():
            docs.setdefault(doc, {})[metric] = value
    return docs


def _cell(interval: dict | None) -> str:
    if not interval:
        return "\u2013"  # an en dash: no interval
    if interval["n"] == 0:
        return "undefined"
    return f"{interval['mean']:.3f} [{interval['ci_low']:.3f}, {interval['ci_high']:.3f}]"


def markdown_table(board: dict) -> str:
    metrics = _headline_order({m for e in board["runs"] for m in e["metrics"]})
    lines = [f"# Sweep `{board['sweep']}`", "",
             f"Mean over problems with {board['confidence']:.0%} bootstrap intervals "
             f"({board['bootstrap_iterations']} resamples)."]
    for title, key in (("Metrics", "metrics"), (f"Paired difference vs `{board['baseline']}`", "vs_baseline")):
        if key == "vs_baseline" and not any(e["vs_baseline"] for e in board["runs"]):
            continue
        lines += ["", f"## {title}", "", "| run | task | " + " | ".join(metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for entry in board["runs"]:
            cells = [_cell(entry[key].get(m)) for m in metrics]
            lines.append(f"| {entry['name']} | {entry['task']} | " + " | ".join(cells) + " |")
    judged = [e for e in board["runs"] if e.get("verdict")]
    if judged:
        limits = board["verdict_thresholds"]
        lines += ["", f"## Verdicts: does noise replace temperature? (pass@{limits['k']}, Distinct-2)", "",
                  f"Thresholds: {', '.join(f'{k}={v}' for k, v in limits.items())} "
                  "(see lm_eval_noise/tools/sweep/verdict.py).", "",
                  "| noise run | vs temperature | verdict | why | pass at matched diversity |", "|---|---|---|---|---|"]
        for entry in judged:
            matched = entry["matched_diversity"]
            at_match = (f"{matched['difference']:+.3f} [{matched['ci_low']:+.3f}, {matched['ci_high']:+.3f}]"
                        if matched.get("difference") is not None and matched.get("ci_low") is not None
                        else matched.get("reason", "undefined"))
            for name, judged_against in entry["verdict"].items():
                lines.append(f"| {entry['name']} | {name} | {judged_against['verdict'] or 'none'} | "
                             f"{'; '.join(judged_against['reasons'])} | {at_match} |")
    if board["failed"]:
        lines += ["", "## Failed runs", ""] + [f"- {f['name']}: {f['detail']}" for f in board["failed"]]
    return "\n".join(lines) + "\n"


def write_report(sweep, outcomes, output: Path) -> dict:
    board = build_leaderboard(sweep, outcomes)
    board["plots"] = [str(p.relative_to(output)) for p in write_plots(board, output / "plots")]
    (output / "leaderboard.json").write_text(json.dumps(board, indent=2, allow_nan=False))
    (output / "leaderboard.md").write_text(markdown_table(board))
    return board
