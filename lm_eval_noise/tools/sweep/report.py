"""From finished sweep runs to one leaderboard JSON and a markdown table (plots: plots.py).

Every headline metric gets its mean over problems (prompts) with a 95% interval
(stats.py: Student-t over problems, widened for metrics bounded in [0, 1]; problems where
a metric is undefined, e.g. diversity among correct samples where fewer than two passed,
left out), and a paired comparison with the baseline method: the mean per-problem
difference (run - baseline) over the problems both have, with its own interval. Each
interval states how many problems it rests on (`n`). Noise runs get a verdict against
the temperature curve of their model and task (verdict.py). A metric defined for no
problem is `null` in the JSON (strict JSON: never NaN) and "undefined" in the table.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..files import write_text
from . import stats
from .confirm import confirm
from .plots import write_plots
from .verdict import judge_runs

HEADLINE = (
    "pass@1", "pass@10", "compile_rate", "empty_rate", "degenerate_rate", "distinct_2", "self_bleu",
    "pairwise_bleu", "edit_distance", "edit_distance_matched", "ref_logprob_mean", "response_length",
)
# Per-problem values of these lie in [0, 1]: their intervals may use that bound.
_UNIT_INTERVAL = ("pass@", "compile_rate", "empty_rate", "degenerate_rate", "distinct_", "self_bleu",
                  "pairwise_bleu", "edit_distance")
LEVEL = stats.LEVEL
INTERVALS = ("Student-t over problems; metrics in [0, 1] widened to a Wilson interval at the effective "
             "number of problems, and their paired differences to at least +-z^2/(n+z^2) "
             "(lm_eval_noise/tools/sweep/stats.py)")


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
    return metric in HEADLINE or re.fullmatch(r"pass@\d+", metric) is not None


def _headline_order(metrics) -> list[str]:
    """pass@k by k, then the rest of HEADLINE in its order."""
    passes = sorted((m for m in metrics if re.fullmatch(r"pass@\d+", m)), key=lambda m: int(m[5:]))
    return passes + [m for m in HEADLINE if m in metrics and not m.startswith("pass@")]


def _interval(mean: float, low: float, high: float, n: int) -> dict:
    """Strict JSON: an undefined mean or bound is null, never NaN."""
    clean = lambda value: None if value is None or not math.isfinite(value) else float(value)  # noqa: E731
    return {"mean": clean(mean), "ci_low": clean(low), "ci_high": clean(high), "n": n}


def metric_interval(metric: str, values: dict) -> dict:
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    return _interval(*stats.mean_interval(finite, LEVEL, bounded=metric.startswith(_UNIT_INTERVAL)), len(finite))


def paired_interval(metric: str, values: dict, baseline: dict) -> dict:
    left, _ = stats.paired_values(values, baseline)
    bounded = metric.startswith(_UNIT_INTERVAL)
    return _interval(*stats.paired_interval(values, baseline, LEVEL, bounded=bounded), int(left.size))


def build_leaderboard(sweep, outcomes) -> dict:
    """Samples per problem, problems and limit come from what each run holds (runner.run_shape),
    not from the config; runs of one model and task that disagree on samples are refused."""
    from .grid import SweepConfigError
    from .runner import run_shape

    finished = [o for o in outcomes if o.status in ("done", "skipped")]
    per_doc = {o.run.run_id: per_doc_metrics(o.directory) for o in finished}
    shapes = {o.run.run_id: run_shape(o.directory) for o in finished}
    samples: dict[tuple, dict] = {}
    for o in finished:
        samples.setdefault((o.run.model, o.run.task), {})[o.run.name] = shapes[o.run.run_id]["samples"]
    for (model, task), by_run in sorted(samples.items()):
        if len(set(by_run.values())) > 1:
            raise SweepConfigError(f"runs of {model} on {task} have different samples per problem ("
                                   + ", ".join(f"{name}: {n}" for name, n in sorted(by_run.items()))
                                   + "); a leaderboard compares runs with the same n")
    entries = []
    for outcome in finished:
        run = outcome.run
        metrics = per_doc[run.run_id]
        entry = {
            "name": run.name, "group": run.group or run.name, "run_id": run.run_id, "model": run.model,
            "task": run.task,
            "method": run.method, "temperature": run.gen_kwargs.get("temperature") if run.method == "temperature"
            else None, "noise_scale": run.noise_scale, "model_args": run.model_args, "gen_kwargs": run.gen_kwargs,
            **shapes[run.run_id], "directory": str(outcome.directory),
            "metrics": {m: metric_interval(m, v) for m, v in metrics.items()},
            "per_problem": {m: {str(doc): value for doc, value in v.items()} for m, v in metrics.items()},
            "vs_baseline": {},
        }
        base = next((o for o in finished if o.run.name == sweep.baseline and o.run.model == run.model
                     and o.run.task == run.task), None)
        if base is not None and base.run.run_id != run.run_id:
            base_metrics = per_doc[base.run.run_id]
            entry["vs_baseline"] = {m: paired_interval(m, v, base_metrics[m]) for m, v in metrics.items()
                                    if m in base_metrics}
        entries.append(entry)
    failed = [{"name": o.run.name, "run_id": o.run.run_id, "detail": o.detail}
              for o in outcomes if o.status == "failed"]
    return {"sweep": sweep.name, "engine": sweep.model, "baseline": sweep.baseline, "confidence": LEVEL,
            "intervals": INTERVALS, "verdict_thresholds": sweep.verdict, "runs": entries,
            "verdicts": judge_sweep(entries, sweep.verdict, sweep.metadata.get("reference_model")),
            "confirmations": confirm_sweep(entries, sweep.verdict, sweep.metadata.get("reference_model"))
            if sweep.verdict["dev_share"] else [],
            "failed": failed}


def _verdict_runs(entries: list[dict], reference_model: str | None):
    """(model, task, verdict.judge_runs's runs) for each model and task. Chat answers
    scored by the generator's own weights are flagged: as each run recorded it (lmsys
    docs), else by the identity of its weights and the reference's, never by names
    (scoring.self_scoring.judged_self_scored)."""
    from ...scoring.self_scoring import judged_self_scored

    for model, task in sorted({(e["model"], e["task"]) for e in entries}):
        mine = [e for e in entries if (e["model"], e["task"]) == (model, task)]
        yield model, task, [{"name": e["group"], "method": e["method"], "temperature": e["temperature"],
                             "scale": e["noise_scale"], "per_problem": e["per_problem"],
                             "self_scored": judged_self_scored(e, reference_model)} for e in mine]


def judge_sweep(entries: list[dict], limits: dict, reference_model: str | None = None) -> list[dict]:
    """verdict.judge_runs over each model and task's runs: one row per noise run."""
    return [{"model": model, "task": task, "name": name, **judgement}
            for model, task, runs in _verdict_runs(entries, reference_model)
            for name, judgement in judge_runs(runs, limits).items()]


