"""From finished sweep runs to one leaderboard JSON, a markdown table and PNG plots.

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
    failed = [{"name": o.run.name, "run_id": o.run.run_id, "detail": o.detail} for o in outcomes if o.status == "failed"]
    return {"sweep": sweep.name, "baseline": sweep.baseline, "confidence": LEVEL,
            "bootstrap_iterations": BOOTSTRAP_ITERATIONS, "runs": entries, "failed": failed}


def _cell(interval: dict | None) -> str:
    if not interval:
        return "–"
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
    if board["failed"]:
        lines += ["", "## Failed runs", ""] + [f"- {f['name']}: {f['detail']}" for f in board["failed"]]
    return "\n".join(lines) + "\n"


def _errorbars(axis, entries, x_metric, y_metric):
    drawn = False
    for entry in entries:
        x, y = entry["metrics"].get(x_metric), entry["metrics"].get(y_metric)
        if not x or not y or x["n"] == 0 or y["n"] == 0:
            continue
        axis.errorbar(x["mean"], y["mean"], xerr=[[x["mean"] - x["ci_low"]], [x["ci_high"] - x["mean"]]],
                      yerr=[[y["mean"] - y["ci_low"]], [y["ci_high"] - y["mean"]]], fmt="o", capsize=3)
        axis.annotate(entry["name"], (x["mean"], y["mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        drawn = True
    axis.set_xlabel(x_metric)
    axis.set_ylabel(y_metric)
    axis.grid(alpha=0.3)
    return drawn


def write_plots(board: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    pairs = [(x, y) for x, y in (("distinct_2", "pass@1"), ("self_bleu", "pass@1"), ("distinct_2", "pass@10"),
                                  ("self_bleu", "pass@10")) if any(y in e["metrics"] for e in board["runs"])]
    if pairs:
        figure, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.5), squeeze=False)
        drawn = [_errorbars(axis, board["runs"], x, y) for axis, (x, y) in zip(axes[0], pairs)]
        figure.suptitle(f"{board['sweep']}: correctness against diversity, one point per method (95% CI)")
        figure.tight_layout()
        if any(drawn):
            written.append(folder / "pass_vs_diversity.png")
            figure.savefig(written[-1], dpi=120)
        plt.close(figure)
    scaled = [e for e in board["runs"] if e["noise_scale"] is not None]
    metrics = [m for m in ("ref_logprob_mean", "compile_rate", "pass@1", "degenerate_rate")
               if any(m in e["metrics"] for e in scaled)][:2]
    if scaled and metrics:
        figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.5), squeeze=False)
        for axis, metric in zip(axes[0], metrics):
            families: dict[str, list] = {}
            for entry in scaled:
                if metric in entry["metrics"] and entry["metrics"][metric]["n"]:
                    family = entry["name"].rsplit("-", 1)[0] if entry["method"] != "custom" else entry["name"]
                    families.setdefault(family, []).append((entry["noise_scale"], entry["metrics"][metric]))
            for family, points in families.items():
                points.sort(key=lambda p: p[0])
                xs = [p[0] for p in points]
                means = [p[1]["mean"] for p in points]
                axis.errorbar(xs, means, yerr=[[m - p[1]["ci_low"] for m, p in zip(means, points)],
                                               [p[1]["ci_high"] - m for m, p in zip(means, points)]],
                              marker="o", capsize=3, label=family)
            axis.set_xlabel("noise scale (sigma_scale or noise_norm)")
            axis.set_ylabel(metric)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.suptitle(f"{board['sweep']}: against noise scale (95% CI)")
        figure.tight_layout()
        written.append(folder / "noise_scale.png")
        figure.savefig(written[-1], dpi=120)
        plt.close(figure)
    return written


def write_report(sweep, outcomes, output: Path) -> dict:
    board = build_leaderboard(sweep, outcomes)
    board["plots"] = [str(p.relative_to(output)) for p in write_plots(board, output / "plots")]
    (output / "leaderboard.json").write_text(json.dumps(board, indent=2, allow_nan=False))
    (output / "leaderboard.md").write_text(markdown_table(board))
    return board