def confirm_sweep(entries: list[dict], limits: dict, reference_model: str | None = None) -> list[dict]:
    """confirm.confirm over each model and task's runs (with `dev_share` > 0): one row each."""
    return [{"model": model, "task": task, **confirm(runs, limits)}
            for model, task, runs in _verdict_runs(entries, reference_model)]


def _cell(interval: dict | None) -> str:
    if not interval:
        return "\u2013"  # an en dash: no interval
    if interval["n"] == 0:
        return "undefined"
    if interval["ci_low"] is None:
        return f"{interval['mean']:.3f} (n=1)"
    return f"{interval['mean']:.3f} [{interval['ci_low']:.3f}, {interval['ci_high']:.3f}] n={interval['n']}"


def markdown_table(board: dict) -> str:
    metrics = _headline_order({m for e in board["runs"] for m in e["metrics"]})
    samples = sorted({e["samples"] for e in board["runs"]})
    lines = [f"# Sweep `{board['sweep']}`", "",
             f"Every run through `{board['engine']}`. "
             f"Mean over problems with {board['confidence']:.0%} intervals ({board['intervals']}); "
             f"{', '.join(map(str, samples))} samples per problem; `n=`: the problems an interval rests on."]
    for title, key in (("Metrics", "metrics"), (f"Paired difference vs `{board['baseline']}`", "vs_baseline")):
        if key == "vs_baseline" and not any(e["vs_baseline"] for e in board["runs"]):
            continue
        lines += ["", f"## {title}", "", "| run | task | " + " | ".join(metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for entry in board["runs"]:
            cells = [_cell(entry[key].get(m)) for m in metrics]
            lines.append(f"| {entry['name']} | {entry['task']} | " + " | ".join(cells) + " |")
    if board["verdicts"]:
        lines += _verdict_lines(board)
    if board.get("confirmations"):
        lines += _confirmation_lines(board)
    if board["failed"]:
        lines += ["", "## Failed runs", ""] + [f"- {f['name']}: {f['detail']}" for f in board["failed"]]
    return "\n".join(lines) + "\n"


def _contrast_cell(contrast: dict | None) -> str:
    if not contrast:
        return "\u2013"
    return f"{contrast['difference']:+.3f} [{contrast['low']:+.3f}, {contrast['high']:+.3f}]"


def _verdict_lines(board: dict) -> list[str]:
    """The verdict table (every k on its own), and across models and tasks when there
    are several: effect sizes with intervals per model and task."""
    limits, rows = board["verdict_thresholds"], board["verdicts"]
    ks = sorted({m for row in rows for m in row.get("matched", {})},
                key=lambda m: (not m.startswith("pass@"), int(m[5:]) if m.startswith("pass@") else 0, m))
    several_models = len({row["model"] for row in rows}) > 1
    lines = ["", "## Verdicts: does noise replace temperature?", "",
             "Each noise run against the temperature curve (greedy, then every temperature run) at its own "
             "diversity; pass@1 is the primary endpoint, every k is judged on its own; claims Holm-adjusted over "
             "the runs and k of a model and task; seeds and problems both random. Thresholds: "
             f"{', '.join(f'{k}={v}' for k, v in limits.items())} (lm_eval_noise/tools/sweep/verdict.py).", "",
             "| noise run | " + ("model | " if several_models else "") + "task | verdict | why | problems | seeds | "
             + "".join(f"{k} vs curve | " for k in ks) + "sits at | seed study's criterion | "
             "min. detectable effect |",
             "|" + "---|" * (9 + several_models + len(ks))]
    for row in rows:
        matched = row.get("matched", {})
        primary = matched.get(row.get("primary"))
        seed = row.get("seed_criterion")
        seed = "\u2013" if not seed else f"{'met' if seed['met'] else 'not shown'} against {seed['against']}"
        effect = row.get("minimum_detectable_effect")
        lines.append(f"| {row['name']} | " + (f"{row['model']} | " if several_models else "")
                     + f"{row['task']} | {row['verdict']} | {row['reason']} | {row.get('problems', 0)} | "
                     f"{row.get('replicates', 1)} | " + "".join(f"{_contrast_cell(matched.get(k))} | " for k in ks)
                     + (f"T={primary['temperature']:.2f} ({' / '.join(primary['between'])}) | " if primary
                        else "\u2013 | ") + f"{seed} | " + ("\u2013" if effect is None else f"{effect:.3f}") + " |")
    if several_models or len({row["task"] for row in rows}) > 1:
        columns = sorted({(row["model"], row["task"]) for row in rows})
        lines += ["", "## Across models and tasks", "",
                  "The primary endpoint against the temperature curve: verdict, difference [95% interval].", "",
                  "| noise run | " + " | ".join(f"{Path(model).name} / {task}" for model, task in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for name in sorted({row["name"] for row in rows}):
            cells = []
            for model, task in columns:
                row = next((r for r in rows if (r["name"], r["model"], r["task"]) == (name, model, task)), None)
                cells.append("\u2013" if row is None else
                             f"{row['verdict']} {_contrast_cell(row.get('matched', {}).get(row.get('primary')))}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _confirmation_lines(board: dict) -> list[str]:
    share = board["verdict_thresholds"]["dev_share"]
    lines = ["", "## Chosen on dev, confirmed on held-out problems", "",
             f"Each noise setting judged on {share:.0%} of the problems (dev, chosen by a hash of the problem id); "
             "the best judged alone on the rest (lm_eval_noise/tools/sweep/confirm.py).", "",
             "| model | task | chosen | from | dev | held-out verdict | why | tuning budgets |", "|" + "---|" * 8]
    for row in board["confirmations"]:
        budget = row["budget"]
        budgets = (f"{budget['noise_settings']} noise vs {budget['sampling_settings']} sampling settings"
                   + ("" if budget["equal"] else ": unequal, sampling tuned less widely than noise"))
        if row["selected"] is None:
            lines.append(f"| {row['model']} | {row['task']} | \u2013 | \u2013 | \u2013 | \u2013 | {row['reason']} | "
                         f"{budgets} |")
            continue
        dev, test = row["dev"], row["test"]
        dev_cell = dev["verdict"] + (f" {dev['difference'][0]:+.3f}" if dev["difference"] else "")
        lines.append(f"| {row['model']} | {row['task']} | {row['selected']} | {row['chosen_from']} settings | "
                     f"{dev_cell} ({dev['problems']} problems) | {test['verdict']} | {test['reason']} | {budgets} |")
    return lines


def write_report(sweep, outcomes, output: Path) -> dict:
    board = build_leaderboard(sweep, outcomes)
    board["plots"] = [str(p.relative_to(output)) for p in write_plots(board, output / "plots")]
    write_text(output / "leaderboard.json", json.dumps(board, indent=2, allow_nan=False))
    write_text(output / "leaderboard.md", markdown_table(board))
    return board
